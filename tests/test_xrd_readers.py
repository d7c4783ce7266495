"""Pattern readers on real instrument files, plain column files, and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

from controller.xrd import XrdFormatError, XrdPattern, read_pattern

MIX = ("xrd", "dara_precursor_mixtures")


def test_real_xrdml_counts_range_and_wavelengths() -> None:
    p = read_pattern(shared_data(*MIX, "TiO2_0p4009-ZnO_0p6010--2min.xrdml"))
    assert p.two_theta.size == p.intensities.size == 2071
    assert p.two_theta[0] == pytest.approx(10.02173288)
    assert p.two_theta[-1] == pytest.approx(99.99585608)
    assert np.all(np.diff(p.two_theta) > 0)
    raw = shared_data(*MIX, "TiO2_0p4009-ZnO_0p6010--2min.xrdml").read_text(encoding="utf-8-sig")
    counts = raw.split('<counts unit="counts">')[1].split("</counts>")[0].split()
    np.testing.assert_array_equal(p.intensities, np.array(counts, dtype=float))
    assert p.wavelength_angstrom == pytest.approx(1.540598)
    assert p.kalpha2_angstrom == pytest.approx(1.544426)
    assert p.kalpha2_ratio == pytest.approx(0.5)
    assert p.has_kalpha2
    assert p.meta["sample_id"] == "TiO2_0p4009-ZnO_0p6010--2min"


def test_every_real_mixture_scan_reads() -> None:
    files = sorted(shared_data(*MIX).glob("*.xrdml"))
    assert len(files) == 40
    for f in files:
        p = read_pattern(f)
        n = p.two_theta.size
        assert (2000 < n < 2200) if "--2min" in f.name else (8000 < n < 8400), f.name
        assert p.intensities.max() > 1000


def test_xrdml_list_positions_and_intensities(tmp_path: Path) -> None:
    src = shared_data(*MIX, "TiO2_0p4009-ZnO_0p6010--2min.xrdml").read_text(encoding="utf-8-sig")
    counts = src.split('<counts unit="counts">')[1].split("</counts>")[0].split()
    tt = np.linspace(10.0, 100.0, len(counts))
    listed = src.split("<startPosition>10.02173288</startPosition>")[0]
    rest = src.split("<endPosition>99.99585608</endPosition>")[1]
    text = (listed + "<listPositions>" + " ".join(f"{v:.5f}" for v in tt) + "</listPositions>"
            + rest).replace('<counts unit="counts">', '<intensities unit="counts per second">')
    text = text.replace("</counts>", "</intensities>")
    f = tmp_path / "listed.xrdml"
    f.write_text(text, encoding="utf-8")
    p = read_pattern(f)
    assert p.two_theta[0] == pytest.approx(10.0) and p.two_theta[-1] == pytest.approx(100.0)
    # counts per second x common counting time = counts
    assert p.intensities[0] == pytest.approx(int(counts[0]) * 10.965)


def test_column_files_with_wavelength_header(tmp_path: Path) -> None:
    x = np.arange(10, 20, 0.05)
    y = 100 + 50 * np.exp(-((x - 15) ** 2))
    xy = tmp_path / "a.xy"
    xy.write_text("# wavelength = 1.7890\n" + "\n".join(f"{a} {b}" for a, b in zip(x, y, strict=True)))
    p = read_pattern(xy)
    assert p.wavelength_angstrom == pytest.approx(1.789)
    assert not p.has_kalpha2
    np.testing.assert_allclose(p.intensities, y)
    xye = tmp_path / "a.xye"
    xye.write_text("\n".join(f"{a} {b} {np.sqrt(b)}" for a, b in zip(x, y, strict=True)))
    assert read_pattern(xye).two_theta.size == x.size
    csv = tmp_path / "a.csv"
    csv.write_text("two_theta,intensity\n" + "\n".join(f"{a},{b}" for a, b in zip(x, y, strict=True)))
    q = read_pattern(csv)
    assert q.wavelength_angstrom == pytest.approx(1.540598)
    np.testing.assert_allclose(q.two_theta, x)


def test_pattern_dict_round_trip_is_exact() -> None:
    p = read_pattern(shared_data(*MIX, "NiO_0p6007-Bi2O3_0p4008--2min.xrdml"))
    q = XrdPattern.from_dict(p.to_dict())
    np.testing.assert_array_equal(p.two_theta, q.two_theta)
    np.testing.assert_array_equal(p.intensities, q.intensities)
    assert (q.wavelength_angstrom, q.kalpha2_angstrom, q.kalpha2_ratio) == (
        p.wavelength_angstrom, p.kalpha2_angstrom, p.kalpha2_ratio)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("truncated.xrdml", None, "malformed or truncated"),
        ("empty.xy", "", "no numeric data"),
        ("mixed.xy", "10 1\n10.1 2\n10.2\n", "1 columns"),
        ("text.csv", "10,1\n10.1,abc\n", "not numeric"),
        ("order.xy", "\n".join(f"{30 - i * 0.1} 5" for i in range(40)), "not strictly increasing"),
        ("short.xy", "10 1\n11 2\n", "only 2 data points"),
        ("scan.raw", "whatever", "unknown pattern format"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, name: str, content: str | None,
                                      problem: str) -> None:
    f = tmp_path / name
    if content is None:
        real = shared_data(*MIX, "TiO2_0p4009-ZnO_0p6010--2min.xrdml").read_bytes()
        f.write_bytes(real[: len(real) // 2])
    else:
        f.write_text(content)
    with pytest.raises(XrdFormatError) as err:
        read_pattern(f)
    assert name in str(err.value) and problem in str(err.value)


def test_xrdml_without_data_points_or_with_bad_counts(tmp_path: Path) -> None:
    src = shared_data(*MIX, "TiO2_0p4009-ZnO_0p6010--2min.xrdml").read_text(encoding="utf-8-sig")
    f = tmp_path / "nodata.xrdml"
    f.write_text(src.split("<dataPoints>")[0] + "</scan></xrdMeasurement></xrdMeasurements>")
    with pytest.raises(XrdFormatError, match="nodata.xrdml: no <dataPoints>"):
        read_pattern(f)
    g = tmp_path / "badcounts.xrdml"
    g.write_text(src.replace('<counts unit="counts">', '<counts unit="counts">x12 '))
    with pytest.raises(XrdFormatError, match="badcounts.xrdml: <counts> holds a non-number"):
        read_pattern(g)
    with pytest.raises(XrdFormatError, match="no such file"):
        read_pattern(tmp_path / "missing.xrdml")
