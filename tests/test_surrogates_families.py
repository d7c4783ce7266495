"""Perovskite-family cells (surrogates.perovskite_families) and their place in the candidate pool."""

from __future__ import annotations

from collections import Counter

import pytest

from surrogates.thermo import known_phases


def _by_family(system: str) -> dict[str, dict[str, list]]:
    from surrogates.perovskite_families import enumerate_families

    out: dict[str, dict[str, list]] = {}
    for c in enumerate_families(system):
        out.setdefault(c.provenance["template"], {}).setdefault(c.formula, []).append(c)
    return out


def _cns(structure, symbol: str) -> Counter:
    from surrogates.plausibility import coordination_numbers

    idx = [i for i, s in enumerate(structure) if s.specie.symbol == symbol]
    return Counter(coordination_numbers(structure, idx, {"O"}))


def test_ruddlesden_popper_members_are_charge_balanced_with_their_coordinations() -> None:
    fam = _by_family("Sr-Ti-O")
    for family, formula, a_cns, b_cns in [("RP1", "Sr2TiO4", {9: 2}, {6: 1}),
                                          ("RP2", "Sr3Ti2O7", {9: 2, 12: 1}, {6: 2}),
                                          ("RP3", "Sr4Ti3O10", {9: 2, 12: 2}, {6: 3})]:
        (c,) = fam[family][formula]
        s = c.structure
        assert abs(sum(site.specie.oxi_state for site in s)) < 1e-9
        assert {str(site.specie) for site in s} == {"Sr2+", "Ti4+", "O2-"}
        assert _cns(s, "Sr") == Counter(a_cns) and _cns(s, "Ti") == Counter(b_cns)
        assert 0.75 <= c.provenance["tolerance_factor"] <= 1.10
    # a two-A system fills RP n = 2's two A sites with two ions (charge still balanced)
    assert {"Sr2CaTi2O7", "SrCa2Ti2O7"} <= set(_by_family("Ca-Sr-Ti-O")["RP2"])


def test_family_sites_take_ions_by_role_not_by_likeness_to_the_placeholder() -> None:
    from surrogates.plausibility import perovskite_role_ok

    # La3+ (not like the placeholder Sr2+) on RP's A site with Fe2+: charge balanced La2FeO4
    assert "La2FeO4" in _by_family("La-Fe-O")["RP1"]
    # brownmillerite: Fe3+ in octahedra and tetrahedra
    (c,) = _by_family("Ca-Fe-O")["brownmillerite"]["Ca2Fe2O5"]
    assert _cns(c.structure, "Fe") == Counter({6: 2, 4: 2}) and _cns(c.structure, "Ca") == Counter({10: 4})
    # B-site ordered double perovskites at 1:1 and 1:2
    assert "Ba2MgWO6" in _by_family("Ba-Mg-W-O")["double_rocksalt"]
    assert "Ba3MgTa2O9" in _by_family("Ba-Mg-Ta-O")["double_111"]
    # small cations never take an A site; Ba2+ never an octahedron
    assert _by_family("Li-Mn-O") == {}
    assert not perovskite_role_ok("A", ("Li", 1), 12) and not perovskite_role_ok("A", ("Mg", 2), 12)
    assert perovskite_role_ok("A", ("La", 3), 12) and perovskite_role_ok("A", ("Na", 1), 12)
    assert not perovskite_role_ok("B", ("Ba", 2), 6) and perovskite_role_ok("B", ("Mn", 4), 6)
    # the tolerance widens the octahedral range both ways by default (Sr2+ at 0.84 is in) ...
    assert perovskite_role_ok("B", ("Sr", 2), 6) and not perovskite_role_ok("B", ("Sr", 2), 6, widen="B_lower")
    # ... and the A bound only when asked
    assert perovskite_role_ok("A", ("Li", 1), 12, widen="all")
    with pytest.raises(ValueError, match="widen"):
        perovskite_role_ok("B", ("Ti", 4), 6, widen="everything")
    with pytest.raises(ValueError, match="unknown perovskite famil"):
        from surrogates.perovskite_families import enumerate_families

        enumerate_families("Sr-Ti-O", families=("RP9",))


def test_family_pool_is_novel_and_a_holdout_is_rediscovered() -> None:
    from surrogates.candidate_pool import PoolSettings, build_candidate_pool

    kp = known_phases()
    assert kp.formation_energy("Sr2TiO4") is not None  # known: never offered as novel
    settings = PoolSettings(sources=("families",))
    pool, (rep,) = build_candidate_pool(["Ca-Sr-Ti-O"], settings=settings)
    assert pool and rep.novel_compositions["families"] == len({c.formula for c in pool})
    for c in pool:
        assert kp.formation_energy(c.formula) is None and c.provenance["novel"]
        assert c.source == "perovskite_family"
    assert "Sr2TiO4" not in {c.formula for c in pool}
    again, _ = build_candidate_pool(["Ca-Sr-Ti-O"], settings=settings, holdout={"Sr2TiO4"})
    assert "Sr2TiO4" in {c.formula for c in again}
    # the families are parents of the isovalent step: Ba/Sr mixtures on a Ruddlesden-Popper cell
    mixed, _ = build_candidate_pool(["Ca-Sr-Ti-O"], settings=PoolSettings(
        sources=("families", "partial"), families=("RP1",)))
    parents = {c.provenance.get("parent", "") for c in mixed if c.source == "partial_substitution"}
    assert parents and all(p.startswith("family-") for p in parents)
    with pytest.raises(ValueError, match="unknown perovskite famil"):
        PoolSettings(families=("RP9",))
