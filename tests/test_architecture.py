"""Package boundaries from docs/architecture.md, checked on every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "drivers", "surrogates", "recipes", "sim_lab")
ALLOWED = {
    "drivers": set(),
    "sim_lab": {"drivers"},
    "surrogates": set(),
    "recipes": {"surrogates"},
    "controller": {"drivers", "sim_lab", "surrogates", "recipes"},
}
# third-party libraries a package must not use (drivers: pyzmq and pydantic only)
FORBIDDEN_THIRD_PARTY = {
    "drivers": {"torch", "botorch", "gpytorch", "pymatgen", "sqlmodel", "sqlalchemy", "numpy"},
    "sim_lab": {"torch", "botorch", "gpytorch", "sqlmodel", "sqlalchemy"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_forbidden_imports_between_packages() -> None:
    problems = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for mod in imports_of(path):
                if mod in PACKAGES and mod != pkg and mod not in ALLOWED[pkg]:
                    problems.append(f"{path.relative_to(ROOT)} imports {mod}")
                if mod in FORBIDDEN_THIRD_PARTY.get(pkg, set()):
                    problems.append(f"{path.relative_to(ROOT)} imports third-party {mod}")
    assert not problems, "\n".join(problems)


def test_other_packages_use_only_the_public_face() -> None:
    """`from recipes.thermo import x` in controller is a private import; use `from recipes import x`."""
    problems = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    head, _, rest = node.module.partition(".")
                    if head in PACKAGES and head != pkg and rest:
                        problems.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
    assert not problems, "\n".join(problems)
