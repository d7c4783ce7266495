"""What the brain may know of a simulated world: its public information, and nothing else.

Why a type: "the brain never reads the lab's truth" should not rest on which methods of a
``sim_lab.World`` the brain happens to call. :class:`PublicWorld` is built from the world's
public methods once, holds no reference to the world, and has exactly four fields: the wish
list of hypothetical targets, the shelf of precursors, the public structures of known phases,
and the *computed* structures a database publishes for hypothetical targets (as the A-Lab's
targets came with Materials Project / GNoME structures; the lab's true structure differs from
them as experiment differs from computation). A real lab gives the brain no world (``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure


@dataclass(frozen=True, slots=True)
class PublicWorld:
    """A world's public view (reduced formulas).

    ``target_formulas``: hypothetical compositions a campaign may aim at (a wish list, no truth);
    ``precursors``: the powders on the shelf; ``known_structures``: public crystallography of
    known phases, by reduced formula (read-only; hypothetical phases are never in it).
    """

    target_formulas: tuple[str, ...] = ()
    precursors: tuple[str, ...] = ()
    known_structures: Mapping[str, Structure] = field(default_factory=lambda: MappingProxyType({}))
    computed_structures: Mapping[str, Structure] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_world(cls, world: Any) -> PublicWorld:
        """Read a ``sim_lab.World`` through its public methods only; the structures are copies,
        so nothing the brain does to them reaches the lab."""
        known: dict[str, Structure] = {}
        for formula in world.known_formulas():
            try:
                known[formula] = world.known_structure(formula).copy()
            except (KeyError, ValueError):  # not public after all, or a CIF the lab cannot parse
                continue
        computed: dict[str, Structure] = {}
        for formula in world.computed_formulas():  # worlds from older files publish none
            try:
                computed[formula] = world.computed_structure(formula).copy()
            except KeyError:
                continue
        return cls(target_formulas=tuple(world.target_formulas()),
                   precursors=tuple(world.precursors),
                   known_structures=MappingProxyType(known),
                   computed_structures=MappingProxyType(computed))
