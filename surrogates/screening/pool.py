"""The screening pool: a JSONL file of candidate lines, expanded lazily in fixed-size chunks.

Why lazily: 10^6 pymatgen ``Structure`` objects (or their graphs) never fit comfortably in one
process, and most candidates die in the cheap stages of the funnel before a structure is needed.
So the pool holds *descriptions*; a chunk (a range of global candidate indices) carries only the
lines it touches, and a worker expands them into compositions, and into structures only for the
candidates that reach the graph network.

One JSON object per line (blank lines and lines starting with ``#`` are skipped); two kinds:

* an explicit candidate: ``{"id": "my-1", "structure": {pymatgen Structure dict}}`` or
  ``{"id": "my-1", "cif": "data_...CIF text..."}``;
* a generator: ``{"prototype": "perovskite SrTiO3", "substitute": {"Sr": ["Ca", "Ba"],
  "Ti": ["Zr", "Hf"], "O": ["O", "S"]}, "id": "pv", "limit": 1000}`` — the Cartesian product of the
  replacement lists over the template's elements (elements not named keep their own), in
  mixed-radix order (the template's elements sorted by symbol, last one fastest); ``limit``
  keeps the first N combinations. ``prototype`` is a template id of
  :func:`surrogates.template_library` (the 9 textbook prototypes, 75 reference CIFs, ~1,000
  Alexandria structures), or a unique prefix of one.

A chunk's boundaries depend only on the global index and the chunk size, so a resumed screen
re-creates exactly the chunks it skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pymatgen.core import Element

_EXPLICIT_KEYS = {"id", "structure", "cif", "formula"}
_GENERATOR_KEYS = {"prototype", "substitute", "id", "limit"}


class PoolError(ValueError):
    """A pool line that cannot be read; the message names file, line and field."""


@dataclass(frozen=True)
class PoolLine:
    """One validated pool line: an explicit candidate (count 1) or a generator."""

    number: int  # 1-based line number in the file
    spec: dict[str, Any]
    count: int
    template: str | None = None  # the template id of a generator line


@dataclass(frozen=True)
class Segment:
    """Candidates ``lo..hi-1`` (indices within the line) of one pool line."""

    line: PoolLine
    lo: int
    hi: int
    first_index: int  # global index of candidate ``lo``


@dataclass(frozen=True)
class Chunk:
    """Global candidate indices ``[start, stop)`` and the line segments that hold them."""

    number: int
    start: int
    stop: int
    segments: tuple[Segment, ...]

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class PoolInfo:
    path: str
    sha256: str
    n_lines: int
    n_candidates: int
    n_generated: int  # candidates from generator lines


@cache
def _templates() -> dict[str, dict[str, Any]]:
    from ..prototypes import template_library  # noqa: PLC0415 - loads a 1,000-structure file

    return {t["id"]: t for t in template_library()}


def resolve_template(name: str) -> dict[str, Any]:
    """The template called ``name`` (exact id, else a unique case-insensitive prefix)."""
    lib = _templates()
    if name in lib:
        return lib[name]
    hits = [k for k in lib if k.lower().startswith(name.lower())]
    if len(hits) == 1:
        return lib[hits[0]]
    prototypes = sorted(k for k, t in lib.items() if t["kind"] == "prototype")
    if hits:
        raise KeyError(f"prototype {name!r} is ambiguous: {', '.join(sorted(hits)[:6])}"
                       f"{' ...' if len(hits) > 6 else ''}")
    raise KeyError(f"unknown prototype {name!r}; textbook prototypes: {', '.join(prototypes)} "
                   f"(or any of the {len(lib)} template ids of surrogates.template_library())")


def template_elements(template: dict[str, Any]) -> list[str]:
    """The template's elements sorted by symbol: the digit order of a generator line."""
    from ..formulas import composition  # noqa: PLC0415

    return sorted(el.symbol for el in composition(template["formula"]).elements)


def _fail(where: str, field: str | None, problem: str) -> PoolError:
    return PoolError(f"{where}: field {field!r}: {problem}" if field else f"{where}: {problem}")


def parse_line(text: str, number: int, source: str = "pool") -> PoolLine | None:
    """Validate one line; None for a blank or comment line. Raises :class:`PoolError`."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    where = f"{source} line {number}"
    try:
        spec = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise _fail(where, None, f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(spec, dict):
        raise _fail(where, None, f"expected a JSON object, got {type(spec).__name__}")
    if "prototype" in spec:
        unknown = set(spec) - _GENERATOR_KEYS
        if unknown:
            raise _fail(where, sorted(unknown)[0], f"unknown key in a generator line (allowed: "
                        f"{', '.join(sorted(_GENERATOR_KEYS))})")
        if not isinstance(spec["prototype"], str):
            raise _fail(where, "prototype", "must be a template id (string)")
        try:
            template = resolve_template(spec["prototype"])
        except KeyError as exc:
            raise _fail(where, "prototype", exc.args[0]) from None
        own = template_elements(template)
        subs = spec.get("substitute", {})
        if not isinstance(subs, dict):
            raise _fail(where, "substitute", "must map a template element to a list of elements")
        count = 1
        for el, options in subs.items():
            if el not in own:
                raise _fail(where, f"substitute.{el}", f"{el!r} is not an element of the template "
                            f"{template['id']!r} ({template['formula']}: {', '.join(own)})")
            if not isinstance(options, list) or not options:
                raise _fail(where, f"substitute.{el}", "must be a non-empty list of element symbols")
            for sym in options:
                if not isinstance(sym, str) or not Element.is_valid_symbol(sym):
                    raise _fail(where, f"substitute.{el}", f"{sym!r} is not an element symbol")
            if len(set(options)) != len(options):
                raise _fail(where, f"substitute.{el}", "lists an element twice")
            count *= len(options)
        if "limit" in spec:
            limit = spec["limit"]
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise _fail(where, "limit", f"must be a positive integer, got {limit!r}")
            count = min(count, limit)
        if "id" in spec and not isinstance(spec["id"], str):
            raise _fail(where, "id", "must be a string")
        return PoolLine(number, spec, count, template["id"])
    unknown = set(spec) - _EXPLICIT_KEYS
    if unknown:
        raise _fail(where, sorted(unknown)[0], "unknown key (an explicit candidate has id, structure "
                    "or cif, optional formula; a generator line needs 'prototype')")
    has_s, has_c = "structure" in spec, "cif" in spec
    if has_s == has_c:
        raise _fail(where, None, "an explicit candidate needs exactly one of 'structure' "
                    "(pymatgen dict) or 'cif' (text); a generator line needs 'prototype'")
    if has_s and not (isinstance(spec["structure"], dict) and "lattice" in spec["structure"]
                      and "sites" in spec["structure"]):
        raise _fail(where, "structure", "must be a pymatgen Structure dict (with lattice and sites)")
    if has_c and not isinstance(spec["cif"], str):
        raise _fail(where, "cif", "must be CIF text")
    if "id" in spec and not isinstance(spec["id"], str):
        raise _fail(where, "id", "must be a string")
    return PoolLine(number, spec, 1, None)


def read_lines(path: str | Path) -> Iterator[PoolLine]:
    """Every candidate line of ``path`` in order, validated as it is read (streamed)."""
    path = Path(path)
    if not path.is_file():
        raise PoolError(f"{path}: no such pool file")
    with path.open("r", encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            line = parse_line(text, number, str(path))
            if line is not None:
                yield line


def scan(path: str | Path) -> PoolInfo:
    """Validate the whole pool once (before any work starts) and count its candidates."""
    path = Path(path)
    n_lines = n = n_gen = 0
    for line in read_lines(path):
        n_lines += 1
        n += line.count
        n_gen += line.count if line.template else 0
    if n == 0:
        raise PoolError(f"{path}: the pool holds no candidate line")
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return PoolInfo(str(path.resolve()), h.hexdigest(), n_lines, n, n_gen)


def chunks(path: str | Path, size: int, skip: set[int] | frozenset[int] = frozenset()) -> Iterator[Chunk]:
    """Chunks of ``size`` candidates in pool order, streamed; chunk numbers in ``skip`` are not
    built (their lines are read past, so a resumed screen does not hold them)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    number, start, pos = 0, 0, 0
    segments: list[Segment] = []
    for line in read_lines(path):
        lo = 0
        while lo < line.count:
            take = min(line.count - lo, (number + 1) * size - pos)
            if number not in skip:
                segments.append(Segment(line, lo, lo + take, pos))
            lo += take
            pos += take
            if pos == (number + 1) * size:
                if number not in skip:
                    yield Chunk(number, start, pos, tuple(segments))
                segments, number, start = [], number + 1, pos
    if pos > start and number not in skip:
        yield Chunk(number, start, pos, tuple(segments))


def generated_elements(line: PoolLine, j: int) -> dict[str, str]:
    """Template element -> element of candidate ``j`` of a generator line (mixed radix)."""
    template = _templates()[line.template]
    own = template_elements(template)
    subs = line.spec.get("substitute", {})
    out: dict[str, str] = {}
    for el in reversed(own):
        options = subs.get(el, [el])
        j, digit = divmod(j, len(options))
        out[el] = options[digit]
    return out
