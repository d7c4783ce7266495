"""Recipe yield model: a BoTorch SingleTaskGP over physics features of a recipe.

Why a GP on a handful of physical features (and not the precursor set as a category): it
fits in ~0.2 s, generalises across targets (a driving force of 30 meV/atom is sluggish for
every target), and predicted yields better than a mixed categorical GP on a toy set
(``../shared/notes-botorch.md``: RMSE 11.8 vs 18.8 points).

Features (order of ``FEATURES``): overall driving force (meV/atom, positive = downhill),
driving force left at the target-forming step after predicted intermediates, firing
temperature (°C), log10 dwell (min), homologous temperature T/T_melt (K/K, mean of the
reacting solids) and the molar share of precursors volatile at T.

Use: ``prob_feasible`` = P(yield ≥ threshold) via BoTorch's LogProbabilityOfFeasibility;
the planner first filters candidates by it, then optimises (see notes on constrained
acquisition: optimising a constrained objective directly picks recipes with 3-6 % chance).
torch/botorch are imported on first use so that `synthloop recipes propose` and the
controller do not pay for them until a yield model is actually fitted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

FEATURES = (
    "driving_force_mev",
    "remaining_mev",
    "temperature_c",
    "log10_dwell_min",
    "homologous_t",
    "volatile_share",
)
MIN_POINTS = 4
# hyperparameters are optimised on every point up to REFIT_FULL_UNTIL points, then on a prefix
# growing geometrically (see optimisation_points); new points only condition the GP
REFIT_FULL_UNTIL = 8
REFIT_GROWTH = 1.25
CLIP_MEV = (-300.0, 1500.0)


_HYPER_MODULES = ("likelihood", "mean_module", "covar_module")


def clip_features(x: Sequence[float]) -> list[float]:
    out = list(map(float, x))
    out[0] = min(max(out[0], CLIP_MEV[0]), CLIP_MEV[1])
    out[1] = min(max(out[1], CLIP_MEV[0]), CLIP_MEV[1])
    return out


def prior_success(x: Sequence[float], threshold: float) -> float:
    """P(yield ≥ threshold) before any data: a logistic in the step driving force (50 meV/atom
    scale, the A-Lab's sluggishness limit) times one in homologous temperature (Tammann)."""
    overall, remaining, _, _, homologous, volatile = clip_features(x)
    step = min(overall, remaining)
    p_df = 1.0 / (1.0 + math.exp(-(step - 50.0) / 30.0))
    p_t = 1.0 / (1.0 + math.exp(-(homologous - 0.5) / 0.05))
    return float(p_df * p_t * (1.0 - 0.5 * volatile))


def optimisation_points(n: int) -> int:
    """How many of the first points the GP's hyperparameters are optimised on, for n points.

    All n up to ``REFIT_FULL_UNTIL``; beyond, the largest checkpoint of a geometric schedule
    (x ``REFIT_GROWTH``) not above n. Why a schedule of the count alone: a campaign refits after
    every result, and re-running the marginal-likelihood optimiser each time was most of the
    planner's cost while a few new points barely move its optimum; and because the checkpoint
    depends only on n and the data prefix, the same history gives the same model whatever the
    planner saw before (a resumed campaign decides as an uninterrupted one).
    """
    if n <= REFIT_FULL_UNTIL:
        return n
    c = REFIT_FULL_UNTIL
    while math.ceil(c * REFIT_GROWTH) <= n:
        c = math.ceil(c * REFIT_GROWTH)
    return c


class YieldModel:
    """SingleTaskGP (float64, Normalize + Standardize) on (features, yield) from the history."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.model = None
        self.n_train = 0
        # (key of the data prefix the hyperparameters were optimised on, those hyperparameters)
        self.optimised: tuple[str, dict] | None = None

    @staticmethod
    def _prefix_key(xs: Sequence[Sequence[float]], ys: Sequence[float], c: int) -> str:
        import hashlib

        arr = np.asarray([[*clip_features(v), float(t)] for v, t in zip(xs[:c], ys[:c], strict=True)])
        return f"{c}:{hashlib.sha1(arr.tobytes()).hexdigest()}"

    @staticmethod
    def _build(xs: Sequence[Sequence[float]], ys: Sequence[float]):  # noqa: ANN205 - botorch model
        import torch
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Normalize, Standardize

        x = torch.tensor([clip_features(v) for v in xs], dtype=torch.float64)
        y = torch.tensor(list(ys), dtype=torch.float64).unsqueeze(-1)
        # constant columns would make Normalize divide by zero: widen their range by a hair
        bounds = torch.stack([x.min(0).values, x.max(0).values])
        same = (bounds[1] - bounds[0]) < 1e-9
        bounds[1, same] = bounds[0, same] + 1.0
        return SingleTaskGP(x, y, input_transform=Normalize(d=x.shape[-1], bounds=bounds),
                            outcome_transform=Standardize(m=1))

    @staticmethod
    def _optimise(model) -> dict | None:  # noqa: ANN001 - botorch model
        import torch
        from botorch.fit import fit_gpytorch_mll
        from gpytorch.mlls import ExactMarginalLogLikelihood

        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit_gpytorch_mll(mll)
            except Exception:  # noqa: BLE001 - an unfittable GP falls back to the prior
                return None
        # only the kernel, mean and noise: the transforms' statistics belong to each data set
        return {k: v.detach().clone() for k, v in model.state_dict().items()
                if k.split(".")[0] in _HYPER_MODULES}

    def fit(self, xs: Sequence[Sequence[float]], ys: Sequence[float],
            warm: YieldModel | None = None) -> bool:
        """Fit on the campaign's yields; False (prior only) with too few or constant data.

        The hyperparameters are optimised on the first :func:`optimisation_points` points and
        the GP is conditioned on all of them. ``warm`` (an earlier fit) lends its optimised
        hyperparameters when they came from the same data prefix, which saves the optimiser
        run without changing the result.
        """
        self.model = None
        self.optimised = None
        self.n_train = len(ys)
        if len(ys) < MIN_POINTS or float(np.std(ys)) < 1e-6:
            return False
        c = optimisation_points(len(ys))
        if c < len(ys) and float(np.std(ys[:c])) < 1e-6:
            c = len(ys)  # a degenerate prefix: optimise on everything
        key = self._prefix_key(xs, ys, c)
        hyper = warm.optimised[1] if warm is not None and warm.optimised and warm.optimised[0] == key else None
        if hyper is None:
            first = self._build(xs[:c], ys[:c])
            hyper = self._optimise(first)
            if hyper is None:
                return False
            if c == len(ys):
                first.eval()
                self.model, self.optimised = first, (key, hyper)
                return True
        model = self._build(xs, ys)
        model.load_state_dict(hyper, strict=False)
        model.eval()
        self.model, self.optimised = model, (key, hyper)
        return True

    @property
    def trained(self) -> bool:
        return self.model is not None

    def predict(self, xs: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of the yield (prior: success probability, std 0.3)."""
        if self.model is None:
            p = np.array([prior_success(x, self.threshold) for x in xs])
            return p, np.full_like(p, 0.3)
        import torch

        x = torch.tensor([clip_features(v) for v in xs], dtype=torch.float64)
        with torch.no_grad():
            post = self.model.posterior(x)
            mean = post.mean.squeeze(-1).numpy()
            std = post.variance.clamp_min(1e-12).sqrt().squeeze(-1).numpy()
        return mean, std

    def prob_feasible(self, xs: Sequence[Sequence[float]]) -> np.ndarray:
        """P(yield ≥ threshold) per candidate."""
        if not xs:
            return np.zeros(0)
        if self.model is None:
            return np.array([prior_success(x, self.threshold) for x in xs])
        import torch
        from botorch.acquisition.analytic import LogProbabilityOfFeasibility

        acq = LogProbabilityOfFeasibility(self.model, constraints={0: (self.threshold, None)})
        x = torch.tensor([clip_features(v) for v in xs], dtype=torch.float64).unsqueeze(1)
        with torch.no_grad():
            return acq(x).exp().numpy()
