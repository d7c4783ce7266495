"""The Jinja environment of the pages and the filters their numbers go through (percent, short
numbers, timestamps): one place, so every page formats a value the same way.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


def _pct(value: Any, digits: int = 0) -> str:
    return "–" if value is None else f"{100 * float(value):.{digits}f} %"


def _num(value: Any, fmt: str = ".3g") -> str:
    return "–" if value is None else format(float(value), fmt)


def _when(value: str | None) -> str:
    return (value or "–").replace("T", " ").split("+")[0]


def template_env() -> Environment:
    env = Environment(loader=PackageLoader("controller.web", "data/templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, when=_when, tojson_compact=lambda v: json.dumps(v, default=str))
    return env
