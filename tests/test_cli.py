"""The synthloop command line as a user runs it (a real console-script process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

EXE = shutil.which("synthloop", path=str(Path(sys.executable).parent)) or "synthloop"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=env)


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


def test_demo_creates_store_and_status_reads_it(tmp_path: Path) -> None:
    out = run("demo", "--dir", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr
    st = json.loads(run("status", str(tmp_path / "demo"), "--json").stdout)
    assert st["campaign"] == "demo-campaign"
    assert st["experiments_total"] >= 1
    assert st["events"][0]["kind"] == "campaign.finished"  # newest first


def test_status_of_missing_dir_is_a_clear_error(tmp_path: Path) -> None:
    out = run("status", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "no such file" in out.stderr
