"""Campaign configuration, SQL store, the closed loop, XRD analysis, the CLI and the web app."""

from .config import CampaignConfig, ConfigError, load_config, parse_config

__all__ = ["CampaignConfig", "ConfigError", "load_config", "parse_config"]
