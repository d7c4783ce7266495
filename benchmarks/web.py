"""Server time of every web page with 10,000 experiments in the store (goal: < 300 ms each).

Fills a fresh SQLite campaign store through the Store API (tests/test_web_support.py::fill_bulk:
10,000 experiments, 2,500 targets, 10,000 recipes, ~33,000 step commands, an event per
experiment, XRD patterns for every 50th finished experiment), starts ``synthloop serve`` in a
subprocess and requests each page and API endpoint ``--repeat`` times. Server time is read
from the ``Server-Timing`` header the app sets (request in → response headers out, i.e. all
SQL and rendering); client time includes loopback HTTP.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/web.py [--experiments 10000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_web_support import fill_bulk, http, open_store, running_server, write_campaign_dir  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--goal-ms", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="synthloop-web-bench-") as tmp:
        campaign = write_campaign_dir(Path(tmp) / "camp", name="web-bench", approval_mode=True)
        t0 = time.perf_counter()
        with open_store(campaign) as store:
            ids = fill_bulk(store, "web-bench", args.experiments, seed=args.seed)
            counts = store.experiment_counts(ids["campaign_id"])
        print(f"filled {sum(counts.values())} experiments {dict(sorted(counts.items()))} "
              f"in {time.perf_counter() - t0:.1f} s")
        paths = {
            "overview": "/", "proposal queue": "/proposals", "in flight": "/in-flight",
            "results": "/results", "experiment + XRD plot": f"/experiments/{ids['experiment_id']}",
            "targets": "/targets", "recipe history": f"/targets/{ids['target_id']}",
            "models": "/models", "model quality": f"/models/{ids['model_version_id']}",
            "API overview": "/api/overview", "API proposals": "/api/proposals",
            "API in flight": "/api/in-flight", "API results": "/api/results",
            "API XRD arrays": f"/api/experiments/{ids['experiment_id']}/xrd",
            "API events": "/api/events?after=0&limit=200",
        }
        rows = []
        with running_server(campaign) as base:
            # the lab-time replay runs outside every page (fetched by the overview after rendering)
            lab = []
            for _ in range(2):
                _, body, headers = http("GET", base + "/api/lab-time", timeout=120)
                lab.append((float(headers["server-timing"].split("dur=")[1]), body))
            print(f"lab time {lab[0][1]['lab_days']:.1f} days: first request {lab[0][0]:.0f} ms "
                  f"(replay {lab[0][1]['compute_ms']:.0f} ms), cached {lab[1][0]:.1f} ms")
            for name, path in paths.items():
                http("GET", base + path)  # warm-up: first query plans, template compilation
                server_ms, client_ms = [], []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    status, _, headers = http("GET", base + path, timeout=60)
                    client_ms.append((time.perf_counter() - t) * 1000)
                    if status != 200:
                        raise SystemExit(f"{path}: HTTP {status}")
                    server_ms.append(float(headers["server-timing"].split("dur=")[1]))
                rows.append((name, path, statistics.median(server_ms), max(server_ms), statistics.median(client_ms)))
    print(f"\n{'page':24s} {'median ms':>10s} {'max ms':>8s} {'client ms':>10s}  (server time, {args.repeat} requests)")
    for name, _path, med, worst, client in rows:
        flag = "" if worst < args.goal_ms else f"  > goal {args.goal_ms:.0f} ms"
        print(f"{name:24s} {med:10.1f} {worst:8.1f} {client:10.1f}{flag}")
    worst_page = max(rows, key=lambda r: r[3])
    ok = worst_page[3] < args.goal_ms
    print(f"\nslowest page: {worst_page[0]} at {worst_page[3]:.1f} ms (max) — goal < {args.goal_ms:.0f} ms: "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
