"""Declarative server-behaviour plans shipped with vdisim (JSON, docs/plan.md, docs/scenarios.md).

Each ``<name>.json`` is a plan whose device names use the ``{SET}`` placeholder (``{SET}``,
``{SET}1``, ...) and whose ``description`` field is the scenario's one-line description.  What a
plan cannot say -- the device model the client must use, the feature bits it should request,
client-side settings (serverTimeOut, a medium that fills up), the backup a restore reads, the
set-up statements, and how the statement ends with a correct client -- is in :data:`CASES`.

>>> import scenarios
>>> plan = scenarios.load("backup-plain", "{0D0F5BA0-B21A-4519-A961-A6E2292A17CA}")
>>> plan.operation, plan.devices[0][:9]
('backup', '{0D0F5BA0')
>>> scenarios.info("restore-tape").source
'backup-tape'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from vdisim.engine.plan import Plan

__all__ = ["CASES", "DATABASE", "SETUP", "Scenario", "describe", "info", "load", "names",
           "path", "scenario_names"]

#: The database every backup scenario reads; :data:`SETUP` creates it (small, for CI).
DATABASE = "demo"
#: Statements that prepare an engine for the bundled scenarios (run once per engine).
SETUP: tuple[str, ...] = (f"CREATE DATABASE {DATABASE} WITH SIZE_MB = 1",)

_DIR = os.path.dirname(__file__)

Outcome = Literal["ok", "fail", "engine-dies"]


@attrs.frozen(slots=True)
class Scenario:
    """What a harness needs besides the plan to run a scenario against a client.

    * ``device_model``: the model the client must create the set with (§5);
    * ``features``: VDF_* names the client should request (``VDF_RequestComplete``,
      ``VDF_SnapshotPrepare``);
    * ``extra``: client-side settings for ``ClientContext.extra``: ``server_timeout_ms``
      (VDConfig.serverTimeOut), ``media_capacity`` (bytes the client's medium holds; a Write
      beyond it fails with ERROR_DISK_FULL, or ERROR_END_OF_MEDIA on tape);
    * ``needs``: context data the harness must fill in at run time (``snapshot_files``: the
      engine's database files, docs/snapshot.md);
    * ``timeouts``: overrides of ``ClientContext.timeouts`` (e.g. a short ``get_command_ms`` so a
      server stall spans several VD_E_TIMEOUTs);
    * ``source``: the backup scenario whose media this one reads (run it first, with the same
      client, into the same media directory);
    * ``setup``: steps before the scenario: T-SQL, or ``scenario:<name>`` (run that scenario
      first with the reference client, e.g. the full backup a differential needs);
    * ``outcome``: how the statement ends with a correct client: ``ok``, ``fail`` (with
      ``errors``, the statement's error numbers) or ``engine-dies`` (the connection is lost);
    * ``sections``: the spec sections the scenario exercises.
    """

    name: str
    sections: tuple[str, ...]
    device_model: Literal["pipe", "tape", "disk"] = "pipe"
    features: tuple[str, ...] = ()
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    needs: tuple[str, ...] = ()
    timeouts: Mapping[str, int] = attrs.field(factory=dict, hash=False)
    source: str | None = None
    setup: tuple[str, ...] = ()
    outcome: Outcome = "ok"
    errors: tuple[int, ...] = ()

    @property
    def expect_success(self) -> bool:
        """What a correct client reports: True only when the statement succeeds."""
        return self.outcome == "ok"

    @property
    def description(self) -> str:
        return describe(self.name)

    def plan(self, set_name: str) -> Plan:
        return load(self.name, set_name)


_COMPLETE = ("VDF_RequestComplete",)
_STALL = {"get_command_ms": 200}
_CHAIN = ("scenario:backup-plain", f"EXEC sp_vdisim_workload '{DATABASE}', 16")
_WRITE_FAIL = (18210, 3202, 3271, 3013)
_ABORTED = (18210, 18210, 3202, 3271, 3013)


def _s(name: str, sections: str, **kw: Any) -> tuple[str, Scenario]:
    return name, Scenario(name, tuple(sections.split()), **kw)


#: Every bundled scenario, by name (the JSON file is ``<name>.json``).
CASES: dict[str, Scenario] = dict([
    _s("backup-plain", "§1.6 §6.7"),
    _s("backup-full-2dev", "§1.8"),
    _s("backup-striped-64", "§1.8"),
    _s("backup-several-flushes", "§6.4 §5", features=_COMPLETE),
    _s("backup-complete-no-flush", "§6.4 §5", features=_COMPLETE),
    _s("backup-complete-not-requested", "§5 §6.4"),
    _s("backup-mid-flush", "§6.4 §5", features=_COMPLETE),
    _s("backup-complete-unsupported", "§5 §6.4", features=_COMPLETE),
    _s("backup-blocksize-512", "§4.1 §1.10"),
    _s("backup-blocksize-65536", "§4.1 §1.10"),
    _s("backup-maxtransfer-4m", "§1.10"),
    _s("backup-one-buffer-2dev", "§1.8 §1.5"),
    _s("backup-tape", "§5 §6.4", device_model="tape"),
    _s("backup-disk", "§5 §6.4", device_model="disk"),
    _s("backup-diff", "§6.7", setup=_CHAIN),
    _s("backup-log", "§6.7", setup=_CHAIN),
    _s("backup-checksum-compression", "§6.7"),
    _s("backup-optional-commands", "§6.4 §6.6"),
    _s("backup-unknown-command", "§6.4 §6.6"),
    _s("backup-server-stall", "§2.4 §8.5", timeouts=_STALL),
    _s("backup-slow-2dev", "§1.8 §2.4", timeouts=_STALL),
    _s("backup-server-timeout", "§4 §8.1", extra={"server_timeout_ms": 300}, timeouts=_STALL),
    _s("backup-disk-full", "§6.4 §6.6 §8.1", extra={"media_capacity": 300_000},
       outcome="fail", errors=_WRITE_FAIL),
    _s("backup-end-of-media", "§6.4 §6.5", device_model="tape",
       extra={"media_capacity": 300_000}, outcome="fail", errors=_WRITE_FAIL),
    _s("backup-abort-midstream", "§8.2", outcome="fail", errors=_ABORTED),
    _s("backup-abort-at-config", "§2.2 §8.2", outcome="fail", errors=(18210, 3013)),
    _s("backup-engine-dies", "§8.1", outcome="engine-dies"),
    _s("backup-open-failure", "§2.2 §8.4", outcome="fail", errors=(18210, 3013)),
    _s("backup-no-such-database", "§2.2 §8.4", outcome="fail", errors=(911, 3013)),
    _s("backup-statement-error", "§8.1 §8.3", outcome="fail", errors=(3202, 3013)),
    _s("backup-fail-allocation", "§3 §8.3", outcome="fail", errors=(18210, 3013)),
    _s("backup-close-device-early", "§8.1 §1.6", outcome="fail", errors=_WRITE_FAIL),
    _s("backup-client-fails", "§2.6 §8.1", extra={"client_fail_after_writes": 3},
       outcome="fail", errors=_ABORTED),
    _s("backup-flush-then-abort", "§6.4 §8.2", features=_COMPLETE, outcome="fail",
       errors=_ABORTED),
    _s("backup-snapshot", "§9", features=("VDF_SnapshotPrepare",), needs=("snapshot_files",)),
    _s("restore-plain", "§1.10 §6.6", source="backup-plain"),
    _s("restore-random-reads", "§1.10", source="backup-plain"),
    _s("restore-max-reads", "§1.10", source="backup-plain"),
    _s("restore-no-eof-read", "§6.4", source="backup-plain"),
    _s("restore-2dev", "§1.8", source="backup-full-2dev"),
    _s("restore-striped-64", "§1.8", source="backup-striped-64"),
    _s("restore-tape", "§5 §6.4", device_model="tape", source="backup-tape"),
    _s("restore-disk", "§5", device_model="disk", source="backup-disk"),
    _s("restore-blocksize-65536", "§1.10", source="backup-blocksize-65536"),
    _s("restore-maxtransfer-4m", "§1.10", source="backup-maxtransfer-4m"),
    _s("restore-unknown-command", "§6.4 §6.6", source="backup-plain"),
    _s("restore-abort-midstream", "§8.2", source="backup-plain", outcome="fail",
       errors=(18210, 18210, 3203, 3013)),
    _s("restore-server-stall", "§2.4 §8.5", source="backup-plain", timeouts=_STALL),
    _s("restore-snapshot", "§9", source="backup-snapshot", needs=("snapshot_files",)),
    _s("verifyonly", "§6.7", source="backup-plain"),
    _s("headeronly", "§6.7", source="backup-plain"),
    _s("filelistonly", "§6.7", source="backup-plain"),
    _s("labelonly", "§6.7", source="backup-plain"),
])


def _bare(name: str) -> str:
    return name[:-5] if name.endswith(".json") else name


def path(name: str) -> str:
    """The file of a bundled scenario: ``path("backup-plain")`` or
    ``path("backup-plain.json")``."""
    return os.path.join(_DIR, _bare(name) + ".json")


def names() -> list[str]:
    """The bundled plan files (``backup-plain.json``, ...), sorted."""
    return sorted(f for f in os.listdir(_DIR) if f.endswith(".json"))


def scenario_names() -> list[str]:
    """The bundled scenarios by name (``backup-plain``, ...), sorted."""
    return [_bare(f) for f in names()]


def _read(name: str) -> str:
    try:
        with open(path(name), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise KeyError(f"no bundled scenario {_bare(name)!r}; known: "
                       f"{', '.join(scenario_names())}") from None


def load(name: str, set_name: str) -> Plan:
    """The bundled plan ``name`` (with or without ``.json``) with its ``{SET}`` device-name
    placeholder replaced by ``set_name``."""
    from vdisim.engine.plan import Plan

    # json.dumps: a set name is inserted as a JSON string body, quotes and backslashes escaped.
    return Plan.loads(_read(name).replace("{SET}", json.dumps(set_name)[1:-1]))


def describe(name: str) -> str:
    """The scenario's one-line description (the plan's ``description`` field)."""
    return str(json.loads(_read(name)).get("description") or "")


def info(name: str) -> Scenario:
    """The scenario's client-side needs and expected outcome (:class:`Scenario`)."""
    try:
        return CASES[_bare(name)]
    except KeyError:
        raise KeyError(f"no bundled scenario {_bare(name)!r}") from None
