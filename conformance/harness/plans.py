"""Generated server behaviour for the client harness: case specs, their Hypothesis strategy,
and the search that shrinks a failing case to a minimal one.

A :class:`CaseSpec` is everything one case varies (operation, devices, transfer
configuration, command-stream shape, one fault), independent of set names, so it is stable
under replay and shrinks well.  :meth:`CaseSpec.plan` turns it into an engine plan
(docs/plan.md) for concrete device names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import attrs
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from conformance.harness.context import Capabilities
from vdisim.engine.plan import Fault, Plan

__all__ = ["CaseSpec", "FaultSpec", "case_specs", "explore"]

DATABASE = "hdb"  # the database every case backs up (created by the runner)
RESTORE_TARGET = "hdb_r"
VERIFY_TARGET = "hdb_v"
UNKNOWN_COMMANDS = (16, 17, 18, 99)


@attrs.frozen
class FaultSpec:
    kind: str
    device: int = 0
    step: int = 0
    ms: int = 0

    def fault(self) -> Fault:
        return Fault(self.kind, self.device, self.step, self.ms)  # type: ignore[arg-type]


@attrs.frozen
class CaseSpec:
    """One generated case.  ``operation`` is what the client is asked to do; restore-side
    operations first back up through the same client (the setup) unless ``missing_media``."""

    operation: Literal["backup", "restore", "verifyonly", "headeronly"] = "backup"
    backup_kind: Literal["full", "diff", "log"] = "full"
    devices: int = 1
    model: Literal["pipe", "tape", "disk"] = "pipe"
    block_size: int | None = None
    max_transfer_size: int | None = None
    buffer_count: int | None = None
    flushes: int = 1
    flush_every: int = 0
    complete_supported: bool = True
    read_sizes: Literal["max", "random"] = "random"
    read_to_eof: bool = True
    optional_commands: tuple[int, ...] = ()
    fault: FaultSpec | None = None
    missing_media: bool = False  # restore from an empty media directory (the client fails)
    client_fail_after_writes: int | None = None  # reference-style clients: sink breaks
    media_capacity: int | None = None  # reference-style clients: medium full after n bytes
    server_timeout_ms: int | None = None  # the client asks for VDConfig.serverTimeOut (§4.1)
    snapshot: bool = False  # BACKUP / RESTORE ... WITH SNAPSHOT (§9; one pipe device)
    seed: int = 0

    # -- needs ------------------------------------------------------------------------------
    def unsupported_by(self, caps: Capabilities) -> str | None:
        op = self.operation
        if op != "backup" and "backup" not in caps.operations and not self.missing_media:
            return "client does not claim backup (a restore case restores the client's own " \
                   "backup)"
        return caps.missing(operation=op, devices=self.devices, model=self.model,
                            complete=False, snapshot=self.snapshot)

    def statement(self, names: tuple[str, ...]) -> str:
        devs = ", ".join(f"VIRTUAL_DEVICE = '{n}'" for n in names)
        if self.operation == "backup":
            what = "LOG" if self.backup_kind == "log" else "DATABASE"
            opts = " WITH DIFFERENTIAL" if self.backup_kind == "diff" else ""
            if self.snapshot:
                opts = " WITH SNAPSHOT"
            return f"BACKUP {what} [{DATABASE}] TO {devs}{opts}"
        if self.operation == "restore":
            snap = "SNAPSHOT, " if self.snapshot else ""
            return f"RESTORE DATABASE [{RESTORE_TARGET}] FROM {devs} WITH {snap}REPLACE"
        return f"RESTORE {self.operation.upper()} FROM {devs}"

    def plan(self, names: tuple[str, ...]) -> Plan:
        op = self.operation
        db = DATABASE if op == "backup" else (RESTORE_TARGET if op == "restore" else None)
        return Plan(op, db, names,
                    kind=self.backup_kind if op == "backup" else "full",
                    block_size=self.block_size, buffer_count=self.buffer_count,
                    max_transfer_size=self.max_transfer_size,
                    replace=op == "restore", flushes=self.flushes,
                    flush_every=self.flush_every if op == "backup" else 0,
                    complete_supported=self.complete_supported,
                    read_sizes=self.read_sizes, read_to_eof=self.read_to_eof,
                    optional_commands=self.optional_commands,
                    faults=(self.fault.fault(),) if self.fault else (),
                    snapshot=self.snapshot, seed=self.seed).validate()

    def setup(self) -> CaseSpec:
        """The backup a restore-side case restores (plain: no fault, same configuration)."""
        return CaseSpec("backup", "full", self.devices, self.model, self.block_size,
                        self.max_transfer_size, snapshot=self.snapshot, seed=self.seed)

    @property
    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.client_fail_after_writes is not None:
            out["client_fail_after_writes"] = self.client_fail_after_writes
        if self.media_capacity is not None:
            out["media_capacity"] = self.media_capacity
        if self.server_timeout_ms is not None:
            out["server_timeout_ms"] = self.server_timeout_ms
        return out

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["optional_commands"] = list(self.optional_commands)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseSpec:
        kw = dict(d)
        if kw.get("fault") is not None:
            kw["fault"] = FaultSpec(**kw["fault"])
        kw["optional_commands"] = tuple(kw.get("optional_commands") or ())
        return cls(**kw)

    def key(self) -> str:
        import json

        return json.dumps(self.to_json(), sort_keys=True)


# ------------------------------------------------------------------------------ strategies

def _faults(operation: str, devices: int, profile: str) -> st.SearchStrategy[FaultSpec | None]:
    dev = st.integers(0, devices - 1)
    step = st.integers(0, 24)
    kinds = [
        st.builds(FaultSpec, st.just("abort"), dev, st.integers(-1, 24)),
        st.builds(FaultSpec, st.just("close_device"), dev, step),
        st.builds(FaultSpec, st.just("stall"), dev, st.integers(0, 8),
                  st.integers(1200, 2500)),
        st.builds(FaultSpec, st.just("fail_allocation")),
        st.builds(FaultSpec, st.just("fail_open")),
        st.builds(FaultSpec, st.just("statement_error"), dev, step),
    ]
    if profile == "full":
        kinds.append(st.builds(FaultSpec, st.just("die"), dev, step))
    return st.one_of(st.none(), st.none(), *kinds)


@st.composite
def _case(draw: st.DrawFn, caps: Capabilities, profile: str) -> CaseSpec:
    ops = [o for o in ("backup", "restore", "verifyonly", "headeronly")
           if o in caps.operations]
    if "backup" not in caps.operations:
        ops = []
    if not ops:
        ops = ["backup"]  # skipped by the runner with the reason
    op = draw(st.sampled_from(ops))
    devices = draw(st.integers(1, 3)) if caps.multi_device else 1
    models = ["pipe"] + (["tape"] if caps.tape else []) + (["disk"] if caps.disk else [])
    model = draw(st.sampled_from(models))
    backup = op == "backup"
    kind = draw(st.sampled_from(["full", "full", "diff", "log"])) if backup else "full"
    block = draw(st.sampled_from([None, 512, 4096, 65536]))
    mts = draw(st.sampled_from([None, 65536, 131072, 262144]))
    bcount = draw(st.one_of(st.none(), st.integers(1, 4 * devices + 2)))
    flushes = draw(st.integers(1, 3)) if backup else 1
    flush_every = draw(st.sampled_from([0, 0, 0, 4, 9])) if backup else 0
    complete_supported = draw(st.booleans()) if backup else True
    read_sizes = draw(st.sampled_from(["random", "max"]))
    read_to_eof = draw(st.booleans())
    optional = tuple(draw(st.lists(st.sampled_from([11, *UNKNOWN_COMMANDS]), max_size=2,
                                   unique=True)))
    fault = draw(_faults(op, devices, profile))
    missing = (not backup and op != "headeronly" and fault is None
               and draw(st.integers(0, 9)) == 0)
    fail_after = media_cap = None
    if backup and fault is None:
        trouble = draw(st.integers(0, 11))
        if trouble == 0:
            fail_after = draw(st.integers(0, 12))
        elif trouble == 1:
            media_cap = draw(st.integers(1, 20)) * 65536
    server_timeout = None
    if fault is not None and fault.kind == "stall" and draw(st.integers(0, 2)) == 0:
        server_timeout = draw(st.sampled_from([200, 400]))  # the stall outlasts 2 intervals
    snapshot = (caps.snapshot and op in ("backup", "restore") and not missing
                and draw(st.integers(0, 9)) == 0)
    if snapshot:  # §9: one device; a plain full backup
        devices, model, kind, flush_every, fail_after, media_cap = 1, "pipe", "full", 0, None, None
        if fault is not None and fault.device != 0:
            fault = attrs.evolve(fault, device=0)
    return CaseSpec(op, kind, devices, model, block, mts, bcount, flushes,  # type: ignore[arg-type]
                    flush_every, complete_supported, read_sizes, read_to_eof,  # type: ignore[arg-type]
                    optional, fault, missing, fail_after, media_cap, server_timeout, snapshot,
                    draw(st.integers(0, 2**31 - 1)))


def case_specs(caps: Capabilities, profile: str = "ci") -> st.SearchStrategy[CaseSpec]:
    """Cases a client with ``caps`` can be asked to run."""
    return _case(caps, profile)


# ------------------------------------------------------------------------------ search

class _Found(Exception):
    def __init__(self, rules: frozenset[str]) -> None:
        super().__init__(", ".join(sorted(rules)))
        self.rules = rules


class _Search:
    def __init__(self, run: Callable[[CaseSpec], frozenset[str]], n: int,
                 shrink_budget_s: float) -> None:
        self.run = run
        self.n = n
        self.budget = shrink_budget_s
        self.cache: dict[str, frozenset[str]] = {}
        self.witnessed: set[str] = set()
        self.generated = 0
        self.shrinking_since: float | None = None
        self.last_raised: CaseSpec | None = None

    def body(self, spec: CaseSpec) -> None:
        k = spec.key()
        if k in self.cache:
            broken = self.cache[k]
        else:
            since = self.shrinking_since
            if since is not None and time.monotonic() - since > self.budget:
                return  # out of shrinking time: unknown specs count as passing
            if since is None and self.generated >= self.n:
                return
            broken = self.cache[k] = self.run(spec)
            if since is None:
                self.generated += 1
        new = broken - self.witnessed
        if new:
            if self.shrinking_since is None:
                self.shrinking_since = time.monotonic()
            self.last_raised = spec
            raise _Found(frozenset(new))


def explore(run: Callable[[CaseSpec], frozenset[str]], caps: Capabilities, *, n: int,
            seed_value: int, profile: str = "ci", shrink_budget_s: float = 60.0,
            on_minimal: Callable[[CaseSpec, frozenset[str]], None] | None = None) -> int:
    """Run ``n`` generated cases (``run(spec)`` returns the IDs of the rules it broke).
    Each time a case breaks a rule not seen before, Hypothesis shrinks it to a minimal case
    that still breaks one of those rules (within ``shrink_budget_s``), and ``on_minimal``
    receives it; generation then goes on with the next seed.  Returns the number of cases
    generated (shrinking runs come on top).

    Results are cached by spec: a spec runs once, so shrinking never sees a flaky answer."""
    search = _Search(run, n, shrink_budget_s)
    rounds = 0
    while search.generated < n and rounds < 64:
        rounds += 1
        search.shrinking_since = None
        search.last_raised = None
        test = settings(max_examples=n - search.generated + 5, database=None,
                        deadline=None, phases=[Phase.generate, Phase.shrink],
                        report_multiple_bugs=False, suppress_health_check=list(HealthCheck))(
            seed(seed_value + rounds)(given(case_specs(caps, profile))(search.body)))
        try:
            test()
        except _Found as found:
            search.witnessed.update(found.rules)
            if on_minimal is not None and search.last_raised is not None:
                on_minimal(search.last_raised, found.rules)
        # else: Hypothesis drew some specs already run (cached, not counted): go on
    return search.generated
