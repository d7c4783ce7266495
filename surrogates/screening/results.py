"""Read a screen's output back: the funnel's survivors as campaign candidates.

Why here: the campaign's acquisition can take its pool from a screen (candidate source kind
``screen``); the survivors carry their structure (JSON) in the chunk files, so the pool file
need not be kept beside the scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .runner import ScreenError, read_done, require_scale_extra


def read_survivors(out: str | Path, top: int | None = None) -> list[Any]:
    """The ``top`` survivors of the screen in ``out`` (best first: lowest optimistic
    decomposition energy, else formation energy) as ``surrogates.Candidate``."""
    require_scale_extra()
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    from pymatgen.core import Structure  # noqa: PLC0415

    from ..candidates import Candidate  # noqa: PLC0415

    out = Path(out)
    manifest = out / "manifest.json"
    if not manifest.exists():
        raise ScreenError(f"{out}: not a screen output (no manifest.json); run synthloop screen first")
    done = read_done(out)
    if not done:
        return []
    columns = ["index", "id", "formula", "template", "gnn_e_form", "gnn_e_form_std", "e_decomp",
               "structure", "survived"]
    parts = [pq.read_table(out / rec["file"], columns=columns) for _, rec in sorted(done.items())]
    table = pa.concat_tables(parts)
    table = table.filter(pc.field("survived"))
    rows = table.to_pylist()
    sigma = float(json.loads(manifest.read_text())["funnel"].get("sigma", 1.0))

    def score(r: dict[str, Any]) -> float:
        e = r["e_decomp"] if r["e_decomp"] == r["e_decomp"] and r["e_decomp"] is not None else r["gnn_e_form"]
        return float(e) - sigma * float(r["gnn_e_form_std"] or 0.0)

    rows.sort(key=lambda r: (score(r), r["index"]))
    out_list = []
    for r in rows[:top] if top is not None else rows:
        structure = Structure.from_dict(json.loads(r["structure"]))
        out_list.append(Candidate(f"screen:{r['id']}", structure.composition.reduced_formula, structure,
                                  "screen", {"screen": str(out), "index": int(r["index"]),
                                             "template": r["template"], "gnn_e_form": r["gnn_e_form"],
                                             "gnn_e_form_std": r["gnn_e_form_std"],
                                             "e_decomp": r["e_decomp"], "score": score(r)}))
    return out_list
