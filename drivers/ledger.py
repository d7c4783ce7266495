"""Durable SQLite ledger of command ids on the driver side: the at-most-once guarantee.

Why: a furnace must never fire twice for one command, whatever the network or the processes do.
The rule is simple and checked in one place:

1. A command id is written as ``running`` (and the write is committed to disk) *before* the
   instrument is touched.
2. A command id already in the ledger is never executed again: a finished one is answered
   from the stored result; a running one is acknowledged as a duplicate.
3. On start-up, every row still ``running`` belongs to a process that died mid-command. Those
   are marked ``failed`` with :data:`INTERRUPTED` — the instrument may be in any state, so a
   person or a recovery policy must look; re-running would risk doing the action twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

INTERRUPTED = (
    "interrupted: driver restarted mid-command; instrument state must be checked "
    "(the action may have partly run and was not repeated)"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id   TEXT PRIMARY KEY,
    capability   TEXT NOT NULL,
    params       TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running','succeeded','failed','expired')),
    result       TEXT,
    error        TEXT,
    received_at  REAL NOT NULL,
    finished_at  REAL
) WITHOUT ROWID
"""
# WITHOUT ROWID: the table *is* the primary-key B-tree, so a new command writes one page per
# commit instead of two (row + separate index on the TEXT key). Ledgers created before keep
# their rowid table; the statements are the same for both.


WAL_CHECKPOINT_PAGES = 100
"""WAL frames after which a commit also checkpoints (SQLite's default is 1000). Why smaller: the
checkpoint runs inside the commit that crosses the mark, on the event loop, and every command
in flight waits for it. Measured on a 2-core VM (8 instances' begin + finish commits): at 1000
pages, 0.35 % of commits took 6-17 ms; at 100, the longest took 4-8 ms and commits over 3 ms
fell 42 -> 4-7 (sync=normal), 67-132 -> 13-27 (sync=full), at the same CPU per command."""


_INSERT = (
    "INSERT OR IGNORE INTO commands (command_id, capability, params, state, received_at) "
    "VALUES (?, ?, ?, 'running', ?)"
)
_FINISH = (
    "UPDATE commands SET state = ?, result = ?, error = ?, finished_at = ? "
    "WHERE command_id = ? AND state = 'running'"
)


def stored_json(value: Any) -> str | None:
    """A result as stored: None, JSON text already encoded (the SDK encodes a result once), or
    a dict to encode."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def commit_rows(db: sqlite3.Connection, insert_sql: str, finish_sql: str,
                begins: list[tuple[Any, ...]], finishes: list[tuple[Any, ...]],
                kinds: list[bool]) -> list[bool]:
    """Write a group commit's rows in ONE transaction (one fsync); per op (``kinds``: True for
    a begin, in op order) whether it changed a row. The caller holds the connection's lock.

    Shared by the single-driver ledger and the host ledger, which differ only in their SQL.
    One op is one statement in autocommit mode — its own transaction, committed (and fsynced)
    like an explicit one, two calls into SQLite fewer than BEGIN … COMMIT: the usual case when
    commands do not overlap. A batch runs one executemany per kind; if a count falls short (a
    begin met a known id, a finish met a finished row — rare), it is redone row by row to learn
    which.
    """
    if len(kinds) == 1:
        sql, row = (insert_sql, begins[0]) if begins else (finish_sql, finishes[0])
        return [db.execute(sql, row).rowcount == 1]
    db.execute("BEGIN IMMEDIATE")
    try:
        if (begins and db.executemany(insert_sql, begins).rowcount != len(begins)) or (
            finishes and db.executemany(finish_sql, finishes).rowcount != len(finishes)
        ):
            db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")
            fresh = [db.execute(insert_sql, row).rowcount == 1 for row in begins]
            done = [db.execute(finish_sql, row).rowcount == 1 for row in finishes]
        else:
            fresh = [True] * len(begins)
            done = [True] * len(finishes)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    fresh_it, done_it = iter(fresh), iter(done)
    return [next(fresh_it) if is_begin else next(done_it) for is_begin in kinds]



@dataclass(frozen=True)
class LedgerEntry:
    """One command as the ledger knows it."""

    command_id: str
    capability: str
    state: str
    result: dict[str, Any] | None
    error: str | None
    received_at: float
    finished_at: float | None


class LedgerError(RuntimeError):
    """The ledger file cannot be opened or written (names the path)."""


class Ledger:
    """SQLite file (WAL) of command id → state/result; one per driver identity.

    ``sync="full"`` fsyncs every commit (survives power loss); ``"normal"`` survives a killed
    process (SIGKILL) but not a power cut, and is several times faster on slow disks.
    """

    def __init__(self, path: str | Path, *, sync: Literal["full", "normal"] = "full") -> None:
        self.path = Path(path)
        if sync not in ("full", "normal"):
            raise ValueError(f"ledger sync must be 'full' or 'normal', got {sync!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
            # one connection (one driver process) owns the file: no per-transaction file locks
            # and no shared-memory WAL index (set before WAL mode is first used); a second
            # process opening the same ledger waits ``timeout`` and fails instead of sharing it
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            hosted = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'host_commands'").fetchone()
            if hosted is None:
                self._db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"cannot open driver ledger {self.path}: {exc}") from exc
        if hosted is not None:
            # a host ledger (drivers.host_ledger): its rows are keyed by identity; opening it
            # as a single ledger would start from an empty history and could run ids again
            self._db.close()
            raise LedgerError(f"{self.path} is a host ledger shared by several driver "
                              "instances: serve this driver in that host (drivers.serve_many)")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, row: tuple[Any, ...] | None) -> LedgerEntry | None:
        if row is None:
            return None
        cid, cap, state, result, error, received, finished = row
        return LedgerEntry(
            command_id=cid,
            capability=cap,
            state=state,
            result=json.loads(result) if result is not None else None,
            error=error,
            received_at=received,
            finished_at=finished,
        )

    def get(self, command_id: str) -> LedgerEntry | None:
        """The entry for an id, or None if this driver never saw it."""
        with self._lock:
            row = self._db.execute(
                "SELECT command_id, capability, state, result, error, received_at, finished_at "
                "FROM commands WHERE command_id = ?",
                (command_id,),
            ).fetchone()
        return self._row(row)

    def begin(self, command_id: str, capability: str, params: dict[str, Any]) -> LedgerEntry | None:
        """Record a command as running (committed) and return None; if the id is already known,
        change nothing and return the existing entry — the caller must not execute then."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO commands (command_id, capability, params, state, "
                "received_at) VALUES (?, ?, ?, 'running', ?)",
                (command_id, capability, json.dumps(params), time.time()),
            )
            inserted = cur.rowcount == 1
        return None if inserted else self.get(command_id)

    def finish(
        self,
        command_id: str,
        state: Literal["succeeded", "failed", "expired"],
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Store the terminal state of a running command (a terminal row is never changed)."""
        with self._lock:
            self._db.execute(
                "UPDATE commands SET state = ?, result = ?, error = ?, finished_at = ? "
                "WHERE command_id = ? AND state = 'running'",
                (
                    state,
                    json.dumps(result) if result is not None else None,
                    error,
                    time.time(),
                    command_id,
                ),
            )

    def apply(self, ops: list[tuple[Any, ...]]) -> list[bool]:
        """Group commit: run many ``("begin", id, capability, params)`` and
        ``("finish", id, state, result, error)`` operations in ONE transaction (one fsync).

        ``result`` is a dict, None, or a str holding the result already encoded as JSON (the
        SDK encodes a result once: its serialisability check is the stored copy).

        Returns per op whether it changed a row (a ``begin`` that returns False met a known
        id). Either all ops are durable when this returns, or it raises and none is. All
        begins run before all finishes: a begin and a finish of the same id can only meet in
        one batch as "admitted, then cancelled before it started", which is that order.
        """
        now = time.time()
        begins: list[tuple[str, str, str, float]] = []
        finishes: list[tuple[str, str | None, str | None, float, str]] = []
        kinds: list[bool] = []  # True: begin
        for op in ops:
            kind = op[0]
            if kind == "begin":
                _, cid, cap, params = op
                begins.append((cid, cap, json.dumps(params), now))
                kinds.append(True)
            elif kind == "finish":
                _, cid, state, result, error = op
                finishes.append((state, stored_json(result), error, now, cid))
                kinds.append(False)
            else:
                raise ValueError(f"unknown ledger op {kind!r}")
        with self._lock:
            return commit_rows(self._db, _INSERT, _FINISH, begins, finishes, kinds)

    def record_failure(self, command_id: str, capability: str, params: dict[str, Any],
                       error: str) -> None:
        """Record a command that was refused before execution (e.g. invalid params)."""
        if self.begin(command_id, capability, params) is None:
            self.finish(command_id, "failed", error=error)

    def recover_interrupted(self) -> list[str]:
        """Mark every row left ``running`` by a dead process as failed/interrupted (rule 3)."""
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT command_id FROM commands WHERE state = 'running'"
                ).fetchall()
            ]
            self._db.execute(
                "UPDATE commands SET state = 'failed', error = ?, finished_at = ? "
                "WHERE state = 'running'",
                (INTERRUPTED, time.time()),
            )
        return ids

    def statuses(self, command_ids: list[str]) -> dict[str, str]:
        """State per id ("unknown" for ids never seen)."""
        out = {cid: "unknown" for cid in command_ids}
        with self._lock:
            for start in range(0, len(command_ids), 500):
                chunk = command_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for cid, state in self._db.execute(
                    f"SELECT command_id, state FROM commands WHERE command_id IN ({marks})", chunk
                ):
                    out[cid] = state
        return out

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM commands").fetchone()[0])
