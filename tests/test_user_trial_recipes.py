"""`synthloop recipes propose|replay` as a new user tries them: bad input gets a one-line error
naming the problem (never a traceback), and the output says what its numbers rest on.

Found in a user trial (session 3, h11). In-process through the real Typer app (CliRunner):
the same code path as the console script, without paying the torch import once per case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.app import app

HEADER = "precursors,temperature_c,dwell_min,products\n"
TABLE = HEADER + (
    "Li2CO3;MnO2,800,720,LiMn2O4:0.82;Mn2O3:0.18\n"
    "LiOH;MnO2,700,720,LiMn2O4:0.6;Li2MnO3:0.4\n"
    "Li2CO3;MnCO3,800,720,LiMn2O4:0.1;Mn3O4:0.9\n"
)


def invoke(*args: str):  # noqa: ANN201 - click Result
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    p = tmp_path / "OUTCOMES.csv"
    p.write_text(TABLE)
    return p


def test_replay_target_that_is_not_a_formula_is_a_usage_error(table: Path) -> None:
    out = invoke("recipes", "replay", str(table), "--target", "Foo")
    assert out.exit_code == 2, out.output
    assert isinstance(out.exception, SystemExit)  # no traceback
    assert "--target" in out.stderr and "Foo" in out.stderr


@pytest.mark.parametrize("dwell", ["nan", "inf"])
def test_replay_non_finite_dwell_names_the_row(tmp_path: Path, dwell: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + f"Li2CO3;MnO2,800,{dwell},LiMn2O4:0.8\n")
    out = invoke("recipes", "replay", str(bad), "--target", "LiMn2O4")
    assert out.exit_code == 2, out.output
    assert isinstance(out.exception, SystemExit)
    assert "row 2" in out.stderr and "dwell_min" in out.stderr


def test_replay_with_no_success_says_there_is_nothing_to_find(tmp_path: Path) -> None:
    t = tmp_path / "none.csv"
    t.write_text(HEADER + "Li2CO3;MnO2,800,720,LiMn2O4:0.2;Mn2O3:0.8\nLi2CO3;Mn2O3,800,720,Mn2O3:1.0\n")
    out = invoke("recipes", "replay", str(t), "--target", "LiMn2O4")
    assert out.exit_code == 0, out.output
    assert "every successful set found" not in out.stdout and "None" not in out.stdout
    assert "no recorded experiment reached the threshold 0.5" in out.stdout and "row 2" in out.stdout


def test_replay_of_a_target_the_table_never_names_warns(table: Path) -> None:
    out = invoke("recipes", "replay", str(table), "--target", "BaTiO3")
    assert out.exit_code == 0, out.output
    assert "no row" in out.stderr and "BaTiO3" in out.stderr and "--target" in out.stderr


def test_replay_names_precursors_as_the_table_does_and_hides_library_noise(table: Path) -> None:
    out = invoke("recipes", "replay", str(table), "--target", "LiMn2O4", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    sets = [tuple(e["precursors"]) for e in data["order"]]
    assert ("LiOH", "MnO2") in sets and not any("LiHO" in s for s in sets)
    assert "deprecated" not in out.stderr  # torch.jit's notice is not the user's business


def test_replay_help_names_every_column() -> None:
    out = invoke("recipes", "replay", "--help")
    assert out.exit_code == 0
    assert "dwell_min" in out.stdout  # was eaten as rich markup ("[dwell_min]")


def test_propose_off_table_target_says_its_energy_is_a_hull_guess() -> None:
    out = invoke("recipes", "propose", "Li3YCl6", "--stock", "LiCl,YCl3", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["recipes"][0]["target_energy"]["kind"] == "hull_estimate"
    assert "not on the Materials Project table" in out.stderr and "--e-form" in out.stderr
    known = invoke("recipes", "propose", "BaTiO3", "--stock", "BaCO3,TiO2")
    assert known.exit_code == 0 and "target energy:" in known.stdout
    assert "Materials Project" in known.stdout and "not on the Materials Project table" not in known.stderr


def test_propose_without_stock_for_an_element_the_library_lacks_points_at_stock() -> None:
    out = invoke("recipes", "propose", "Li3YCl6")
    assert out.exit_code == 2
    assert "Cl" in out.stderr and "--stock" in out.stderr


@pytest.mark.parametrize("text,words", [("stock: [Li2CO3, MnO2\n", "not valid YAML"),
                                        ("# nothing here\n", "lists no formulas")])
def test_propose_with_a_broken_stock_file_is_a_usage_error(tmp_path: Path, text: str, words: str) -> None:
    shelf = tmp_path / ("shelf.yaml" if "[" in text else "shelf.txt")
    shelf.write_text(text)
    out = invoke("recipes", "propose", "LiMn2O4", "--stock", str(shelf))
    assert out.exit_code == 2, out.output
    assert isinstance(out.exception, SystemExit)
    assert "--stock" in out.stderr and words in out.stderr
