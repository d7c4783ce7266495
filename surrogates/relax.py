"""Relaxation of predicted crystal structures with an offline universal potential.

Why: a predicted structure of a hypothetical target (:mod:`prototypes`) is a decoration of
another compound's cell with its volume scaled by ionic radii. Its cell lengths, and so its XRD
peak positions, can be several per cent off what the lab makes, beyond the cell freedom the
XRD analysis gives a target (3 % per cell length), so a made target can stay invisible. A
relaxation with a universal interatomic potential moves atoms and cell to a local minimum of a
DFT-like energy surface. The potential is SevenNet-0 (``sevenn``; weights ship inside the wheel,
nothing is downloaded); the lab's hidden oracle (CHGNet) is never used by the brain.

What it cannot do: change the prototype. A relaxation stays in the basin of the decoration it
starts from, so a wrong structure type stays wrong (``benchmarks/structure_match.py`` measures
how often each limit applies).

Cost (measured by ``benchmarks/structure_match.py``): seconds per small cell on one core, so it
suits the wish list of a campaign (tens of compositions), not a pool of 10^5 candidates.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Structure

log = logging.getLogger(__name__)

#: names a candidate config may give (``none`` = no relaxation; ``auto`` = SevenNet if installed)
RELAXERS = ("none", "sevenn", "auto")
DEFAULT_MODEL = "7net-0"
OPTIMIZERS = ("FIRE", "BFGS")
#: plausibility of a relaxed structure (energy per atom in eV, closest pair in Å): DFT-like total
#: energies of inorganic solids lie within a few eV of -5 eV/atom, and no bond is shorter than
#: ~0.7 Å (O-H 0.96, H2 0.74)
MIN_ENERGY, MAX_ENERGY, MIN_DISTANCE = -20.0, 5.0, 0.6


class RelaxerUnavailable(ImportError):
    """A relaxation was asked for but its potential's package is not installed."""


@dataclass(frozen=True)
class Relaxation:
    """The outcome of one relaxation.

    ``steps``: optimiser steps taken (at most the cap); ``converged``: the largest force (and,
    with the cell free, stress × volume per atom) fell below ``fmax`` within the cap;
    ``seconds``: wall time of the optimisation; ``cpu_seconds``: the process's CPU time over it
    (the honest figure on a shared machine; equal to the wall time on an idle single thread);
    ``volume_change``: relaxed / start volume − 1.
    """

    structure: Structure
    energy_per_atom: float
    steps: int
    converged: bool
    seconds: float
    cpu_seconds: float
    volume_change: float


def sevenn_available() -> bool:
    """True when the optional ``sevenn`` package can be imported (no import is done here)."""
    return importlib.util.find_spec("sevenn") is not None


def sevenn_calculator(model: str, *, missing: ImportError | None = None) -> Any:
    """SevenNet's ASE calculator on the CPU (its weights ship in the wheel). ``missing`` is the
    error raised when the optional package is absent, so each caller names its own remedy."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise (missing or RelaxerUnavailable(
            "relax: sevenn needs the optional 'sevenn' package "
            "(pip install 'synthloop[pretrained]'); set relax: none to skip relaxation")) from exc
    return SevenNetCalculator(model, device="cpu")


class Relaxer:
    """Positions and (optionally) cell relaxed with ASE's FIRE or BFGS under a step cap.

    ``calculator``: an ASE calculator to use instead of SevenNet (e.g. the pretrained prior's
    own, so one model is loaded once). The SevenNet calculator is loaded on first use and kept;
    calls are serialised by a lock because one calculator holds one model state.
    ``primitive``: relax the primitive cell (same crystal, same powder pattern; a spinel's
    56-atom conventional cell is 14 atoms, and the potential's cost grows with the atoms).
    """

    def __init__(self, *, model: str = DEFAULT_MODEL, fmax: float = 0.05, max_steps: int = 200,
                 optimizer: str = "FIRE", cell: bool = True, primitive: bool = True,
                 calculator: Any | None = None) -> None:
        if max_steps < 1 or not fmax > 0:
            raise ValueError(f"relaxation needs max_steps >= 1 and fmax > 0, got {max_steps}, {fmax}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if calculator is None and not sevenn_available():
            # fail when configured, not halfway through a campaign
            raise RelaxerUnavailable(
                "relax: sevenn needs the optional 'sevenn' package "
                "(pip install 'synthloop[pretrained]'); set relax: none to skip relaxation")
        self.model = model
        self.fmax = float(fmax)
        self.max_steps = int(max_steps)
        self.optimizer = optimizer
        self.cell = cell
        self.primitive = primitive
        self._calc = calculator
        self._custom = calculator is not None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """What relaxed a structure, for provenance: ``sevenn:7net-0`` or the calculator's class."""
        return type(self._calc).__name__ if self._custom else f"sevenn:{self.model}"

    def calculator(self) -> Any:
        if self._calc is None:
            self._calc = sevenn_calculator(self.model)
        return self._calc

    def relax(self, structure: Structure) -> Relaxation:
        """Relax a copy of ``structure`` (oxidation states dropped: the potential takes elements).

        A relaxation that blows up (non-finite energy, volume below a fifth or above five times
        the start) raises ValueError naming the composition: a caller keeps the unrelaxed cell.
        """
        from ase.filters import FrechetCellFilter
        from ase.optimize import BFGS, FIRE
        from pymatgen.io.ase import AseAtomsAdaptor

        plain = structure.copy()
        plain.remove_oxidation_states()
        if not plain.is_ordered:
            raise ValueError(f"{plain.composition.reduced_formula}: a disordered structure cannot be "
                             "relaxed with a potential (order it first)")
        if self.primitive:
            plain = plain.get_primitive_structure()
        atoms = AseAtomsAdaptor.get_atoms(plain)
        with self._lock:
            atoms.calc = self.calculator()
            target = FrechetCellFilter(atoms) if self.cell else atoms
            opt = (FIRE if self.optimizer == "FIRE" else BFGS)(target, logfile=None)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                converged = bool(opt.run(fmax=self.fmax, steps=self.max_steps))
                energy = float(atoms.get_potential_energy()) / len(atoms)
            except Exception as exc:  # noqa: BLE001 - name the structure, keep the cause
                raise ValueError(f"relaxing {plain.composition.reduced_formula} failed: {exc}") from exc
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        relaxed = AseAtomsAdaptor.get_structure(atoms)
        ratio = relaxed.volume / plain.volume
        closest = _closest_distance(relaxed)
        # a universal potential has unphysical holes at short range: started from overlapping
        # atoms it fuses them (measured: a mis-set spinel template reached 1e15 eV/atom with
        # atoms 0.03 A apart), so a result is kept only if it is physically plausible
        if (not np.isfinite(energy) or not 0.2 < ratio < 5.0 or not MIN_ENERGY < energy < MAX_ENERGY
                or closest < MIN_DISTANCE):
            raise ValueError(f"relaxation of {plain.composition.reduced_formula} collapsed "
                             f"(volume x{ratio:.2f}, {energy:.3g} eV/atom, closest atoms "
                             f"{closest:.2f} A)")
        return Relaxation(relaxed, energy, int(opt.get_number_of_steps()), converged, seconds, cpu,
                          float(ratio - 1.0))


def _closest_distance(structure: Structure) -> float:
    """Shortest interatomic distance including periodic images, if below MIN_DISTANCE + 1 Å
    (else inf: only short contacts matter here)."""
    pairs = structure.get_all_neighbors(MIN_DISTANCE + 1.0)
    dists = [n.nn_distance for site in pairs for n in site]
    return float(min(dists)) if dists else float("inf")


def make_relaxer(kind: str | Relaxer | None, **options: Any) -> Relaxer | None:
    """The relaxer a config names: ``none``/None → None; ``sevenn`` → a SevenNet relaxer or
    :class:`RelaxerUnavailable` when the package is missing; ``auto`` → SevenNet if installed,
    else None (logged). A :class:`Relaxer` is returned as is."""
    if kind is None or isinstance(kind, Relaxer):
        return kind
    if kind not in RELAXERS:
        raise ValueError(f"unknown relax option {kind!r}; choose one of {', '.join(RELAXERS)}")
    if kind == "none":
        return None
    if kind == "auto" and not sevenn_available():
        log.info("relax: auto — sevenn is not installed, predicted structures stay unrelaxed")
        return None
    return Relaxer(**options)
