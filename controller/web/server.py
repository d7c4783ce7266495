"""Run the web app for a campaign directory with uvicorn.

Why a small wrapper: the CLI, the tests and the benchmark all start the server the same way
(config from ``campaign.yaml``, store from its ``store.url``, token and read-only policy),
and a shutdown must end open server-sent-event streams instead of waiting for them forever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import CampaignConfig, ConfigError, load_config
from ..store import Store
from .app import WebSettings, create_app

CONFIG_FILE = "campaign.yaml"


def load_campaign(campaign_dir: str | Path) -> tuple[CampaignConfig, Path]:
    """Config of a campaign directory (or of a YAML file given directly)."""
    path = Path(campaign_dir)
    if not path.exists():
        raise ConfigError(f"{path}: no such campaign directory (create one with `synthloop init {path}`)")
    cfg_path = path / CONFIG_FILE if path.is_dir() else path
    if not cfg_path.exists():
        raise ConfigError(f"{cfg_path}: no such file (expected a campaign directory with {CONFIG_FILE})")
    return load_config(cfg_path), cfg_path.parent


def settings_for(campaign_dir: str | Path, *, read_only: bool = False, token: str | None = None,
                 poll_interval_s: float = 0.5) -> WebSettings:
    """Open the campaign's store (migrating it, as every store user does) and build the settings."""
    cfg, base = load_campaign(campaign_dir)
    store = Store.for_campaign_dir(base, cfg.store.url)
    return WebSettings(config=cfg, store=store, token=token or cfg.web.token,
                       read_only=read_only or cfg.web.read_only, poll_interval_s=poll_interval_s)


def serve(campaign_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, read_only: bool = False,
          log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM end it cleanly within ~2 s)."""
    import uvicorn

    settings = settings_for(campaign_dir, read_only=read_only)
    app = create_app(settings)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.shutting_down = True  # SSE generators see this and finish
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2,
                            access_log=log_level == "debug")
    try:
        _Server(config).run()
    finally:
        settings.store.close()
        if settings.read_engine is not None:
            settings.read_engine.dispose()
