"""The JSON API and pages against a really running server (``synthloop serve`` in a subprocess).

The store is filled through the Store API (tests/test_web_support.py::fill_small_campaign);
the tests in this file share one server and run in file order: the read checks come first,
the write checks each use their own experiment.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web_support import (  # noqa: E402
    TOKEN,
    fill_small_campaign,
    http,
    open_store,
    running_server,
    write_campaign_dir,
)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    directory = write_campaign_dir(tmp_path_factory.mktemp("web") / "camp", approval_mode=True)
    with open_store(directory) as store:
        ids = fill_small_campaign(store)
    return directory, ids


@pytest.fixture(scope="module")
def server(campaign: tuple[Path, dict]):
    with running_server(campaign[0]) as base:
        yield base


def get(base: str, path: str) -> tuple[int, object, dict]:
    return http("GET", base + path)


# --------------------------------------------------------------------------- reads


def test_overview_counts_budget_targets_lab_time_and_instruments(server: str, campaign) -> None:
    status, o, headers = get(server, "/api/overview")
    assert status == 200 and "app;dur=" in headers["server-timing"]
    assert o["approval_mode"] is True and o["budget"]["max_experiments"] == 40
    assert o["experiments"] == {"failed": 1, "succeeded": 1, "running": 1, "proposed": 3}
    assert o["budget_used"] == 3  # three experiments reached the instruments; proposals are free
    assert (o["targets_made"], o["targets_attempted"]) == (1, 2)
    assert o["target_success_rate"] == pytest.approx(0.5)
    assert o["recipe_success_rate"] == pytest.approx(0.5)
    # two complete experiments (20 + 700 + 10 + 8 min) and one finished dosing step (20 min)
    assert o["lab_time"]["instrument_hours"] == pytest.approx((2 * 738 + 20) / 60)
    by_name = {i["driver"]: i for i in o["instruments"]}
    assert by_name["furnace-1"]["status"] == "busy"
    busy = by_name["furnace-1"]["busy"][0]
    assert busy["step"] == "heat" and busy["experiment_id"] == campaign[1]["experiments"]["B"]
    assert by_name["doser-1"]["status"] == "idle" and by_name["xrd-1"]["commands"] == 2


def test_lab_time_is_the_loops_makespan_and_is_cached(server: str, campaign) -> None:
    from controller.loop import lab_days

    directory, ids = campaign
    with open_store(directory) as store:
        expected = lab_days(store, ids["campaign_id"])
    status, first, _ = get(server, "/api/lab-time")
    assert status == 200 and first["lab_days"] == pytest.approx(expected) and expected > 0
    _, second, _ = get(server, "/api/lab-time")
    assert second["cached"] is True and second["lab_days"] == first["lab_days"]


def test_proposal_queue_has_predictions_acquisition_and_recipes(server: str, campaign) -> None:
    ids = campaign[1]
    status, p, _ = get(server, "/api/proposals")
    assert status == 200 and p["total"] == 3 and p["approval_mode"] is True
    formulas = [t["formula"] for t in p["targets"]]
    assert formulas == ["CaTiO3", "Li2MnO3"]  # highest acquisition value first
    ca = p["targets"][0]
    assert ca["acquisition_value"] == pytest.approx(0.5)
    assert ca["predicted"]["p_stable"] == pytest.approx(0.6)
    assert set(ca["predictions"]) == {"e_decomp", "yield"} and ca["predictions"]["yield"]["std"] == 0.15
    recipes = {item["experiment"]["id"]: item["recipe"] for item in ca["proposals"]}
    r = recipes[ids["experiments"]["C1"]]
    assert r["reaction"] == "1 CaCO3 + 1 TiO2 -> CaTiO3"
    assert r["driving_force_mev_per_atom"] == 80.0 and r["max_temperature_c"] == 1000
    assert r["rationale"] == "carbonate route" and r["profile"][0]["dwell_min"] == 600
    planned = recipes[ids["experiments"]["C2"]]  # the planner's Reaction.to_dict() form
    assert planned["reaction"] == "CaO + TiO2 -> CaTiO3"
    assert planned["remaining_driving_force_mev_per_atom"] == 45.0 and planned["predicted_intermediates"] == ["CaTi2O5"]


def test_in_flight_results_and_xrd_with_fit_and_difference(server: str, campaign) -> None:
    ex = campaign[1]["experiments"]
    _, f, _ = get(server, "/api/in-flight")
    (running,) = f["experiments"]
    assert running["id"] == ex["B"] and running["current_step"]["step"] == "heat"
    assert running["current_step"]["driver"] == "furnace-1"
    _, r, _ = get(server, "/api/results")
    assert r["total"] == 2 and {e["state"] for e in r["experiments"]} == {"succeeded", "failed"}
    status, x, _ = get(server, f"/api/experiments/{ex['A2']}/xrd")
    assert status == 200 and len(x["two_theta"]) == len(x["observed"]) == len(x["fitted"]) == 3501
    assert x["difference"][100] == pytest.approx(x["observed"][100] - x["fitted"][100])
    assert x["phase_ticks"]["Li2MnO3"] == [18.8, 44.6, 65.5] and x["target_yield"] == pytest.approx(0.71)
    status, svg_text, headers = get(server, f"/api/experiments/{ex['A2']}/xrd.svg")
    assert status == 200 and headers["content-type"].startswith("image/svg+xml")
    assert 'class="observed"' in svg_text and 'class="fitted"' in svg_text and 'class="difference"' in svg_text
    # the XRD analysis' own curves (to_dict(include_curves=True)) on its trimmed grid
    _, x1, _ = get(server, f"/api/experiments/{ex['A1']}/xrd")
    assert len(x1["two_theta"]) == len(x1["fitted"]) == 3301 and x1["two_theta"][0] == pytest.approx(12.0)
    assert set(x1["phase_patterns"]) == {"LiMn2O4", "Li2MnO3"}
    _, d, _ = get(server, f"/api/experiments/{ex['A2']}")
    assert [p["formula"] for p in d["analyses"][0]["phases"]] == ["LiMn2O4", "Li2MnO3"]
    assert [s["step"] for s in d["steps"]] == ["dose_mix", "heat", "recover", "xrd"]
    # an experiment without a pattern says so
    status, body, _ = get(server, f"/api/experiments/{ex['C1']}/xrd")
    assert status == 404 and "no XRD measurement" in body["detail"]


def test_recipe_history_says_which_replaced_which_and_why(server: str, campaign) -> None:
    ids = campaign[1]
    status, h, _ = get(server, f"/api/targets/{ids['targets'][0]}/recipes")
    assert status == 200 and h["target"]["state"] == "made"
    first, second = h["recipes"]
    assert second["replaces_recipe_id"] == first["id"] and first["replaced_by"] == [second["id"]]
    assert "avoids that intermediate" in second["rationale"]
    assert first["experiments"][0]["state"] == "failed" and second["experiments"][0]["target_yield"] == 0.71


def test_model_quality_parity_against_measured_yields_and_calibration(server: str, campaign) -> None:
    _, m, _ = get(server, "/api/models")
    (model,) = m["models"]
    assert model["kind"] == "surrogate" and model["predictions"] == 8 and model["metrics"]["n_known"] == 120
    status, q, _ = get(server, f"/api/models/{model['id']}")
    assert status == 200 and q["parity_source"] == "measured yields"
    (point,) = q["parity"]  # only LiMn2O4 has measured yields; its best is 0.71
    assert point["observed"] == pytest.approx(0.71) and point["std"] == 0.15
    assert [c["nominal"] for c in q["calibration"]][:2] == [0.1, 0.2]
    assert q["summary"]["mae"] == pytest.approx(abs(point["predicted"] - 0.71))
    # the version was trained before the yield was measured: an out-of-sample point
    assert point["held_out"] is True and q["summary"]["n_held_out"] == 1


@pytest.mark.parametrize("path, text", [
    ("/", "Instruments"), ("/proposals", "carbonate route"), ("/in-flight", "furnace-1"),
    ("/results", "succeeded"), ("/targets", "LiMn2O4"), ("/models", "surrogate"),
])
def test_pages_render_what_the_api_returns(server: str, path: str, text: str) -> None:
    status, html, headers = get(server, path)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert text in html and "/static/app.js" in html and "http://" not in html.split("<main")[1]


def test_experiment_target_and_model_pages_embed_svg_plots(server: str, campaign) -> None:
    ids = campaign[1]
    _, html, _ = get(server, f"/experiments/{ids['experiments']['A2']}")
    assert '<figure id="xrd-plot"' in html and "LiMn2O4 (target)" in html and "71.0 %" in html
    _, html, _ = get(server, f"/targets/{ids['targets'][0]}")
    assert f"replaces <a href=\"#recipe-{ids['recipes']['A1']}\">" in html
    _, html, _ = get(server, f"/models/{ids['model_version_id']}")
    assert html.count("<svg") == 2 and 'class="point"' in html


@pytest.mark.parametrize("path, what", [
    ("/api/experiments/99999", "no experiment with id 99999"),
    ("/api/experiments/abc", "no experiment with id 'abc'"),
    ("/api/experiments/0/xrd.svg", "no experiment with id 0"),
    ("/api/targets/424242/recipes", "no target with id 424242"),
    ("/api/models/77", "no model version with id 77"),
    ("/api/nothing-here", "no page or endpoint"),
])
def test_bad_ids_give_404_with_a_message(server: str, path: str, what: str) -> None:
    status, body, _ = get(server, path)
    assert status == 404 and what in body["detail"]


def test_bad_id_on_a_page_is_an_html_404_without_a_trace(server: str) -> None:
    status, html, headers = get(server, "/experiments/99999")
    assert status == 404 and headers["content-type"].startswith("text/html")
    assert "no experiment with id 99999" in html and "Traceback" not in html


def test_openapi_documents_reads_writes_and_the_bearer_scheme(server: str) -> None:
    _, spec, _ = get(server, "/openapi.json")
    paths = spec["paths"]
    for p in ("/api/overview", "/api/proposals", "/api/in-flight", "/api/results", "/api/events/stream",
              "/api/experiments/{experiment_id}/approve", "/api/recipes/{recipe_id}/conditions"):
        assert p in paths
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())
    assert paths["/api/experiments/{experiment_id}/approve"]["post"]["security"]


# --------------------------------------------------------------------------- writes


def test_unauthenticated_or_wrong_token_writes_are_refused(server: str, campaign) -> None:
    exp = campaign[1]["experiments"]["D"]
    status, body, headers = http("POST", f"{server}/api/experiments/{exp}/approve", {})
    assert status == 401 and "Bearer" in body["detail"] and headers.get("www-authenticate") == "Bearer"
    status, body, _ = http("POST", f"{server}/api/experiments/{exp}/approve", {}, token="not-the-token")
    assert status == 401 and "wrong token" in body["detail"]
    status, _, _ = http("PATCH", f"{server}/api/recipes/{campaign[1]['recipes']['D']}/conditions",
                        {"setpoint_c": 900})
    assert status == 401
    _, e, _ = get(server, f"/api/experiments/{exp}")
    assert e["experiment"]["state"] == "proposed"  # nothing changed


def test_approve_is_the_cli_transition_with_a_web_actor(server: str, campaign) -> None:
    exp = campaign[1]["experiments"]["D"]
    status, body, _ = http("POST", f"{server}/api/experiments/{exp}/approve", {"user": "alice"}, token=TOKEN)
    assert status == 200 and body["state"] == "approved"
    _, ev, _ = get(server, f"/api/events?after={campaign[1]['last_event_id']}")
    (approval,) = [e for e in ev["events"] if e["entity_id"] == exp and e["to_state"] == "approved"]
    assert approval["actor"] == "web:alice" and approval["from_state"] == "proposed"
    status, body, _ = http("POST", f"{server}/api/experiments/{exp}/approve", {}, token=TOKEN)
    assert status == 409 and "only 'proposed' experiments can be approved" in body["detail"]
    status, body, _ = http("POST", f"{server}/api/experiments/99999/approve", {}, token=TOKEN)
    assert status == 404 and "no experiment 99999" in body["detail"]
    _, f, _ = get(server, "/api/in-flight")
    assert exp in [e["id"] for e in f["experiments"]]


def test_reject_cancels_with_the_reason(server: str, campaign) -> None:
    exp = campaign[1]["experiments"]["C2"]
    status, body, _ = http("POST", f"{server}/api/experiments/{exp}/reject",
                           {"reason": "CaO is hygroscopic here"}, token=TOKEN)
    assert status == 200 and body["state"] == "cancelled" and "CaO is hygroscopic" in body["reason"]
    status, body, _ = http("POST", f"{server}/api/experiments/{campaign[1]['experiments']['A1']}/reject",
                           {}, token=TOKEN)
    assert status == 409 and "'failed'" in body["detail"]


def test_edit_conditions_of_a_proposed_recipe_keeps_the_old_values(server: str, campaign) -> None:
    rid = campaign[1]["recipes"]["C1"]
    url = f"{server}/api/recipes/{rid}/conditions"
    status, r, _ = http("PATCH", url, {"setpoint_c": 1050, "dwell_min": 480, "user": "bob"}, token=TOKEN)
    assert status == 200 and r["profile"][0]["setpoint_c"] == 1050 and r["profile"][0]["dwell_min"] == 480
    (edit,) = r["details"]["edits"]
    assert edit["old"]["setpoint_c"] == 1000 and edit["actor"] == "web:bob"
    status, body, _ = http("PATCH", url, {"setpoint_c": 1500}, token=TOKEN)
    assert status == 422 and "outside the campaign's window" in body["detail"]
    status, body, _ = http("PATCH", url, {"dwell_min": -5}, token=TOKEN)
    assert status == 422 and "dwell_min" in body["detail"]
    status, body, _ = http("PATCH", url, {"segment": 3, "setpoint_c": 900}, token=TOKEN)
    assert status == 422 and "segment 3 does not exist" in body["detail"]
    status, body, _ = http("PATCH", f"{server}/api/recipes/{campaign[1]['recipes']['A1']}/conditions",
                           {"setpoint_c": 900}, token=TOKEN)
    assert status == 409 and "only recipes whose experiments are all 'proposed'" in body["detail"]
    _, p, _ = get(server, "/api/proposals")
    shown = [i["recipe"] for t in p["targets"] for i in t["proposals"] if i["recipe"]["id"] == rid]
    assert shown[0]["max_temperature_c"] == 1050


def test_pause_resume_stop_are_the_cli_actions(server: str, campaign) -> None:
    status, _, _ = http("POST", f"{server}/api/campaign/pause", {})
    assert status == 401
    status, body, _ = http("POST", f"{server}/api/campaign/resume", {}, token=TOKEN)
    assert status == 409 and "not paused" in body["detail"]
    status, body, _ = http("POST", f"{server}/api/campaign/pause", {"user": "carol"}, token=TOKEN)
    assert status == 200 and body["status"] == "paused"
    _, o, _ = get(server, "/api/overview")
    assert o["status"] == "paused" and any(e["kind"] == "campaign.status" and e["actor"] == "web:carol"
                                           for e in o["recent_events"])
    status, body, _ = http("POST", f"{server}/api/campaign/resume", {}, token=TOKEN)
    assert status == 200 and body["status"] == "running"
    status, body, _ = http("POST", f"{server}/api/campaign/explode", {}, token=TOKEN)
    assert status == 404 and "use pause, resume or stop" in body["detail"]


# --------------------------------------------------------------------------- live events


def _read_sse(resp, want_id: int, deadline: float) -> dict:
    event: dict = {}
    while time.monotonic() < deadline:
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("data: "):
            event = json.loads(line[6:])
        elif line == "" and event:
            if event["id"] >= want_id:
                return event
            event = {}
    raise AssertionError(f"no event {want_id} on the stream in time")


def test_server_sent_events_push_new_rows_and_resume_after_last_event_id(server: str, campaign) -> None:
    directory, ids = campaign
    with open_store(directory) as store:
        start = store.recent_events(ids["campaign_id"], limit=1)[0].id
        with urllib.request.urlopen(f"{server}/api/events/stream?after={start}", timeout=10) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            with store.session() as s:
                ev = store.log(s, "operator.note", campaign_id=ids["campaign_id"], actor="user:test",
                               message="furnace 2 door sticks")
                s.flush()
                new_id = ev.id
            got = _read_sse(resp, new_id, time.monotonic() + 10)
            assert got["kind"] == "operator.note" and got["message"] == "furnace 2 door sticks"
        # a reconnecting client sends Last-Event-ID and gets what it missed, nothing twice
        with store.session() as s:
            store.log(s, "operator.note", campaign_id=ids["campaign_id"], actor="user:test", message="missed")
        req = urllib.request.Request(f"{server}/api/events/stream?after=0", headers={"Last-Event-ID": str(new_id)})
        with urllib.request.urlopen(req, timeout=10) as resp:
            got = _read_sse(resp, new_id + 1, time.monotonic() + 10)
            assert got["message"] == "missed"


def test_overview_follows_steps_finishing_after_the_first_view(server: str, campaign) -> None:
    """Instrument totals are cached and advanced from the event log: a step that finishes later counts."""
    directory, ids = campaign
    _, before, _ = get(server, "/api/overview")
    with open_store(directory) as store, store.session() as s:
        from sqlmodel import select

        from controller.store import StepCommand

        heat = s.exec(select(StepCommand).where(StepCommand.experiment_id == ids["experiments"]["B"],
                                                StepCommand.step == "heat")).one()
        store.step_transition(s, heat.command_id, "succeeded", result={"sim_time_min": 690})
    _, after, _ = get(server, "/api/overview")
    assert after["lab_time"]["instrument_hours"] == pytest.approx(before["lab_time"]["instrument_hours"] + 11.5)
    furnace = {i["driver"]: i for i in after["instruments"]}["furnace-1"]
    assert furnace["status"] == "idle" and furnace["commands"] == 3 and furnace["busy"] == []


# --------------------------------------------------------------------------- write policies


def test_read_only_mode_refuses_writes_even_with_the_token(campaign) -> None:
    directory, ids = campaign
    with running_server(directory, "--read-only") as base:
        _, health, _ = get(base, "/api/health")
        assert health["read_only"] is True and health["writes_enabled"] is False
        status, body, _ = http("POST", f"{base}/api/experiments/{ids['experiments']['C1']}/approve", {}, token=TOKEN)
        assert status == 403 and "read-only" in body["detail"]
        _, html, _ = get(base, "/proposals")
        assert "read-only" in html and 'data-action="approve"' not in html


def test_server_started_before_the_campaign_then_writes_without_a_configured_token(tmp_path: Path) -> None:
    directory = write_campaign_dir(tmp_path / "notoken", token=None)
    with running_server(directory) as base:
        _, o, _ = get(base, "/api/overview")
        assert o["status"] == "not started" and o["experiments_total"] == 0
        status, html, _ = get(base, "/")
        assert status == 200 and "not started" in html
        status, body, _ = http("POST", f"{base}/api/experiments/1/approve", {}, token="anything-at-all")
        assert status == 403 and "set web.token" in body["detail"]  # policy is checked first
        with open_store(directory) as store:  # the loop starts the campaign while the server runs
            ids = fill_small_campaign(store, name="web-test")
        _, o, _ = get(base, "/api/overview")
        assert o["status"] == "created" and o["experiments_total"] == 6
        status, body, _ = http("POST", f"{base}/api/experiments/{ids['experiments']['C1']}/approve", {},
                               token="anything-at-all")
        assert status == 403 and "set web.token" in body["detail"]


def test_serve_reports_a_bad_campaign_dir(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-c", "from controller.cli import main; main()", "serve",
                           str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such campaign directory" in " ".join(proc.stderr.split())
    from controller.config import ConfigError
    from controller.web import load_campaign

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="campaign.yaml: no such file"):
        load_campaign(tmp_path / "empty")


def test_overview_leads_with_made_of_attempted_and_plots_yields(server: str, campaign) -> None:
    status, html, _ = get(server, "/")
    assert status == 200
    import re

    assert 'id="card-targets"' in html and re.search(r"of \d+ attempted", html)
    assert html.count('class="yield-point"') >= 2  # the two analysed experiments of target A
    assert 'class="threshold"' in html and 'id="model-error-plot"' in html
    _, o, _ = get(server, "/api/overview")
    assert [p["experiment_id"] for p in o["yields"]] == sorted(p["experiment_id"] for p in o["yields"])
    assert "targets_open" in o and o["yield_threshold"] == 0.5
