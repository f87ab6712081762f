"""What the harness hands a client under test, and what a client declares it can do.

:class:`ClientContext` is the one input of a client run (docs/client-harness.md): a Python
client ``module:function`` receives it as its only argument; an ``--exec`` client receives the
path of a JSON file with the same content (:meth:`ClientContext.write`), versioned by
``"version": 1``.  The client creates the virtual device set ``set_name`` with ``devices``
(first device = the set name, §1.3), issues ``statement`` on ``engine_address`` itself, serves
the devices, and reports success (Python: returns True / raises or returns False; --exec: exit
status 0).

:class:`Capabilities` is what a client claims; cases needing something it does not claim are
skipped with the reason, not failed.  How a client declares them:

* Python client: an attribute ``capabilities`` on the function (a :class:`Capabilities` or a
  dict), else a module-level ``CAPABILITIES`` dict, else :data:`DEFAULT_CAPABILITIES`;
* ``--exec`` client: ``--capabilities JSON-or-path`` on the command line.

The dict form is ``{"operations": ["backup", "restore", ...], "multi_device": true,
"complete": true, "snapshot": false, "tape": false, "disk": false, "restore": true}``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "ALL_OPERATIONS",
    "CONTEXT_FORMAT",
    "CONTEXT_VERSION",
    "DEFAULT_CAPABILITIES",
    "Capabilities",
    "ClientContext",
    "ContextError",
    "DeviceModel",
    "capabilities_of",
]

CONTEXT_FORMAT = "vdisim-client-context"
CONTEXT_VERSION = 1

DeviceModel = Literal["pipe", "tape", "disk"]
DEVICE_MODELS = ("pipe", "tape", "disk")

# Operations a case may ask of a client (plan operations; "snapshot" is a backup or restore
# WITH METADATA_ONLY, §9).
ALL_OPERATIONS = ("backup", "restore", "verifyonly", "headeronly", "filelistonly",
                  "labelonly", "snapshot")


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(x) for x in value)


class ContextError(ValueError):
    """A context or capabilities document that is not valid (message says why)."""


def _timeouts_default() -> dict[str, int]:
    return {"get_configuration_ms": 30_000, "get_command_ms": 1_000, "case_s": 60}


@attrs.frozen(slots=True)
class ClientContext:
    """One case, as the client under test sees it.

    * ``case``: the case id (scenario name or ``gen-<seed>-<n>``), for the client's logs;
    * ``set_name``: the virtual device set name the client must create (``CreateEx``);
    * ``instance``: the SQL Server instance name for ``CreateEx`` (None: default instance);
    * ``operation``: ``backup`` / ``restore`` / ``verifyonly`` / ``headeronly`` /
      ``filelistonly`` / ``labelonly`` (snapshot cases say so in ``features``);
    * ``statement``: the exact T-SQL the client must issue on ``engine_address``;
    * ``database``: the database the statement names (None for VERIFYONLY and friends);
    * ``devices``: the device names, first = ``set_name`` (§1.3); the set has this many;
    * ``device_model``: ``pipe``, ``tape`` or ``disk`` (VDF_LikePipe / LikeTape / LikeDisk);
    * ``media_dir``: where the client keeps its media (files) -- a restore case reads the media
      the same client wrote in an earlier backup of the same case into this directory;
    * ``engine_address``: the statement endpoint (``vdisim.engine.Connection(address)``);
    * ``tds_address``: a TDS endpoint for non-Python clients (None until one exists);
    * ``timeouts``: ``get_configuration_ms`` (how long the client should wait in
      GetConfiguration in one call), ``get_command_ms`` (per GetCommand call), ``case_s`` (the
      watchdog: a client still running after this is judged hung);
    * ``features``: the VDF_* names the client is expected to request (``VDF_RequestComplete``
      when the case exercises VDC_Complete, ``VDF_SnapshotPrepare`` for snapshots, ...);
    * ``extra``: free-form per-case data (e.g. ``server_timeout_ms`` for VDConfig.serverTimeOut,
      ``snapshot_files``).
    """

    case: str
    set_name: str
    operation: str
    statement: str
    devices: tuple[str, ...] = attrs.field(converter=_strs)
    media_dir: str
    engine_address: str
    database: str | None = None
    instance: str | None = None
    device_model: DeviceModel = "pipe"
    tds_address: str | None = None
    timeouts: Mapping[str, int] = attrs.field(factory=_timeouts_default, hash=False)
    features: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    version: int = CONTEXT_VERSION

    def __attrs_post_init__(self) -> None:
        if self.version != CONTEXT_VERSION:
            raise ContextError(f"client context version {self.version} is not supported "
                               f"(this vdisim writes version {CONTEXT_VERSION})")
        if self.device_model not in DEVICE_MODELS:
            raise ContextError(f"device_model {self.device_model!r} is not one of "
                               f"{DEVICE_MODELS}")
        if not self.devices or self.devices[0] != self.set_name:
            raise ContextError("devices: at least one, the first named after the set (§1.3)")

    # -- convenience --------------------------------------------------------------------
    @property
    def device_count(self) -> int:
        return len(self.devices)

    @property
    def writing(self) -> bool:
        """True when the server writes media (a backup): the client receives VDC_Write."""
        return self.operation == "backup"

    def timeout(self, name: str) -> int:
        return int(self.timeouts.get(name, _timeouts_default()[name]))

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": CONTEXT_FORMAT, "version": self.version, "case": self.case,
                "set_name": self.set_name, "instance": self.instance,
                "operation": self.operation, "statement": self.statement,
                "database": self.database, "devices": list(self.devices),
                "device_model": self.device_model, "media_dir": self.media_dir,
                "engine_address": self.engine_address, "tds_address": self.tds_address,
                "timeouts": dict(self.timeouts), "features": list(self.features),
                "extra": dict(self.extra)}

    @classmethod
    def from_json(cls, d: Any) -> ClientContext:
        if not isinstance(d, dict):
            raise ContextError("a client context is a JSON object")
        if d.get("format", CONTEXT_FORMAT) != CONTEXT_FORMAT:
            raise ContextError(f"not a client context (format {d.get('format')!r})")
        kw = {k: v for k, v in d.items() if k != "format"}
        known = {a.name for a in attrs.fields(cls)}
        unknown = set(kw) - known
        if unknown:
            raise ContextError(f"unknown client context fields: {sorted(unknown)}")
        try:
            kw["devices"] = tuple(str(x) for x in kw.get("devices", ()))
            kw["features"] = tuple(str(x) for x in kw.get("features", ()))
            kw["timeouts"] = {str(k): int(v) for k, v in dict(kw.get("timeouts") or
                                                                _timeouts_default()).items()}
            kw["extra"] = dict(kw.get("extra") or {})
            return cls(**kw)
        except ContextError:
            raise
        except (TypeError, ValueError) as exc:
            raise ContextError(f"invalid client context: {exc}") from exc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> ClientContext:
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ContextError(f"client context is not JSON: {exc}") from exc

    def write(self, path: str) -> str:
        """Write the context as JSON to ``path`` (atomically) and return the path."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ctx-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.dumps())
            f.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str) -> ClientContext:
        try:
            with open(path, encoding="utf-8") as f:
                return cls.loads(f.read())
        except OSError as exc:
            raise ContextError(f"cannot read {path}: {exc.strerror}") from exc


def _ops(value: Any) -> tuple[str, ...]:
    ops = tuple(str(x) for x in value)
    bad = [o for o in ops if o not in ALL_OPERATIONS]
    if bad:
        raise ContextError(f"unknown operations {bad}; known: {ALL_OPERATIONS}")
    return ops


@attrs.frozen(slots=True)
class Capabilities:
    """What a client claims to support.

    * ``operations``: statements it can drive (``backup``, ``restore``, ``verifyonly``,
      ``headeronly``, ``filelistonly``, ``labelonly``, ``snapshot``);
    * ``multi_device``: sets of more than one device (one thread per device or equivalent);
    * ``complete``: requests VDF_RequestComplete and finalises at VDC_Complete (§5);
    * ``snapshot``: VDF_SnapshotPrepare and the snapshot commands (§9);
    * ``tape`` / ``disk``: the tape-like / disk-like device models (pipe is always assumed);
    * ``restore``: can restore what it backed up (the harness verifies a backup by restoring
      through the same client; without it, acknowledged-write checks are not checkable).
    """

    operations: tuple[str, ...] = attrs.field(default=("backup", "restore"), converter=_ops)
    multi_device: bool = True
    complete: bool = True
    snapshot: bool = False
    tape: bool = False
    disk: bool = False
    restore: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"operations": list(self.operations), "multi_device": self.multi_device,
                "complete": self.complete, "snapshot": self.snapshot, "tape": self.tape,
                "disk": self.disk, "restore": self.restore}

    @classmethod
    def from_json(cls, d: Any) -> Capabilities:
        if not isinstance(d, dict):
            raise ContextError("capabilities are a JSON object")
        known = {a.name for a in attrs.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ContextError(f"unknown capabilities: {sorted(unknown)}; known: {sorted(known)}")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k == "operations":
                if not isinstance(v, list | tuple):
                    raise ContextError("capabilities.operations is a list of names")
                kw[k] = tuple(v)
            elif not isinstance(v, bool):
                raise ContextError(f"capabilities.{k} is true or false")
            else:
                kw[k] = v
        return cls(**kw)

    @classmethod
    def parse(cls, text: str) -> Capabilities:
        """``--capabilities`` argument: inline JSON, or the path of a JSON file."""
        stripped = text.strip()
        if not stripped.startswith("{"):
            try:
                with open(stripped, encoding="utf-8") as f:
                    stripped = f.read()
            except OSError as exc:
                raise ContextError(f"--capabilities: cannot read {text}: {exc.strerror}") \
                    from exc
        try:
            return cls.from_json(json.loads(stripped))
        except json.JSONDecodeError as exc:
            raise ContextError(f"--capabilities is not JSON: {exc}") from exc

    def model_ok(self, model: str) -> bool:
        return model == "pipe" or (model == "tape" and self.tape) or \
            (model == "disk" and self.disk)

    def missing(self, *, operation: str, devices: int, model: str, complete: bool,
                snapshot: bool, needs_restore: bool = False) -> str | None:
        """Why a case with these needs is out of scope for this client, or None."""
        if operation not in self.operations:
            return f"client does not claim operation {operation!r}"
        if snapshot and not self.snapshot:
            return "client does not claim snapshot"
        if devices > 1 and not self.multi_device:
            return "client does not claim multi_device"
        if not self.model_ok(model):
            return f"client does not claim the {model} device model"
        if complete and not self.complete:
            return "client does not claim VDC_Complete"
        if needs_restore and not self.restore:
            return "client does not claim restore"
        return None


DEFAULT_CAPABILITIES = Capabilities()


def capabilities_of(func: Any) -> Capabilities:
    """The capabilities a Python client declares: ``func.capabilities`` (a Capabilities or a
    dict), else its module's ``CAPABILITIES`` dict, else :data:`DEFAULT_CAPABILITIES`."""
    import sys

    declared = getattr(func, "capabilities", None)
    if declared is None:
        mod = sys.modules.get(getattr(func, "__module__", "") or "")
        declared = getattr(mod, "CAPABILITIES", None) if mod is not None else None
    if declared is None:
        return DEFAULT_CAPABILITIES
    if isinstance(declared, Capabilities):
        return declared
    return Capabilities.from_json(dict(declared))
