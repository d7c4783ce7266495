"""Campaign and XRD commands print the user's paths as typed.

Rich reads ``[word]`` as a style tag: an error about ``run[old].xrdml`` said ``run.xrdml``, and
the web extra's install hint said ``pip install -e '.'`` (``[web]`` eaten). Found in a user
trial (session 3, h11). In-process through the real Typer app (CliRunner).
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.app import app


def invoke(*args: str):  # noqa: ANN201 - click Result
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})



def _default_sigint() -> None:
    """Give the child Python's own Ctrl-C handling back: pytest-xdist workers run with SIGINT
    ignored, and an ignored disposition survives exec, so Ctrl-C never reached the child in CI."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)

def test_paths_with_brackets_are_printed_whole(tmp_path: Path) -> None:
    missing = tmp_path / "run[old].xrdml"
    out = invoke("xrd", "analyze", str(missing), "--phases", "NiO")
    assert out.exit_code == 2 and "run[old].xrdml" in out.stderr, out.stderr
    camp = tmp_path / "camp[old]"
    out = invoke("validate", str(camp))
    assert out.exit_code == 2 and "camp[old]" in out.stderr, out.stderr
    out = invoke("init", str(tmp_path / "c[x]"))
    assert out.exit_code == 0 and "c[x]/campaign.yaml" in out.stdout, out.stdout
    pool = tmp_path / "pool[x].jsonl"
    out = invoke("screen", str(pool), "--out", str(tmp_path / "s"))
    assert out.exit_code == 2 and "pool[x].jsonl" in out.stderr, out.stderr


def test_serve_without_the_web_extra_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the web app's modules fail to import, as without fastapi/uvicorn installed
    real_import = builtins.__import__

    def no_web(name: str, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002, ANN001, ANN202
        if level and name == "web":
            raise ImportError("No module named 'fastapi'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_web)
    monkeypatch.delitem(sys.modules, "controller.web", raising=False)
    out = invoke("serve", str(tmp_path))
    assert out.exit_code == 2, out.output
    assert "pip install -e '.[web]'" in out.stderr, out.stderr


@pytest.mark.parametrize("command", ["status", "proposals", "report", "pause", "run"])
def test_a_missing_campaign_directory_is_named_as_one(tmp_path: Path, command: str) -> None:
    out = invoke(command, str(tmp_path / "nodir"))
    assert out.exit_code == 2, out.output
    assert "no such campaign directory" in out.stderr and "synthloop init" in out.stderr, out.stderr


def test_run_help_says_max_wall_s_ends_the_campaign() -> None:
    # a user took it for a session limit: the campaign is finished after it (controller/loop
    # stops it as `synthloop stop` does), and a second `run` does nothing
    out = invoke("run", "--help")
    assert out.exit_code == 0
    text = " ".join(out.stdout.replace("│", " ").split())
    assert "synthloop stop" in text and "does not continue it" in text and "SIGTERM" in text


def test_ctrl_c_says_the_campaign_resumes(tmp_path: Path) -> None:
    # Ctrl-C in a terminal signals the whole process group; the run used to exit 130 silently
    import os
    import shutil
    import signal
    import subprocess
    import time

    exe = shutil.which("synthloop", path=str(Path(sys.executable).parent)) or "synthloop"
    camp = tmp_path / "camp"
    assert invoke("init", str(camp)).exit_code == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
    proc = subprocess.Popen([exe, "run", str(camp), "--no-live"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=_default_sigint)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("log:")
        time.sleep(2.0)  # inside run_campaign
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert f"`synthloop run {camp}` resumes it" in err


def test_approve_decides_every_id_and_names_the_refused(tmp_path: Path) -> None:
    # `approve DIR 2 999 5` stopped at 999: 5 was neither approved nor reported
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_web_support import fill_small_campaign, open_store, write_campaign_dir

    camp = write_campaign_dir(tmp_path / "camp", approval_mode=True)
    with open_store(camp) as store:
        ids = fill_small_campaign(store)
    c1, c2, d = (ids["experiments"][k] for k in ("C1", "C2", "D"))
    out = invoke("approve", str(camp), str(c1), "99999", str(d))
    assert out.exit_code == 2, out.output
    assert f"experiment {c1} " in out.stdout and f"experiment {d} " in out.stdout  # both after the bad id
    assert "99999" in out.stderr and "1 of 3" in out.stderr
    out = invoke("reject", str(camp), str(c1), str(c2), "--reason", "out of stock")
    assert out.exit_code == 0, out.output  # approved or proposed: both can be rejected
    assert f"experiment {c1} " in out.stdout and f"experiment {c2} " in out.stdout


def test_status_says_proposed_experiments_wait_for_a_decision(tmp_path: Path) -> None:
    # an approval-mode campaign sat still for minutes with nothing saying why
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_web_support import fill_small_campaign, open_store, write_campaign_dir

    camp = write_campaign_dir(tmp_path / "camp", approval_mode=True)
    with open_store(camp) as store:
        fill_small_campaign(store)
    out = invoke("status", str(camp))
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())
    assert "3 proposed experiment(s) wait for a decision" in text and "synthloop proposals" in text


@pytest.mark.parametrize("args", [["build-world", "--systems", "Li-Mn-O"], ["widen-world", "demo", "--name", "w"]])
def test_world_file_in_a_missing_folder_is_refused_before_the_build(tmp_path: Path, args: list[str]) -> None:
    # build-world ran 5 CPU-minutes of CHGNet before failing on the write
    import time

    t0 = time.process_time()
    out = invoke("sim-lab", *args, "--out", str(tmp_path / "missing" / "w.json"))
    assert out.exit_code == 2, out.output
    assert isinstance(out.exception, SystemExit)
    assert "does not exist" in out.stderr and "--out" in out.stderr
    assert time.process_time() - t0 < 5.0


def test_screen_and_keys_with_a_file_in_the_way_are_one_line_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"prototype": "spinel", "substitute": {"Mg": ["Zn"]}}\n')
    out = invoke("screen", str(pool), "--out", str(blocker / "scores"))
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), out.output
    assert "--out" in out.stderr and "a-file" in out.stderr
    out = invoke("keys", "generate", str(blocker / "keys"))
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), out.output
    assert "cannot write keys" in out.stderr


def test_a_lab_id_on_a_sqlite_store_is_refused_before_a_store_exists(tmp_path: Path) -> None:
    # `run --lab-id A` on SQLite used to create campaign.db and the campaign, then refuse
    import yaml

    camp = tmp_path / "camp"
    assert invoke("init", str(camp)).exit_code == 0
    out = invoke("run", str(camp), "--lab-id", "lab-a", "--no-live")
    assert out.exit_code == 2, out.output
    assert "--lab-id 'lab-a'" in out.stderr and "PostgreSQL" in out.stderr
    assert not (camp / "campaign.db").exists()
    data = yaml.safe_load((camp / "campaign.yaml").read_text())
    data["lab"]["id"] = "lab-a"
    (camp / "campaign.yaml").write_text(yaml.safe_dump(data))
    out = invoke("validate", str(camp))
    assert out.exit_code == 2 and "lab.id 'lab-a'" in out.stderr, out.output


def test_drivers_hint_names_the_endpoint_to_connect_to() -> None:
    # a drivers lab with no driver connected waited silently, then gave up with
    # "no live driver ... (connected: [])" and no word on what to start or where
    from controller.cli.campaign_cmds import _drivers_hint

    assert "--connect tcp://127.0.0.1:5599" in _drivers_hint("tcp://127.0.0.1:5599")
    assert "--connect tcp://THIS-HOST:5555" in _drivers_hint("tcp://0.0.0.0:5555")
    assert "no fixed port" in _drivers_hint("tcp://127.0.0.1:*")
    assert "--connect ipc:///tmp/lab.sock" in _drivers_hint("ipc:///tmp/lab.sock")
