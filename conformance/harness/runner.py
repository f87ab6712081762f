"""Running cases: one engine for a run, a client under test (a Python function in a child
process, or any program with ``--exec``), the armed plan, a watchdog, and the verification
restores -- producing case records for :mod:`conformance.harness.checks`.

One case (:meth:`Harness.run_case`):

1. a fresh set name and media directory; the plan armed in the engine for that set name
   (``Connection.harness("arm", ...)``), with the statement the client must issue;
2. the client runs once (``ClientContext`` as its argument, or the path of its JSON file);
   a watchdog ends it when it outlives the case limit, or lingers after its statement ended
   (the statement failed before the set was opened and the client still waits, ...), and asks
   a Python client for its thread stacks first (SIGUSR1 -> faulthandler);
3. the engine's record of the statement is collected: whether the client issued it, its
   outcome, the wire log;
4. for a backup the client believes in and the statement agrees: the harness restores through
   the same client (RESTORE ... FROM the same media; the engine runs VERIFYONLY and hashes what
   it reads) and, for a one-device backup, once more from the copy of the media taken right
   after the last Flush/Complete acknowledgement.

Restore-side cases first back up through the same client (the setup), then restore from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import attrs

from conformance.harness.context import Capabilities, ClientContext, capabilities_of
from conformance.harness.plans import DATABASE, VERIFY_TARGET, CaseSpec
from vdisim import refclient
from vdisim.engine.connection import Connection, Engine
from vdisim.engine.plan import Plan

__all__ = ["PROFILES", "ClientUnderTest", "Harness", "Profile"]


@attrs.frozen
class Profile:
    name: str
    cases: int  # generated cases per check-client run
    case_s: int  # watchdog: a client still running after this is hung
    linger_s: float  # ... or still running this long after its statement ended
    shrink_s: float  # time to shrink one failure
    idle_s: float  # ... or nothing crossed the wire this long while its statement runs


PROFILES = {
    "ci": Profile("ci", cases=12, case_s=15, linger_s=4.0, shrink_s=20.0, idle_s=5.0),
    "full": Profile("full", cases=1000, case_s=40, linger_s=8.0, shrink_s=120.0,
                    idle_s=10.0),
}


@attrs.frozen
class ClientUnderTest:
    """``python`` is ``module:function``; ``exec`` a command line with ``{context}``."""

    python: str | None = None
    exec: str | None = None
    capabilities: Capabilities = attrs.field(factory=Capabilities)

    @property
    def name(self) -> str:
        return self.python or f"exec:{self.exec}"

    @classmethod
    def python_client(cls, spec: str, capabilities: Capabilities | None = None
                      ) -> ClientUnderTest:
        from conformance.harness.child import resolve

        caps = capabilities or capabilities_of(resolve(spec))
        return cls(python=spec, capabilities=caps)

    @classmethod
    def exec_client(cls, command: str, capabilities: Capabilities | None = None
                    ) -> ClientUnderTest:
        return cls(exec=command, capabilities=capabilities or Capabilities())

    def to_json(self) -> dict[str, Any]:
        return {"python": self.python, "exec": self.exec,
                "capabilities": self.capabilities.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClientUnderTest:
        return cls(d.get("python"), d.get("exec"),
                   Capabilities.from_json(d.get("capabilities") or {}))

    def argv(self, ctx_path: str, result_path: str, stacks_path: str) -> list[str]:
        if self.python is not None:
            return [sys.executable, "-m", "conformance.harness.child", self.python, ctx_path,
                    result_path, stacks_path]
        assert self.exec is not None
        parts = shlex.split(self.exec)
        if not any("{context}" in p for p in parts):
            parts.append("{context}")
        return [p.replace("{context}", ctx_path) for p in parts]


class EngineGone(Exception):
    pass


class Zygote:
    """A fork server for one Python client (``child.py --zygote``): each case forks from a
    process that already imported the client, instead of starting an interpreter."""

    def __init__(self, spec: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conformance.harness.child", "--zygote", spec],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.spawned: list[int] = []
        self.exits: dict[int, int] = {}
        self.reader = threading.Thread(target=self._read, daemon=True,
                                       name="vdisim-zygote-reader")
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if "spawned" in msg:
                    self.spawned.append(int(msg["spawned"]))
                elif "exit" in msg:
                    self.exits[int(msg["exit"])] = int(msg["status"])
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, ctx: str, result: str, stacks: str, out: str) -> int:
        assert self.proc.stdin is not None
        req = json.dumps({"ctx": ctx, "result": result, "stacks": stacks, "out": out})
        with self.cond:
            self.proc.stdin.write(req.encode() + b"\n")
            self.proc.stdin.flush()
            if not self.cond.wait_for(lambda: bool(self.spawned) or not self.alive(), 30.0):
                raise RuntimeError("the client's fork server does not answer")
            if not self.spawned:
                raise RuntimeError("the client's fork server died")
            return self.spawned.pop(0)

    def wait(self, pid: int, timeout: float) -> int | None:
        with self.cond:
            self.cond.wait_for(lambda: pid in self.exits or not self.alive(), timeout)
            return self.exits.pop(pid, None)

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Harness:
    """One engine (restarted if a case kills it) and a scratch directory for a run."""

    def __init__(self, profile: Profile, *, workdir: str | None = None,
                 keep: bool = False) -> None:
        self.profile = profile
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="vdisim-harness-")
        self.keep = keep
        self.engine: Engine | None = None
        self.control: Connection | None = None
        self.restarts = 0
        self._n = 0
        self.data_dir = os.path.join(self.workdir, "engine-data")
        self.zygotes: dict[str, Zygote] = {}
        self.use_zygote = os.environ.get("VDISIM_HARNESS_NO_ZYGOTE", "") == ""

    # -- engine -----------------------------------------------------------------------------
    def start(self) -> None:
        self.engine = Engine.start(data_dir=self.data_dir, tds="127.0.0.1:0")  # docs/tds.md
        self.control = self.engine.connect()
        c = self.control
        import scenarios

        for sql in scenarios.SETUP:  # the bundled scenarios' database
            c.execute(sql, check=True)
        c.execute(f"CREATE DATABASE [{DATABASE}] WITH SIZE_MB = 2, SEED = 7", check=True)
        c.execute(f"ALTER DATABASE [{DATABASE}] SET RECOVERY FULL", check=True)
        # A base for differential and log backups, by vdisim's own client (not judged).
        base = os.path.join(self.workdir, "base")
        rep = refclient.backup(self.engine.connect(), DATABASE, base)
        if not rep.ok:
            raise RuntimeError(f"harness setup backup failed: {rep.log}")
        shutil.rmtree(base, ignore_errors=True)

    def restart(self) -> None:
        self.restarts += 1
        self.stop_engine()
        self.start()

    def stop_engine(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.engine is not None:
            self.engine.stop()
            self.engine = None

    def close(self) -> None:
        for z in self.zygotes.values():
            z.close()
        self.zygotes.clear()
        self.stop_engine()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Harness:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        if self.control is None:
            raise EngineGone("no engine")
        try:
            return self.control.harness(op, **args)
        except (OSError, EOFError) as exc:
            raise EngineGone(str(exc)) from exc

    def engine_alive(self) -> bool:
        return self.engine is not None and self.engine.proc is not None \
            and self.engine.proc.poll() is None

    # -- one client run ---------------------------------------------------------------------
    def _context(self, case: str, spec: CaseSpec, names: tuple[str, ...], statement: str,
                 media_dir: str, operation: str) -> ClientContext:
        assert self.engine is not None
        feats: tuple[str, ...] = ("VDF_RequestComplete",) if operation == "backup" else ()
        extra: dict[str, Any] = dict(spec.extra) if operation == "backup" else (
            {"server_timeout_ms": spec.server_timeout_ms} if spec.server_timeout_ms else {})
        if spec.snapshot:  # docs/snapshot.md: the files the client copies / puts back
            from vdisim.engine.operations import snapshot_files

            feats = ("VDF_SnapshotPrepare",) if operation == "backup" else ()
            extra["snapshot_files"] = snapshot_files(self.data_dir, DATABASE)
        return ClientContext(
            case=case, set_name=names[0], operation=operation, statement=statement,
            devices=names, media_dir=media_dir, engine_address=self.engine.address,
            tds_address=self.engine.tds_address,
            database=DATABASE if operation == "backup" else None,
            device_model=spec.model,
            timeouts={"get_configuration_ms": 1000, "get_command_ms": 1000,
                      "case_s": self.profile.case_s},
            features=feats, extra=extra)

    def run_statement(self, client: ClientUnderTest, case: str, spec: CaseSpec, *,
                      operation: str, media_dir: str, snapshot_to: str | None = None,
                      plan_override: Plan | None = None) -> dict[str, Any]:
        """Run the statement of ``spec`` (the engine follows ``spec``'s plan, or
        ``plan_override`` with the case's device names)."""
        names = _names(spec.devices)
        plan = (attrs.evolve(plan_override, devices=names) if plan_override is not None
                else spec.plan(names))
        ctx = self._context(case, spec, names, spec.statement(names), media_dir, operation)
        return self.run_armed(client, ctx, plan, snapshot_to=snapshot_to)

    def run_armed(self, client: ClientUnderTest, ctx: ClientContext, plan: Plan, *,
                  snapshot_to: str | None = None) -> dict[str, Any]:
        """Arm ``plan`` for ``ctx.set_name``, run the client once with ``ctx``, collect the
        engine's record.  Returns a partial case record (no ``kind``/verification yet)."""
        self._n += 1
        rec: dict[str, Any] = {"case": ctx.case, "plan": plan.to_json(),
                               "context": ctx.to_json(), "engine_died": False}
        snap = ([ctx.media_dir, snapshot_to] if snapshot_to and ctx.device_count == 1
                else None)
        args = {"set_name": ctx.set_name, "plan": plan.to_json(), "expect": ctx.statement,
                "snapshot_media": snap}
        try:
            self._call("arm", **args)
        except EngineGone:
            self.restart()
            self._call("arm", **args)
        # No wire progress for idle_s while the statement runs is a hang -- unless the plan
        # stalls the server itself or the client asked for a serverTimeOut.
        quiet = any(f.kind == "stall" for f in plan.faults) or ctx.extra.get(
            "server_timeout_ms")
        idle = None if quiet else self.profile.idle_s
        rec["client"] = self._run_client(client, ctx, ctx.set_name, idle)
        try:
            rec["collected"] = self._call("collect", set_name=ctx.set_name, timeout_s=15.0,
                                          remove=True)
        except EngineGone:
            rec["collected"] = None
            rec["engine_died"] = True
        if not self.engine_alive():
            rec["engine_died"] = True
            self.restart()
        return rec

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *sys.path[1:]])
        return env

    def _zygote(self, spec: str) -> Zygote:
        z = self.zygotes.get(spec)
        if z is None or not z.alive():
            z = self.zygotes[spec] = Zygote(spec, self._env())
        return z

    def _run_client(self, client: ClientUnderTest, ctx: ClientContext,
                    set_name: str, idle_s: float | None = None) -> dict[str, Any]:
        d = tempfile.mkdtemp(prefix="run-", dir=self.workdir)
        ctx_path = ctx.write(os.path.join(d, "context.json"))
        result_path = os.path.join(d, "result.json")
        stacks_path = os.path.join(d, "stacks.txt")
        out_path = os.path.join(d, "output.txt")
        started = time.monotonic()
        proc: subprocess.Popen[bytes] | None = None
        zyg: Zygote | None = None
        if client.python is not None and self.use_zygote:
            zyg = self._zygote(client.python)
            pid = zyg.spawn(ctx_path, result_path, stacks_path, out_path)
            exit_of: Any = lambda t: zyg.wait(pid, t)  # noqa: E731
        else:
            with open(out_path, "wb") as out:
                proc = subprocess.Popen(client.argv(ctx_path, result_path, stacks_path),
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=self._env(),
                                        start_new_session=True)
            pid = proc.pid
            popen = proc

            def exit_of(t: float) -> int | None:
                try:
                    return popen.wait(timeout=t)
                except subprocess.TimeoutExpired:
                    return None

        hung, code = self._watch(exit_of, set_name, started, idle_s)
        if hung:
            self._stacks(pid, client, stacks_path)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if code is None:
            code = exit_of(10.0)
        _remove_dead_set(ctx)
        seconds = time.monotonic() - started
        believed: bool | None = None
        error = None
        if not hung:
            if client.python is not None:
                try:
                    with open(result_path, encoding="utf-8") as f:
                        res = json.load(f)
                    believed = bool(res.get("believed_ok"))
                    error = res.get("error")
                except (OSError, ValueError):
                    believed = False  # died before writing a result: it did not succeed
            else:
                believed = code == 0
        stacks = _read(stacks_path)
        output = _read(out_path)[-4000:]
        shutil.rmtree(d, ignore_errors=True)
        return {"believed_ok": believed, "exit": None if hung else code,
                "hung": hung, "killed": hung, "stacks": stacks, "output": output,
                "error": error, "seconds": round(seconds, 3),
                "limit_s": self.profile.case_s}

    def _watch(self, exit_of: Any, set_name: str, started: float,
               idle_s: float | None) -> tuple[bool, int | None]:
        """Wait for the client: (hung, exit status).  Hung: it outlives the case limit, or
        its statement ended ``linger_s`` ago and it is still there, or (``idle_s``) its
        statement runs but nothing crossed the wire for that long."""
        deadline = started + self.profile.case_s
        ended_at: float | None = None
        next_poll = started + 0.3
        entries, moved = -1, started
        while True:
            code = exit_of(0.05)
            if code is not None:
                return False, int(code)
            now = time.monotonic()
            if now > deadline:
                return True, None
            if ended_at is not None and now - ended_at > self.profile.linger_s:
                return True, None
            if idle_s is not None and entries >= 0 and now - moved > idle_s:
                return True, None  # the statement runs but nothing crosses the wire
            if ended_at is None and now >= next_poll:
                next_poll = now + 0.25
                if not self.engine_alive():
                    ended_at = now
                    continue
                try:
                    st = self._call("collect", set_name=set_name, timeout_s=0, brief=True,
                                    remove=False)
                except EngineGone:
                    ended_at = now
                    continue
                if st.get("finished"):
                    ended_at = now
                elif st.get("issued") and int(st.get("entries", 0)) != entries:
                    entries, moved = int(st.get("entries", 0)), now

    def _stacks(self, pid: int, client: ClientUnderTest, path: str) -> None:
        if client.python is None or not self.use_zygote:
            with open(path, "a", encoding="utf-8") as f:
                f.write(_process_stacks(pid))
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGUSR1)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            if os.path.exists(path) and os.path.getsize(path) > 0:
                time.sleep(0.1)  # let faulthandler finish writing every thread
                return
            time.sleep(0.02)

    # -- one case ---------------------------------------------------------------------------
    def run_case(self, client: ClientUnderTest, spec: CaseSpec, case: str | None = None
                 ) -> list[dict[str, Any]]:
        """Run one case; returns its records (a restore-side case: setup backup first)."""
        case = case or f"case-{self._n}"
        why = spec.unsupported_by(client.capabilities)
        if why is not None:
            return [{"case": case, "skipped": why, "spec": spec.to_json()}]
        media = tempfile.mkdtemp(prefix="media-", dir=self.workdir)
        records: list[dict[str, Any]] = []
        try:
            if spec.operation == "backup":
                records.append(self._backup_case(client, case, spec, media))
            else:
                setup_written = None
                if not spec.missing_media:
                    setup = self._backup_case(client, f"{case}/setup", spec.setup(), media,
                                              verify=False)
                    records.append(setup)
                    col = setup.get("collected") or {}
                    ok = bool((col.get("outcome") or {}).get("ok")) and \
                        bool(setup["client"].get("believed_ok"))
                    if not ok:
                        records.append({"case": case, "skipped": "the setup backup through "
                                        "the client failed", "spec": spec.to_json()})
                        return records
                    setup_written = (col.get("wire") or {}).get("written")
                rec = self.run_statement(client, case, spec, operation=spec.operation,
                                         media_dir=media)
                rec.update(kind="restore", spec=spec.to_json(), setup_written=setup_written,
                           verify=None, snapshot_verify=None)
                records.append(rec)
        finally:
            shutil.rmtree(media, ignore_errors=True)
        return records

    def _backup_case(self, client: ClientUnderTest, case: str, spec: CaseSpec, media: str,
                     *, verify: bool = True) -> dict[str, Any]:
        snap = media + "-at-flush"
        rec = self.run_statement(client, case, spec, operation="backup", media_dir=media,
                                 snapshot_to=snap if verify else None)
        rec.update(kind="backup", spec=spec.to_json(), setup_written=None)
        self.verify_backup(client, rec, snap if verify else None)
        return rec

    def verify_backup(self, client: ClientUnderTest, rec: dict[str, Any],
                      snap: str | None) -> None:
        """Fill ``rec["verify"]`` (and ``snapshot_verify``) for a backup record the client and
        the statement agree succeeded: restore through the same client."""
        rec.setdefault("verify", None)
        rec.setdefault("snapshot_verify", None)
        col = rec.get("collected") or {}
        good = (bool((col.get("outcome") or {}).get("ok")) and not rec["engine_died"]
                and bool(rec["client"].get("believed_ok")))
        caps = client.capabilities
        plan = Plan.from_json(rec["plan"])
        if good and caps.restore and "restore" in caps.operations and not plan.snapshot:
            ctx = ClientContext.from_json(rec["context"])
            rec["verify"] = self._verify(client, ctx, plan, ctx.media_dir)
            wire = col.get("wire") or {}
            if snap and wire.get("snapshots") and os.path.isdir(snap):
                rec["snapshot_verify"] = self._verify(client, ctx, plan, snap)
        if snap:
            shutil.rmtree(snap, ignore_errors=True)

    def _verify(self, client: ClientUnderTest, bctx: ClientContext, bplan: Plan,
                media: str) -> dict[str, Any]:
        """Restore through the same client; the engine runs VERIFYONLY and hashes the bytes."""
        names = _names(bctx.device_count)
        devs = ", ".join(f"VIRTUAL_DEVICE = '{n}'" for n in names)
        ctx = attrs.evolve(bctx, case=f"{bctx.case}/verify", set_name=names[0], devices=names,
                           operation="restore", media_dir=media, database=VERIFY_TARGET,
                           statement=f"RESTORE DATABASE [{VERIFY_TARGET}] FROM {devs} WITH "
                                     "REPLACE", features=(), extra={})
        plan = Plan("verifyonly", None, names, block_size=bplan.block_size,
                    max_transfer_size=bplan.max_transfer_size, read_sizes="max")
        rec = self.run_armed(client, ctx, plan)
        col = rec.get("collected") or {}
        wire = col.get("wire") or {}
        outcome = col.get("outcome") or {}
        return {"ok": bool(outcome.get("ok")), "hung": bool(rec["client"].get("hung")),
                "read": wire.get("read") or {},
                "read_sha256": wire.get("read_sha256") or {},
                "compare": bctx.device_model == "pipe",
                "note": f"errors {outcome.get('errors')}" if not outcome.get("ok") else "",
                "client_ok": rec["client"].get("believed_ok")}

    # -- bundled scenarios ------------------------------------------------------------------
    def run_scenario(self, client: ClientUnderTest, name: str, media: str | None = None,
                     *, verify: bool = True) -> list[dict[str, Any]]:
        """Run bundled scenario ``name`` (docs/scenarios.md) with the client under test: its
        set-up steps, its source backup (through the same client), then the scenario."""
        import scenarios
        from conformance.harness.clients import direct

        info = scenarios.info(name)
        assert self.engine is not None and self.control is not None
        own = media is None
        media = media or tempfile.mkdtemp(prefix="media-", dir=self.workdir)
        records: list[dict[str, Any]] = []
        try:
            for step in info.setup:
                if step.startswith("scenario:"):
                    sub = step.split(":", 1)[1]
                    done = direct.run_scenario(self.engine.connect(), sub, media_dir=os.path.join(
                        media, f"setup-{sub}"), data_dir=self.data_dir)
                    if not done.ok:
                        raise RuntimeError(f"set-up scenario {sub} failed")
                else:
                    self.control.execute(step, check=True)
            if info.source is not None:
                records.extend(self.run_scenario(client, info.source, media, verify=False))
                src = records[-1]
                if not (src.get("collected") or {}).get("outcome", {}).get("ok"):
                    records.append({"case": name, "skipped": f"source scenario {info.source} "
                                    "failed with this client"})
                    return records
            ctx, plan = direct.context_for(name, set_name=_names(1)[0], media_dir=media,
                                           engine_address=self.engine.address,
                                           data_dir=self.data_dir,
                                           timeouts={"case_s": self.profile.case_s})
            ctx = attrs.evolve(ctx, tds_address=self.engine.tds_address)  # docs/tds.md
            why = client.capabilities.missing(
                operation="snapshot" if plan.snapshot else plan.operation,
                devices=len(plan.devices), model=ctx.device_model, complete=False,
                snapshot=plan.snapshot)
            if why is not None:
                records.append({"case": name, "skipped": why})
                return records
            snap = media + "-at-flush" if plan.operation == "backup" and verify else None
            rec = self.run_armed(client, ctx, plan, snapshot_to=snap)
            rec["kind"] = "backup" if plan.operation == "backup" else "restore"
            rec["spec"] = {"scenario": name}
            rec["setup_written"] = None
            if info.source is not None:
                src_wire = (records[-1].get("collected") or {}).get("wire") or {}
                rec["setup_written"] = src_wire.get("written")
            rec["expected"] = {"outcome": info.outcome, "errors": list(info.errors)}
            if plan.operation == "backup" and verify:
                self.verify_backup(client, rec, snap)
            rec.setdefault("verify", None)
            rec.setdefault("snapshot_verify", None)
            records.append(rec)
        finally:
            if own:
                shutil.rmtree(media, ignore_errors=True)
        return records


def _group(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            out.append(int(entry))
    return sorted(out)


def _process_stacks(pgid: int) -> str:
    """Thread stacks of every process of a hung ``--exec`` client: ``py-spy dump`` when it is
    installed (Python programs), else each thread's name and kernel wait channel."""
    spy = shutil.which("py-spy")
    parts = []
    for pid in _group(pgid):
        text = ""
        if spy is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                r = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True,
                                   text=True, timeout=10)
                text = r.stdout if r.returncode == 0 else ""
        if not text:
            lines = [f"process {pid}:"]
            try:
                for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
                    comm = _read(f"/proc/{pid}/task/{tid}/comm").strip()
                    wchan = _read(f"/proc/{pid}/task/{tid}/wchan").strip()
                    lines.append(f"  thread {tid} {comm}: waiting in {wchan or '?'}")
            except OSError:
                continue
            text = "\n".join(lines) + "\n"
        parts.append(text)
    return "".join(parts)


def _remove_dead_set(ctx: ClientContext) -> None:
    """The client process is gone: remove the control segment and socket of its set if it
    left them (killed, or crashed before the engine attached -- nobody else would)."""
    from vdisim.transport import naming
    from vdisim.transport.channel import socket_alive
    from vdisim.transport.segments import owner_alive, remove_when_dead

    try:
        key = naming.set_key(ctx.instance, ctx.set_name)
    except ValueError:
        return
    seg = naming.control_segment_name(key)
    if os.path.exists(os.path.join("/dev/shm", seg)) and not remove_when_dead(seg, 2.0):
        return  # still owned: a live process holds it
    path = naming.socket_path(key)
    if os.path.exists(path) and not owner_alive(seg) and not socket_alive(path):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _names(n: int) -> tuple[str, ...]:
    base = "{" + str(uuid.uuid4()).upper() + "}"
    return (base, *(f"{base}{i}" for i in range(1, n)))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""

