"""Powder patterns and the readers for real instrument files.

Why a reader of its own: the loop's truth signal comes from real diffractometers, whose files
carry the wavelength (K-alpha1, K-alpha2 and their ratio) that the fit must use. A truncated
or malformed file must never turn into a silently wrong pattern, so every problem raises
:class:`XrdFormatError` naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CU_KA1 = 1.540598
CU_KA2 = 1.544426
CU_KA2_RATIO = 0.5


class XrdFormatError(ValueError):
    """A pattern file (or array) that cannot be read; the message names the file and problem."""


@dataclass(eq=False)
class XrdPattern:
    """A measured or simulated powder pattern.

    ``wavelength_angstrom`` is K-alpha1 (or the single wavelength of a monochromatic scan);
    ``kalpha2_angstrom``/``kalpha2_ratio`` describe the K-alpha2 line when the tube emits the
    doublet (a real Cu tube without monochromator does; the simulated station does not, so both
    default to "no K-alpha2").
    """

    two_theta: np.ndarray
    intensities: np.ndarray
    wavelength_angstrom: float = CU_KA1
    source: str | None = None
    kalpha2_angstrom: float | None = None
    kalpha2_ratio: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = self.source or "<pattern>"
        tt = np.asarray(self.two_theta, dtype=float).ravel()
        yy = np.asarray(self.intensities, dtype=float).ravel()
        if tt.size != yy.size:
            raise XrdFormatError(
                f"{name}: {tt.size} two-theta values but {yy.size} intensities"
            )
        if tt.size < 20:
            raise XrdFormatError(f"{name}: only {tt.size} data points (need at least 20)")
        if not (np.all(np.isfinite(tt)) and np.all(np.isfinite(yy))):
            raise XrdFormatError(f"{name}: non-finite two-theta or intensity values")
        if np.any(np.diff(tt) <= 0):
            raise XrdFormatError(f"{name}: two-theta values are not strictly increasing")
        if tt[0] <= 0 or tt[-1] >= 180:
            raise XrdFormatError(f"{name}: two-theta range {tt[0]}..{tt[-1]} outside (0, 180)")
        if not (0.1 < float(self.wavelength_angstrom) < 5.0):
            raise XrdFormatError(f"{name}: wavelength {self.wavelength_angstrom} A is not plausible")
        if self.kalpha2_angstrom is not None and not (0.1 < float(self.kalpha2_angstrom) < 5.0):
            raise XrdFormatError(f"{name}: K-alpha2 wavelength {self.kalpha2_angstrom} A")
        if not (0.0 <= float(self.kalpha2_ratio) <= 1.0):
            raise XrdFormatError(f"{name}: K-alpha2/K-alpha1 ratio {self.kalpha2_ratio} not in [0, 1]")
        self.two_theta = tt
        self.intensities = yy
        self.wavelength_angstrom = float(self.wavelength_angstrom)

    @property
    def has_kalpha2(self) -> bool:
        return self.kalpha2_angstrom is not None and self.kalpha2_ratio > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; :meth:`from_dict` gives back an identical pattern (reproducibility)."""
        return {
            "two_theta": self.two_theta.tolist(),
            "intensities": self.intensities.tolist(),
            "wavelength_angstrom": self.wavelength_angstrom,
            "kalpha2_angstrom": self.kalpha2_angstrom,
            "kalpha2_ratio": self.kalpha2_ratio,
            "source": self.source,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XrdPattern:
        try:
            return cls(
                two_theta=np.asarray(data["two_theta"], dtype=float),
                intensities=np.asarray(data["intensities"], dtype=float),
                wavelength_angstrom=float(data.get("wavelength_angstrom", CU_KA1)),
                source=data.get("source"),
                kalpha2_angstrom=data.get("kalpha2_angstrom"),
                kalpha2_ratio=float(data.get("kalpha2_ratio", 0.0)),
                meta=dict(data.get("meta") or {}),
            )
        except KeyError as exc:
            raise XrdFormatError(f"pattern dict: missing key {exc}") from exc

    @classmethod
    def from_station_result(cls, result: dict[str, Any]) -> XrdPattern:
        """Pattern from an ``xrd`` step result (drivers contract): single wavelength, no K-alpha2."""
        try:
            return cls(
                two_theta=np.asarray(result["two_theta"], dtype=float),
                intensities=np.asarray(result["intensities"], dtype=float),
                wavelength_angstrom=float(result.get("wavelength_angstrom", CU_KA1)),
                source=str(result.get("sample_id") or "xrd-station"),
                meta=dict(result.get("meta") or {}),
            )
        except KeyError as exc:
            raise XrdFormatError(f"xrd step result: missing key {exc}") from exc


def read_pattern(path: str | Path) -> XrdPattern:
    """Read ``.xrdml`` (Panalytical), ``.xy``, ``.xye``, ``.csv`` or ``.txt`` into an XrdPattern."""
    p = Path(path)
    if not p.is_file():
        raise XrdFormatError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".xrdml":
        return _read_xrdml(p)
    if suffix in {".xy", ".xye", ".csv", ".txt", ".dat"}:
        return _read_columns(p)
    raise XrdFormatError(
        f"{p}: unknown pattern format {suffix!r} (expected .xrdml, .xy, .xye, .csv, .txt)"
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_all(elem: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in elem.iter() if _local(e.tag) == name]


def _floats(text: str | None, p: Path, what: str) -> np.ndarray:
    if text is None or not text.strip():
        raise XrdFormatError(f"{p}: <{what}> is empty")
    try:
        return np.array([float(t) for t in text.split()], dtype=float)
    except ValueError as exc:
        raise XrdFormatError(f"{p}: <{what}> holds a non-number ({exc})") from exc


def _read_xrdml(p: Path) -> XrdPattern:
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise XrdFormatError(f"{p}: malformed or truncated XML ({exc})") from exc
    if _local(root.tag) != "xrdMeasurements":
        raise XrdFormatError(f"{p}: root element <{_local(root.tag)}> is not <xrdMeasurements>")
    ka1, ka2, ratio = CU_KA1, None, 0.0
    used = _find_all(root, "usedWavelength")
    if used:
        w = used[0]
        for child in w:
            name, text = _local(child.tag), (child.text or "").strip()
            try:
                if name == "kAlpha1":
                    ka1 = float(text)
                elif name == "kAlpha2":
                    ka2 = float(text)
                elif name == "ratioKAlpha2KAlpha1":
                    ratio = float(text)
            except ValueError as exc:
                raise XrdFormatError(f"{p}: <{name}> is not a number: {text!r}") from exc
    if ka2 is None:
        ratio = 0.0
    points = _find_all(root, "dataPoints")
    if not points:
        raise XrdFormatError(f"{p}: no <dataPoints> (scan missing or file truncated)")
    dp = points[0]
    counts_el = [e for e in dp if _local(e.tag) in {"counts", "intensities"}]
    if not counts_el:
        raise XrdFormatError(f"{p}: <dataPoints> has neither <counts> nor <intensities>")
    y = _floats(counts_el[0].text, p, _local(counts_el[0].tag))
    if _local(counts_el[0].tag) == "intensities":
        # intensities are counts per second; counts give the Poisson statistics the fit weights by
        ctimes = [e for e in dp if _local(e.tag) == "commonCountingTime"]
        if ctimes:
            y = y * float(ctimes[0].text or 1.0)
    tt_pos = [
        e for e in dp if _local(e.tag) == "positions" and e.get("axis", "").lower() == "2theta"
    ]
    if not tt_pos:
        raise XrdFormatError(f"{p}: no <positions axis=\"2Theta\"> in <dataPoints>")
    pos = tt_pos[0]
    lst = [e for e in pos if _local(e.tag) == "listPositions"]
    if lst:
        tt = _floats(lst[0].text, p, "listPositions")
        if tt.size != y.size:
            raise XrdFormatError(
                f"{p}: {tt.size} listPositions but {y.size} counts (file truncated?)"
            )
    else:
        vals: dict[str, float] = {}
        for e in pos:
            if _local(e.tag) in {"startPosition", "endPosition"}:
                try:
                    vals[_local(e.tag)] = float((e.text or "").strip())
                except ValueError as exc:
                    raise XrdFormatError(f"{p}: <{_local(e.tag)}> is not a number") from exc
        if set(vals) != {"startPosition", "endPosition"}:
            raise XrdFormatError(f"{p}: 2Theta positions need startPosition and endPosition")
        if y.size < 2:
            raise XrdFormatError(f"{p}: only {y.size} counts")
        tt = np.linspace(vals["startPosition"], vals["endPosition"], y.size)
    if np.any(y < 0):
        raise XrdFormatError(f"{p}: negative counts")
    sample = _find_all(root, "id")
    meta = {"format": "xrdml", "sample_id": (sample[0].text or "").strip() if sample else ""}
    return XrdPattern(tt, y, ka1, str(p), kalpha2_angstrom=ka2, kalpha2_ratio=ratio, meta=meta)


_WAVELENGTH_RE = re.compile(r"(?:wavelength|lambda|ka1|kalpha1)\s*[=:]\s*([0-9.]+)", re.I)


def _read_columns(p: Path) -> XrdPattern:
    """Two or three numeric columns (2theta, intensity[, esd]); '#' or text header lines allowed.

    A header comment like ``# wavelength = 1.5406`` sets the wavelength; otherwise Cu K-alpha1 is
    assumed (single line: plain column files rarely say whether K-alpha2 was stripped).
    """
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise XrdFormatError(f"{p}: not a text file ({exc})") from exc
    wavelength = CU_KA1
    rows: list[list[float]] = []
    delimiter = "," if p.suffix.lower() == ".csv" else None
    lines = text.splitlines()
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line[0] in "#!;'\"" or line[0].isalpha():
            m = _WAVELENGTH_RE.search(line)
            if m:
                wavelength = float(m.group(1))
            if rows:
                raise XrdFormatError(f"{p}: line {lineno}: text after data began: {line[:40]!r}")
            continue
        parts = next(csv.reader([line])) if delimiter else line.replace(",", " ").split()
        parts = [s for s in (x.strip() for x in parts) if s]
        try:
            vals = [float(s) for s in parts]
        except ValueError as exc:
            raise XrdFormatError(f"{p}: line {lineno}: not numeric: {line[:60]!r}") from exc
        if len(vals) not in (2, 3):
            raise XrdFormatError(f"{p}: line {lineno}: {len(vals)} columns (expected 2 or 3)")
        if rows and len(vals) != len(rows[0]):
            raise XrdFormatError(
                f"{p}: line {lineno}: {len(vals)} columns, earlier lines had {len(rows[0])} "
                "(truncated or mixed file?)"
            )
        rows.append(vals)
    if not rows:
        raise XrdFormatError(f"{p}: no numeric data rows")
    arr = np.array(rows, dtype=float)
    return XrdPattern(arr[:, 0], arr[:, 1], wavelength, str(p), meta={"format": p.suffix[1:]})
