"""Reading labelled structure tables (CSV with a ``cif`` column, gzipped or not).

Why here: the bench command, the benchmarks and the controller all read the same layout
(``data_perov_5_*.csv.gz``), and a bad row must be reported by row number and id.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

csv.field_size_limit(10_000_000)


class DatasetError(ValueError):
    """A structure table cannot be read (missing file or column, bad value)."""


def read_structure_csv(path: str | Path, target: str | None = None, *, limit: int | None = None,
                       cif_column: str = "cif") -> tuple[list[Structure], np.ndarray, list[str]]:
    """Structures, target values (NaN if ``target`` is None) and row ids from a CSV table."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    structures: list[Structure] = []
    values: list[float] = []
    ids: list[str] = []
    with opener(path, "rb") as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        cols = reader.fieldnames or []
        if cif_column not in cols:
            raise DatasetError(f"{path}: no column {cif_column!r} (columns: {cols})")
        if target is not None and target not in cols:
            raise DatasetError(f"{path}: no target column {target!r} (columns: {cols})")
        for row_no, row in enumerate(reader, start=2):
            if limit is not None and len(structures) >= limit:
                break
            rid = row.get("material_id") or str(row_no - 2)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    structures.append(Structure.from_str(row[cif_column], fmt="cif"))
            except Exception as exc:
                raise DatasetError(f"{path}: line {row_no} (id {rid}): bad CIF: {exc}") from exc
            if target is not None:
                try:
                    values.append(float(row[target]))
                except (TypeError, ValueError):
                    raise DatasetError(f"{path}: line {row_no} (id {rid}): {target}="
                                       f"{row[target]!r} is not a number") from None
            else:
                values.append(float("nan"))
            ids.append(rid)
    if not structures:
        raise DatasetError(f"{path}: no rows")
    return structures, np.asarray(values, dtype=np.float64), ids
