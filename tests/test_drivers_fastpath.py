"""The fast paths of the command round trip keep the protocol's meaning: a step that returns
without awaiting (no timers), the Result frame made from the ledger's JSON text, a submitter
awaiting its outcome without a shield, and the ledger's single-statement commits, exclusive
lock and WITHOUT ROWID table (with ledgers of the older layout still readable)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any, ClassVar

import zmq
import zmq.asyncio

from drivers import (
    Command,
    Driver,
    InstrumentError,
    Ledger,
    ProgressFn,
    Result,
    decode,
    encode,
)

sys.path.insert(0, str(Path(__file__).parent))
from drivers_lab import HB, arun, lab  # noqa: E402


class Instant(Driver):
    """execute() never awaits: the SDK runs it without deadline or ack timers."""

    capabilities: ClassVar[tuple[str, ...]] = ("echo", "slow")
    capacity: ClassVar[int] = 8
    version: ClassVar[str] = "instant 1"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.calls: list[str] = []

    async def execute(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        self.calls.append(command.command_id)
        p = command.params
        if command.capability == "slow":
            await asyncio.sleep(p.get("sleep", 0.0))
        if p.get("fail"):
            raise InstrumentError("lamp out")
        if p.get("nan"):
            return {"x": float("nan")}
        if p.get("timeout"):
            raise TimeoutError("instrument bus")
        return {"echo": p.get("i"), "text": 'quote " and \\ and ü'}


def test_instant_and_waiting_steps_give_the_same_outcomes(tmp_path: Path) -> None:
    drv = Instant("inst", tmp_path / "l.sqlite", heartbeat_s=HB)

    async def main() -> None:
        async with lab([drv]) as d:
            for cap in ("echo", "slow"):
                ok = await d.submit(Command(capability=cap, params={"i": 7}, deadline_s=5))
                assert ok.status == "succeeded"
                assert ok.result == {"echo": 7, "text": 'quote " and \\ and ü'}
                bad = await d.submit(Command(capability=cap, params={"fail": 1}, deadline_s=5))
                assert bad.status == "failed" and bad.error == "lamp out"
                nan = await d.submit(Command(capability=cap, params={"nan": 1}, deadline_s=5))
                assert nan.status == "failed" and "unserialisable" in (nan.error or "")
                own = await d.submit(Command(capability=cap, params={"timeout": 1},
                                             deadline_s=5))
                assert own.status == "failed" and "TimeoutError" in (own.error or "")
            # the deadline still cancels a step that waits
            late = await d.submit(Command(capability="slow", params={"sleep": 5.0},
                                          deadline_s=0.2))
            assert late.status == "expired"
            # a re-sent instant command is replayed from the ledger, not executed again
            cmd = Command(capability="echo", params={"i": 1}, deadline_s=5)
            first = await d.submit(cmd)
            again = await d.submit(cmd)
            assert first.result == again.result and drv.calls.count(cmd.command_id) == 1

    arun(main())


def test_result_frame_of_an_instant_step_means_what_encode_gives(tmp_path: Path) -> None:
    """Talk to the driver through a raw ROUTER and compare the frame with encode()'s."""
    drv = Instant("inst", tmp_path / "l.sqlite", heartbeat_s=HB)

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        stop = asyncio.Event()
        serving = asyncio.create_task(drv.serve(f"tcp://127.0.0.1:{port}", stop=stop))
        try:
            ident, frame = await router.recv_multipart()
            assert decode(frame).type == "register"
            cmd = Command(capability="echo", params={"i": 3}, deadline_s=5)
            await router.send_multipart([ident, encode(cmd)])
            while True:
                _, frame = await asyncio.wait_for(router.recv_multipart(), 5)
                msg = decode(frame)
                if msg.type == "result":
                    break
            expected = Result(command_id=cmd.command_id, status="succeeded",
                              result={"echo": 3, "text": 'quote " and \\ and ü'})
            assert msg == expected
            # same JSON, same key order (the text differs only in escapes and float spelling,
            # e.g. "\u00fc" for "ü": both are the same JSON value)
            ours, theirs = json.loads(frame), json.loads(encode(expected))
            assert ours == theirs and list(ours) == list(theirs)
        finally:
            stop.set()
            await asyncio.wait_for(serving, 10)
            router.close(0)
            ctx.term()

    arun(main())


def test_cancelled_submitter_leaves_the_command_to_its_joiners(tmp_path: Path) -> None:
    drv = Instant("inst", tmp_path / "l.sqlite", heartbeat_s=HB)

    async def main() -> None:
        async with lab([drv]) as d:
            cmd = Command(capability="slow", params={"sleep": 0.3, "i": 5}, deadline_s=5)
            first = asyncio.create_task(d.submit(cmd))
            await asyncio.sleep(0.05)
            joiner = asyncio.create_task(d.submit(cmd))
            await asyncio.sleep(0.05)
            first.cancel()
            out = await asyncio.wait_for(joiner, 5)
            assert out.status == "succeeded" and out.result["echo"] == 5
            assert first.cancelled()
            # the id was never lost: a later re-submit gets the stored result (no new run)
            again = await d.submit(cmd)
            assert again.status == "succeeded" and drv.calls.count(cmd.command_id) == 1

    arun(main())


def test_ledger_of_the_older_rowid_layout_still_works(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE commands (command_id TEXT PRIMARY KEY, capability TEXT NOT NULL, "
        "params TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN "
        "('running','succeeded','failed','expired')), result TEXT, error TEXT, "
        "received_at REAL NOT NULL, finished_at REAL)"
    )
    db.execute("INSERT INTO commands VALUES ('old', 'heat', '{}', 'succeeded', '{\"t\": 1}', "
               "NULL, 1.0, 2.0)")
    db.commit()
    db.close()
    led = Ledger(path)
    try:
        assert led.get("old").result == {"t": 1}
        cid = str(uuid.uuid4())
        assert led.apply([("begin", cid, "heat", {"a": 1})]) == [True]
        assert led.apply([("begin", cid, "heat", {"a": 1})]) == [False]  # known id
        assert led.apply([("finish", cid, "succeeded", '{"ok":true}', None)]) == [True]
        assert led.apply([("finish", cid, "failed", None, "late")]) == [False]  # terminal
        assert led.get(cid).result == {"ok": True}
    finally:
        led.close()


def test_new_ledger_is_without_rowid_and_single_ops_commit(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    led = Ledger(path)
    cid = str(uuid.uuid4())
    assert led.apply([("begin", cid, "echo", {"i": 1})]) == [True]
    assert led.apply([("finish", cid, "succeeded", {"echo": 1}, None)]) == [True]
    led.close()  # releases the exclusive lock
    db = sqlite3.connect(path)
    try:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'commands'").fetchone()[0]
        assert "WITHOUT ROWID" in sql
        assert db.execute("SELECT state, result FROM commands").fetchall() == [
            ("succeeded", '{"echo": 1}')]
    finally:
        db.close()
