"""Campaign configuration: one YAML file, validated by pydantic models.

Why strict: a typo in a lab configuration (``yeild_threshold``) that is silently ignored
means a campaign runs with a default nobody chose, and furnace time is spent on it. Every
model here forbids unknown keys, and :func:`load_config` turns pydantic's errors into
messages that name the file, the key path, the bad value and what is allowed.

Three modules: ``schema`` (the section models), ``loading`` (YAML → config or a
ConfigError naming the problem), ``preflight`` (what ``run`` checks beyond the file).
"""

from .loading import (
    EXAMPLE_CONFIG_NAME,
    ConfigError,
    campaign_path,
    example_config_text,
    load_config,
    parse_config,
)
from .preflight import preflight
from .schema import (
    AcquisitionSection,
    AnalysisSection,
    AuthSection,
    Budget,
    CampaignConfig,
    CampaignSection,
    CandidateSource,
    ChemicalSpace,
    CifDirSource,
    FaultSection,
    LabSection,
    PrototypeSource,
    RecipeSection,
    ScreenSource,
    StoreSection,
    SubstitutionSource,
    SurrogateSection,
    WebSection,
)

__all__ = [
    "AcquisitionSection",
    "AnalysisSection",
    "AuthSection",
    "Budget",
    "CampaignConfig",
    "CampaignSection",
    "CandidateSource",
    "ChemicalSpace",
    "CifDirSource",
    "ConfigError",
    "campaign_path",
    "EXAMPLE_CONFIG_NAME",
    "FaultSection",
    "LabSection",
    "PrototypeSource",
    "RecipeSection",
    "ScreenSource",
    "StoreSection",
    "SubstitutionSource",
    "SurrogateSection",
    "WebSection",
    "example_config_text",
    "load_config",
    "parse_config",
    "preflight",
]
