"""The opt-in SevenNet-feature kernel prior as the campaign's surrogate (``surrogate.prior``).

Real SevenNet-0 features of real rock-salt crystals, real public formation energies (the
shipped Materials Project table); only the missing-package case is a fault injected here.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from controller.config import ConfigError, parse_config

BASE = {"campaign": {"name": "prior"}, "chemical_space": {"systems": ["Na-Cl"]}}

# experimental rock-salt lattice constants (Å)
TRAIN = {"NaCl": 5.64, "KCl": 6.29, "NaBr": 5.97, "LiF": 4.03, "LiCl": 5.13, "NaF": 4.63,
         "KF": 5.35, "MgO": 4.21, "CaO": 4.81, "BaO": 5.52, "NaI": 6.47, "RbCl": 6.58}
HELD_OUT = {"KBr": 6.60, "LiBr": 5.50, "KI": 7.07, "SrO": 5.16}


def rocksalt(formula: str, a: float) -> Structure:
    comp = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()
    from pymatgen.core import Composition

    cation, anion = (str(el) for el in sorted(Composition(formula).elements,
                                              key=lambda e: e.X))
    comp.replace_species({"Na": cation, "Cl": anion})
    return comp


def config(prior: str = "sevennet_kernel"):
    return parse_config({**BASE, "surrogate": {"prior": prior, "ensemble_size": 3, "hidden": 16,
                                               "layers": 2, "epochs": 40}})


def test_default_config_needs_no_prior() -> None:
    assert parse_config(BASE).surrogate.prior == "none"


def test_missing_sevenn_fails_at_config_check_and_at_featurisation(monkeypatch) -> None:
    # the injected fault: `import sevenn` fails as if the optional package were not installed
    monkeypatch.setitem(sys.modules, "sevenn", None)
    monkeypatch.setitem(sys.modules, "sevenn.calculator", None)
    assert parse_config(BASE).surrogate.prior == "none"  # the default never needs it
    with pytest.raises(ConfigError, match=r"surrogate\.prior.*'sevenn' package"):
        parse_config({**BASE, "surrogate": {"prior": "sevennet_kernel"}})
    from surrogates.prior_features import PotentialFeatures, PotentialFeaturesUnavailable

    with pytest.raises(PotentialFeaturesUnavailable, match="'sevenn' package"):
        PotentialFeatures(pooling="site").compute([rocksalt("NaCl", 5.64)])


pytest_sevenn = pytest.mark.skipif(
    __import__("importlib").util.find_spec("sevenn") is None, reason="needs sevenn")


@pytest.fixture(scope="module")
def trained():
    """A campaign surrogate pretrained with the prior on the pool's known phases."""
    from controller.loop.discovery import Surrogate

    cands = [SimpleNamespace(id=f"c{i}", formula=f, structure=rocksalt(f, a).as_dict())
             for i, (f, a) in enumerate(TRAIN.items())]
    surrogate = Surrogate(config(), None, seed=0)
    return surrogate, cands, surrogate.train(cands, [], None, seed=0)


@pytest_sevenn
def test_config_with_the_prior_validates() -> None:
    assert config().surrogate.prior == "sevennet_kernel"


@pytest_sevenn
def test_prior_surrogate_beats_the_mean_on_held_out_crystals(trained) -> None:
    import surrogates

    _, _, result = trained
    model = result.model
    assert isinstance(model, surrogates.DeltaEnsemble) and result.metrics["prior"] == "sevennet_kernel"
    assert result.n_train == len(TRAIN)
    kp = surrogates.known_phases()
    held = [rocksalt(f, a) for f, a in HELD_OUT.items()]
    y = np.array([kp.formation_energy(f) for f in HELD_OUT])
    table = model.predict(held)
    je = table.column("e_form")
    mae = np.abs(table.mean[:, je] - y).mean()
    mean_mae = np.abs(np.mean([kp.formation_energy(f) for f in TRAIN]) - y).mean()
    assert mae < 0.5 * mean_mae, (mae, mean_mae)
    assert (table.std[:, je] > 0).all()
    # the prior's spread is added to the members' in quadrature (what acquisition reads)
    own = model.ensemble.predict(held).std[:, je]
    assert np.allclose(table.std[:, je], np.hypot(own, model.prior_std(held)), rtol=1e-6)
    assert np.allclose(table.mean[:, je], model.ensemble.predict(held).mean[:, je]
                       + model.prior_predict(held))


@pytest_sevenn
def test_checkpoint_reloads_identically_and_fine_tunes_the_yield(trained) -> None:
    import surrogates

    surrogate, cands, result = trained
    structs = [Structure.from_dict(c.structure) for c in cands]
    held = [rocksalt(f, a) for f, a in HELD_OUT.items()]
    again = surrogate.load_model(result.checkpoint)  # what a restarted campaign does
    assert isinstance(again, surrogates.DeltaEnsemble)
    a, b = result.model.predict(structs + held), again.predict(structs + held)
    assert np.array_equal(a.values, b.values) and a.outputs == b.outputs
    assert np.array_equal(a.inflation, b.inflation)
    with pytest.raises(ValueError, match="DeltaEnsemble"):
        surrogates.DeltaEnsemble.from_bytes(result.checkpoint[:200])
    # the yield head fine-tunes on campaign results; the prior and e_form pass through
    results = [(c.id, y) for c, y in zip(cands[:6], [0.9, 0.1, 0.8, 0.2, 0.7, 0.3], strict=True)]
    tuned = surrogate.train(cands, results, again, seed=1)
    assert isinstance(tuned.model, surrogates.DeltaEnsemble)
    assert tuned.model.prior is again.prior
    assert tuned.metrics["kind"] == "fine-tuned on campaign yields"
    jy = a.column("yield")
    assert not np.allclose(tuned.model.predict(structs).mean[:, jy], a.mean[:len(structs), jy])
    reloaded = surrogate.load_model(tuned.checkpoint)
    assert np.array_equal(reloaded.predict(held).values, tuned.model.predict(held).values)
    # a plain ensemble checkpoint still loads as one
    assert isinstance(surrogate.load_model(again.ensemble.to_bytes()), surrogates.Ensemble)


@pytest_sevenn
def test_pool_is_featurised_once_per_process(trained) -> None:
    from surrogates.prior_features import shared_features

    surrogate, cands, result = trained
    feats = shared_features(pooling="site")
    assert result.model.potential is feats
    assert surrogate.load_model(result.checkpoint).potential is feats
    cached = len(feats.state())
    structs = [Structure.from_dict(c.structure) for c in cands]
    result.model.predict(structs)
    assert len(feats.state()) == cached  # the pool's rows were computed in training
