"""Shared physical state of the simulated lab: crucibles and the execution ledger, in SQLite.

Why SQLite in the lab's workdir: the dosing station, the furnaces and the XRD station run as
separate driver processes (as real instruments are separate machines) yet act on the same
powders. One WAL-mode database file gives them atomic read-modify-write of a crucible and an
append-only record of every physical action, which survives a crash of any one process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .physics import SampleState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sample (
    sample_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    location TEXT NOT NULL,
    scans INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS execution (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    instrument TEXT NOT NULL,
    command_id TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    action TEXT NOT NULL,
    sim_time_min REAL NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS execution_command ON execution(command_id);
"""


class SampleStore:
    """Crucibles (``SampleState`` as JSON) and the execution ledger of one simulated lab."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._con().executescript(_SCHEMA)

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- crucibles -----------------------------------------------------------------------------
    def get(self, sample_id: str) -> SampleState | None:
        row = self._con().execute("SELECT state FROM sample WHERE sample_id=?", (sample_id,)).fetchone()
        return SampleState.from_dict(json.loads(row[0])) if row else None

    def location(self, sample_id: str) -> str | None:
        row = self._con().execute("SELECT location FROM sample WHERE sample_id=?", (sample_id,)).fetchone()
        return row[0] if row else None

    def sample_ids(self) -> list[str]:
        return [r[0] for r in self._con().execute("SELECT sample_id FROM sample ORDER BY sample_id")]

    def put(
        self,
        sample_id: str,
        state: SampleState,
        location: str,
        *,
        instrument: str,
        command_id: str,
        action: str,
        sim_time_min: float,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Store the crucible and append the ledger line in one transaction (never one alone)."""
        now = time.time()
        with self._tx() as con:
            con.execute(
                "INSERT INTO sample(sample_id, state, location, scans, updated) VALUES (?,?,?,0,?) "
                "ON CONFLICT(sample_id) DO UPDATE SET state=excluded.state, "
                "location=excluded.location, updated=excluded.updated",
                (sample_id, json.dumps(state.to_dict()), location, now),
            )
            con.execute(
                "INSERT INTO execution(at, instrument, command_id, sample_id, action, sim_time_min, detail)"
                " VALUES (?,?,?,?,?,?,?)",
                (now, instrument, command_id, sample_id, action, sim_time_min, json.dumps(detail or {})),
            )

    def record(self, *, instrument: str, command_id: str, sample_id: str, action: str,
               sim_time_min: float, detail: dict[str, Any] | None = None) -> int:
        """Append a ledger line for an action that changes no crucible (e.g. an XRD scan).

        Returns how many scans of this sample came before (seeds the counting noise).
        """
        with self._tx() as con:
            row = con.execute("SELECT scans FROM sample WHERE sample_id=?", (sample_id,)).fetchone()
            scans = int(row[0]) if row else 0
            con.execute("UPDATE sample SET scans=scans+1 WHERE sample_id=?", (sample_id,))
            con.execute(
                "INSERT INTO execution(at, instrument, command_id, sample_id, action, sim_time_min, detail)"
                " VALUES (?,?,?,?,?,?,?)",
                (time.time(), instrument, command_id, sample_id, action, sim_time_min,
                 json.dumps(detail or {})),
            )
        return scans

    # -- ledger --------------------------------------------------------------------------------
    def ledger(self) -> list[dict[str, Any]]:
        rows = self._con().execute(
            "SELECT seq, at, instrument, command_id, sample_id, action, sim_time_min, detail "
            "FROM execution ORDER BY seq"
        ).fetchall()
        return [
            {
                "seq": r[0], "at": r[1], "instrument": r[2], "command_id": r[3], "sample_id": r[4],
                "action": r[5], "sim_time_min": r[6], "detail": json.loads(r[7]),
            }
            for r in rows
        ]

    def duplicate_executions(self) -> int:
        """Physical actions performed again for a command id already executed (should be 0).

        A heat of several crucibles writes one line per crucible, so a duplicate is a repeated
        (command id, sample) pair.
        """
        row = self._con().execute(
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM execution "
            "GROUP BY command_id, sample_id, action HAVING n > 1)"
        ).fetchone()
        return int(row[0])
