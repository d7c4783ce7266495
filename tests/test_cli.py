"""The synthloop command line as a user runs it (a real console-script process)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

EXE = shutil.which("synthloop", path=str(Path(sys.executable).parent)) or "synthloop"


def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def test_help_lists_the_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("init", "validate", "run", "status", "demo"):
        assert cmd in out.stdout
    for cmd in ("init", "validate", "run", "status", "demo"):
        assert run(cmd, "--help").returncode == 0


def test_init_validate_status_round_trip(tmp_path: Path) -> None:
    camp = tmp_path / "camp"
    assert run("init", str(camp)).returncode == 0
    assert (camp / "campaign.yaml").read_text().startswith("# synthloop campaign configuration")
    assert run("init", str(camp)).returncode != 0  # refuses to overwrite
    ok = run("validate", str(camp / "campaign.yaml"))
    assert ok.returncode == 0 and "ok" in ok.stdout
    st = run("status", str(camp), "--json")
    assert st.returncode == 0
    assert json.loads(st.stdout)["status"] == "not started"


def test_validate_reports_key_and_exits_nonzero(tmp_path: Path) -> None:
    camp = tmp_path / "c"
    run("init", str(camp))
    data = yaml.safe_load((camp / "campaign.yaml").read_text())
    data["recipes"]["yield_threshold"] = 2
    (camp / "campaign.yaml").write_text(yaml.safe_dump(data))
    out = run("validate", str(camp))
    assert out.returncode == 2
    assert "recipes.yield_threshold" in out.stderr and "2" in out.stderr


def test_demo_makes_targets_and_replaces_failed_recipes(tmp_path: Path) -> None:
    # what a new user relies on (issue 19), read from the store, not the printed text: the demo
    # makes at least two targets, and a recipe the planner proposed to replace a failed one
    # makes its target (a simulated campaign is a function of its seed: the demo's always does)
    out = run("demo", "--dir", str(tmp_path / "demo"), "--no-live", timeout=300)
    assert out.returncode == 0, out.stderr
    st = json.loads(run("status", str(tmp_path / "demo"), "--json").stdout)
    assert st["campaign"] == "demo-campaign"
    assert st["events"][0]["kind"] == "campaign.finished"  # newest first
    with sqlite3.connect(tmp_path / "demo" / "campaign.db") as db:
        made = [f for (f,) in db.execute("SELECT formula FROM target WHERE state = 'made'")]
        replaced = db.execute("SELECT count(*) FROM recipe r JOIN experiment e ON e.recipe_id = r.id "
                              "WHERE r.replaces_recipe_id IS NOT NULL").fetchone()[0]
        replacement_made = db.execute(
            "SELECT count(*) FROM recipe r JOIN experiment e ON e.recipe_id = r.id "
            "WHERE r.replaces_recipe_id IS NOT NULL AND e.state = 'succeeded'").fetchone()[0]
    assert len(made) >= 2, (made, out.stdout[-3000:])
    assert replaced >= 1 and replacement_made >= 1, out.stdout[-3000:]
    # the closing summary says it in words, and where to look next
    assert f"made {len(made)} of" in out.stdout and "synthloop status" in out.stdout
    # the campaign log beside the store tells the same story for whoever looks later
    assert "logs/controller.log" in out.stdout  # the summary says where the log is
    log = (tmp_path / "demo" / "logs" / "controller.log").read_text()
    assert "campaign.finished" in log and "experiment.transition" in log


def test_run_refuses_an_unknown_log_level_before_starting(tmp_path: Path) -> None:
    camp = tmp_path / "c"
    run("init", str(camp))
    out = run("run", str(camp), "--no-live", "--log-level", "LOUD")
    assert out.returncode == 2 and "--log-level 'LOUD'" in out.stderr
    assert not (camp / "campaign.db").exists()


def test_status_of_missing_dir_is_a_clear_error(tmp_path: Path) -> None:
    out = run("status", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "no such campaign directory" in out.stderr


# --------------------------------------------------------------------------- what `run` needs


def _camp(tmp_path: Path, name: str = "c", **changes) -> Path:  # noqa: ANN003 - section -> {key: value}
    camp = tmp_path / name
    assert run("init", str(camp)).returncode == 0
    data = yaml.safe_load((camp / "campaign.yaml").read_text())
    for section, values in changes.items():
        data[section].update(values)
    (camp / "campaign.yaml").write_text(yaml.safe_dump(data))
    return camp


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_init_names_the_campaign_after_the_directory(tmp_path: Path) -> None:
    camp = tmp_path / "LiMn spinel 2"
    assert run("init", str(camp)).returncode == 0
    assert yaml.safe_load((camp / "campaign.yaml").read_text())["campaign"]["name"] == "LiMn spinel 2"
    assert run("init", str(tmp_path / "x"), "--name", "ycomp").returncode == 0
    assert yaml.safe_load((tmp_path / "x" / "campaign.yaml").read_text())["campaign"]["name"] == "ycomp"
    _one_line_error(run("init", str(tmp_path / "y"), "--name", "../bad"), "--name")
    assert not (tmp_path / "y").exists()


def test_unknown_world_is_refused_by_validate_and_run_without_a_store(tmp_path: Path) -> None:
    camp = _camp(tmp_path, lab={"world": "demoo"})
    _one_line_error(run("validate", str(camp)), "lab.world", "demoo", "demo")
    _one_line_error(run("run", str(camp), "--no-live"), "lab.world", "demoo")
    assert sorted(p.name for p in camp.iterdir()) == ["campaign.yaml"]  # no half-made store


def test_missing_world_file_is_refused(tmp_path: Path) -> None:
    camp = _camp(tmp_path, lab={"world": "worlds/mine.yaml"})
    _one_line_error(run("validate", str(camp)), "lab.world", "mine.yaml")
    _one_line_error(run("run", str(camp), "--no-live"), "mine.yaml")
    assert not (camp / "campaign.db").exists()


def test_systems_the_world_has_no_target_in_are_refused(tmp_path: Path) -> None:
    camp = _camp(tmp_path, chemical_space={"systems": ["Ca-Ti-O", "Sr-Ti-O"]})
    _one_line_error(run("validate", str(camp)), "chemical_space.systems", "Li-Mn-O", "no target")
    _one_line_error(run("run", str(camp), "--no-live"), "chemical_space.systems")
    assert not (camp / "campaign.db").exists()


def test_validate_states_the_widening_of_the_systems(tmp_path: Path) -> None:
    camp = _camp(tmp_path, chemical_space={"systems": ["Li-Mn-O"]})
    out = run("validate", str(camp))
    assert out.returncode == 0, out.stderr
    assert "widened" in out.stdout and "Ba-O-Ti" in out.stdout


def test_missing_candidate_cif_folder_is_refused(tmp_path: Path) -> None:
    camp = _camp(tmp_path)
    data = yaml.safe_load((camp / "campaign.yaml").read_text())
    data["chemical_space"]["candidate_sources"].append({"kind": "cif_dir", "path": str(tmp_path / "no-cifs")})
    (camp / "campaign.yaml").write_text(yaml.safe_dump(data))
    _one_line_error(run("validate", str(camp)), "candidate_sources[2].path", "not a folder")
    (tmp_path / "no-cifs").mkdir()
    _one_line_error(run("validate", str(camp)), "no .cif file")


def test_store_url_in_a_missing_folder_or_unreachable_server_is_refused(tmp_path: Path) -> None:
    camp = _camp(tmp_path, store={"url": "sqlite:///nowhere/sub/campaign.db"})
    _one_line_error(run("validate", str(camp)), "store.url", "does not exist")
    _one_line_error(run("run", str(camp), "--no-live"), "store.url")
    camp2 = _camp(tmp_path, "pg", store={"url": "postgresql+psycopg://u@127.0.0.1:1/db"})
    _one_line_error(run("validate", str(camp2)), "store.url", "cannot connect")


def test_proposals_lists_the_ids_approve_takes(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_web_support import fill_small_campaign, open_store, write_campaign_dir

    camp = write_campaign_dir(tmp_path / "camp", approval_mode=True)
    with open_store(camp) as store:
        ids = fill_small_campaign(store)
    out = run("proposals", str(camp))
    assert out.returncode == 0, out.stderr
    for key in ("C1", "C2", "D"):
        assert str(ids["experiments"][key]) in out.stdout
    assert "CaTiO3" in out.stdout and "carbonate route" in out.stdout and "°C" in out.stdout
    data = json.loads(run("proposals", str(camp), "--json").stdout)
    listed = {p["experiment"]["id"] for t in data["targets"] for p in t["proposals"]}
    assert listed == {ids["experiments"][k] for k in ("C1", "C2", "D")}
    assert run("approve", str(camp), str(ids["experiments"]["D"])).returncode == 0
    assert str(ids["experiments"]["D"]) not in run("proposals", str(camp)).stdout.split("approve with")[0]


def test_xrd_phases_by_bundled_name_or_formula(tmp_path: Path) -> None:
    listed = run("xrd", "phases")
    assert listed.returncode == 0 and "NiO_225_sym" in listed.stdout
    assert "NiO_225_sym" in run("xrd", "analyze", "--help").stdout  # --help names what is bundled
    import numpy as np

    from controller.xrd import load_phase, simulate_mixture

    pat = simulate_mixture([load_phase("NiO_225_sym")], [1.0], seed=1, two_theta=(30.0, 70.0, 0.04))
    np.savetxt(tmp_path / "nio.xy", np.c_[pat.two_theta, pat.intensities])
    out = run("xrd", "analyze", str(tmp_path / "nio.xy"), "--phases", "NiO", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["phases"][0]["name"] == "NiO_225_sym"
    ambiguous = run("xrd", "analyze", str(tmp_path / "nio.xy"), "--phases", "TiO2")
    assert ambiguous.returncode == 2 and "TiO2_136" in ambiguous.stderr
