"""Instrument protocol, ZeroMQ transport, driver SDK and conformance kit (pyzmq and pydantic only).

The face other packages use:

- protocol: :data:`PROTOCOL_VERSION`, the messages (:class:`Register`, :class:`Heartbeat`,
  :class:`Command`, :class:`Ack`, :class:`Progress`, :class:`Result`, :class:`StatusQuery`,
  :class:`StatusReply`, :class:`Error`, :class:`Goodbye`), :func:`encode`, :func:`decode`,
  :func:`new_id`, :class:`ProtocolError`;
- driver SDK: :class:`Driver`, :class:`InstrumentError`, :class:`Ledger`, :data:`INTERRUPTED`,
  :func:`run_until_signal` (serve until SIGINT/SIGTERM, then drain);
- several instances in one process: :class:`DriverHost`, :func:`serve_many`,
  :class:`HostLedger` (one shared ledger file, rows keyed by identity);
- controller side: :class:`Dispatcher`, :class:`Outcome`, :class:`DriverInfo`;
- steps: params/result models of dose_mix, heat, recover, xrd and :func:`validate_params`,
  :func:`validate_result`, :func:`example_params`;
- transport extras: :class:`FaultConfig` (seeded drop/duplicate/delay), :class:`CurveConfig`,
  :func:`generate_keys`;
- conformance kit: :func:`check_driver`, :class:`ConformanceReport`;
- loading drivers by name: :func:`load_target`, :func:`build_driver`, :func:`parse_options`,
  :func:`serve_targets` (one driver alone, or several instances in a host).
"""

from .conformance import CheckResult, ConformanceReport, check_driver, check_driver_async
from .dispatcher import Dispatcher, DriverInfo, Outcome
from .faults import FaultConfig, FaultInjector, FaultStats
from .host import DriverHost, serve_many
from .host_ledger import HOST_LEDGER_VERSION, HostLedger, LedgerView
from .ledger import INTERRUPTED, Ledger, LedgerEntry, LedgerError
from .protocol import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Ack,
    Command,
    Error,
    Goodbye,
    Heartbeat,
    Message,
    Progress,
    ProtocolError,
    Register,
    Result,
    StatusQuery,
    StatusReply,
    decode,
    encode,
    new_id,
)
from .runner import (
    TargetError,
    build_driver,
    default_identity,
    load_target,
    parse_options,
    serve_targets,
)
from .sdk import CANCELLED, Driver, InstrumentError, ProgressFn, run_until_signal
from .security import CurveConfig, CurveError, generate_keys
from .steps import (
    STANDARD_CAPABILITIES,
    STEP_MODELS,
    DoseMixParams,
    DoseMixResult,
    HeatParams,
    HeatResult,
    HeatSegment,
    RecoverParams,
    RecoverResult,
    StepError,
    XrdParams,
    XrdResult,
    example_params,
    validate_params,
    validate_result,
)

__all__ = [
    "CANCELLED",
    "HOST_LEDGER_VERSION",
    "INTERRUPTED",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "STANDARD_CAPABILITIES",
    "STEP_MODELS",
    "Ack",
    "CheckResult",
    "ConformanceReport",
    "Command",
    "CurveConfig",
    "CurveError",
    "DoseMixParams",
    "DoseMixResult",
    "Driver",
    "run_until_signal",
    "DriverHost",
    "DriverInfo",
    "Dispatcher",
    "Error",
    "FaultConfig",
    "FaultInjector",
    "FaultStats",
    "Goodbye",
    "HeatParams",
    "HeatResult",
    "HeatSegment",
    "Heartbeat",
    "HostLedger",
    "InstrumentError",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "LedgerView",
    "Message",
    "Outcome",
    "Progress",
    "ProgressFn",
    "ProtocolError",
    "RecoverParams",
    "RecoverResult",
    "Register",
    "Result",
    "StatusQuery",
    "StatusReply",
    "StepError",
    "TargetError",
    "XrdParams",
    "XrdResult",
    "check_driver",
    "check_driver_async",
    "build_driver",
    "decode",
    "default_identity",
    "encode",
    "example_params",
    "generate_keys",
    "load_target",
    "new_id",
    "parse_options",
    "serve_many",
    "serve_targets",
    "validate_params",
    "validate_result",
]
