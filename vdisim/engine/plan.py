"""Plans: what the engine does for one statement (docs/plan.md).

A plan names the operation, the devices, the transfer configuration, how the command stream is
shaped, and faults to inject.  T-SQL compiles to a plan (:func:`from_statement`); a plan can
also be given directly (``Connection.run_plan``) as JSON.  The format is versioned: ``version``
must be 1.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import attrs

from vdisim.protocol import codes

PLAN_VERSION = 1

Operation = Literal["backup", "restore", "verifyonly", "headeronly", "filelistonly",
                    "labelonly"]
FaultKind = Literal["abort", "close_device", "die", "stall", "fail_allocation", "fail_open",
                    "statement_error"]
OPERATIONS = ("backup", "restore", "verifyonly", "headeronly", "filelistonly", "labelonly")
FAULT_KINDS = ("abort", "close_device", "die", "stall", "fail_allocation", "fail_open",
               "statement_error")

DEFAULT_BLOCK_SIZE = 512  # §4.1 [D]: VDI default BLOCKSIZE
DEFAULT_MAX_TRANSFER = 65536  # §4.1 [D]: VDI default MAXTRANSFERSIZE


def default_buffer_count(devices: int) -> int:
    """BUFFERCOUNT when the statement gives none.  Not documented for VDI; vdisim uses
    4 per device + 2 (a commonly cited rule of thumb) [I]."""
    return 4 * devices + 2


class PlanError(ValueError):
    """A plan that is not valid; the message says which field and why."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise PlanError(msg)


@attrs.frozen
class Fault:
    """A fault to inject.  ``step`` counts data commands sent on ``device`` (0-based); -1
    means "before the first command" (for abort: during configuration)."""

    kind: FaultKind
    device: int = 0
    step: int = 0
    ms: int = 0  # stall duration
    number: int = 0  # statement_error: SQL error number to fail with

    def validate(self, devices: int) -> None:
        _check(self.kind in FAULT_KINDS, f"fault kind {self.kind!r} is not one of {FAULT_KINDS}")
        _check(0 <= self.device < devices, f"fault device {self.device} out of range")
        _check(self.step >= -1, "fault step must be >= -1")
        _check(0 <= self.ms <= 3_600_000, "fault ms must be 0..3600000")


@attrs.frozen
class Plan:
    operation: Operation
    database: str | None
    devices: tuple[str, ...]
    kind: Literal["full", "diff", "log"] = "full"  # backup kind / restore DATABASE vs LOG
    block_size: int | None = None
    buffer_count: int | None = None
    max_transfer_size: int | None = None
    copy_only: bool = False
    checksum: bool = False
    compression: bool = False
    stats: int | None = None
    name: str | None = None
    description: str | None = None
    recovery: bool = True
    replace: bool = False
    moves: tuple[tuple[str, str], ...] = ()
    snapshot: bool = False
    flushes: int = 1  # VDC_Flush commands at the end of a backup (§6.4: may be several)
    read_sizes: Literal["max", "random"] = "random"  # restore Read sizes (§1.10)
    read_to_eof: bool = True  # pipe restore: one more Read expecting ERROR_HANDLE_EOF
    optional_commands: tuple[int, ...] = ()  # extra commands sent first (e.g. 11, 16, 99)
    flush_every: int = 0  # backup: a VDC_Flush after every n Writes on a device (0: none)
    complete_supported: bool = True  # False: a server without VDC_Complete (pre-KB3188454)
    faults: tuple[Fault, ...] = ()
    seed: int = 0
    version: int = PLAN_VERSION

    @property
    def effective_block_size(self) -> int:
        return self.block_size or DEFAULT_BLOCK_SIZE

    @property
    def effective_max_transfer(self) -> int:
        return self.max_transfer_size or DEFAULT_MAX_TRANSFER

    @property
    def effective_buffer_count(self) -> int:
        return self.buffer_count or default_buffer_count(len(self.devices))

    def validate(self) -> Plan:
        _check(self.version == PLAN_VERSION, f"plan version {self.version} is not supported "
               f"(this vdisim reads version {PLAN_VERSION})")
        _check(self.operation in OPERATIONS, f"operation {self.operation!r} unknown")
        _check(1 <= len(self.devices) <= codes.MAX_DEVICES, "devices: 1..64 names")
        _check(len(set(self.devices)) == len(self.devices), "device names must be unique")
        bs = self.effective_block_size
        _check(bs & (bs - 1) == 0 and 512 <= bs <= 65536, "block_size: power of two 512..65536")
        mts = self.effective_max_transfer
        _check(mts % 65536 == 0 and 65536 <= mts <= codes.MAX_TRANSFER_SIZE,
               "max_transfer_size: multiple of 65536 up to 4194304")
        _check(1 <= self.effective_buffer_count <= 65536, "buffer_count: 1..65536")
        _check(0 <= self.flushes <= 16, "flushes: 0..16")
        _check(0 <= self.flush_every <= 1_000_000, "flush_every: 0..1000000")
        _check(self.kind in ("full", "diff", "log"), "kind: full, diff or log")
        _check(self.read_sizes in ("max", "random"), "read_sizes: max or random")
        if self.snapshot:
            _check(len(self.devices) == 1, "snapshot: exactly one device (§9)")
        if self.operation in ("backup", "restore"):
            _check(bool(self.database), f"{self.operation} needs a database")
        for f in self.faults:
            f.validate(len(self.devices))
        return self

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self, recurse=True)
        d["devices"] = list(self.devices)
        d["moves"] = [list(m) for m in self.moves]
        d["optional_commands"] = list(self.optional_commands)
        d["faults"] = [attrs.asdict(f) for f in self.faults]
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, d: Any) -> Plan:
        if not isinstance(d, dict):
            raise PlanError("a plan is a JSON object")
        fields = {a.name for a in attrs.fields(cls)}
        unknown = set(d) - fields
        _check(not unknown, f"unknown plan fields: {sorted(unknown)}")
        try:
            kw = dict(d)
            kw["devices"] = tuple(str(x) for x in kw.get("devices", ()))
            kw["moves"] = tuple((str(a), str(b)) for a, b in kw.get("moves", ()))
            kw["optional_commands"] = tuple(int(x) for x in kw.get("optional_commands", ()))
            kw["faults"] = tuple(Fault(**f) for f in kw.get("faults", ()))
            return cls(**kw).validate()
        except PlanError:
            raise
        except (TypeError, ValueError) as exc:  # wrong JSON types, e.g. "block_size": "4096"
            raise PlanError(f"invalid plan: {exc}") from exc

    @classmethod
    def loads(cls, text: str) -> Plan:
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not JSON: {exc}") from exc
