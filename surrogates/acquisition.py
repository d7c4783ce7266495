"""Batch acquisition over a discrete candidate pool from a members × candidates table.

Why a table: the networks are evaluated once per round over the whole pool
(:meth:`Ensemble.predict`); acquisition then only looks candidates up by index, so 10^5-10^6
candidates cost milliseconds per pick instead of network passes inside an optimiser.

The ensemble is exposed to BoTorch as :class:`TableEnsembleModel` (an
``botorch.models.ensemble.EnsembleModel`` whose inputs are candidate indices). With a sampler
that enumerates every member once (:class:`MemberSampler`) the Monte-Carlo acquisition values
are the exact ensemble expectations. For q-batch selection, qEI/qUCB with exact member
enumeration reduce to "mean over members of a running max", which :func:`select_batch`
evaluates vectorised for every candidate at once (sequential greedy, the same picks as
``optimize_acqf_discrete``; tests check this) and then reports BoTorch's qLogEI / qUCB value
of each growing batch with the pending experiments as ``X_pending``.

With s members at most ~s greedy picks carry positive marginal improvement; beyond that the
ranking is degenerate, so the remaining picks come from Thompson sampling by member.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

with warnings.catch_warnings():  # gpytorch emits a torch.jit DeprecationWarning on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.acquisition.monte_carlo import qUpperConfidenceBound
    from botorch.models.ensemble import EnsembleModel
    from botorch.sampling.index_sampler import IndexSampler

from .ensemble import PredictionTable

Strategy = Literal["qlogei", "qucb", "thompson", "greedy", "random", "qehvi"]
STRATEGIES: tuple[str, ...] = ("qlogei", "qucb", "thompson", "greedy", "random", "qehvi")


@dataclass(frozen=True)
class Selection:
    """One proposed candidate: its index in the pool and the strategy's value for it.

    ``acquisition_value``: qlogei — BoTorch qLogEI of the batch up to and including this pick
    (pending included); qucb — qUCB of that batch; thompson — the sampled member's objective
    (also for qlogei/qucb picks made after no candidate improved any member any more);
    greedy — mean objective; random — 0; qehvi — the expected hypervolume improvement of the
    pick over the front of the measured and pending candidates and the earlier picks
    (``multiobjective.select_pareto_batch``).
    """

    index: int
    acquisition_value: float
    mean: float
    std: float


# ----------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class ColumnObjective:
    """Maximise (or minimise) one output column, less a per-candidate reference if given
    (``refs``, e.g. the known hull's energy at each candidate: e_form - ref = decomposition energy)."""

    column: str | int = 0
    maximize: bool = True
    refs: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __call__(self, table: PredictionTable, values: np.ndarray) -> np.ndarray:
        v = _column(table, values, self.column, self.refs)
        return v if self.maximize else -v


@dataclass(frozen=True)
class StableAndMakeable:
    """Per-member (soft) indicator that a candidate is stable and makeable; its ensemble mean
    is the probability. Stable: ``stability`` column (e.g. energy above the known hull, or the
    formation energy less per-candidate hull references ``refs``) below ``threshold``; makeable:
    ``yield_column`` above ``yield_threshold`` (skipped if None, e.g. while the yield head has
    seen no results). ``tau`` softens the step so that near-misses still rank above clear
    failures."""

    stability: str | int = "e_above_hull"
    threshold: float = 0.0
    yield_column: str | int | None = None
    yield_threshold: float = 0.5
    tau: float = 0.02
    yield_tau: float = 0.05
    refs: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __call__(self, table: PredictionTable, values: np.ndarray) -> np.ndarray:
        p = _sigmoid((self.threshold - _column(table, values, self.stability, self.refs)) / self.tau)
        if self.yield_column is not None:
            y = _column(table, values, self.yield_column)
            p = p / _one_plus_exp_neg((y - self.yield_threshold) / self.yield_tau)
        return p


@dataclass(frozen=True)
class BestYield:
    """Expected best yield: the per-member yield, so qEI/qUCB value the best of a batch."""

    column: str | int = "yield"

    def __call__(self, table: PredictionTable, values: np.ndarray) -> np.ndarray:
        return _column(table, values, self.column)


ObjectiveLike = (ColumnObjective | StableAndMakeable | BestYield | str | int | None
                 | Callable[[PredictionTable, np.ndarray], np.ndarray])

#: what a campaign may maximise (``acquisition.objective`` in campaign.yaml)
OBJECTIVE_KINDS: tuple[str, ...] = ("stable_and_makeable", "stability", "expected_yield")


def objective_for(kind: str, *, refs: np.ndarray | None = None, threshold: float = 0.0,
                  yield_threshold: float = 0.5, use_yield: bool = True,
                  stability: str | int = "e_form", yield_column: str | int = "yield",
                  tau: float = 0.02, yield_tau: float = 0.08,
                  ) -> ColumnObjective | StableAndMakeable | BestYield:
    """The objective of a campaign kind (:data:`OBJECTIVE_KINDS`), larger = better.

    ``stable_and_makeable``: soft P(stability - refs < threshold), times — when ``use_yield``
    (the yield head has seen campaign results) — soft P(yield >= yield_threshold);
    ``stability``: minus (stability - refs), the decomposition energy; ``expected_yield``: the
    predicted yield.
    """
    if kind == "stable_and_makeable":
        return StableAndMakeable(stability=stability, threshold=threshold,
                                 yield_column=yield_column if use_yield else None,
                                 yield_threshold=yield_threshold, tau=tau, yield_tau=yield_tau,
                                 refs=refs)
    if kind == "stability":
        return ColumnObjective(stability, maximize=False, refs=refs)
    if kind == "expected_yield":
        return BestYield(yield_column)
    raise ValueError(f"unknown objective {kind!r}; expected one of {', '.join(OBJECTIVE_KINDS)}")


def _column(table: PredictionTable, values: np.ndarray, column: str | int,
            refs: np.ndarray | None = None) -> np.ndarray:
    """(members, candidates) values of one output, less ``refs`` per candidate if given."""
    j = table.column(column) if isinstance(column, str) else int(column)
    v = values[:, :, j]
    return v if refs is None else v - np.asarray(refs)[None, :]


def _one_plus_exp_neg(x: np.ndarray) -> np.ndarray:
    return 1.0 + np.exp(-np.clip(x, -50.0, 50.0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / _one_plus_exp_neg(x)


def objective_table(table: PredictionTable, objective: ObjectiveLike = None, *,
                    maximize: bool = True, calibrated: bool = True) -> np.ndarray:
    """(members, candidates) objective values, larger = better.

    ``calibrated``: members are spread around the mean by the fitted inflation factor first
    (``mean + c · (member − mean)``), so acquisitions see the calibrated uncertainty.
    """
    values = table.values
    if calibrated and values.shape[0] > 1:
        mean = values.mean(axis=0, keepdims=True)
        values = mean + table.inflation[None, None, :] * (values - mean)
    if objective is None or isinstance(objective, (str, int)):
        name = objective if objective is not None else 0
        if isinstance(name, str) and name.startswith("-"):
            objective = ColumnObjective(name[1:], maximize=False)
        else:
            objective = ColumnObjective(name, maximize=maximize)
    out = np.asarray(objective(table, values), dtype=np.float64)
    if out.shape != values.shape[:2]:
        raise ValueError(f"objective returned shape {out.shape}, expected {values.shape[:2]}")
    return out


# ----------------------------------------------------------------------------- BoTorch model


class TableEnsembleModel(EnsembleModel):
    """A precomputed ensemble table as a BoTorch model.

    Inputs ``X`` (``batch × q × 1``) hold candidate indices (as floats); ``forward`` returns
    ``batch × s × q × 1`` member values of the objective for those candidates.
    """

    def __init__(self, objective_values: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        vals = torch.as_tensor(objective_values, dtype=torch.float64)
        if vals.dim() != 2:
            raise ValueError("objective table must be members × candidates")
        self.register_buffer("table", vals)  # s × n
        self._num_outputs = 1

    @property
    def num_members(self) -> int:
        return int(self.table.shape[0])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        idx = X[..., 0].round().long()  # batch × q
        out = self.table[:, idx]  # s × batch × q
        out = out.movedim(0, -2)  # batch × s × q
        return out.unsqueeze(-1)


class MemberSampler(IndexSampler):
    """Enumerates every ensemble member exactly once: exact expectations, no sampling noise
    (and ~100× faster than the default 512 random member draws)."""

    def __init__(self, members: int) -> None:
        super().__init__(sample_shape=torch.Size([members]))
        self.members = members

    def _construct_base_samples(self, posterior) -> None:  # noqa: ANN001 - botorch signature
        batch = posterior.batch_shape
        base = torch.arange(self.members, device=posterior.device)
        base = base.view(self.members, *([1] * len(batch))).expand(self.members, *batch)
        self.register_buffer("base_samples", base.contiguous())


def botorch_acquisition(strategy: str, objective_values: np.ndarray, *, best_f: float,
                        beta: float, pending: Iterable[int] = ()):
    """The BoTorch acquisition function for ``strategy`` over the table, pending set."""
    model = TableEnsembleModel(objective_values)
    sampler = MemberSampler(model.num_members)
    pend = sorted(int(i) for i in pending)
    x_pending = (torch.tensor(pend, dtype=torch.float64).view(-1, 1) if pend else None)
    if strategy == "qlogei":
        return qLogExpectedImprovement(model, best_f=best_f, sampler=sampler, X_pending=x_pending)
    if strategy == "qucb":
        return qUpperConfidenceBound(model, beta=beta, sampler=sampler, X_pending=x_pending)
    raise ValueError(f"no BoTorch acquisition for strategy {strategy!r}")


# ----------------------------------------------------------------------------- selection


def select_batch(
    table: PredictionTable,
    *,
    strategy: Strategy = "qlogei",
    q: int = 8,
    pending: Iterable[int] = (),
    objective: ObjectiveLike = None,
    maximize: bool = True,
    seed: int = 0,
    best_f: float | None = None,
    beta: float = 2.0,
    exclude: Iterable[int] = (),
    calibrated: bool = True,
    baseline: Iterable[int] | None = None,
    ref_point: np.ndarray | None = None,
) -> list[Selection]:
    """Choose ``q`` distinct candidates (indices into the table) for the next experiments.

    ``pending``: candidates already in flight — never proposed again and, for qLogEI/qUCB,
    counted as part of the batch (BoTorch ``X_pending``). ``exclude``: indices never to
    propose (e.g. already measured). ``best_f``: incumbent for EI in objective units (default:
    the best mean objective among the pool). Fewer than ``q`` are returned only when fewer
    candidates remain.

    ``qehvi``: ``objective`` is a pair of objectives (e.g. stability and predicted yield),
    both maximised, and each member's Pareto front over the ``baseline`` candidates (default:
    ``exclude``, the measured ones, as qNEHVI's ``X_baseline``) plus ``pending`` is what a pick
    must improve; ``ref_point`` (2,) defaults to the pool's member-wise minimum less 1 % of
    the range. A single objective is paired with a constant, which makes EHVI the expected
    improvement of that objective over the best measured or pending value.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {list(STRATEGIES)}")
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    if strategy == "qehvi":
        return _select_qehvi(table, objective, q=q, pending=pending, exclude=exclude,
                             baseline=exclude if baseline is None else baseline,
                             maximize=maximize, calibrated=calibrated, ref_point=ref_point)
    obj = objective_table(table, objective, maximize=maximize, calibrated=calibrated)
    s, n = obj.shape
    pend = np.unique(np.fromiter((int(i) for i in pending), dtype=np.int64))
    excl = np.unique(np.fromiter((int(i) for i in exclude), dtype=np.int64))
    for name, arr in (("pending", pend), ("exclude", excl)):
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise IndexError(f"{name} index out of range 0..{n - 1}")
    available = np.ones(n, dtype=bool)
    blocked = torch.from_numpy(np.concatenate([pend, excl]))
    available[torch.isin(torch.arange(n), blocked).numpy()] = False
    q = min(q, int(available.sum()))
    if q == 0:
        return []
    mean, sd = obj.mean(axis=0), (obj.std(axis=0, ddof=1) if s > 1 else np.zeros(n))
    rng = np.random.default_rng(seed)

    def pick(i: int, value: float) -> Selection:
        available[i] = False
        return Selection(int(i), float(value), float(mean[i]), float(sd[i]))

    if strategy == "random":
        idx = rng.choice(np.flatnonzero(available), size=q, replace=False)
        return [pick(i, 0.0) for i in idx]
    if strategy == "greedy":
        cand = np.flatnonzero(available)
        if q < len(cand):  # top q in O(n), then order those q
            cand = cand[np.argpartition(-mean[cand], q - 1)[:q]]
        top = cand[np.lexsort((cand, -mean[cand]))][:q]
        return [pick(i, mean[i]) for i in top]
    if strategy == "thompson":
        return [pick(i, v) for i, v in _thompson(obj, available, q, rng)]
    # qLogEI / qUCB: sequential greedy on exact member enumeration, vectorised
    if strategy == "qlogei":
        if best_f is None:
            best_f = float(mean[available].max())
        per_member = obj
        floor = float(best_f)
    else:
        per_member = mean[None, :] + math.sqrt(beta * math.pi / 2.0) * np.abs(obj - mean[None, :])
        floor = -math.inf
    running = np.full(s, floor)
    if pend.size:
        running = np.maximum(running, per_member[:, pend].max(axis=1))
    chosen: list[int] = []
    for _ in range(q):
        gains = np.maximum(per_member, running[:, None]).mean(axis=0) - running.mean()
        gains[~available] = -np.inf
        i = int(np.argmax(gains))
        if not gains[i] > 1e-12 and chosen:
            break  # degenerate: no pick improves any member any more
        chosen.append(i)
        available[i] = False
        running = np.maximum(running, per_member[:, i])
    for i in chosen:
        available[i] = True  # `pick` below marks them again
    acq = botorch_acquisition(strategy, obj, best_f=float(best_f or 0.0), beta=beta, pending=pend)
    with torch.no_grad():
        xs = torch.tensor(chosen, dtype=torch.float64).view(-1, 1)
        # value of each growing batch: X = chosen[:t+1] (batch dim t)
        vals = [float(acq(xs[: t + 1].unsqueeze(0))) for t in range(len(chosen))]
    out = [pick(i, v) for i, v in zip(chosen, vals, strict=True)]
    if len(out) < q:  # q > informative picks: Thompson by member for the rest
        out += [pick(i, v) for i, v in _thompson(obj, available, q - len(out), rng)]
    return out


def _select_qehvi(table: PredictionTable, objective: ObjectiveLike | tuple | list, *, q: int,
                  pending: Iterable[int], exclude: Iterable[int], baseline: Iterable[int],
                  maximize: bool, calibrated: bool,
                  ref_point: np.ndarray | None) -> list[Selection]:
    """Sequential-greedy EHVI over two objectives (see :func:`select_batch`)."""
    from .multiobjective import select_pareto_batch  # noqa: PLC0415 - it imports this module

    pair = list(objective) if isinstance(objective, (tuple, list)) else [objective]
    if len(pair) not in (1, 2):
        raise ValueError(f"qehvi takes one or two objectives, got {len(pair)}")
    cols = [objective_table(table, o, maximize=maximize, calibrated=calibrated) for o in pair]
    if len(cols) == 1:  # a constant second objective: EHVI = expected improvement of the first
        cols.append(np.ones_like(cols[0]))
        if ref_point is not None:
            ref_point = np.array([np.asarray(ref_point).reshape(-1)[0], 0.0])
        else:
            lo, hi = float(cols[0].min()), float(cols[0].max())
            ref_point = np.array([lo - 0.01 * max(hi - lo, 1e-12), 0.0])
    values = np.stack(cols, axis=2)
    pend = {int(i) for i in pending}
    excl = {int(i) for i in exclude}
    base = sorted({int(i) for i in baseline} - pend)
    # measured candidates (the baseline) are never proposed again, like excluded ones
    picks = select_pareto_batch(values, q=q, pending=sorted(pend), baseline=base,
                                exclude=sorted(excl), ref_point=ref_point)
    first = values[:, :, 0]
    sd = first.std(axis=0, ddof=1) if first.shape[0] > 1 else np.zeros(first.shape[1])
    return [Selection(p.index, p.ehvi, float(p.mean[0]), float(sd[p.index])) for p in picks]


def _thompson(obj: np.ndarray, available: np.ndarray, q: int,
              rng: np.random.Generator) -> list[tuple[int, float]]:
    """Thompson sampling by member: each pick maximises one randomly drawn member (members
    cycle in random order so q ≤ s uses distinct members)."""
    s = obj.shape[0]
    avail = available.copy()
    order: list[int] = []
    out: list[tuple[int, float]] = []
    for _ in range(q):
        if not order:
            order = list(rng.permutation(s))
        k = order.pop()
        row = np.where(avail, obj[k], -np.inf)
        i = int(np.argmax(row))
        if not np.isfinite(row[i]):
            break
        avail[i] = False
        out.append((i, float(obj[k, i])))
    return out
