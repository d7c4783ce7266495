"""Wire protocol and step schemas: round trips, clear errors, and a fuzzed decoder boundary."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Ack,
    Command,
    Error,
    Goodbye,
    Heartbeat,
    Ledger,
    Progress,
    ProtocolError,
    Register,
    Result,
    StatusQuery,
    StatusReply,
    StepError,
    decode,
    encode,
    example_params,
    new_id,
    validate_params,
    validate_result,
)
from drivers.ledger import INTERRUPTED

CID = str(uuid.uuid4())

SAMPLES = [
    Register(identity="furnace-1", capabilities=["heat"], capacity=4, version="1.2"),
    Heartbeat(running=[CID]),
    Command(command_id=CID, capability="heat", params=example_params("heat"), deadline_s=3600,
            sample_ids=["S1"]),
    Ack(command_id=CID, duplicate=True, state="succeeded"),
    Progress(command_id=CID, fraction=0.5, message="dwell"),
    Result(command_id=CID, status="succeeded", result={"a": [1, 2.5, None]}, replay=True),
    StatusQuery(command_ids=[CID, "other"]),
    StatusReply(query_id="q", statuses={CID: "running", "other": "unknown"}),
    Error(code="busy", detail="at capacity", command_id=CID),
    Goodbye(reason="maintenance"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.type)
def test_every_message_round_trips_and_carries_the_version(msg) -> None:
    frame = encode(msg)
    assert json.loads(frame)["v"] == PROTOCOL_VERSION
    assert decode(frame) == msg


def test_all_message_types_are_covered() -> None:
    assert {m.type for m in SAMPLES} == set(MESSAGE_TYPES)


def test_other_protocol_version_is_refused_with_code_version() -> None:
    frame = json.loads(encode(Heartbeat()))
    frame["v"] = PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolError) as exc:
        decode(json.dumps(frame).encode())
    assert exc.value.code == "version"
    assert str(PROTOCOL_VERSION + 1) in exc.value.detail


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (b"\xff\xfe not json", "invalid"),
        (b'{"v":1,"type":"command","command_id":"nope","capability":"heat","deadline_s":1}',
         "command_id"),
        (b'{"v":1,"type":"command","capability":"heat","deadline_s":-1}', "deadline_s"),
        (b'{"v":1,"type":"heartbeat","bogus":1}', "bogus"),
        (b'{"v":1,"type":"teleport"}', "type"),
        (b"[1,2,3]", "invalid"),
        (b'{"v":1,"type":"progress","command_id":"x","fraction":1.5}', "fraction"),
    ],
)
def test_malformed_frames_raise_protocol_error_naming_the_field(frame: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(frame)
    assert exc.value.code == "malformed"
    assert needle in str(exc.value)


def test_decode_rejects_non_bytes_and_oversized_frames() -> None:
    with pytest.raises(ProtocolError):
        decode("a str")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b" " * (33 * 1024 * 1024))


def test_command_defaults_a_uuid_and_normalises_it() -> None:
    upper = str(uuid.uuid4()).upper()
    cmd = Command(command_id=upper, capability="xrd", deadline_s=1)
    assert cmd.command_id == upper.lower()
    assert uuid.UUID(Command(capability="xrd", deadline_s=1).command_id)


def test_new_ids_are_canonical_unique_time_ordered_uuid7_and_differ_after_fork() -> None:
    import os
    import time

    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    # the leading 48 bits are Unix milliseconds: ids of later milliseconds sort later, which
    # is what keeps ledger inserts on the right edge of the B-tree
    assert abs(int(ids[0][:8] + ids[0][9:13], 16) / 1000 - time.time()) < 60
    first = new_id()
    time.sleep(0.003)
    assert new_id() > first
    # a forked child must not repeat its parent's sequence
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(write, "".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100_000).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = {new_id() for _ in range(50)}
    assert len(child) == 50 * 36
    theirs = {child[i:i + 36] for i in range(0, len(child), 36)}
    assert not {t[14:] for t in theirs} & {m[14:] for m in mine}  # random parts differ


# ---- fuzzing the boundary: decode returns a message or raises ProtocolError, nothing else ----

_FIELDS = sorted({f for cls in MESSAGE_TYPES.values() for f in cls.model_fields} - {"v", "type"})
_json_leaf = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
              | st.sampled_from([CID, "heat", "running", "succeeded", 0.5, 10]))
_json = st.one_of(
    _json_leaf,
    st.lists(_json_leaf, max_size=3),
    st.dictionaries(st.sampled_from([CID, "sample_id", "x"]), _json_leaf, max_size=3),
)
_message_like = st.builds(
    lambda v, t, rest: {"v": v, "type": t, **rest},
    st.sampled_from([1, 1, 1, 0, 2, "1", None]),
    st.sampled_from([*MESSAGE_TYPES, "x", ""]),
    st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6),
)


def _check(frame: bytes) -> None:
    try:
        msg = decode(frame)
    except ProtocolError as exc:
        assert exc.code in ("malformed", "version")
        return
    assert type(msg) in MESSAGE_TYPES.values()
    assert decode(encode(msg)) == msg  # whatever is accepted re-encodes losslessly


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message_like)
def test_fuzz_decoder_with_message_shaped_json(obj: dict) -> None:
    try:
        frame = json.dumps(obj).encode()
    except (ValueError, OverflowError):
        return
    _check(frame)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoder_with_random_bytes(frame: bytes) -> None:
    _check(frame)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(min_value=0), st.integers(0, 255))
def test_fuzz_decoder_with_bit_flips_of_valid_frames(msg, pos: int, byte: int) -> None:
    frame = bytearray(encode(msg))
    frame[pos % len(frame)] = byte
    _check(bytes(frame))


# ---- step schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize("cap", ["dose_mix", "heat", "recover", "xrd"])
def test_example_params_are_valid(cap: str) -> None:
    assert validate_params(cap, example_params(cap))


def test_step_params_errors_name_field_and_value() -> None:
    bad = example_params("heat")
    bad["profile"][0]["setpoint_c"] = 5000
    with pytest.raises(StepError, match=r"profile\.0\.setpoint_c=5000"):
        validate_params("heat", bad)
    with pytest.raises(StepError, match="setpiont_c"):
        validate_params("heat", {**example_params("heat"), "setpiont_c": 3})
    with pytest.raises(StepError, match="two_theta_end"):
        validate_params("xrd", {"sample_id": "S", "two_theta_start": 50, "two_theta_end": 20})
    with pytest.raises(StepError, match="atmosphere"):
        validate_params("heat", {**example_params("heat"), "atmosphere": "H2"})


def test_xrd_defaults_and_result_lengths_checked() -> None:
    params = validate_params("xrd", {"sample_id": "S1"})
    assert (params["two_theta_start"], params["two_theta_end"], params["step"]) == (10, 80, 0.02)
    ok = {"sample_id": "S1", "two_theta": [10.0, 10.02], "intensities": [1.0, 2.0],
          "wavelength_angstrom": 1.5406, "meta": {"scan": 1}, "sim_time_min": 8}
    assert validate_result("xrd", ok)["sim_time_min"] == 8
    with pytest.raises(StepError, match="intensities"):
        validate_result("xrd", {**ok, "intensities": [1.0]})


def test_non_standard_capabilities_pass_through() -> None:
    assert validate_params("read_temperature", {"x": 1}) == {"x": 1}


# ---- ledger ---------------------------------------------------------------------------------


def test_ledger_dedups_and_marks_interrupted_rows_failed(tmp_path) -> None:
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    assert led.begin("a", "heat", {}) is None
    assert led.begin("a", "heat", {}).state == "running"  # duplicate: caller must not execute
    assert led.begin("b", "heat", {}) is None
    led.finish("b", "succeeded", result={"x": 1})
    led.finish("b", "failed", error="late")  # terminal rows never change
    led.close()
    # a new process: "a" was running when the old one died
    led = Ledger(path)
    assert led.recover_interrupted() == ["a"]
    a, b = led.get("a"), led.get("b")
    assert a is not None and a.state == "failed" and a.error == INTERRUPTED
    assert b is not None and b.state == "succeeded" and b.result == {"x": 1}
    assert led.statuses(["a", "b", "c"]) == {"a": "failed", "b": "succeeded", "c": "unknown"}
    led.close()


def test_ledger_group_commit_reports_known_ids_and_stores_encoded_results(tmp_path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    assert led.apply([("begin", "a", "echo", {"i": 1}), ("begin", "b", "echo", {})]) == [True, True]
    # a batch where one begin meets a known id: per-op answers stay exact (row-by-row redo)
    assert led.apply([("begin", "c", "echo", {}), ("begin", "a", "echo", {}),
                      ("finish", "b", "succeeded", '{"x":[1,2]}', None)]) == [True, False, True]
    # a finish of an already finished row changes nothing and says so
    assert led.apply([("finish", "b", "failed", None, "late"),
                      ("finish", "c", "succeeded", {"y": 1}, None)]) == [False, True]
    b, c = led.get("b"), led.get("c")
    assert b is not None and b.state == "succeeded" and b.result == {"x": [1, 2]}
    assert c is not None and c.result == {"y": 1}
    assert led.get("a").state == "running"
    with pytest.raises(ValueError):
        led.apply([("begin", "d", "echo", {}), ("nope",)])
    assert led.get("d") is None  # nothing of a refused batch is stored
    led.close()
