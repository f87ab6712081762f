"""Run a bundled scenario straight against a reference-style client, without judging it.

The harness (``vdisim run SCENARIO --client ...``) arms the plan in the engine and lets the
client issue the statement itself.  This module is the plan path that needs no harness: the
client's statement is replaced by ``Connection.run_plan(plan)`` on the client's statement thread
(:class:`~conformance.harness.clients.reference.ReferenceClient` takes the ``issue`` callable),
so the engine follows the scenario's plan exactly.  Tests use it to check that every scenario
runs, and to show each seeded bug's misbehaviour directly.

>>> from vdisim.engine import Engine
>>> import tempfile
>>> with Engine.start() as engine, tempfile.TemporaryDirectory() as tmp:
...     conn = engine.connect()
...     prepare_engine(conn)
...     out = run_scenario(conn, "backup-plain", media_dir=tmp)
...     out.ok, out.report.result.messages[-1].number
(True, 3014)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

import scenarios
from conformance.harness.clients.reference import ReferenceClient, RunReport
from conformance.harness.context import ClientContext
from vdisim.engine.connection import Connection
from vdisim.engine.operations import snapshot_files
from vdisim.engine.plan import Plan

__all__ = ["CaseRun", "context_for", "prepare_engine", "run_scenario", "statement_for"]


def new_set_name() -> str:
    return "{" + str(uuid.uuid4()).upper() + "}"


def statement_for(plan: Plan) -> str:
    """The T-SQL a plan stands for (faults and stream shape cannot be said in T-SQL)."""
    devs = ", ".join(f"VIRTUAL_DEVICE = '{d}'" for d in plan.devices)
    opts: list[str] = []
    if plan.block_size:
        opts.append(f"BLOCKSIZE = {plan.block_size}")
    if plan.max_transfer_size:
        opts.append(f"MAXTRANSFERSIZE = {plan.max_transfer_size}")
    if plan.buffer_count:
        opts.append(f"BUFFERCOUNT = {plan.buffer_count}")
    if plan.snapshot:
        opts.append("SNAPSHOT")
    if plan.operation == "backup":
        if plan.kind == "diff":
            opts.append("DIFFERENTIAL")
        opts += [o for o, on in (("CHECKSUM", plan.checksum), ("COMPRESSION", plan.compression),
                                 ("COPY_ONLY", plan.copy_only)) if on]
        what = "LOG" if plan.kind == "log" else "DATABASE"
        head = f"BACKUP {what} [{plan.database}] TO {devs}"
    elif plan.operation == "restore":
        if plan.replace:
            opts.append("REPLACE")
        if not plan.recovery:
            opts.append("NORECOVERY")
        what = "LOG" if plan.kind == "log" else "DATABASE"
        head = f"RESTORE {what} [{plan.database}] FROM {devs}"
    else:
        head = f"RESTORE {plan.operation.upper()} FROM {devs}"
    return head + (f" WITH {', '.join(opts)}" if opts else "")


def prepare_engine(conn: Connection) -> None:
    """Run :data:`scenarios.SETUP` (creates the ``demo`` database)."""
    for sql in scenarios.SETUP:
        conn.execute(sql, check=True)


def context_for(name: str, *, set_name: str, media_dir: str, engine_address: str,
                data_dir: str | None = None, timeouts: Mapping[str, int] | None = None,
                extra: Mapping[str, Any] | None = None) -> tuple[ClientContext, Plan]:
    """The client context and the plan of bundled scenario ``name``."""
    info = scenarios.info(name)
    plan = scenarios.load(name, set_name)
    ex: dict[str, Any] = dict(info.extra)
    if "snapshot_files" in info.needs and data_dir is not None:
        ex["snapshot_files"] = snapshot_files(data_dir, plan.database or scenarios.DATABASE)
        if plan.operation == "restore":  # the engine reads the file of the backed-up database
            ex["snapshot_files"] = snapshot_files(data_dir, scenarios.DATABASE)
    ex.update(extra or {})
    tmo = {"get_configuration_ms": 10_000, "get_command_ms": 1_000, "case_s": 30}
    tmo.update(info.timeouts)
    tmo.update(timeouts or {})
    ctx = ClientContext(case=name, set_name=set_name, operation=plan.operation,
                        statement=statement_for(plan), devices=plan.devices,
                        media_dir=media_dir, engine_address=engine_address,
                        database=plan.database, device_model=info.device_model,
                        timeouts=tmo, features=info.features, extra=ex)
    return ctx, plan


@attrs.define
class CaseRun:
    """One scenario run: what the client returned and what it saw."""

    name: str
    ok: bool
    report: RunReport
    plan: Plan


def run_scenario(conn: Connection, name: str, *, media_dir: str,
                 client: type[ReferenceClient] = ReferenceClient,
                 data_dir: str | None = None, with_source: bool = True,
                 timeouts: Mapping[str, int] | None = None,
                 extra: Mapping[str, Any] | None = None) -> CaseRun:
    """Run scenario ``name`` with ``client`` serving the devices and the engine following the
    plan (``conn.run_plan``).  Set-up steps run first (``scenario:<name>`` steps and the
    ``source`` backup with the reference client, the source into ``media_dir``)."""
    info = scenarios.info(name)
    for step in info.setup:
        if step.startswith("scenario:"):
            sub = step.split(":", 1)[1]
            done = run_scenario(conn, sub, media_dir=os.path.join(media_dir, f"setup-{sub}"),
                                data_dir=data_dir)
            if not done.ok:
                raise RuntimeError(f"set-up scenario {sub} failed: {done.report.log}")
        else:
            conn.execute(step, check=True)
    if with_source and info.source is not None:
        src = run_scenario(conn, info.source, media_dir=media_dir, data_dir=data_dir)
        if not src.ok:
            raise RuntimeError(f"source scenario {info.source} failed: {src.report.log}")
    ctx, plan = context_for(name, set_name=new_set_name(), media_dir=media_dir,
                            engine_address=conn.address, data_dir=data_dir, timeouts=timeouts,
                            extra=extra)
    runner = client(ctx, issue=lambda: conn.run_plan(plan))
    ok = runner.run()
    return CaseRun(name, ok, runner.report, plan)
