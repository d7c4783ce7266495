"""Human-in-the-loop actions through the CLI, on a real store: approve, reject, pause,
resume, stop — each a logged state change, wrong-state requests refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlmodel import select
from typer.testing import CliRunner

from controller.cli import app
from controller.config import example_config_text
from controller.loop import write_report
from controller.store import (
    Campaign,
    Event,
    Experiment,
    ExperimentState,
    Measurement,
    PhaseAnalysisRow,
    Recipe,
    Store,
    Target,
    pack_array,
)

cli = CliRunner()


@pytest.fixture
def campaign_dir(tmp_path: Path) -> Path:
    """A campaign directory whose store holds two proposed experiments."""
    d = tmp_path / "camp"
    d.mkdir()
    data = yaml.safe_load(example_config_text())
    data["campaign"]["approval_mode"] = True
    (d / "campaign.yaml").write_text(yaml.safe_dump(data))
    with Store.for_campaign_dir(d) as store:
        camp = store.ensure_campaign(data["campaign"]["name"], seed=1)
        with store.session() as s:
            t = Target(campaign_id=camp.id, formula="BaTiO3")
            s.add(t)
            s.flush()
            r = Recipe(target_id=t.id, ordinal=1, precursors=[{"formula": "BaCO3", "moles": 1, "mass_g": 1}],
                       profile=[{"ramp_c_per_min": 5, "setpoint_c": 1000, "dwell_min": 60}])
            s.add(r)
            s.flush()
            for i in range(2):
                s.add(Experiment(campaign_id=camp.id, target_id=t.id, recipe_id=r.id, sample_id=f"S{i}"))
    return d


def _state(d: Path, eid: int) -> str:
    with Store.for_campaign_dir(d) as store, store.session() as s:
        return s.get(Experiment, eid).state


def test_approve_and_reject_are_logged_with_the_user(campaign_dir: Path) -> None:
    out = cli.invoke(app, ["approve", str(campaign_dir), "1"])
    assert out.exit_code == 0, out.output
    assert _state(campaign_dir, 1) == ExperimentState.APPROVED
    out = cli.invoke(app, ["reject", str(campaign_dir), "2", "--reason", "precursor out of stock"])
    assert out.exit_code == 0, out.output
    assert _state(campaign_dir, 2) == ExperimentState.CANCELLED
    with Store.for_campaign_dir(campaign_dir) as store, store.session() as s:
        events = s.exec(select(Event).where(Event.kind == "experiment.transition")).all()
        assert [e.actor.startswith("user:") for e in events] == [True, True]
        assert "precursor out of stock" in s.get(Experiment, 2).reason
    # approving again is refused, naming the state
    again = cli.invoke(app, ["approve", str(campaign_dir), "1"])
    assert again.exit_code == 2 and "'approved'" in again.output
    missing = cli.invoke(app, ["approve", str(campaign_dir), "99"])
    assert missing.exit_code == 2 and "no experiment 99" in missing.output


def test_pause_resume_stop_change_the_campaign_status(campaign_dir: Path) -> None:
    def status() -> str:
        with Store.for_campaign_dir(campaign_dir) as store, store.session() as s:
            return s.exec(select(Campaign)).one().status

    assert cli.invoke(app, ["pause", str(campaign_dir)]).exit_code == 0
    assert status() == "paused"
    assert cli.invoke(app, ["resume", str(campaign_dir)]).exit_code == 0
    assert status() == "running"
    bad = cli.invoke(app, ["resume", str(campaign_dir)])
    assert bad.exit_code == 2 and "not paused" in bad.output
    assert cli.invoke(app, ["stop", str(campaign_dir)]).exit_code == 0
    assert status() == "stopping"
    assert cli.invoke(app, ["resume", str(campaign_dir)]).exit_code == 2


def test_report_and_export_come_from_the_store(campaign_dir: Path) -> None:
    with Store.for_campaign_dir(campaign_dir) as store:
        for to in ("approved", "queued", "running", "measured", "analysed"):
            store.transition(1, to)
        store.transition(1, "succeeded", target_yield=0.8)
        with store.session() as s:
            m = Measurement(experiment_id=1, n_points=2, two_theta=pack_array([10, 11]),
                            intensities=pack_array([1, 2]))
            s.add(m)
            s.flush()
            s.add(PhaseAnalysisRow(measurement_id=m.id, experiment_id=1, target_yield=0.8,
                                   phases=[{"formula": "BaTiO3", "weight_fraction": 0.8, "name": "BaTiO3"},
                                           {"formula": "TiO2", "weight_fraction": 0.2, "name": "TiO2"}]))
        files = write_report(store, store.get_campaign().name, campaign_dir / "report")
    text = files.report.read_text()
    assert "BaTiO3" in text and "yield_per_experiment.png" in text
    assert all(p.exists() and p.stat().st_size > 1000 for p in files.plots)
    csv_lines = files.csv.read_text().splitlines()
    assert len(csv_lines) == 3 and "succeeded" in csv_lines[1]
    import json

    records = json.loads(files.json.read_text())
    assert records[0]["phases"] == {"BaTiO3": 0.8, "TiO2": 0.2} and records[0]["target_yield"] == 0.8
    out = cli.invoke(app, ["report", str(campaign_dir)])
    assert out.exit_code == 0 and (campaign_dir / "report" / "report.md").exists()
