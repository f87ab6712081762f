"""The race catalogue: generators of concurrent activity on one VDI set (docs/fuzz.md).

Every race is the same world -- a client set in this process (actor threads ``client``,
``w0``/``w1`` per device, optional ``aborter`` / ``closer`` / ``secondary``) and the engine's
side driven step by step through the scripting API by the ``server`` actor -- with a seeded
distribution over *parameters* (:class:`Params`): how many devices and commands, the client's
timeouts, where an abort, a CloseDevice, a serverTimeOut expiry or the engine's death falls,
whether the client closes while workers still run.  The scheduler then chooses the
interleaving.  ``legal`` races are checked against the model; ``misuse`` races (forbidden to
clients by §2.7 / §8.4) only for crashes, hangs, leaks and completions lost by the engine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from conformance.fuzz.scheduler import Scheduler
from vdisim import hooks
from vdisim.client.api import Command, VirtualDevice, VirtualDeviceSet
from vdisim.engine.connection import Connection, Engine
from vdisim.engine.scripting import ScriptSession
from vdisim.protocol.codes import INFINITE, CommandCode, Feature, HResult, VDF_LikePipe, Win32
from vdisim.protocol.records import VDConfig

__all__ = ["RACES", "Env", "Op", "Params", "Race", "World", "run_world"]

OK = int(HResult.NOERROR)
TIMEOUT = int(HResult.VD_E_TIMEOUT)
MTS = 65536
WRITE_MEDIA = int(Feature.VDF_WriteMedia)
POLLS = 30  # server polls (100 ms virtual apart) for each completion before giving up
GIVE_UP = 60  # GetCommand timeouts before a worker gives up


@attrs.frozen(slots=True)
class Params:
    """One race instance (JSON-able, stored in replay files)."""

    devices: int = 1
    cmds: tuple[tuple[int, int], ...] = ()  # (device, command code) in send order
    timeout: int = INFINITE  # client GetCommand timeout (ms)
    getconf_timeout: int = INFINITE
    client_abort: int | None = None  # pauses before the client's SignalAbort
    server_abort: int | None = None  # server SignalAbort before command i (len = after all)
    close_early: bool = False  # server CloseDevice right after the device's last command
    server_timeout: int = 0  # VDConfig.serverTimeOut (ms)
    advance_at: int | None = None  # virtual serverTimeOut expiry before command i
    kill_engine_at: int | None = None  # SIGKILL of the engine before command i
    config_abort: str | None = None  # "client" | "server": abort during configuration
    config_stage: int = 0  # server step after which a server config abort happens
    misuse_close: int | None = None  # pauses before Close from another thread (misuse)
    secondary: int | None = None  # pauses before a secondary attaches (misuse)
    complete_pause: bool = False  # workers yield between GetCommand and CompleteCommand
    kill_client_at: int | None = None  # primary client in a child process, killed before call i
    kill_secondary_at: int | None = None  # secondary in a child process, killed before call i

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["cmds"] = [list(c) for c in self.cmds]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Params:
        d = dict(d)
        d["cmds"] = tuple((int(a), int(b)) for a, b in d.get("cmds", ()))
        return cls(**d)


@attrs.frozen(slots=True)
class Race:
    name: str
    kind: str  # "legal" | "misuse"
    section: str
    doc: str
    gen: Callable[[random.Random], Params]


def _cmds(r: random.Random, devices: int, lo: int = 1, hi: int = 4) -> tuple[tuple[int, int], ...]:
    codes = (int(CommandCode.VDC_Write), int(CommandCode.VDC_Flush))
    return tuple((r.randrange(devices), r.choice(codes)) for _ in range(r.randint(lo, hi)))


def _timeout(r: random.Random) -> int:
    return r.choice([INFINITE, INFINITE, 0, 50, 500])


def _g_abort_getcommand(r: random.Random) -> Params:
    d = r.randint(1, 2)
    return Params(devices=d, cmds=_cmds(r, d), timeout=_timeout(r),
                  client_abort=r.randint(0, 25), complete_pause=r.random() < 0.5)


def _g_abort_getconfiguration(r: random.Random) -> Params:
    return Params(devices=1, cmds=_cmds(r, 1, 0, 2), getconf_timeout=_timeout(r),
                  client_abort=r.randint(0, 12))


def _g_server_abort(r: random.Random) -> Params:
    d = r.randint(1, 2)
    cmds = _cmds(r, d, 1, 5)
    return Params(devices=d, cmds=cmds, timeout=_timeout(r),
                  server_abort=r.randint(0, len(cmds)), complete_pause=r.random() < 0.7)


def _g_closedevice(r: random.Random) -> Params:
    d = r.randint(1, 2)
    return Params(devices=d, cmds=_cmds(r, d, 1, 5), timeout=_timeout(r), close_early=True,
                  complete_pause=r.random() < 0.5)


def _g_config_abort(r: random.Random) -> Params:
    side = r.choice(["client", "server"])
    return Params(devices=r.randint(1, 2), cmds=(), getconf_timeout=_timeout(r),
                  config_abort=side, config_stage=r.randint(0, 3),
                  client_abort=r.randint(0, 8) if side == "client" else None)


def _g_server_timeout(r: random.Random) -> Params:
    d = r.randint(1, 2)
    cmds = _cmds(r, d, 1, 4)
    return Params(devices=d, cmds=cmds, timeout=_timeout(r), server_timeout=100,
                  advance_at=r.randint(0, len(cmds)), complete_pause=True)


def _g_engine_death(r: random.Random) -> Params:
    d = r.randint(1, 2)
    cmds = _cmds(r, d, 1, 4)
    return Params(devices=d, cmds=cmds, timeout=_timeout(r),
                  kill_engine_at=r.randint(0, len(cmds)), complete_pause=r.random() < 0.5)


def _g_primary_death(r: random.Random) -> Params:
    d = r.randint(1, 2)
    return Params(devices=d, cmds=_cmds(r, d, 1, 4), timeout=0, kill_client_at=r.randint(0, 12))


def _g_secondary_death(r: random.Random) -> Params:
    # Device 0 is the primary's, device 1 the secondary's; at least one command for each side.
    cmds = _cmds(r, 2, 1, 4)
    if not any(dev == 1 for dev, _c in cmds):
        cmds += ((1, int(CommandCode.VDC_Write)),)
    return Params(devices=2, cmds=cmds, timeout=_timeout(r), kill_secondary_at=r.randint(0, 6),
                  client_abort=r.randint(0, 10), complete_pause=r.random() < 0.5)


def _g_close_misuse(r: random.Random) -> Params:
    d = r.randint(1, 2)
    return Params(devices=d, cmds=_cmds(r, d, 1, 4), timeout=_timeout(r),
                  misuse_close=r.randint(0, 25), complete_pause=r.random() < 0.7)


def _g_secondary_misuse(r: random.Random) -> Params:
    return Params(devices=2, cmds=_cmds(r, 1, 0, 2), timeout=_timeout(r),
                  misuse_close=r.randint(0, 20), secondary=r.randint(0, 20))


RACES: dict[str, Race] = {r.name: r for r in (
    Race("abort-vs-getcommand", "legal", "§2.6, §8.2",
         "client SignalAbort while worker threads block in GetCommand / complete commands",
         _g_abort_getcommand),
    Race("abort-vs-getconfiguration", "legal", "§2.2, §2.6",
         "client SignalAbort while the main thread blocks in GetConfiguration",
         _g_abort_getconfiguration),
    Race("server-abort-vs-completions", "legal", "§3, §8.2",
         "server SignalAbort racing the client's CompleteCommand calls", _g_server_abort),
    Race("closedevice-vs-getcommand", "legal", "§2.4, §3",
         "server CloseDevice right after the last command, racing GetCommand", _g_closedevice),
    Race("abort-during-configuration", "legal", "§2.2, §8.1",
         "client or server abort between Open and EndConfiguration", _g_config_abort),
    Race("servertimeout-vs-completion", "legal", "§4.1, §8.1",
         "serverTimeOut expiring (virtual clock) while a completion is in flight",
         _g_server_timeout),
    Race("engine-death", "legal", "§8.1, §8.2",
         "SIGKILL of the engine at any protocol step", _g_engine_death),
    Race("primary-death", "legal", "§1.9, §8.1",
         "SIGKILL of the primary client's process (driven call by call) at any step",
         _g_primary_death),
    Race("secondary-death", "legal", "§1.9, §8.1, §8.4",
         "SIGKILL of a secondary's process (driven call by call) at any step; the set must not "
         "abort by itself, the primary's SignalAbort then ends it", _g_secondary_death),
    Race("close-vs-getcommand", "misuse", "§2.7, §8.4",
         "Close on one thread while others still GetCommand / CompleteCommand",
         _g_close_misuse),
    Race("secondary-attach-vs-close", "misuse", "§1.9, §2.8, §8.4",
         "a secondary attaching while the primary closes", _g_secondary_misuse),
)}


# ------------------------------------------------------------------------------ the world


@attrs.define(slots=True)
class Op:
    """One call and what came back; ``inv``/``ret`` are scheduler steps (stress mode: a
    global counter in real-time order)."""

    actor: str
    call: str
    args: dict[str, Any]
    inv: int
    ret: int = -1
    hr: int | None = None
    out: dict[str, Any] = attrs.field(factory=dict)
    error: str | None = None

    def to_json(self) -> list[Any]:
        return [self.actor, self.call, self.args, self.inv, self.ret, self.hr, self.out,
                self.error]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


class Env:
    """What survives between runs: the engine and its connection, and a spare engine for the
    runs that kill theirs (started in the background, so the next such run need not wait)."""

    def __init__(self, *, stress: bool = False) -> None:
        self.stress = stress
        self.engine: Engine | None = None
        self.conn: Connection | None = None
        self.victim: Engine | None = None  # the engine of the current engine-death run
        self._spare: Engine | None = None
        self._spare_thread: threading.Thread | None = None
        self.restarts = 0

    def _start(self) -> Engine:
        env = dict(os.environ)
        env["VDISIM_HOOKS"] = "engine-log" if self.stress else "engine"
        self.restarts += 1
        return Engine.start(env=env)

    def _start_spare(self) -> None:
        def run() -> None:
            self._spare = self._start()

        self._spare_thread = threading.Thread(target=run, name="fuzz-spare-engine",
                                              daemon=True)
        self._spare_thread.start()

    def spare_ready(self) -> bool:
        """True when an engine-death run would not wait for an engine to start."""
        if self._spare_thread is None:
            self._start_spare()
        return self._spare is not None

    def ensure(self, *, victim: bool = False) -> Connection:
        """The connection a run uses (``victim``: a fresh engine the run may kill)."""
        if victim:
            self._drop_victim()
            if self._spare_thread is None:
                self._start_spare()
            assert self._spare_thread is not None
            self._spare_thread.join(60.0)
            self.victim, self._spare = self._spare, None
            if self.victim is None:
                raise RuntimeError("spare engine did not start")
            self._start_spare()
            return self.victim.connect()
        if self.engine is not None and self.engine.proc is not None \
                and self.engine.proc.poll() is not None:
            self.stop()
        if self.engine is None:
            self.engine = self._start()
        if self.conn is None:
            self.conn = self.engine.connect()
        return self.conn

    def kill_engine(self) -> None:
        """SIGKILL the victim engine and its resource tracker (nothing cleans up for it but
        the client, as after a real crash), and reap it: its sockets are closed on return."""
        eng = self.victim
        if eng is not None and eng.proc is not None:
            for child in _children(eng.proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGKILL)
            eng.proc.kill()
            eng.proc.wait(10)

    def _drop_victim(self) -> None:
        if self.victim is not None:
            self.victim.stop()
            self.victim = None

    def stop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        self._drop_victim()
        if self._spare_thread is not None:
            self._spare_thread.join(60.0)
            self._spare_thread = None
        if self._spare is not None:
            self._spare.stop()
            self._spare = None


class World:
    """One run: the actors, their shared facts, and every call they made."""

    def __init__(self, env: Env, race: Race, params: Params, seed: int,
                 sched: Scheduler | None) -> None:
        self.env = env
        self.race = race
        self.p = params
        self.seed = seed
        self.sched = sched
        # A fresh name per run (never hashed): the delayed clean-up of a previous run's dead
        # client must not meet a new set of the same name (docs/fuzz.md, findings).
        self.name = "{" + str(uuid.uuid4()).upper() + "}"
        self.ops: list[Op] = []
        self._counter = 0
        self._clock_lock = threading.Lock()
        self.cond = threading.Condition()
        self.created = False
        self.vds: VirtualDeviceSet | None = None
        self.sec: VirtualDeviceSet | None = None
        self.script: ScriptSession | None = None
        self.server_closed = False
        self.engine_killed = False
        self.gave_up = False
        self.sent: list[int] = []  # engine cmd ids of commands sent with NOERROR, in order
        self.handles: dict[int, int] = {}  # script handle -> engine cmd id
        self.final: dict[int, dict[str, Any]] = {}  # script handle -> wait_completion result
        self.log: list[list[Any]] | None = None  # the engine's completion log for this set
        self.threads: list[threading.Thread] = []
        self.victim_conn: Connection | None = None
        self.child: subprocess.Popen[str] | None = None
        self.client_killed = False
        self.sec_child: subprocess.Popen[str] | None = None
        self.secondary_dead = False
        self.warnings: list[str] = []

    # ---------------------------------------------------------------- helpers
    def clock(self) -> int:
        if self.sched is not None:
            return self.sched.steps - 1
        with self._clock_lock:
            self._counter += 1
            return self._counter

    def rec(self, actor: str, call: str, fn: Callable[[], Any], **args: Any) -> tuple[Op, Any]:
        if self.sched is not None and actor in ("server", "harness"):
            # Server steps have no library hook of their own: each is a turn.
            self.sched.point(f"{actor}.{call}", dict(args))
        op = Op(actor, call, args, self.clock())
        self.ops.append(op)
        value: Any = None
        try:
            value = fn()
        except Exception as exc:  # an engine that died, a harness error
            op.error = f"{type(exc).__name__}: {exc}"
        op.ret = self.clock()
        hr = value[0] if isinstance(value, tuple) else value
        if isinstance(hr, int) and not isinstance(hr, bool):
            op.hr = int(hr)
        elif isinstance(hr, dict) and "hr" in hr:
            op.hr = int(hr["hr"])
        return op, value

    def pause(self, ms: float = 0.0, *, real: bool = False) -> None:
        """A yield point (0) or a sleep of ``ms``: virtual under the scheduler; in stress
        mode real time, scaled down by 20 unless ``real``."""
        if self.sched is not None:
            self.sched.pause(ms)
        else:
            time.sleep(ms / 1000.0 if real else (ms or 1.0) / 20000.0)

    def spawn(self, name: str, fn: Callable[[], None]) -> None:
        if self.sched is not None:
            self.threads.append(self.sched.spawn(name, fn))
        else:
            th = threading.Thread(target=fn, name=f"fuzz-{name}", daemon=True)
            th.start()
            self.threads.append(th)

    def join(self, th: threading.Thread) -> None:
        if hooks.ACTIVE:
            hooks.join(th, 30.0)
        th.join(30.0)

    def await_created(self) -> None:
        with self.cond:
            while not self.created:
                hooks.wait(self.cond, None, "actor.await") if hooks.ACTIVE else \
                    self.cond.wait(1.0)

    def set_created(self) -> None:
        with self.cond:
            self.created = True
            self.cond.notify_all()

    # ---------------------------------------------------------------- server actor
    def server(self) -> None:
        p = self.p
        s = self.script
        assert s is not None
        self.await_created()
        sched = self.sched

        def step(call: str, fn: Callable[[], Any], **args: Any) -> Op | None:
            op, _ = self.rec("server", call, fn, **args)
            return None if op.error is not None else op

        def opener() -> int:
            return sched.external(lambda: s.open(self.name)) if sched else s.open(self.name)

        op = step("open", opener)
        if (op is not None and op.hr != OK and not self.client_killed
                and not any(o.call == "close" and o.actor != "server" for o in self.ops)):
            # The engine's Open failed although the set is live (seen only while set names were
            # reused between runs: docs/fuzz.md, findings).  Retried once, reported as a
            # warning.
            self.warnings.append(f"engine Open returned 0x{op.hr:08X} with the set live; "
                                 "retried")
            self.ops.remove(op)
            op = step("open", opener)
        if op is None or op.hr != OK:
            return  # e.g. the client closed its set first (§1.4: the statement fails)
        stages: list[tuple[str, Callable[[], Any], dict[str, Any]]] = [
            ("get_configuration", s.get_configuration, {}),
            ("begin_configuration",
             lambda: s.begin_configuration(WRITE_MEDIA, 512, 512, MTS), {}),
            ("request_buffers",
             lambda: s.request_buffers(MTS, 512, max(1, len(p.cmds))), {}),
            ("end_configuration", s.end_configuration, {}),
        ]
        for i, (call, fn, args) in enumerate(stages):
            if p.config_abort == "server" and p.config_stage == i:
                if step("signal_abort", s.signal_abort) is None:
                    return
            if step(call, fn, **args) is None:
                return
        devices = []
        for _ in range(p.devices):
            op = step("open_device", lambda: s.open_device())
            if op is None:
                return
            devices.append(op.hr == OK)
        def start_agent() -> int:
            s.start_agent()
            return OK

        if step("start_agent", start_agent) is None:
            return
        closed: set[int] = set()
        last = {dev: i for i, (dev, _c) in enumerate(p.cmds)}
        for i in range(len(p.cmds) + 1):
            if i == p.server_abort and step("signal_abort", s.signal_abort) is None:
                return
            if i == p.advance_at and sched is None:
                self.pause(2 * p.server_timeout + 50, real=True)  # stress: the real watchdog
            if i == p.advance_at and step(
                    "advance", lambda: s.call("fuzz", action="advance",
                                              ms=2 * p.server_timeout + 10),
                    ms=2 * p.server_timeout + 10) is None:
                return
            if i == p.kill_engine_at:
                self.rec("harness", "kill_engine", self._kill)
                self.engine_killed = True
                return
            if i == len(p.cmds):
                break
            dev, code = p.cmds[i]
            if not devices[dev]:
                continue
            bid = None
            if code == CommandCode.VDC_Write:
                op, value = self.rec("server", "allocate_buffer",
                                     lambda: s.allocate_buffer(MTS, fill=b"\xa5"))
                if op.error is not None:
                    return
                bid = value[1]
            size = MTS if code == CommandCode.VDC_Write else 0
            op, value = self.rec("server", "send_command",
                                 functools.partial(s.send_command, dev, code, size, 0, bid),
                                 device=dev, code=code)
            if op.error is not None:
                return
            if op.hr == OK:
                self.sent.append(len(self.sent) + 1)
                self.handles[int(value[1])] = len(self.sent)
            if p.close_early and last.get(dev) == i and step(
                    "close_device", functools.partial(s.close_device, dev),
                    device=dev) is not None:
                closed.add(dev)
        probed = False

        def probe() -> None:
            # secondary-death: once the secondary is dead, the engine's set is still live
            # (§1.9: VDI does not notice a secondary's death; checks.py compares the state
            # with the primary's SignalAbort).
            nonlocal probed
            if p.kill_secondary_at is None or probed or not self.secondary_dead:
                return
            probed = True
            op, r = self.rec("server", "state", s.state)
            if op.error is None and isinstance(r, dict):
                op.out = {"state": r.get("state")}

        # Wait for the completions (polls, virtual time between them).
        for h in sorted(self.handles):
            for _ in range(POLLS):
                probe()
                op, r = self.rec("server", "wait_completion",
                                 functools.partial(s.wait_completion, h, 0), command=h)
                if op.error is not None:
                    return
                op.out = {"done": r["done"], "code": r["completion_code"]}
                self.final[h] = dict(op.out)
                if r["done"]:
                    break
                # Stress: real 50 ms, so a death the engine notices late still completes.
                self.pause(100) if sched is not None else self.pause(50, real=True)
        for dev in range(p.devices):
            if devices[dev] and dev not in closed and step(
                    "close_device", functools.partial(s.close_device, dev),
                    device=dev) is None:
                return
        if step("close", s.close) is not None:
            self.server_closed = True

    # ---------------------------------------------------------------- client actors
    def client(self) -> None:
        p = self.p
        vds = VirtualDeviceSet()
        self.vds = vds
        cfg = VDConfig(device_count=p.devices, features=VDF_LikePipe,
                       server_timeout=p.server_timeout)
        op, _ = self.rec("client", "create", lambda: vds.create(self.name, cfg))
        if op.hr != OK:
            self.set_created()
            return
        self.set_created()
        children: list[threading.Thread] = []
        if p.client_abort is not None:
            self.spawn("aborter", self.aborter)
            children.append(self.threads[-1])
        if p.misuse_close is not None:
            self.spawn("closer", self.closer)
            children.append(self.threads[-1])
        hr = TIMEOUT
        for _ in range(20):
            op, _ = self.rec("client", "get_configuration",
                             lambda: vds.get_configuration(p.getconf_timeout),
                             timeout=p.getconf_timeout)
            hr = op.hr if op.hr is not None else -1
            if hr != TIMEOUT:
                break
            self.pause(100)
        if p.secondary is not None and hr == OK:
            self.spawn("secondary", self.secondary)
            children.append(self.threads[-1])
        if p.kill_secondary_at is not None:
            if hr == OK:  # §1.9: a secondary attaches after the primary's GetConfiguration
                self.spawn("secondary", self.secondary_process)
                children.append(self.threads[-1])
            else:
                self._secondary_gone()
        devs: list[VirtualDevice] = []
        if hr == OK:
            names = [self.name] + [f"{self.name}{i}" for i in range(1, p.devices)]
            if p.secondary is not None or p.kill_secondary_at is not None:
                names = names[:1]
            for n in names:
                op, value = self.rec("client", "open_device",
                                     functools.partial(vds.open_device, n))
                if op.hr == OK and value[1] is not None:
                    devs.append(value[1])
        for i, dev in enumerate(devs):
            self.spawn(f"w{i}", functools.partial(self.worker, i, dev))
            children.append(self.threads[-1])
        for th in children:
            self.join(th)
        self.rec("client", "close", vds.close)

    def worker(self, i: int, dev: VirtualDevice) -> None:
        p = self.p
        actor = f"w{i}"
        timeouts = 0
        while True:
            op, value = self.rec(actor, "get_command", lambda: dev.get_command(p.timeout),
                                 device=dev.index, timeout=p.timeout)
            cmd: Command | None = value[1] if isinstance(value, tuple) else None
            if cmd is not None:
                op.out = {"cmd": cmd._cmd_id, "code": cmd.command_code}
                if p.complete_pause:
                    self.pause()
                self.rec(actor, "complete_command",
                         functools.partial(dev.complete_command, cmd, Win32.ERROR_SUCCESS,
                                           cmd.size, 0),
                                  device=dev.index, cmd=cmd._cmd_id, code=0)
                continue
            if op.hr == TIMEOUT:
                timeouts += 1
                if timeouts > GIVE_UP:
                    self.gave_up = True
                    return
                self.pause(100)
                continue
            return

    # ---------------------------------------------------------------- primary in a child
    def client_process(self) -> None:
        """The primary client in its own process (conformance.fuzz.child), polling (timeouts
        0, virtual pauses between polls) so that no call waits for this process; killed with
        its whole session before call ``kill_client_at``."""
        p = self.p
        proc = subprocess.Popen([sys.executable, "-m", "conformance.fuzz.child"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.child = proc
        calls = 0

        def call(what: str, **args: Any) -> Op | None:
            nonlocal calls
            if calls == p.kill_client_at:
                self.rec("harness", "kill_client", self._kill_child)
                return None
            calls += 1

            def send() -> int:
                assert proc.stdin is not None and proc.stdout is not None
                sent = dict(args)
                if what in ("create", "open_device"):  # names stay out of the hashed trace
                    i = int(sent.pop("index", 0))
                    sent["name"] = self.name if i == 0 else f"{self.name}{i}"
                proc.stdin.write(json.dumps({"call": what, "args": sent}) + "\n")
                proc.stdin.flush()
                reply = json.loads(proc.stdout.readline())
                out.update(reply["out"])
                return int(reply["hr"])

            out: dict[str, Any] = {}
            op, _ = self.rec("client", what, send, **args)
            op.out = out
            return op

        try:
            op = call("create", devices=p.devices)
            self.set_created()
            if op is None or op.hr != OK:
                return
            hr = TIMEOUT
            for _ in range(40):
                op = call("get_configuration", timeout=0)
                if op is None:
                    return
                hr = op.hr if op.hr is not None else -1
                if hr != TIMEOUT:
                    break
                self.pause(100)
            opened = []
            if hr == OK:
                for i in range(p.devices):
                    op = call("open_device", index=i)
                    if op is None:
                        return
                    if op.hr == OK:
                        opened.append(int(op.out["device"]))
            live = list(opened)
            idle = 0
            while live and idle < GIVE_UP:
                got = False
                for dev in list(live):
                    op = call("get_command", device=dev, timeout=0)
                    if op is None:
                        return
                    if op.hr == OK:
                        got = True
                        if call("complete_command", device=dev, cmd=op.out["cmd"],
                                code=0) is None:
                            return
                    elif op.hr != TIMEOUT:
                        live.remove(dev)
                if not got:
                    idle += 1
                    self.pause(100)
            call("close")
        finally:
            self.set_created()  # (a client killed before Create: the server finds no set)
            if self.child is not None and proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.close()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._kill_child()
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()

    def _kill_child(self) -> int:
        proc = self.child
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.client_killed = True
        return OK

    # ---------------------------------------------------------------- secondary in a child
    def secondary_process(self) -> None:
        """A secondary (§1.9) in its own process (conformance.fuzz.child): OpenInSecondary,
        OpenDevice of device 1, then GetCommand (timeout 0, virtual pauses) / CompleteCommand
        until it is killed with its whole session before call ``kill_secondary_at``."""
        p = self.p
        proc = subprocess.Popen([sys.executable, "-m", "conformance.fuzz.child"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.sec_child = proc
        calls = 0
        sched = self.sched

        def call(what: str, **args: Any) -> Op | None:
            nonlocal calls
            if calls == p.kill_secondary_at:
                return None
            calls += 1
            out: dict[str, Any] = {}

            def send() -> int:
                assert proc.stdin is not None and proc.stdout is not None
                sent = dict(args)
                if what in ("open_in_secondary", "open_device"):  # names stay out of the trace
                    i = int(sent.pop("index", 0))
                    sent["name"] = self.name if i == 0 else f"{self.name}{i}"
                proc.stdin.write(json.dumps({"call": what, "args": sent}) + "\n")
                proc.stdin.flush()
                reply = json.loads(proc.stdout.readline())
                out.update(reply["out"])
                return int(reply["hr"])

            # Attaching and OpenDevice wait for the primary's hub (in this process): external.
            # GetCommand / CompleteCommand do not; the child settles before replying, so what
            # they sent is readable by the hub when the actor yields (deterministic).
            ext = sched is not None and what in ("open_in_secondary", "open_device")
            op, _ = self.rec("secondary", what,
                             (lambda: sched.external(send, drain=True)) if ext and sched
                             else send, **args)
            if sched is not None and not ext:
                self.pause()  # a turn after each call (the child has no hooks here)
            op.out = out
            return op

        try:
            op = call("open_in_secondary")
            if op is not None and op.hr == OK:
                op = call("open_device", index=1)
            if op is not None and op.hr == OK:
                dev = int(op.out["device"])
                while True:  # ends at the kill (kill_secondary_at is small) or a final code
                    op = call("get_command", device=dev, timeout=0)
                    if op is None:
                        break
                    if op.hr == OK:
                        if call("complete_command", device=dev, cmd=op.out["cmd"],
                                code=0) is None:
                            break
                    elif op.hr == TIMEOUT:
                        self.pause(100)
                    else:
                        break
        finally:
            # The death is the point of the race: a secondary that stopped early dies too.
            self.rec("harness", "kill_secondary", self._kill_secondary)
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()

    def _kill_secondary(self) -> int:
        proc = self.sec_child
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self._secondary_gone()
        return OK

    def _secondary_gone(self) -> None:
        with self.cond:
            self.secondary_dead = True
            self.cond.notify_all()

    def _kill(self) -> int:
        self.env.kill_engine()
        return OK

    def aborter(self) -> None:
        if self.p.kill_secondary_at is not None:
            # secondary-death: the primary learns of the death (as it would by waiting on the
            # child's process handle, §1.9 / §8.4), lets time pass, then aborts.
            with self.cond:
                while not self.secondary_dead:
                    hooks.wait(self.cond, None, "actor.await") if hooks.ACTIVE else \
                        self.cond.wait(1.0)
            for _ in range(self.p.client_abort or 0):
                self.pause(100)
        else:
            for _ in range(self.p.client_abort or 0):
                self.pause()
        vds = self.vds
        assert vds is not None
        self.rec("aborter", "signal_abort", vds.signal_abort)

    def closer(self) -> None:
        for _ in range(self.p.misuse_close or 0):
            self.pause()
        vds = self.vds
        assert vds is not None
        self.rec("closer", "close", vds.close)

    def secondary(self) -> None:
        for _ in range(self.p.secondary or 0):
            self.pause()
        sec = VirtualDeviceSet()
        self.sec = sec
        op, _ = self.rec("secondary", "open_in_secondary", lambda: sec.open_in_secondary(self.name))
        if op.hr == OK:
            op, value = self.rec("secondary", "open_device",
                                 lambda: sec.open_device(f"{self.name}1"))
            if op.hr == OK and value[1] is not None:
                self.rec("secondary", "get_command", lambda: value[1].get_command(0))
        self.rec("secondary", "close", sec.close)



def run_world(w: World) -> None:
    """Start the actors and drive them (scheduler) or let them run (stress)."""
    victim = w.p.kill_engine_at is not None
    conn = w.env.ensure(victim=victim)
    w.victim_conn = conn if victim else None
    w.script = conn.script()
    w.spawn("server", w.server)
    w.spawn("client", w.client if w.p.kill_client_at is None else w.client_process)
    if w.sched is not None:
        w.sched.run()
    else:
        for th in list(w.threads):
            th.join(60.0)
