"""`synthloop screen POOL --out SCORES`: a large candidate pool through the staged funnel, in Ray.

Why a command of its own: screening 10^6 candidates is a batch job beside (or before) a campaign,
not a step of the loop; its output (Parquet chunks + manifest) becomes a campaign's pool through
the ``screen`` candidate source. The work itself lives in ``surrogates.screening``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .output import fail as _fail


def _campaign_model(campaign_dir: Path) -> bytes:
    """The newest surrogate checkpoint in a campaign directory's store."""
    from sqlmodel import select

    from ..config import ConfigError, load_config
    from ..store import ModelVersion, Store

    config = campaign_dir / "campaign.yaml"
    try:
        url = load_config(config).store.url if config.exists() else "sqlite:///campaign.db"
    except ConfigError as exc:
        _fail(str(exc))
    with Store.for_campaign_dir(campaign_dir, url) as store, store.session() as s:
        mv = s.exec(select(ModelVersion).where(ModelVersion.kind == "surrogate",
                                               ModelVersion.checkpoint.is_not(None))
                    .order_by(ModelVersion.id.desc())).first()
        if mv is None:
            _fail(f"--model {campaign_dir}: the campaign has no trained surrogate yet")
        return bytes(mv.checkpoint)


def _check_out_folder(out: Path) -> None:
    """Refuse an --out the screen could not create, before a model is pretrained and Ray starts
    (a minute of work that ended in a FileNotFoundError traceback; user trial, h11)."""
    import os

    if out.exists() and not out.is_dir():
        _fail(f"--out {out}: is a file, not a folder")
    anc = out
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        _fail(f"--out {out}: {anc} is a file, so the folder cannot be created")
    if not os.access(anc, os.W_OK | os.X_OK):
        _fail(f"--out {out}: no permission to write in {anc}")


def screen(
    pool: Path = typer.Argument(..., help="JSONL pool: explicit candidates ({\"id\", \"structure\"|\"cif\"}) "
                                "or generator lines ({\"prototype\", \"substitute\", \"limit\"})"),
    out: Path = typer.Option(..., "--out", help="output folder: chunks/*.parquet, chunks.jsonl, manifest.json"),
    address: str | None = typer.Option(None, "--address", help="join a Ray cluster (ray://host:10001 or "
                                       "auto); default: start a local instance"),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray actors scoring chunks (one CPU each)"),
    chunk: int = typer.Option(4000, "--chunk", min=1, help="candidates per chunk (one Parquet file each)"),
    resume: bool = typer.Option(False, "--resume", help="continue a screen in OUT: finished chunks are skipped"),
    model: Path | None = typer.Option(None, "--model", help="ensemble checkpoint (Ensemble.to_bytes) or a "
                                      "campaign directory (its newest surrogate); default: the one in OUT "
                                      "on --resume, else one pretrained on public formation energies"),
    composition_max_ev: float = typer.Option(-1.0, help="composition stage: keep predicted E_form <= this (eV/atom)"),
    gnn_max_ev: float = typer.Option(-1.0, help="GNN stage: keep E_form - sigma*std <= this (eV/atom)"),
    hull_max_ev: float = typer.Option(0.05, help="hull stage: keep E_decomp - sigma*std <= this (eV/atom)"),
    sigma: float = typer.Option(1.0, help="ensemble standard deviations of optimism in the GNN stages"),
    hull: bool = typer.Option(True, "--hull/--no-hull", help="run the decomposition-energy stage"),
    object_store_mb: int = typer.Option(400, help="object store of a local Ray instance (MB)"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON instead of the table"),
) -> None:
    """Score every candidate of POOL through the funnel (charge balance, novelty, composition
    model, GNN ensemble, hull) in Ray workers; results are written chunk by chunk."""
    from surrogates import (
        FunnelSettings,
        PoolError,
        ScreenError,
        ScreenOptions,
        format_screen_summary,
        pretrain_screen_model,
        run_screen,
    )

    _check_out_folder(out)
    ckpt: bytes | None = None
    if model is not None:
        if model.is_dir():
            ckpt = _campaign_model(model)
        elif model.is_file():
            ckpt = model.read_bytes()
        else:
            _fail(f"--model {model}: no such file or campaign directory")
        from surrogates import DeltaEnsemble

        if DeltaEnsemble.is_checkpoint(ckpt):
            _fail(f"--model {model}: the surrogate was trained with `surrogate.prior: sevennet_kernel` "
                  "(a kernel prior on SevenNet-0 features, ~30 ms a cell), which the screening funnel "
                  "cannot afford at 10^5-10^6 candidates; screen with a plain ensemble checkpoint "
                  "or without --model")
    options = ScreenOptions(chunk=chunk, workers=workers, address=address, resume=resume,
                            object_store_mb=object_store_mb,
                            funnel=FunnelSettings(composition_max_ev=composition_max_ev, gnn_max_ev=gnn_max_ev,
                                                  hull_max_ev=hull_max_ev, sigma=sigma, hull=hull))
    try:
        manifest = run_screen(pool, out, ckpt, options, progress=not as_json,
                              make_model=lambda: pretrain_screen_model().to_bytes())
    except (PoolError, ScreenError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(manifest, indent=1))
    else:
        typer.echo(format_screen_summary(manifest))
    if manifest["status"] != "complete":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("screen")(screen)
