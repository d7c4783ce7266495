"""Reading a campaign file: YAML → :class:`CampaignConfig`, or a :class:`ConfigError` whose
message names the file, the key path, the bad value and what is allowed (pydantic's own errors
name internal union tags and no file).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from .schema import CampaignConfig

EXAMPLE_CONFIG_NAME = "campaign.example.yaml"


class ConfigError(ValueError):
    """A campaign configuration that cannot be used; the message says where and why."""


def _describe_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in {"substitution", "cif_dir", "prototypes", "screen"} and parts and parts[-1].endswith("]"):
            continue  # discriminated-union tag pydantic inserts into the path
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk the model tree along ``loc`` (minus the unknown key) to list the allowed keys."""
    current: Any = model
    for item in loc[:-1]:
        if isinstance(item, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(item)
        if field is None:
            break
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = candidates[0] if candidates else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid campaign configuration ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        path = _describe_location(err["loc"])
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(CampaignConfig, err["loc"])
            lines.append(
                f"  - {path}: unknown key (value {value!r}); allowed keys here: {', '.join(allowed)}"
            )
        elif err["type"] == "missing":
            lines.append(f"  - {path}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {path}: bad value {value!r}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> CampaignConfig:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections "
            f"(campaign, chemical_space, ...), not {type(data).__name__}"
        )
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file; raises :class:`ConfigError` naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(data, str(path))


def campaign_path(ref: str | Path, base: str | Path | None) -> Path:
    """A file named in campaign.yaml: from the campaign directory, as ``run`` resolves lab.world.

    A relative path is looked for in the campaign directory first, then in the current
    directory (where ``extra_precursors`` used to be read from, so old campaigns keep working);
    when it is in neither, the campaign-directory path is returned so an error names where it
    was expected.
    """
    path = Path(ref)
    if path.is_absolute() or base is None:
        return path
    inside = Path(base) / path
    if inside.exists() or not path.exists():
        return inside
    return path


def example_config_text() -> str:
    """The commented example that ``synthloop init`` writes (shipped inside the package)."""
    return resources.files("controller").joinpath(EXAMPLE_CONFIG_NAME).read_text(encoding="utf-8")
