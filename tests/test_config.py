"""Campaign configuration: the example is valid, and bad input is named precisely."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from controller.config import CampaignConfig, ConfigError, example_config_text, load_config


@pytest.fixture
def example() -> dict:
    return yaml.safe_load(example_config_text())


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_example_is_valid_and_has_the_a_lab_defaults(tmp_path: Path, example: dict) -> None:
    cfg = load_config(write(tmp_path, example))
    assert isinstance(cfg, CampaignConfig)
    assert cfg.recipes.max_recipes_per_target == 5
    assert cfg.recipes.yield_threshold == 0.5
    assert cfg.campaign.seed == 42


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"campaign": {"name": "x"}, "chemical_space": {"systems": ["Li-O"]}}))
    assert cfg.store.url == "sqlite:///campaign.db"
    assert cfg.lab.kind == "simulated"


def _set(data: dict, path: str, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[keys[-1]] = value
    return data


def _delete(data: dict, path: str) -> dict:
    data = copy.deepcopy(data)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    return data


# (description, mutation, key path the message must name, fragment it must contain)
BAD_INPUTS = [
    ("misspelled key", lambda d: _set(d, "recipes.yeild_threshold", 0.4), "recipes.yeild_threshold", "unknown key"),
    ("unknown section", lambda d: _set(d, "furnace", {"n": 2}), "furnace", "unknown key"),
    ("threshold above 1", lambda d: _set(d, "recipes.yield_threshold", 1.5), "recipes.yield_threshold", "1.5"),
    ("zero recipes", lambda d: _set(d, "recipes.max_recipes_per_target", 0), "recipes.max_recipes_per_target", "0"),
    ("negative seed", lambda d: _set(d, "campaign.seed", -1), "campaign.seed", "-1"),
    ("seed not a number", lambda d: _set(d, "campaign.seed", "forty"), "campaign.seed", "forty"),
    ("bad chemical system", lambda d: _set(d, "chemical_space.systems", ["LiMnO"]), "chemical_space.systems", "LiMnO"),
    ("unknown element", lambda d: _set(d, "chemical_space.systems", ["Li-Xx-O"]), "chemical_space.systems", "Xx"),
    ("unknown acquisition", lambda d: _set(d, "acquisition.strategy", "magic"), "acquisition.strategy", "qlogei"),
    ("unknown architecture", lambda d: _set(d, "surrogate.architecture", "transformer"), "surrogate.architecture", "cgcnn"),
    ("bad endpoint", lambda d: _set(d, "lab.bind", "localhost:5555"), "lab.bind", "tcp://"),
    ("bad store url", lambda d: _set(d, "store.url", "mysql://x/y"), "store.url", "mysql://x/y"),
    ("missing campaign name", lambda d: _delete(d, "campaign.name"), "campaign.name", "missing"),
    ("missing section", lambda d: _delete(d, "chemical_space"), "chemical_space", "missing"),
    ("unknown candidate source", lambda d: _set(d, "chemical_space.candidate_sources", [{"kind": "dreams"}]),
     "chemical_space.candidate_sources", "dreams"),
    ("unknown key in candidate source",
     lambda d: _set(d, "chemical_space.candidate_sources", [{"kind": "substitution", "treshold": 0.1}]),
     "chemical_space.candidate_sources[0].treshold", "unknown key"),
    ("temperature window inverted", lambda d: _set(d, "recipes.min_temperature_c", 1400), "recipes", "min_temperature_c"),
    ("auth without keys", lambda d: _set(d, "lab.auth", {"enabled": True}), "lab.auth", "keys_dir"),
    ("budget zero", lambda d: _set(d, "campaign.budget.max_experiments", 0), "campaign.budget.max_experiments", "0"),
    ("web token too short", lambda d: _set(d, "web.token", "abc"), "web.token", "abc"),
    ("unknown auxiliary target", lambda d: _set(d, "surrogate.auxiliary_targets", ["volume_per_atom"]),
     "surrogate.auxiliary_targets[0]", "charge_balanced"),
]


@pytest.mark.parametrize("description,mutate,key,fragment", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_key_and_value(tmp_path: Path, example: dict, description, mutate, key, fragment) -> None:
    path = write(tmp_path, mutate(example))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message, message
    assert key in message, message
    assert fragment in message, message


def test_unknown_key_lists_allowed_keys(tmp_path: Path, example: dict) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, _set(example, "recipes.yeild_threshold", 0.4)))
    assert "yield_threshold" in str(info.value)  # the allowed key the user meant


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2, column 9"):
        load_config(write(tmp_path, "campaign:\n  name: : bad\n"))


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_several_problems_reported_together(tmp_path: Path, example: dict) -> None:
    data = _set(_set(example, "campaign.seed", -3), "recipes.yield_threshold", 7)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    assert "campaign.seed" in str(info.value) and "recipes.yield_threshold" in str(info.value)


def test_preflight_checks_what_run_needs(tmp_path: Path, example: dict) -> None:
    from controller.config import parse_config, preflight

    ok, notes = preflight(parse_config(example), tmp_path)
    assert ok == [] and any("widened" in n for n in notes) and any("Ca-Ti-O" in n for n in notes)
    bad = copy.deepcopy(example)
    bad["lab"]["world"] = "demoo"
    bad["store"]["url"] = "sqlite:///missing/dir/c.db"
    bad["chemical_space"]["candidate_sources"].append({"kind": "cif_dir", "path": str(tmp_path / "none")})
    errors, _ = preflight(parse_config(bad), tmp_path)
    assert len(errors) == 3
    assert errors[0].startswith("lab.world:") and "demoo" in errors[0]
    assert "candidate_sources[2].path" in errors[1] and errors[2].startswith("store.url:")
    assert all("\n" not in e for e in errors)  # one line each
    world_file = tmp_path / "w.yaml"
    bad["lab"]["world"] = "w.yaml"  # relative to the campaign directory, as run resolves it
    errors, _ = preflight(parse_config(bad), tmp_path)
    assert "w.yaml" in errors[0]
    assert not world_file.exists()


def test_light_large_cell_model_reaches_the_ensemble(tmp_path: Path, example: dict) -> None:
    """``surrogate.edge_activation`` (with hidden / max_neighbors) is what a lab sets to screen
    pools of ~100-atom cells with the light CGCNN; it must reach the members' config, and an
    unknown activation is refused naming the key."""
    from controller.loop.discovery import Surrogate

    light = _set(_set(_set(example, "surrogate.edge_activation", "hard"), "surrogate.hidden", 48),
                 "surrogate.max_neighbors", 8)
    ens = Surrogate(load_config(write(tmp_path, light)))._ensemble_config(seed=3, n=200)
    assert (ens.edge_activation, ens.hidden, ens.max_neighbors) == ("hard", 48, 8)
    assert Surrogate(load_config(write(tmp_path, example)))._ensemble_config(seed=3, n=200).edge_activation == "softplus"
    with pytest.raises(ConfigError, match="edge_activation"):
        load_config(write(tmp_path, _set(example, "surrogate.edge_activation", "tanh")))
