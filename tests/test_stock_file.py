"""A campaign's stock file is what the planner proposes from (user trial: ``recipes.stock: FILE``
was silently ignored and a real lab was offered the whole precursor library; a CSV inventory
export failed naming neither file nor line; ``validate`` passed a missing stock file)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

from controller.config import example_config_text, parse_config, preflight
from controller.loop.brain import Brain
from controller.loop.public_world import PublicWorld
from recipes import RecipeError, read_stock_file


def _drivers_cfg(**recipes) -> dict:
    data = yaml.safe_load(example_config_text())
    data["lab"].update(kind="drivers", world=None, bind="tcp://127.0.0.1:5599")
    data["recipes"].update(recipes)
    return data


def test_a_csv_inventory_with_a_header_and_amounts_is_a_stock_file(tmp_path: Path) -> None:
    (tmp_path / "shelf.csv").write_text("formula,amount_g,lot\nLi2CO3,50,A7\n\nMnO2,20,B1\n,3,\n")
    assert read_stock_file(tmp_path / "shelf.csv") == ["Li2CO3", "MnO2"]
    (tmp_path / "shelf.tsv").write_text("precursor\tamount\n# kept dry\nLiOH\t10\n")
    assert read_stock_file(tmp_path / "shelf.tsv") == ["LiOH"]
    (tmp_path / "eu.csv").write_text("\ufeffFormel;Menge\nCo3O4;12,5\n")  # BOM and ';' (Excel, de)
    assert read_stock_file(tmp_path / "eu.csv") == ["Co3O4"]
    (tmp_path / "bare.csv").write_text("Li2CO3,50\nMnO2,20\n")  # no header
    assert read_stock_file(tmp_path / "bare.csv") == ["Li2CO3", "MnO2"]


def test_a_bad_stock_row_names_the_file_and_the_line(tmp_path: Path) -> None:
    (tmp_path / "shelf.csv").write_text("formula,amount_g\nLi2CO3,50\nlithium carbonate,3\n")
    with pytest.raises(RecipeError, match=r"shelf\.csv, line 3: 'lithium carbonate'"):
        read_stock_file(tmp_path / "shelf.csv")
    (tmp_path / "shelf.txt").write_text("formula,amount_g\nLi2CO3,50\n")  # a table saved as .txt
    with pytest.raises(RecipeError, match=r"shelf\.txt, line 1: 'formula'.*save it as \.csv"):
        read_stock_file(tmp_path / "shelf.txt")
    (tmp_path / "s.yaml").write_text("stock: [Li2CO3, Foo!]\n")
    with pytest.raises(RecipeError, match=r"s\.yaml, item 2"):
        read_stock_file(tmp_path / "s.yaml")
    (tmp_path / "only_header.csv").write_text("formula,amount_g\n")
    with pytest.raises(RecipeError, match="lists no formulas"):
        read_stock_file(tmp_path / "only_header.csv")


def test_a_stock_file_restricts_the_planner_of_a_real_lab(tmp_path: Path) -> None:
    (tmp_path / "shelf.csv").write_text("formula,amount_g\nLi2CO3,50\nMnO2,20\n")
    brain = Brain(parse_config(_drivers_cfg(stock="shelf.csv")), base_dir=tmp_path)
    assert brain.stock() == ["Li2CO3", "MnO2"]
    assert set(brain.planner.stock) == {"Li2CO3", "MnO2"}  # was: all 136 library powders
    assert Brain(parse_config(_drivers_cfg(stock=["LiOH"]))).stock() == ["LiOH"]
    assert Brain(parse_config(_drivers_cfg())).stock() is None  # null = the whole library


def test_extra_precursors_are_read_from_the_campaign_directory(tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text(
        "precursors:\n- {formula: Li2CO3, name: our lithium carbonate, kind: carbonate, "
        "melting_c: 723, decomposition_c: 1300, decomposes_to: Li2O, gases: [CO2]}\n")
    brain = Brain(parse_config(_drivers_cfg(stock=["Li2CO3", "MnO2"], extra_precursors="extra.yaml")),
                  base_dir=tmp_path)
    assert brain.planner.library.get("Li2CO3").name == "our lithium carbonate"


def test_a_simulated_lab_s_stock_narrows_the_world_shelf(tmp_path: Path, caplog) -> None:
    data = yaml.safe_load(example_config_text())
    data["recipes"]["stock"] = ["Li2CO3", "MnO2", "Co3O4"]
    world = PublicWorld(target_formulas=("LiMn2O4",), precursors=("Li2CO3", "LiOH", "MnO2"),
                        known_structures=MappingProxyType({}), computed_structures=MappingProxyType({}))
    with caplog.at_level(logging.WARNING, logger="controller.loop.brain"):
        assert Brain(parse_config(data), world=world).stock() == ["Li2CO3", "MnO2"]
    assert "Co3O4 skipped" in caplog.text


def test_preflight_names_a_missing_or_broken_recipe_file(tmp_path: Path) -> None:
    errors, _ = preflight(parse_config(_drivers_cfg(stock="nostock.txt")), tmp_path)
    assert len(errors) == 1 and errors[0].startswith("recipes.stock:") and "nostock.txt" in errors[0]
    assert str(tmp_path) in errors[0]  # where run looks for it
    (tmp_path / "shelf.csv").write_text("formula,amount_g\nLi2CO3,50\nLiCarb,1\n")
    errors, _ = preflight(parse_config(_drivers_cfg(stock="shelf.csv")), tmp_path)
    assert len(errors) == 1 and "shelf.csv, line 3" in errors[0]
    (tmp_path / "shelf.csv").write_text("formula,amount_g\nLi2CO3,50\n")
    assert preflight(parse_config(_drivers_cfg(stock="shelf.csv")), tmp_path)[0] == []
    errors, _ = preflight(parse_config(_drivers_cfg(extra_precursors="extra.yaml")), tmp_path)
    assert len(errors) == 1 and errors[0].startswith("recipes.extra_precursors:") and "extra.yaml" in errors[0]
    errors, _ = preflight(parse_config(_drivers_cfg(stock=[])), tmp_path)
    assert errors and "empty list" in errors[0]


def test_preflight_notes_stock_a_simulated_world_lacks(tmp_path: Path) -> None:
    data = copy.deepcopy(yaml.safe_load(example_config_text()))
    data["recipes"]["stock"] = ["Li2CO3", "Xe3Kr2O9"]
    errors, notes = preflight(parse_config(data), tmp_path)
    assert errors == [] and any("Xe3Kr2O9 not on world" in n for n in notes)


def test_preflight_refuses_a_drivers_lab_on_a_random_port(tmp_path: Path) -> None:
    data = _drivers_cfg()
    data["lab"]["bind"] = "tcp://127.0.0.1:*"
    errors, _ = preflight(parse_config(data), tmp_path)
    assert len(errors) == 1 and errors[0].startswith("lab.bind") and "fixed port" in errors[0]
    data["lab"]["bind"] = "ipc:///tmp/lab.sock"
    assert preflight(parse_config(data), tmp_path)[0] == []
