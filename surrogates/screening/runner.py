"""Drive a screen: chunks of the pool to Ray actors, one Parquet file per finished chunk.

Why actors, not plain tasks: a worker must load the ensemble, the composition model and the
known-composition hashes once, not once per chunk; an actor per worker holds them, and
``--workers N`` is then exactly N processes (1 vs 2 workers is a clean comparison). A local Ray
instance is started by default (``num_cpus`` = workers, no dashboard, a small object store, its
temporary directory beside the output); ``address`` joins any running cluster instead (the
workers there need synthloop installed; results come back to this driver, which writes them).

Crash safety: a chunk's file is written to a temporary name and renamed, then one line is
appended (and fsync'ed) to ``chunks.jsonl``. A crash loses at most the chunks in flight;
``resume`` rebuilds exactly the chunks without a line and a file. ``manifest.json`` is rewritten
atomically after every chunk with the funnel's totals so far.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import pool as poolmod
from .funnel import ChunkScreener, FunnelSettings, merge_stats, peak_rss_mb

FORMAT = 1
CHUNK_DIR = "chunks"


class ScreenError(RuntimeError):
    """A screen that cannot start or continue; the message says why and what to do."""


@dataclass
class ScreenOptions:
    chunk: int = 2000
    workers: int = 2
    address: str | None = None
    resume: bool = False
    object_store_mb: int = 400
    in_flight: int = 2  # chunks queued per worker, so a worker never waits for the driver
    funnel: FunnelSettings = field(default_factory=FunnelSettings)
    max_chunks: int | None = None  # stop after this many new chunks (tests, crash drills)
    # a folder holding a fitted composition model and known-composition hashes to reuse (they
    # depend only on the shipped Materials Project table); fitted and saved there when absent
    model_cache: Path | None = None


def require_scale_extra() -> Any:
    """Import Ray, or say how to install it."""
    try:
        import pyarrow  # noqa: F401, PLC0415
        import ray  # noqa: PLC0415
    except ImportError as exc:
        raise ScreenError(f"screening needs the optional 'scale' extra ({exc.name} is missing): "
                          "pip install 'synthloop[scale]'") from None
    return ray


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_done(out: Path) -> dict[int, dict[str, Any]]:
    """Finished chunks: a line in ``chunks.jsonl`` whose file exists (a torn last line is ignored)."""
    done: dict[int, dict[str, Any]] = {}
    log = out / "chunks.jsonl"
    if not log.exists():
        return done
    for text in log.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(text)
        except json.JSONDecodeError:
            continue
        if (out / rec["file"]).exists():
            done[int(rec["chunk"])] = rec
    return done


_SCHEMA_COLUMNS = ("index", "line", "id", "formula", "template", "dropped_at", "error",
                   "charge_balanced", "novel", "comp_e_form", "gnn_e_form", "gnn_e_form_std",
                   "e_decomp", "structure")


def _write_chunk(out: Path, result: dict[str, Any]) -> str:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    cols = result["columns"]
    types = {"index": pa.int64(), "line": pa.int32(), "charge_balanced": pa.bool_(), "novel": pa.bool_(),
             "comp_e_form": pa.float32(), "gnn_e_form": pa.float32(), "gnn_e_form_std": pa.float32(),
             "e_decomp": pa.float32()}
    arrays = {name: pa.array(cols[name], type=types.get(name, pa.string())) for name in _SCHEMA_COLUMNS}
    arrays["survived"] = pa.array(np.array([d == "" for d in cols["dropped_at"]]), type=pa.bool_())
    table = pa.table(arrays)
    name = f"{CHUNK_DIR}/chunk-{result['chunk']:06d}.parquet"
    tmp = out / (name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out / name)
    return name


def _ray_temp_dir(out: Path) -> tuple[Path, bool]:
    """Ray's temporary directory beside the output, unless the path is too long for Ray's unix
    sockets (107 bytes with ~65 of Ray's own), then a fresh one under /tmp. (path, remove after)."""
    candidate = out.resolve() / ".ray"
    if len(str(candidate)) <= 40:
        candidate.mkdir(parents=True, exist_ok=True)
        return candidate, False
    return Path(tempfile.mkdtemp(prefix="synthloop-ray-")), True


def _system_peaks(temp_dir: Path) -> dict[str, float]:
    """Peak RSS (MB) of the Ray processes of this local instance (raylet, GCS, ...), found by
    the temporary directory in their command line."""
    peaks: dict[str, float] = {}
    marker = str(temp_dir)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker not in cmd:
                continue
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        hwm = next((int(x.split()[1]) / 1024 for x in status.splitlines() if x.startswith("VmHWM:")), 0.0)
        name = next((x.split()[1] for x in status.splitlines() if x.startswith("Name:")), pid)
        peaks[f"{name}[{pid}]"] = round(hwm, 1)
    return peaks


def _prepare_models(out: Path, resume: bool, log: Callable[[str], None],
                    cache: Path | None = None) -> tuple[dict, dict, np.ndarray]:
    """The composition model and known-composition hashes: fitted once, kept in OUT (a resumed
    screen reuses them) and, with ``cache``, reused across screens."""
    from .composition import CompositionModel, fit_composition_model, known_composition_keys  # noqa: PLC0415

    name, keys_name = "composition_model.npz", "known_keys.npy"
    sources = ([out] if resume else []) + ([cache] if cache is not None else [])
    for folder in sources:
        if (folder / name).exists() and (folder / keys_name).exists():
            arrays = dict(np.load(folder / name))
            metrics = json.loads(str(arrays.pop("metrics")))
            model, keys = CompositionModel.from_arrays(arrays, metrics), np.load(folder / keys_name)
            break
    else:
        log("fitting the composition model on the Materials Project table ...")
        model, keys = fit_composition_model(), known_composition_keys()
    for folder in [out] + ([cache] if cache is not None else []):
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / name).exists() and (folder / keys_name).exists():
            continue
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as fh:
            np.savez(fh, metrics=json.dumps(model.metrics), **model.to_arrays())
        os.replace(fh.name, folder / name)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npy", delete=False) as fh:
            np.save(fh, keys)
        os.replace(fh.name, folder / keys_name)
    return model.to_arrays(), model.metrics, keys


def run_screen(pool_path: str | Path, out: str | Path, model: bytes | None, options: ScreenOptions,
               *, progress: bool = True, log: Callable[[str], None] | None = None,
               make_model: Callable[[], bytes] | None = None) -> dict[str, Any]:
    """Screen ``pool_path`` into ``out``; returns the manifest (also written to out/manifest.json).

    ``model``: ensemble checkpoint bytes (``Ensemble.to_bytes``); None on resume takes the one
    saved in ``out``, else ``make_model()`` trains one.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    ray = require_scale_extra()
    if options.workers < 1 or options.chunk < 1:
        raise ScreenError("--workers and --chunk must be >= 1")
    out = Path(out)
    info = poolmod.scan(pool_path)  # every line validated before any work starts
    manifest_path = out / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if previous and not options.resume:
        done = len(read_done(out))
        raise ScreenError(f"{out} already holds a screen ({done} of {previous['n_chunks']} chunks "
                          "done): pass --resume to continue it, or choose another --out")
    if options.resume and previous:
        for what, old, new in (("pool file", previous["pool"]["sha256"], info.sha256),
                               ("chunk size", previous["chunk"], options.chunk),
                               ("funnel settings", previous["funnel"], options.funnel.to_dict())):
            if old != new:
                raise ScreenError(f"cannot resume {out}: the {what} changed ({old!r} -> {new!r}); "
                                  "start a new screen in another --out")
    (out / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
    model_path = out / "model.pt"
    if model is None and model_path.exists():
        model = model_path.read_bytes()
    if model is None:
        if make_model is None:
            raise ScreenError("no model: give a checkpoint or a campaign directory")
        say("training the screening ensemble on public formation energies ...")
        model = make_model()
    if previous and previous.get("model_sha256") not in (None, _sha(model)):
        raise ScreenError(f"cannot resume {out}: it was screened with another model "
                          f"(sha256 {previous['model_sha256'][:12]}...); omit --model to reuse it")
    if not model_path.exists():
        _atomic_write(model_path, model)
    comp_arrays, comp_metrics, known_keys = _prepare_models(out, options.resume, say, options.model_cache)

    n_chunks = -(-info.n_candidates // options.chunk)
    done = read_done(out)
    log_path = out / "chunks.jsonl"
    if log_path.exists() and not log_path.read_bytes().endswith(b"\n") and log_path.stat().st_size:
        with log_path.open("a", encoding="utf-8") as fh:  # a crash tore the last line: end it
            fh.write("\n")
    runs = list(previous.get("runs", [])) if previous else []
    run = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "workers": options.workers,
           "address": options.address or "local", "chunks": 0, "candidates": 0}
    runs.append(run)
    manifest: dict[str, Any] = {
        "format": FORMAT, "pool": info.__dict__, "chunk": options.chunk, "n_chunks": n_chunks,
        "n_candidates": info.n_candidates, "model_sha256": _sha(model),
        "funnel": options.funnel.to_dict(), "composition_model": comp_metrics,
        "status": "running", "runs": runs}

    def flush_manifest() -> None:
        recs = list(read_done(out).values())
        manifest["chunks_done"] = len(recs)
        manifest["candidates_done"] = int(sum(r["rows"] for r in recs))
        manifest["stages"] = merge_stats([r["stages"] for r in recs])
        manifest["survivors"] = manifest["stages"][-1]["n_out"] if manifest["stages"] else 0
        _atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())

    if len(done) >= n_chunks:
        # a resume of a finished screen: starting Ray and loading the model into workers takes
        # ~10 s to screen nothing, so the run is recorded as having had nothing left to do
        run.update(workers=0, nothing_left=True, wall_s=0.0,
                   finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest["status"] = "complete"
        flush_manifest()
        return manifest

    temp_dir, remove_temp = (None, False)
    started_here = False
    t_start = time.perf_counter()
    worker_peaks: dict[int, float] = {}
    busy_cpu: dict[int, float] = {}
    bar = None
    try:
        if not ray.is_initialized():
            if options.address:
                ray.init(address=options.address, log_to_driver=False,
                         runtime_env={"env_vars": _thread_env()})
            else:
                temp_dir, remove_temp = _ray_temp_dir(out)
                ray.init(num_cpus=options.workers, include_dashboard=False, log_to_driver=False,
                         object_store_memory=options.object_store_mb * 1024 * 1024,
                         _temp_dir=str(temp_dir), runtime_env={"env_vars": _thread_env()})
            started_here = True
        actor_cls = ray.remote(num_cpus=1)(ChunkScreener)
        model_ref, comp_ref, keys_ref = ray.put(model), ray.put(comp_arrays), ray.put(known_keys)
        actors = [actor_cls.remote(model_ref, comp_ref, keys_ref, options.funnel.to_dict())
                  for _ in range(options.workers)]
        ready = ray.get([a.info.remote() for a in actors])
        t_ready = time.perf_counter()
        run["startup_s"] = round(t_ready - t_start, 2)  # Ray (if started here) + workers' model loads
        run["worker_startup_cpu_s"] = [round(r["cpu_s"], 2) for r in ready]
        todo = poolmod.chunks(pool_path, options.chunk, skip=frozenset(done))
        pending: dict[Any, tuple[int, float]] = {}
        submitted = 0

        def submit(a: int) -> bool:
            nonlocal submitted
            if options.max_chunks is not None and submitted >= options.max_chunks:
                return False
            ch = next(todo, None)
            if ch is None:
                return False
            pending[actors[a].screen.remote(ch)] = (a, time.perf_counter())
            submitted += 1
            return True

        for a in range(len(actors)):
            for _ in range(options.in_flight):
                submit(a)
        remaining = info.n_candidates - sum(r["rows"] for r in done.values())
        if progress:
            from rich.console import Console  # noqa: PLC0415
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            bar = Progress(TextColumn("screen"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                           console=Console(stderr=True))
            bar.start()
            task = bar.add_task("screen", total=remaining, rate="")
        n_new = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            a, _t = pending.pop(ready[0])
            result = ray.get(ready[0])
            submit(a)
            name = _write_chunk(out, result)
            rows = result["stop"] - result["start"]
            worker_peaks[result["pid"]] = max(worker_peaks.get(result["pid"], 0.0), result["peak_rss_mb"])
            busy_cpu[result["pid"]] = busy_cpu.get(result["pid"], 0.0) + sum(s["cpu_s"] for s in result["stages"])
            rec = {"chunk": result["chunk"], "file": name, "rows": rows, "stages": result["stages"],
                   "pid": result["pid"], "peak_rss_mb": round(result["peak_rss_mb"], 1)}
            with (out / "chunks.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            n_new += rows
            run["chunks"] += 1
            run["candidates"] = n_new
            if bar is not None:
                wall = time.perf_counter() - t_start
                bar.update(task, advance=rows, rate=f"{n_new / max(wall, 1e-9):,.0f}/s")
            flush_manifest()
        wall = time.perf_counter() - t_start
        run["wall_s"] = round(wall, 2)
        run["screen_s"] = round(time.perf_counter() - t_ready, 2)  # from all workers ready to the end
        run["rate_wall_per_s"] = round(n_new / wall, 1) if wall > 0 else None
        run["rate_screen_per_s"] = round(n_new / run["screen_s"], 1) if run["screen_s"] > 0 else None
        run["worker_cpu_s"] = {str(p): round(c, 2) for p, c in busy_cpu.items()}
        run["memory_peak_mb"] = {
            "driver": round(peak_rss_mb(), 1),
            "workers": {str(p): round(v, 1) for p, v in worker_peaks.items()},
            "ray_system": _system_peaks(temp_dir) if temp_dir is not None else {}}
        mem = run["memory_peak_mb"]
        mem["sum_of_peaks"] = round(mem["driver"] + sum(mem["workers"].values())
                                    + sum(mem["ray_system"].values()), 1)
        recs = read_done(out)
        manifest["status"] = "complete" if len(recs) == n_chunks else "partial"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    finally:
        if bar is not None:
            bar.stop()
        if manifest["status"] == "running":
            manifest["status"] = "interrupted"
        run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        flush_manifest()
        if started_here:
            ray.shutdown()
            if remove_temp and temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)
    return manifest


def _thread_env() -> dict[str, str]:
    return {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def format_summary(manifest: dict[str, Any]) -> str:
    """The funnel as a table: survivors and cost per stage, then the last run's wall time."""
    lines = [f"{'stage':<15}{'in':>11}{'out':>11}{'kept':>8}{'CPU s':>10}{'per CPU-s':>12}"]
    for st in manifest.get("stages", []):
        kept = st["n_out"] / st["n_in"] if st["n_in"] else 0.0
        rate = f"{st['per_cpu_s']:,.0f}" if st["per_cpu_s"] else "-"
        lines.append(f"{st['stage']:<15}{st['n_in']:>11,}{st['n_out']:>11,}{kept:>8.1%}"
                     f"{st['cpu_s']:>10.1f}{rate:>12}")
    run = manifest["runs"][-1]
    if run.get("nothing_left"):
        lines.append(f"{manifest.get('candidates_done', 0):,} of {manifest['n_candidates']:,} candidates, "
                     f"{manifest.get('survivors', 0):,} survivors; status {manifest['status']}; this run "
                     f"had nothing left to screen (all {manifest['n_chunks']:,} chunks were done), "
                     "Ray not started")
        return "\n".join(lines)
    lines.append(f"{manifest.get('candidates_done', 0):,} of {manifest['n_candidates']:,} candidates, "
                 f"{manifest.get('survivors', 0):,} survivors; status {manifest['status']}; this run "
                 f"{run.get('candidates', 0):,} in {run.get('wall_s', 0):.1f} s wall with "
                 f"{run['workers']} worker(s) (startup {run.get('startup_s', 0):.1f} s, then "
                 f"{run.get('screen_s', 0):.1f} s screening)")
    mem = run.get("memory_peak_mb")
    if mem:
        workers = ", ".join(f"{v:.0f}" for v in mem["workers"].values()) or "none ran a chunk"
        lines.append(f"peak RSS MB: driver {mem['driver']:.0f}, workers {workers}, Ray system "
                     f"{sum(mem['ray_system'].values()):.0f}; sum of peaks {mem['sum_of_peaks']:.0f}")
    return "\n".join(lines)
