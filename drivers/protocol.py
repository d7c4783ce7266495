"""Wire protocol between the controller (ROUTER) and instrument drivers (DEALER).

Why one module: the message schemas *are* the protocol. Every frame is one UTF-8 JSON object
carrying ``"v"`` (the protocol version) and ``"type"`` (the message kind); pydantic validates
it on receipt. ``decode`` is the trust boundary: whatever bytes arrive, it returns a validated
message or raises :class:`ProtocolError` — never anything else — so a malformed frame can be
answered with an :class:`Error` and a log line instead of crashing a furnace's driver.

The spec with examples lives in ``docs/protocol.md``; bump :data:`PROTOCOL_VERSION` on any
incompatible change.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

PROTOCOL_VERSION: int = 1
"""Version carried in every frame (field ``v``). Peers with another version are refused."""

MAX_FRAME_BYTES: int = 32 * 1024 * 1024
"""Largest frame accepted; an XRD pattern of 10^5 points is ~3 MB of JSON."""

ERROR_CODES = (
    "malformed",  # not JSON / schema violation
    "version",  # another protocol version
    "unregistered",  # a message other than Register from an unknown peer
    "busy",  # driver at capacity or draining; the controller retries elsewhere/later
    "unsupported",  # capability not offered by this driver
    "internal",  # a bug on the replying side (logged there)
)

CommandState = Literal["unknown", "running", "succeeded", "failed", "expired"]
TerminalStatus = Literal["succeeded", "failed", "expired"]

_ID = Annotated[str, Field(min_length=1, max_length=200)]


class ProtocolError(Exception):
    """A frame that is not a valid message of this protocol version.

    ``code`` is one of :data:`ERROR_CODES` ("malformed" or "version") so the receiver can put it
    straight into an :class:`Error` reply.
    """

    def __init__(self, detail: str, *, code: str = "malformed") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class _Message(BaseModel):
    """Common base: forbid unknown keys (a typo is an error, not silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION  # type: ignore[assignment]


_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII
).fullmatch
"""Matches exactly what ``str(uuid.UUID(x))`` returns (lower-case hex, 8-4-4-4-12)."""


class _IdSource:
    """Command ids as UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random.

    Why not ``uuid.uuid4``: ids are the primary keys of every driver ledger and a unique
    index of the controller's step commands. Random keys land on random B-tree pages, so each
    group commit rewrites one page per command; time-ordered keys append at the right edge,
    where a commit of many commands touches one or two pages. The random bits come from a
    generator seeded from ``os.urandom`` once per process (and again in a forked child, which
    must not repeat its parent's sequence) instead of one ``getrandom`` system call per id.
    These ids identify, they are not a random *choice* of the campaign: they need uniqueness
    (74 random bits per millisecond per process), not a campaign seed, and are never secrets.
    """

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._bits = random.Random(os.urandom(32)).getrandbits

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        rand = self._bits(74)
        # 48 bits time | version 7 | 12 random bits | variant 0b10 | 62 random bits
        value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (
            rand & 0x3FFF_FFFF_FFFF_FFFF)
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_id = _IdSource()
"""A fresh identifier (canonical UUID text, version 7, time-ordered); see :class:`_IdSource`."""


class Register(_Message):
    """Driver → controller on connect: who I am and what I can do.

    ``instance`` is random per driver process start, so the controller can tell a reconnect
    of the same process from a restart (after which in-flight commands must be re-asked).
    ``running`` lists command ids this process is executing right now.
    """

    type: Literal["register"] = "register"
    identity: _ID
    capabilities: list[_ID] = Field(min_length=1)
    capacity: int = Field(ge=1, le=10_000)
    version: str = Field(max_length=100)
    instance: str = Field(default_factory=new_id, max_length=100)
    running: list[_ID] = Field(default_factory=list)


class Heartbeat(_Message):
    """Both directions, every heartbeat interval. From a driver it lists running commands
    (so a long furnace run without progress messages is not mistaken for a lost command)."""

    type: Literal["heartbeat"] = "heartbeat"
    sent_at: float = Field(default_factory=time.time)
    running: list[_ID] = Field(default_factory=list)


class Command(_Message):
    """Controller → driver: run one step. ``command_id`` is the idempotency key.

    ``deadline_s`` is seconds of wall time from sending (relative, so clock skew between
    hosts does not matter); the driver cancels execution when it runs out.
    """

    type: Literal["command"] = "command"
    command_id: str = Field(default_factory=new_id)
    capability: _ID
    params: dict[str, Any] = Field(default_factory=dict)
    deadline_s: float = Field(gt=0, le=30 * 24 * 3600.0, allow_inf_nan=False)
    sample_ids: list[_ID] = Field(default_factory=list)

    @field_validator("command_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if _CANONICAL_UUID(value) is not None:  # the usual case: already canonical
            return value
        try:
            return str(uuid.UUID(value))
        except (ValueError, AttributeError, TypeError):
            raise ValueError(f"command_id must be a UUID, got {value!r}") from None


class Ack(_Message):
    """Driver → controller: command received. ``duplicate`` is true when the id was already
    in the ledger; ``state`` then says where it is (a terminal state is followed by a replayed
    :class:`Result`)."""

    type: Literal["ack"] = "ack"
    command_id: _ID
    duplicate: bool = False
    state: CommandState = "running"


class Progress(_Message):
    """Driver → controller: optional progress of a long step (fraction in [0, 1])."""

    type: Literal["progress"] = "progress"
    command_id: _ID
    fraction: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    message: str = Field(default="", max_length=2000)


class Result(_Message):
    """Driver → controller: terminal outcome. ``replay`` marks an answer from the ledger
    (the instrument did not act again)."""

    type: Literal["result"] = "result"
    command_id: _ID
    status: TerminalStatus
    result: dict[str, Any] | None = None
    error: str | None = None
    replay: bool = False


class StatusQuery(_Message):
    """Controller → driver: what do you know about these command ids? (reconciliation)"""

    type: Literal["status_query"] = "status_query"
    query_id: str = Field(default_factory=new_id, max_length=100)
    command_ids: list[_ID] = Field(max_length=100_000)


class StatusReply(_Message):
    """Driver → controller: state per queried id ("unknown" if never seen)."""

    type: Literal["status_reply"] = "status_reply"
    query_id: str = Field(max_length=100)
    statuses: dict[str, CommandState]


class Error(_Message):
    """Either direction: the peer's last message could not be handled. Never answered with
    another Error (that could ping-pong forever)."""

    type: Literal["error"] = "error"
    code: str = Field(max_length=50)
    detail: str = Field(max_length=4000)
    command_id: str | None = Field(default=None, max_length=200)


class Goodbye(_Message):
    """Driver → controller on graceful shutdown: stop routing to me."""

    type: Literal["goodbye"] = "goodbye"
    reason: str = Field(default="", max_length=2000)


Message = Annotated[
    Register
    | Heartbeat
    | Command
    | Ack
    | Progress
    | Result
    | StatusQuery
    | StatusReply
    | Error
    | Goodbye,
    Field(discriminator="type"),
]
"""Any protocol message (tagged by ``type``)."""

MESSAGE_TYPES: dict[str, type[BaseModel]] = {
    cls.model_fields["type"].default: cls
    for cls in (Register, Heartbeat, Command, Ack, Progress, Result, StatusQuery, StatusReply,
                Error, Goodbye)
}

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)
_TYPES = frozenset(MESSAGE_TYPES.values())


def encode(msg: BaseModel) -> bytes:
    """One frame: the message as compact JSON (UTF-8), version included."""
    if type(msg) not in _TYPES:
        raise TypeError(f"not a protocol message: {type(msg).__name__}")
    return msg.model_dump_json().encode("utf-8")


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(frame)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _version_of(data: bytes) -> object:
    try:
        obj = json.loads(data)
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return None
    return obj.get("v") if isinstance(obj, dict) else None


def decode(data: bytes) -> Any:
    """Parse and validate one frame; raise :class:`ProtocolError` (and only that) if invalid.

    The error's ``code`` is "version" when the frame is well-formed JSON from a peer speaking
    another protocol version, else "malformed"; ``detail`` names the offending field.
    """
    try:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ProtocolError(f"frame must be bytes, got {type(data).__name__}")
        if len(data) > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
        raw = bytes(data)
        try:
            return _ADAPTER.validate_json(raw)
        except ValidationError as exc:
            version = _version_of(raw)
            if version is not None and version != PROTOCOL_VERSION:
                raise ProtocolError(
                    f"protocol version {version!r} not supported (this side speaks "
                    f"{PROTOCOL_VERSION})",
                    code="version",
                ) from None
            raise ProtocolError(f"invalid message: {_summarise(exc)}") from None
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: nothing but ProtocolError leaves
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}: {exc}"[:500]) from None
