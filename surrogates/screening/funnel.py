"""The staged funnel over one chunk: cheap filters first, graphs only for their survivors.

Why staged (as the Azure/PNNL screen that narrowed 32 M candidates to 18): each stage costs
10-1000x the one before, so it only sees what the cheaper ones let through.

====================  ==========================================================  =============
stage                 keeps a candidate when                                      cost
====================  ==========================================================  =============
``expand``            its line expands to a valid composition (generator) or       µs
                      parses (explicit structure); no element repeated
``charge_balance``    one common oxidation state per element makes it neutral      µs (numpy)
``novelty``           its composition is not a Materials Project phase             µs (hashes)
``composition``       the composition model's formation energy <= threshold        µs (numpy)
``gnn``               the ensemble's optimistic formation energy (mean - sigma x   ~1 ms
                      std) <= threshold (graph built from the decorated template)
``hull``              optimistic decomposition energy vs the known hull <= thresh   ms (hull per
                                                                                   system, cached)
====================  ==========================================================  =============

A relaxation stage (a universal potential, seconds per cell) is not part of this funnel: it
belongs after ``hull`` on the few hundred survivors.

:class:`ChunkScreener` holds the models of one worker process; ``screen(chunk)`` returns one
row per candidate (columns as numpy arrays) and per stage its counts and CPU seconds.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .composition import (
    CompositionBatch,
    CompositionModel,
    charge_balanced,
    element_tables,
    is_novel,
)
from .pool import Chunk, PoolLine, _templates, template_elements

STAGES = ("expand", "charge_balance", "novelty", "composition", "gnn", "hull")


@dataclass(frozen=True)
class FunnelSettings:
    """Thresholds of the funnel (eV/atom); ``sigma`` makes the GNN stages optimistic by that
    many ensemble standard deviations, so an uncertain candidate is not dropped early.
    ``charge_balance``/``novelty``/``hull`` off skip those stages and infinite thresholds keep
    everyone: with all of them, the graph ensemble scores every candidate (no funnel)."""

    charge_balance: bool = True
    novelty: bool = True
    composition_max_ev: float = -1.0
    gnn_max_ev: float = -1.0
    hull_max_ev: float = 0.05
    sigma: float = 1.0
    hull: bool = True
    batch_size: int = 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MB; 0 where /proc is unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@dataclass
class _Template:
    """A template prepared once per worker: cell arrays, its graph and when scaling it is exact."""

    elements: list[str]  # digit order of a generator line
    zcols: np.ndarray  # the template's own Z per element (same order)
    amounts: np.ndarray  # reduced amount per element (same order)
    lattice: np.ndarray
    frac: np.ndarray
    site_col: np.ndarray  # per site, its element's column in ``elements``
    cell_amounts: np.ndarray  # atoms per element in the cell
    graph: Any  # CrystalGraph at the template's own geometry
    full: bool  # every centre kept max_neighbors neighbours (not cut by the cutoff)
    max_dist: float


class ChunkScreener:
    """One worker's funnel: the ensemble, the composition model, the known-composition hashes."""

    def __init__(self, model_bytes: bytes, composition: dict[str, np.ndarray], known_keys: np.ndarray,
                 settings: dict[str, Any]):
        import torch  # noqa: PLC0415

        from ..ensemble import Ensemble  # noqa: PLC0415

        torch.set_num_threads(1)
        t0, c0 = time.perf_counter(), time.process_time()
        self.settings = FunnelSettings(**settings)
        self.ensemble = Ensemble.from_bytes(model_bytes)
        self.comp_model = CompositionModel.from_arrays(composition)
        self.known_keys = np.asarray(known_keys, dtype=np.int64)
        self._templates: dict[str, _Template] = {}
        self._radius3 = _radius_cubed()
        if self.settings.hull:
            from ..thermo import known_phases  # noqa: PLC0415

            self._kp = known_phases()
            self._kp._index()  # the table loads here, not inside the first chunk's timing
        self.startup = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}

    def info(self) -> dict[str, Any]:
        """This worker's pid and what loading its models cost (the driver waits on it, so the
        screen's own time starts when every worker is ready)."""
        return {"pid": os.getpid(), **self.startup}

    # ------------------------------------------------------------------ templates and graphs
    def _template(self, tid: str) -> _Template:
        prepared = self._templates.get(tid)
        if prepared is None:
            from pymatgen.core import Element, Structure  # noqa: PLC0415

            from ..formulas import composition  # noqa: PLC0415
            from ..graphs import _graph_from_arrays, structure_arrays  # noqa: PLC0415

            t = _templates()[tid]
            els = template_elements(t)
            comp = composition(t["formula"]).reduced_composition
            s = Structure.from_dict(t["structure"])
            s.remove_oxidation_states()
            lattice, frac, z = structure_arrays(s)
            symbols = [site.specie.symbol for site in s]
            col = np.array([els.index(sym) for sym in symbols], dtype=np.int64)
            cfg = self.ensemble.config
            graph = _graph_from_arrays(lattice, frac, z, cfg.cutoff, cfg.max_neighbors, cfg.angular)
            per_centre = np.bincount(graph.src, weights=graph.weight, minlength=len(z))
            prepared = _Template(els, np.array([int(Element(e).Z) for e in els]), np.array([float(comp[e]) for e in els]), lattice, frac, col,
                                 np.bincount(col, minlength=len(els)).astype(float), graph,
                                 bool((per_centre >= cfg.max_neighbors).all()),
                                 float(graph.dist.max()) if len(graph.dist) else 0.0)
            self._templates[tid] = prepared
        return prepared

    def _generated_graph(self, tpl: _Template, z_cols: np.ndarray) -> Any:
        """The graph of the template decorated with ``z_cols`` (one Z per template element),
        its volume scaled by the ionic volumes (as ``prototypes.StructurePredictor.decorate``
        for a CIF template). An isotropic scale keeps every centre's nearest neighbours, so the
        template's graph with scaled distances *is* the new cell's graph whenever the scaled
        kept distances stay inside the cutoff and no centre was short of neighbours; otherwise
        the neighbour search runs again."""
        from ..graphs import CrystalGraph, _graph_from_arrays  # noqa: PLC0415

        scale = float((tpl.cell_amounts * self._radius3[z_cols]).sum()
                      / (tpl.cell_amounts * self._radius3[tpl.zcols]).sum())
        a = scale ** (1.0 / 3.0)
        z = z_cols[tpl.site_col]
        cfg = self.ensemble.config
        if tpl.full and a * tpl.max_dist <= cfg.cutoff:
            g = tpl.graph
            return CrystalGraph(z=z, src=g.src, dst=g.dst, dist=(g.dist * a).astype(np.float32),
                                weight=g.weight, volume_per_atom=g.volume_per_atom * scale,
                                ang1=g.ang1, ang2=g.ang2)
        return _graph_from_arrays(tpl.lattice * a, tpl.frac, z, cfg.cutoff, cfg.max_neighbors, cfg.angular)

    def decorated_structure(self, tid: str, z_cols: np.ndarray) -> Any:
        """The pymatgen Structure of a generated candidate (for survivors only)."""
        from pymatgen.core import Lattice, Structure  # noqa: PLC0415

        tpl = self._template(tid)
        g = self._generated_graph(tpl, z_cols)
        scale = g.volume_per_atom / tpl.graph.volume_per_atom
        return Structure(Lattice(tpl.lattice * scale ** (1.0 / 3.0)), [int(v) for v in z_cols[tpl.site_col]],
                         tpl.frac)

    # ------------------------------------------------------------------ the funnel
    def screen(self, chunk: Chunk) -> dict[str, Any]:
        s = self.settings
        n = len(chunk)
        stats: list[dict[str, Any]] = []
        cols: dict[str, Any] = {
            "index": np.arange(chunk.start, chunk.stop, dtype=np.int64),
            "line": np.zeros(n, dtype=np.int32), "id": [""] * n, "formula": [""] * n,
            "template": [""] * n, "dropped_at": ["expand"] * n, "error": [None] * n,
            "charge_balanced": np.zeros(n, dtype=bool), "novel": np.zeros(n, dtype=bool),
            "comp_e_form": np.full(n, np.nan, dtype=np.float32),
            "gnn_e_form": np.full(n, np.nan, dtype=np.float32),
            "gnn_e_form_std": np.full(n, np.nan, dtype=np.float32),
            "e_decomp": np.full(n, np.nan, dtype=np.float32),
            "structure": [None] * n,
        }

        def timed(name: str, n_in: int, fn):  # noqa: ANN001, ANN202
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            stats.append({"stage": name, "n_in": n_in, "cpu_s": time.process_time() - c0,
                          "wall_s": time.perf_counter() - t0})
            return out

        # 1. expand: compositions for every candidate, structures for explicit ones
        z_rows, amt_rows, where, explicit = timed("expand", n, lambda: self._expand(chunk, cols))
        alive = np.zeros(n, dtype=bool)
        alive[where] = True
        stats[-1]["n_out"] = int(alive.sum())
        k = max((len(r) for r in z_rows), default=1)
        zmat = np.zeros((n, k), dtype=np.int64)
        amat = np.zeros((n, k))
        for i in where:
            zmat[i, : len(z_rows[i])] = z_rows[i]
            amat[i, : len(amt_rows[i])] = amt_rows[i]
        batch = CompositionBatch(zmat, amat)

        def stage(name: str, fn):  # noqa: ANN001, ANN202 - fn(idx) -> keep mask over idx
            nonlocal alive
            idx = np.flatnonzero(alive)
            keep = timed(name, len(idx), lambda: fn(idx)) if len(idx) else np.zeros(0, dtype=bool)
            if not len(idx):
                stats.append({"stage": name, "n_in": 0, "cpu_s": 0.0, "wall_s": 0.0})
            for i in idx[~keep]:
                cols["dropped_at"][i] = name
            alive = np.zeros(n, dtype=bool)
            alive[idx[keep]] = True
            stats[-1]["n_out"] = int(alive.sum())

        def charge(idx: np.ndarray) -> np.ndarray:
            ok = charge_balanced(batch.take(idx))
            cols["charge_balanced"][idx] = ok
            return ok

        def novelty(idx: np.ndarray) -> np.ndarray:
            ok = is_novel(batch.take(idx), self.known_keys)
            cols["novel"][idx] = ok
            return ok

        def comp(idx: np.ndarray) -> np.ndarray:
            e = self.comp_model.predict(batch.take(idx))
            cols["comp_e_form"][idx] = e
            return e <= s.composition_max_ev

        def gnn(idx: np.ndarray) -> np.ndarray:
            graphs = []
            for i in idx:
                if i in explicit:
                    graphs.append(self._explicit_graph(explicit[i]))
                else:
                    graphs.append(self._generated_graph(self._template(cols["template"][i]), zmat_cols[i]))
            table = self.ensemble.predict_graphs(graphs, batch_size=s.batch_size)
            j = table.column("e_form")
            mean, std = table.mean[:, j], table.std[:, j]
            cols["gnn_e_form"][idx] = mean
            cols["gnn_e_form_std"][idx] = std
            return mean - s.sigma * std <= s.gnn_max_ev

        def hull(idx: np.ndarray) -> np.ndarray:
            keep = np.zeros(len(idx), dtype=bool)
            for m, i in enumerate(idx):
                ref = self._kp.hull_reference_energy(cols["formula"][i])
                e = float(cols["gnn_e_form"][i]) - ref
                cols["e_decomp"][i] = e
                keep[m] = e - s.sigma * float(cols["gnn_e_form_std"][i]) <= s.hull_max_ev
            return keep

        zmat_cols = self._zcols  # filled by _expand: per generated candidate, Z per template element
        if s.charge_balance:
            stage("charge_balance", charge)
        if s.novelty:
            stage("novelty", novelty)
        stage("composition", comp)
        stage("gnn", gnn)
        if s.hull:
            stage("hull", hull)
        for i in np.flatnonzero(alive):
            cols["dropped_at"][i] = ""
            st = explicit[i] if i in explicit else self.decorated_structure(cols["template"][i], zmat_cols[i])
            cols["structure"][i] = json.dumps(st.as_dict())
        return {"chunk": chunk.number, "start": chunk.start, "stop": chunk.stop, "columns": cols,
                "stages": stats, "pid": os.getpid(), "peak_rss_mb": peak_rss_mb()}

    def _explicit_graph(self, structure: Any) -> Any:
        from ..graphs import build_graph  # noqa: PLC0415

        cfg = self.ensemble.config
        return build_graph(structure, cfg.cutoff, cfg.max_neighbors, cfg.angular)

    def _expand(self, chunk: Chunk, cols: dict[str, Any]):  # noqa: ANN202
        """Compositions (Z and amounts per candidate) and which rows are valid."""
        chi, _, symbols = element_tables()
        zof = {sym: z for z, sym in enumerate(symbols) if sym}
        n = len(chunk)
        z_rows: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n
        amt_rows: list[np.ndarray] = [np.zeros(0)] * n
        where: list[int] = []
        explicit: dict[int, Any] = {}
        self._zcols: dict[int, np.ndarray] = {}
        for seg in chunk.segments:
            base = seg.first_index - chunk.start
            line: PoolLine = seg.line
            if line.template is None:
                i = base
                cols["line"][i] = line.number
                cols["id"][i] = line.spec.get("id", f"line{line.number}")
                try:
                    st = _parse_explicit(line.spec)
                    from ..graphs import structure_arrays  # noqa: PLC0415

                    structure_arrays(st)  # ordered, Z in range
                except Exception as exc:  # noqa: BLE001 - any parse failure is this line's error
                    cols["error"][i] = f"pool line {line.number}: {type(exc).__name__}: {exc}"
                    continue
                amounts = st.composition.reduced_composition.get_el_amt_dict()
                syms = sorted(amounts)
                z_rows[i] = np.array([zof[x] for x in syms], dtype=np.int64)
                amt_rows[i] = np.array([amounts[x] for x in syms])
                cols["formula"][i] = st.composition.reduced_formula
                explicit[i] = st
                where.append(i)
                continue
            tpl = self._template(line.template)
            subs = line.spec.get("substitute", {})
            options = [np.array([zof[x] for x in subs.get(el, [el])], dtype=np.int64) for el in tpl.elements]
            j = np.arange(seg.lo, seg.hi)
            digits = np.zeros((len(j), len(options)), dtype=np.int64)
            rest = j.copy()
            for c in range(len(options) - 1, -1, -1):
                rest, digits[:, c] = np.divmod(rest, len(options[c]))
            zc = np.stack([options[c][digits[:, c]] for c in range(len(options))], axis=1)
            srt = np.sort(zc, axis=1)
            distinct = (np.diff(srt, axis=1) != 0).all(axis=1)
            prefix = line.spec.get("id", line.template)
            for r in range(len(j)):
                i = base + r
                cols["line"][i] = line.number
                cols["template"][i] = line.template
                cols["id"][i] = prefix + ":" + "-".join(symbols[v] for v in zc[r])
                if not distinct[r]:
                    cols["error"][i] = "an element repeated across template sites"
                    continue
                z_rows[i] = zc[r]
                amt_rows[i] = tpl.amounts
                order = np.lexsort((zc[r], chi[zc[r]]))  # formula order: electronegativity
                cols["formula"][i] = "".join(symbols[zc[r][o]] + _num(tpl.amounts[o]) for o in order)
                self._zcols[i] = zc[r]
                where.append(i)
        return z_rows, amt_rows, np.array(where, dtype=np.int64), explicit


def _num(a: float) -> str:
    return "" if a == 1 else (str(int(a)) if float(a).is_integer() else f"{a:.6g}")


def _parse_explicit(spec: dict[str, Any]) -> Any:
    from pymatgen.core import Structure  # noqa: PLC0415

    if "structure" in spec:
        s = Structure.from_dict(spec["structure"])
    else:
        s = Structure.from_str(spec["cif"], fmt="cif")
    s.remove_oxidation_states()
    return s


def _radius_cubed() -> np.ndarray:
    """Per Z, (average ionic radius, else atomic radius)^3: the volume scale of a substitution
    (the rule of ``prototypes._ionic_volume``)."""
    from ..prototypes import _radius  # noqa: PLC0415

    out = np.ones(len(element_tables()[2]))
    for z, sym in enumerate(element_tables()[2]):
        if sym:
            out[z] = _radius(sym) ** 3
    return out


def merge_stats(per_chunk: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per stage: candidates in and out, CPU and wall seconds summed over chunks, CPU rate."""
    order: list[str] = []
    total: dict[str, dict[str, float]] = {}
    for stats in per_chunk:
        for st in stats:
            name = st["stage"]
            if name not in total:
                order.append(name)
                total[name] = {"n_in": 0, "n_out": 0, "cpu_s": 0.0, "wall_s": 0.0}
            for key in ("n_in", "n_out", "cpu_s", "wall_s"):
                total[name][key] += st.get(key, 0)
    out = []
    for name in order:
        t = total[name]
        rate = t["n_in"] / t["cpu_s"] if t["cpu_s"] > 0 else math.inf
        out.append({"stage": name, "n_in": int(t["n_in"]), "n_out": int(t["n_out"]),
                    "cpu_s": round(t["cpu_s"], 3), "wall_s": round(t["wall_s"], 3),
                    "per_cpu_s": round(rate, 1) if math.isfinite(rate) else None})
    return out
