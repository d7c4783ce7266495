"""Deep ensembles of crystal graph networks: training, calibrated prediction, save/load.

Why an ensemble: acquisition needs a spread, and K networks from different seeds and
bootstrap resamples give one without changing the networks. Deep ensembles are
overconfident on held-out data, so one variance-inflation factor per output is fitted on a
validation split (scaled so the 90 % interval covers 90 % of validation targets).

Members train in parallel processes (``spawn``; one torch thread each) because a CPU
training step is single-thread-bound; the pool size is ``EnsembleConfig.workers``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import multiprocessing
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from pymatgen.core import Structure

from .descriptors import aux_matrix
from .graphs import CrystalGraph, GraphCache, build_graph, collate
from .models import ARCHITECTURES, CGCNN, EDGE_ACTIVATIONS, build_model, needs_angles
from .stacked import StackedCGCNN

FORMAT_VERSION = 1
Z90 = 1.6448536269514722  # two-sided 90 % normal quantile


@dataclass(frozen=True)
class EnsembleConfig:
    """Settings of an ensemble; every random choice derives from ``seed``."""

    architecture: str = "cgcnn"
    members: int = 5
    hidden: int = 64
    layers: int = 3
    cutoff: float = 8.0
    max_neighbors: int = 12
    #: CGCNN members' gated-message activations (``models.EDGE_ACTIVATIONS``): "softplus" is the
    #: published σ·softplus; "hard" (hardsigmoid·ReLU) is the cheap one for large-cell pools
    edge_activation: str = "softplus"
    epochs: int = 100
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    patience: int = 30
    val_fraction: float = 0.1
    bootstrap: bool = True
    aux_targets: tuple[str, ...] = ("mean_electronegativity", "charge_balanced")
    aux_weight: float = 0.1
    workers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.epochs < 1 or self.hidden < 1 or self.layers < 1 or self.batch_size < 1:
            raise ValueError("epochs, hidden, layers and batch_size must be >= 1")
        if self.cutoff <= 0 or self.max_neighbors < 1:
            raise ValueError("cutoff must be > 0 and max_neighbors >= 1")
        if self.edge_activation not in EDGE_ACTIVATIONS:
            raise ValueError(f"unknown edge_activation {self.edge_activation!r}; "
                             f"allowed: {EDGE_ACTIVATIONS}")
        for arch in self.architecture.split("+"):
            if arch not in ARCHITECTURES:
                raise ValueError(f"unknown architecture {arch!r}; allowed: {sorted(ARCHITECTURES)}"
                                 " or several joined by '+' (members alternate between them)")

    def member_architecture(self, k: int) -> str:
        """Architecture of member ``k``: ``"schnet+cgcnn"`` alternates schnet, cgcnn, ...

        Why mix: members of different architectures disagree more where the data do not
        decide, which is what the ensemble's spread should measure."""
        parts = self.architecture.split("+")
        return parts[k % len(parts)]

    @property
    def angular(self) -> bool:
        return any(needs_angles(a) for a in self.architecture.split("+"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aux_targets"] = list(self.aux_targets)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown EnsembleConfig keys: {sorted(unknown)}")
        d = dict(data)
        if "aux_targets" in d:
            d["aux_targets"] = tuple(d["aux_targets"])
        return cls(**d)


#: The light CGCNN for pools of ~100-atom cells: ``EnsembleConfig(**LIGHT_LARGE_CELLS)``.
#: Measured (benchmarks/surrogate.py speed_large, benchmarks/polymorphs.py, surrogate_arch.py;
#: docs/benchmarks.md, issue 22): graphs + 5-member inference 2.1x the default's rate (194 vs
#: 91 per CPU s) on perturbed 96-128-atom supercells, but 5 % higher MAE on the perov_5 tune
#: split and ~10 % on the Si polymorph tune split (two seeds): an option, not the default.
LIGHT_LARGE_CELLS: dict[str, Any] = {"hidden": 48, "max_neighbors": 8, "edge_activation": "hard"}


@dataclass
class PredictionTable:
    """Predictions of every member for every structure: ``values[member, structure, output]``.

    ``mean`` is the ensemble mean; ``std`` the member spread (unbiased) times the fitted
    inflation factor, so ``mean ± 1.645 std`` is a calibrated 90 % interval.
    """

    values: np.ndarray  # (members, n, outputs), physical units
    outputs: tuple[str, ...]
    inflation: np.ndarray  # (outputs,)

    @property
    def mean(self) -> np.ndarray:
        return self.values.mean(axis=0)

    @property
    def raw_std(self) -> np.ndarray:
        if self.values.shape[0] < 2:
            return np.zeros(self.values.shape[1:])
        return self.values.std(axis=0, ddof=1)

    @property
    def std(self) -> np.ndarray:
        return self.raw_std * self.inflation[None, :]

    def column(self, name: str) -> int:
        try:
            return self.outputs.index(name)
        except ValueError:
            raise KeyError(f"no output {name!r}; outputs are {list(self.outputs)}") from None

    def interval(self, level: float = 0.9, output: str | int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Central interval of the calibrated Gaussian at ``level``."""
        j = self.column(output) if isinstance(output, str) else output
        z = math.sqrt(2.0) * _erfinv(level)
        return self.mean[:, j] - z * self.std[:, j], self.mean[:, j] + z * self.std[:, j]

    def __len__(self) -> int:
        return int(self.values.shape[1])


def _erfinv(x: float) -> float:
    return float(torch.erfinv(torch.tensor(x, dtype=torch.float64)))


def coverage(table: PredictionTable, y: np.ndarray, level: float = 0.9, output: int = 0) -> float:
    """Fraction of finite targets inside the calibrated central interval."""
    lo, hi = table.interval(level, output)
    ok = np.isfinite(y)
    return float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))) if ok.any() else float("nan")


# ----------------------------------------------------------------------------- training


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat float denormals as zero while our networks run.

    Why: sigmoid/softplus/exp tails underflow into denormals, and every operation touching
    one runs ~10-100× slower on x86. The setting is process-wide, so it is restored after.
    """
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


def _batches(n: int, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]


def _masked_loss(pred: torch.Tensor, y: torch.Tensor, n_main: int, aux_weight: float):
    mask = torch.isfinite(y)
    y0 = torch.where(mask, y, torch.zeros_like(y))
    err = (pred - y0).abs()
    main = err[:, :n_main][mask[:, :n_main]]
    loss = main.mean() if main.numel() else pred.sum() * 0.0
    if pred.shape[1] > n_main and aux_weight > 0:
        aux = ((pred[:, n_main:] - y0[:, n_main:]) ** 2)[mask[:, n_main:]]
        if aux.numel():
            loss = loss + aux_weight * aux.mean()
    return loss


def _evaluate(model: torch.nn.Module, graphs: Sequence[CrystalGraph], batch: int = 1024):
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(graphs), batch):
            outs.append(model(collate(graphs[i : i + batch])))
    return torch.cat(outs).numpy()


_MIN_ONE_CYCLE_STEPS = 20


def _lr_schedule(opt: torch.optim.Optimizer, lr: float, total_steps: int) -> Any:
    """One-cycle schedule, or a constant rate when training is too short for one.

    Why: ``OneCycleLR`` with a 10 % warm-up divides by zero when the warm-up rounds to one
    step (10 optimiser steps in all), which a campaign's first fine-tune on a handful of
    yields can hit. Below 20 steps a warm-up/anneal cycle means little anyway.
    """
    if total_steps < _MIN_ONE_CYCLE_STEPS:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=0.1)


_NORM_BATCHES = 16


def _refresh_norm_stats(model: torch.nn.Module, graphs: Sequence[CrystalGraph],
                        train_idx: np.ndarray, batch_size: int, seed: int) -> None:
    """Recompute every BatchNorm's running statistics from the current weights ("precise
    BN"): a plain average over up to ``_NORM_BATCHES`` training batches, no gradients.

    Why: the momentum-averaged running statistics lag the weights. At the peak of the
    one-cycle schedule the weights move faster than they follow, and when the features vary
    little between structures (one composition, polymorphs that differ only in geometry) a
    small lag is a shift of many standard deviations: validation in eval mode then read
    2-34 (standardised units) while the same weights with batch statistics read 0.2-0.3,
    so early stopping kept epoch 3-6 in 4 of 5 members (benchmarks/polymorphs.py).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(train_idx) < 2:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    rng = np.random.default_rng([seed, 7])
    with torch.no_grad():
        for b in _batches(len(train_idx), batch_size, rng)[:_NORM_BATCHES]:
            if len(b) >= 2:
                model(collate([graphs[i] for i in train_idx[b]]))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def _train_member(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one member (runs in a worker process or inline). Returns its best state."""
    with flush_denormals():
        return _train_member_inner(payload)


def _train_member_inner(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("single_thread", True):
        torch.set_num_threads(1)
    cfg = EnsembleConfig.from_dict(payload["config"])
    seed = int(payload["seed"])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    graphs: list[CrystalGraph] = payload["graphs"]
    y = torch.from_numpy(payload["y"]).float()
    train_idx, val_idx = payload["train_idx"], payload["val_idx"]
    n_main = int(payload["n_main"])
    model = build_model(cfg.member_architecture(int(payload.get("member", 0))), y.shape[1],
                        cfg.hidden, cfg.layers, cfg.cutoff, cfg.edge_activation)
    if payload.get("init_state") is not None:
        model.load_state_dict(payload["init_state"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _lr_schedule(opt, cfg.lr, cfg.epochs * max(1, math.ceil(len(train_idx) / cfg.batch_size)))
    val_graphs = [graphs[i] for i in val_idx]
    val_y = payload["y"][val_idx, :n_main]
    best, best_state, best_epoch, stale, history = math.inf, None, -1, 0, []
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        if payload.get("freeze_norm"):  # fine-tuning on a few samples must not move BN stats
            for mod in model.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        for b in _batches(len(train_idx), cfg.batch_size, rng):
            if len(b) < 2 and not payload.get("freeze_norm"):
                continue  # BatchNorm in training mode needs two samples
            idx = train_idx[b]
            loss = _masked_loss(model(collate([graphs[i] for i in idx])), y[idx], n_main,
                                cfg.aux_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if not payload.get("freeze_norm"):
            _refresh_norm_stats(model, graphs, train_idx, cfg.batch_size, seed + epoch)
        if len(val_graphs):
            pred = _evaluate(model, val_graphs)[:, :n_main]
            ok = np.isfinite(val_y)
            val = float(np.abs(pred - val_y)[ok].mean()) if ok.any() else float(loss.detach())
        else:
            val = float(loss.detach())
        history.append(val)
        if payload.get("verbose"):
            print(f"[member seed {seed}] epoch {epoch + 1}/{cfg.epochs} val {val:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if val < best - 1e-6:
            best, best_epoch, stale = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    return {"state": best_state or model.state_dict(), "best_epoch": best_epoch,
            "best_val": best, "history": history, "seconds": time.perf_counter() - t0}


def _nanmae(pred: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(y)
    return float(np.abs(pred[ok] - y[ok]).mean()) if ok.any() else float("nan")


def _as_target_matrix(targets: np.ndarray | dict[str, Any], n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    if isinstance(targets, dict):
        if not targets:
            raise ValueError("targets dict is empty")
        names = tuple(targets)
        cols = [np.asarray(targets[k], dtype=np.float64).reshape(-1) for k in names]
    else:
        arr = np.asarray(targets, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        names = ("e_form",) if arr.shape[1] == 1 else tuple(f"y{i}" for i in range(arr.shape[1]))
        cols = [arr[:, j] for j in range(arr.shape[1])]
    for name, col in zip(names, cols, strict=True):
        if col.shape[0] != n:
            raise ValueError(f"target {name!r} has {col.shape[0]} values for {n} structures")
        if np.isinf(col).any():
            raise ValueError(f"target {name!r} contains infinite values (use NaN for missing)")
    return np.stack(cols, axis=1), names


#: edges per inference batch (see ``Ensemble.predict_graphs``): ~8 MB per 128-channel edge tensor
PREDICT_MAX_EDGES = 16384


def _edge_capped_batches(graphs: Sequence[CrystalGraph], batch_size: int,
                         max_edges: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) slices of at most ``batch_size`` graphs whose edges stay
    within ``max_edges`` (a single larger graph still forms a batch of its own)."""
    if batch_size < 1 or max_edges < 1:
        raise ValueError(f"batch_size and max_edges must be >= 1, got {batch_size}, {max_edges}")
    out: list[tuple[int, int]] = []
    start, edges = 0, 0
    for i, g in enumerate(graphs):
        e = int(g.src.shape[0])
        if i > start and (i - start >= batch_size or edges + e > max_edges):
            out.append((start, i))
            start, edges = i, 0
        edges += e
    if start < len(graphs):
        out.append((start, len(graphs)))
    return out


class Ensemble:
    """K trained networks plus target scaling and a calibrated spread."""

    def __init__(self, config: EnsembleConfig, outputs: tuple[str, ...], y_mean: np.ndarray,
                 y_std: np.ndarray, states: list[dict[str, torch.Tensor]], n_aux: int,
                 inflation: np.ndarray | None = None, metrics: dict[str, Any] | None = None):
        self.config = config
        self.outputs = tuple(outputs)
        self.y_mean = np.asarray(y_mean, dtype=np.float64)
        self.y_std = np.asarray(y_std, dtype=np.float64)
        self.n_aux = int(n_aux)
        self.inflation = (np.ones(len(outputs)) if inflation is None
                          else np.asarray(inflation, dtype=np.float64))
        self.metrics: dict[str, Any] = dict(metrics or {})
        self.members: list[torch.nn.Module] = []
        for k, state in enumerate(states):
            m = build_model(config.member_architecture(k), len(outputs) + self.n_aux, config.hidden,
                            config.layers, config.cutoff, config.edge_activation)
            m.load_state_dict(state)
            m.eval()
            self.members.append(m)
        self.cache = GraphCache(config.cutoff, config.max_neighbors,
                                angular=config.angular)
        self._stacked: dict[tuple[int, ...], StackedCGCNN] = {}

    # ------------------------------------------------------------------ prediction
    def graphs(self, structures: Sequence[Structure], use_cache: bool = True) -> list[CrystalGraph]:
        if use_cache:
            return self.cache.graphs(structures)
        return [build_graph(s, self.config.cutoff, self.config.max_neighbors,
                            self.config.angular) for s in structures]

    def predict_graphs(self, graphs: Sequence[CrystalGraph], batch_size: int = 128,
                       max_edges: int = PREDICT_MAX_EDGES, stacked: bool = True) -> PredictionTable:
        """Members × structures × outputs table in physical units.

        A batch holds at most ``batch_size`` crystals and (beyond its first crystal)
        ``max_edges`` edges. Why the edge cap: inference is memory-bound (edge gathers,
        softplus, sigmoid over edges × 2·hidden floats); 128 cells of ~110 atoms make ~95 MB
        per edge tensor, far past the cache, and ran 1.4-1.5× slower per CPU second than
        batches of ~11 such cells (``benchmarks/surrogate.py speed_large``). Small cells keep
        whole batches of 128. Predictions do not depend on the batching (tested).

        ``stacked``: the CGCNN members run side by side as one :class:`StackedCGCNN` (the same
        function to ~1e-6, 1.6-1.9× faster on ~100-atom cells); ``False`` runs each member's
        own forward pass (the reference the benchmark and tests compare with).
        """
        n_out = len(self.outputs)
        values = np.empty((len(self.members), len(graphs), n_out))
        groups = self._member_groups() if stacked else [[k] for k in range(len(self.members))]
        with torch.inference_mode(), flush_denormals():
            for start, stop in _edge_capped_batches(graphs, batch_size, max_edges):
                batch = collate(graphs[start:stop])
                rbf = self.members[0].rbf(batch.dist)  # same expansion for every member
                for group in groups:
                    if len(group) > 1:
                        out = self._stacked[tuple(group)](batch, rbf)[:, :, :n_out]
                    else:
                        out = self.members[group[0]](batch, rbf)[None, :, :n_out]
                    values[group, start:stop] = out.double().numpy() * self.y_std + self.y_mean
        return PredictionTable(values, self.outputs, self.inflation.copy())

    def _member_groups(self) -> list[list[int]]:
        """Members that run together: all CGCNN members as one stack, the others alone."""
        cg = [k for k, m in enumerate(self.members) if isinstance(m, CGCNN)]
        if len(cg) > 1 and tuple(cg) not in self._stacked:
            self._stacked[tuple(cg)] = StackedCGCNN([self.members[k] for k in cg])
        rest = [[k] for k in range(len(self.members)) if k not in cg]
        return ([cg] if len(cg) > 1 else [[k] for k in cg]) + rest

    def predict(self, structures: Sequence[Structure], *, use_cache: bool = True,
                batch_size: int = 128, max_edges: int = PREDICT_MAX_EDGES,
                stacked: bool = True) -> PredictionTable:
        if len(structures) == 0:
            return PredictionTable(np.empty((len(self.members), 0, len(self.outputs))),
                                   self.outputs, self.inflation.copy())
        return self.predict_graphs(self.graphs(structures, use_cache), batch_size, max_edges,
                                   stacked)

    # ------------------------------------------------------------------ calibration
    def calibrate(self, graphs: Sequence[CrystalGraph], y: np.ndarray, level: float = 0.9) -> None:
        """Fit one inflation factor per output so ``level`` of ``y`` falls in the interval."""
        y = np.asarray(y, dtype=np.float64).reshape(len(graphs), -1)
        table = self.predict_graphs(graphs)
        z = math.sqrt(2.0) * _erfinv(level)
        for j in range(len(self.outputs)):
            ok = np.isfinite(y[:, j])
            if ok.sum() < 5 or table.values.shape[0] < 2:
                continue
            ratio = np.abs(y[ok, j] - table.mean[ok, j]) / np.maximum(table.raw_std[ok, j], 1e-12)
            self.inflation[j] = max(float(np.quantile(ratio, level)) / z, 1e-6)

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """Serialise (config, scaling, calibration, weights); ``from_bytes`` restores it exactly."""
        buf = io.BytesIO()
        torch.save({
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "outputs": list(self.outputs),
            "y_mean": self.y_mean.tolist(),
            "y_std": self.y_std.tolist(),
            "n_aux": self.n_aux,
            "inflation": self.inflation.tolist(),
            "metrics": {k: v for k, v in self.metrics.items()
                        if isinstance(v, (int, float, str, bool, list))},
            "states": [m.state_dict() for m in self.members],
        }, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Ensemble:
        try:
            blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupted or foreign bytes
            raise ValueError(f"not a saved surrogates.Ensemble: {exc}") from exc
        if not isinstance(blob, dict) or blob.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported ensemble format "
                             f"{blob.get('format_version') if isinstance(blob, dict) else type(blob)}")
        return cls(EnsembleConfig.from_dict(blob["config"]), tuple(blob["outputs"]),
                   np.array(blob["y_mean"]), np.array(blob["y_std"]), blob["states"],
                   blob["n_aux"], np.array(blob["inflation"]), blob["metrics"])

    # ------------------------------------------------------------------ fine-tuning
    def fine_tune(self, structures: Sequence[Structure], targets: dict[str, Any], *,
                  epochs: int = 30, lr: float = 5e-4, seed: int = 0) -> Ensemble:
        """Continue training every member on new labels (e.g. campaign yields under the
        ``"yield"`` output); missing outputs are NaN. Returns a new Ensemble; self is unchanged.

        Why warm start: campaign data arrive a few dozen at a time; retraining from scratch on
        them would forget the computed formation energies.
        """
        unknown = set(targets) - set(self.outputs)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}; this ensemble has {list(self.outputs)}")
        n = len(structures)
        y = np.full((n, len(self.outputs) + self.n_aux), np.nan)
        for name, col in targets.items():
            j = self.outputs.index(name)
            y[:, j] = (np.asarray(col, dtype=np.float64) - self.y_mean[j]) / self.y_std[j]
        graphs = self.graphs(structures)
        cfg = EnsembleConfig.from_dict({**self.config.to_dict(), "epochs": epochs, "lr": lr,
                                        "patience": epochs})
        states = []
        for k, m in enumerate(self.members):
            res = _train_member({"config": cfg.to_dict(), "seed": seed * 1000 + k, "graphs": graphs,
                                 "member": k,
                                 "single_thread": False, "freeze_norm": True,
                                 "y": y, "train_idx": np.arange(n), "val_idx": np.arange(0),
                                 "n_main": len(self.outputs), "init_state": m.state_dict()})
            states.append(res["state"])
        return Ensemble(self.config, self.outputs, self.y_mean, self.y_std, states, self.n_aux,
                        self.inflation, {**self.metrics, "fine_tuned_on": n})


def validation_split(n: int, config: EnsembleConfig) -> tuple[np.ndarray, np.ndarray]:
    """(validation rows sorted, fit rows in training order) of ``train_ensemble`` on ``n``
    labelled structures: no member trains on the validation rows, and the inflation is fitted
    on them. Public so a caller can calibrate a spread built on top of the members (e.g.
    ``DeltaEnsemble``'s combined spread) on the same held-back rows; a function of ``n`` and
    ``config.seed`` / ``config.val_fraction`` only."""
    order = np.random.default_rng(config.seed).permutation(n)
    n_val = max(1, int(round(config.val_fraction * n)))
    return np.sort(order[:n_val]), order[n_val:]


def train_ensemble(
    structures: Sequence[Structure],
    targets: np.ndarray | dict[str, Any],
    config: EnsembleConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    member_map: Callable[[Callable, list], list] | None = None,
) -> Ensemble:
    """Train ``config.members`` networks on bootstrap resamples; calibrate on a held-out split.

    ``member_map(fn, payloads)``: where the members train instead of the spawn pool (e.g.
    ``surrogates.screening.ray_member_map``: one Ray task each); it must return fn's results in order.

    ``targets``: an array (one output, named ``"e_form"``) or ``{output_name: values}`` with
    NaN for missing labels (e.g. ``{"e_form": ..., "yield": ...}``).
    """
    cfg = config or EnsembleConfig()
    n = len(structures)
    if n < 4:
        raise ValueError(f"need at least 4 labelled structures to train, got {n}")
    y, names = _as_target_matrix(targets, n)
    with warnings.catch_warnings():  # an output without labels yet (e.g. yield) is allowed
        warnings.simplefilter("ignore", RuntimeWarning)
        y_mean = np.nanmean(y, axis=0)
        y_std = np.nanstd(y, axis=0)
    y_mean = np.where(np.isfinite(y_mean), y_mean, 0.0)
    y_std = np.where(np.isfinite(y_std) & (y_std > 1e-12), y_std, 1.0)
    ys = (y - y_mean) / y_std
    if cfg.aux_targets:
        aux = aux_matrix(list(structures), cfg.aux_targets)
        aux = (aux - aux.mean(axis=0)) / np.maximum(aux.std(axis=0), 1e-12)
        ys = np.concatenate([ys, aux], axis=1)
    t0 = time.perf_counter()
    cache = GraphCache(cfg.cutoff, cfg.max_neighbors, angular=cfg.angular)
    graphs = cache.graphs(structures)
    t_graph = time.perf_counter() - t0
    val_idx, fit_idx = validation_split(n, cfg)
    n_val = len(val_idx)
    payloads = []
    for k in range(cfg.members):
        member_rng = np.random.default_rng([cfg.seed, k])
        idx = (member_rng.choice(fit_idx, size=len(fit_idx), replace=True) if cfg.bootstrap
               and cfg.members > 1 else fit_idx)
        payloads.append({"config": cfg.to_dict(), "seed": cfg.seed * 1000 + k, "graphs": graphs,
                         "member": k,
                         "y": ys, "train_idx": idx, "val_idx": val_idx, "n_main": len(names),
                         "verbose": progress is not None})
    t1 = time.perf_counter()
    workers = min(cfg.workers, cfg.members)
    if member_map is not None:
        results = list(member_map(_train_member, payloads))
    elif workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(pool.map(_train_member, payloads))
    else:
        results = [_train_member({**p, "single_thread": False}) for p in payloads]
    t_train = time.perf_counter() - t1
    if progress:
        for k, r in enumerate(results):
            progress(f"member {k}: best epoch {r['best_epoch']}, val MAE (std units) "
                     f"{r['best_val']:.4f}, {r['seconds']:.1f} s")
    ens = Ensemble(cfg, names, y_mean, y_std, [r["state"] for r in results], ys.shape[1] - len(names))
    ens.cache = cache
    val_graphs = [graphs[i] for i in val_idx]
    ens.calibrate(val_graphs, y[val_idx])
    table = ens.predict_graphs(val_graphs)
    ens.metrics = {
        "n_train": int(len(fit_idx)), "n_val": int(n_val), "graph_s": t_graph, "train_s": t_train,
        "best_epochs": [int(r["best_epoch"]) for r in results],
        "val_mae": [_nanmae(table.mean[:, j], y[val_idx, j]) for j in range(len(names))],
        "val_coverage_90": [coverage(table, y[val_idx, j], 0.9, j) for j in range(len(names))],
        "inflation": ens.inflation.tolist(),
    }
    return ens
