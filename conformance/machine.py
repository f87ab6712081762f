"""The conformance state machine: random VDI conversations judged step by step.

:class:`VDIStateMachine` is a Hypothesis ``RuleBasedStateMachine`` that drives one backend
through an :class:`~conformance.executor.Executor`: client calls (primary and secondary) in any
state, interleaved with scripted server steps in sensible and in protocol-breaking orders,
aborts from either side, stalls, the engine's death.  Every step's observation goes to the
independent judge (``conformance.judge.Judge``); a violation fails the example with an
``AssertionError`` whose message starts with the rule ID, Hypothesis shrinks it to a minimal
step sequence, and every step and outcome is ``note()``d so the shrunk case reads as a story.

Steps a backend lacks are excluded by precondition (capabilities), never failed.

Use it for your own backend as zarr ships its store machines::

    from hypothesis.stateful import run_state_machine_as_test
    from conformance.machine import VDIStateMachine

    class MyMachine(VDIStateMachine):
        backend_factory = staticmethod(lambda: MyBackend())

    run_state_machine_as_test(MyMachine)

The backend is made once per machine class (``backend_factory()``, opened on first use, closed
at interpreter exit); each example gets a fresh set name, fresh client objects and a fresh
scripted server set, and its teardown closes them and checks that nothing leaked.

``replay(doc)`` reruns a replay file of kind ``conform`` (``vdisim replay FILE``).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Protocol

import attrs
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conformance.backend import Backend, Capability, NotCapable, open_backend
from conformance.executor import HANG_RULE, Executor, HarnessError
from conformance.report import Violation
from conformance.trace import Obs, Step

__all__ = ["LEAK_RULE", "Failure", "JudgeLike", "VDIStateMachine", "judge_steps", "replay",
           "run_steps", "shrink_budget"]

#: Nothing a set used may survive its Close on both sides (segments, sockets) [I].
LEAK_RULE = "CLOSE-RELEASES-RESOURCES"

OK = 0
VD_E_TIMEOUT = 0x80770003
VD_E_ABORT = 0x80770004
VD_E_CLOSE = 0x8077000E

VDF_Removable = 0x1
VDF_LikeTape = 0x173
VDF_LikeDisk = 0x200
VDF_RequestComplete = 0x2000
VDF_WriteMedia = 0x10000
VDF_ReadMedia = 0x20000

VDC_Read, VDC_Write, VDC_ClearError = 1, 2, 3
ALL_CODES = list(range(1, 20))
ABNORMAL_WIN32 = [112, 1117, 38, 50, 995, 1100, 1101, 1129, 6, 0xDEADBEEF]


class JudgeLike(Protocol):
    """What the machine needs of a judge (``conformance.judge.Judge``)."""

    def expect(self, step: Step) -> frozenset[int] | None: ...
    def observe(self, obs: Obs) -> Any: ...  # -> Judgement(held: list[str], violations: [...])
    def state(self) -> dict[str, Any]: ...


@contextlib.contextmanager
def shrink_budget(seconds: float) -> Iterator[None]:
    """Bound the time Hypothesis spends shrinking a failure (its own limit is 300 s; a
    conversation with real processes costs ~0.1 s per rerun).  Uses Hypothesis's engine
    constant ``MAX_SHRINKING_SECONDS``; without it, nothing changes."""
    from hypothesis.internal.conjecture import engine

    old = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if old is None:
        yield
        return
    engine.MAX_SHRINKING_SECONDS = max(1, int(seconds))
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = old


def default_judge() -> JudgeLike:
    from conformance.judge import Judge  # written independently of this module

    judge: JudgeLike = Judge()
    return judge


@attrs.frozen
class Failure:
    """The last failing example of a machine class (after shrinking: the minimal one)."""

    rule_id: str
    message: str
    steps: tuple[dict[str, Any], ...]


def _violations(judgement: Any) -> list[Violation]:
    out = []
    for v in getattr(judgement, "violations", None) or []:
        if isinstance(v, Violation):
            out.append(v)
        else:  # tolerate (rule_id, message) pairs
            rid, msg = v
            out.append(Violation(str(rid), str(msg)))
    return out


# ---------------------------------------------------------------------------------------------
# The generator's bookkeeping (not a model of correctness: only what exists, to pick arguments)


@attrs.define
class ClientView:
    attached: bool = False
    configured: bool = False
    aborted: bool = False
    device_count: int = 1
    devices: dict[int, int] = attrs.field(factory=dict)  # device sym -> set index (this set)
    old_devices: list[int] = attrs.field(factory=list)  # devices of earlier sets
    closed: set[int] = attrs.field(factory=set)  # devices that returned VD_E_CLOSE
    outstanding: dict[int, tuple[int, int, int]] = attrs.field(factory=dict)  # cmd -> dev,code,size
    finished: list[int] = attrs.field(factory=list)  # completed (for double completion)
    commands: list[int] = attrs.field(factory=list)  # every command sym this actor got
    srv_of: dict[int, int] = attrs.field(factory=dict)  # client command -> server command
    gen: int = 0  # which of this trace's sets the object is attached to (0: none)

    def reset(self) -> None:
        self.old_devices.extend(self.devices)
        self.devices.clear()
        self.outstanding.clear()
        self.closed.clear()
        self.attached = self.configured = self.aborted = False


@attrs.define
class ServerView:
    state: str = "DNE"  # DNE CONNECTED CONFIGURABLE INITIALIZING ACTIVE ABORT DEAD
    gen: int = -1  # the client set the server opened (ClientView.gen), -1: another name
    agent: bool = False
    device_count: int = 1
    features: int = 0
    devices: dict[int, int] = attrs.field(factory=dict)  # server device sym -> set index
    closed: set[int] = attrs.field(factory=set)
    buffers: list[int] = attrs.field(factory=list)
    commands: dict[int, tuple[int, int]] = attrs.field(factory=dict)  # sym -> (index, code)
    done: set[int] = attrs.field(factory=set)
    fifo: dict[int, list[tuple[int, int]]] = attrs.field(factory=dict)  # idx -> (sym, code)
    ioerror: set[int] = attrs.field(factory=set)  # set indices in IO-ERROR (§6.6)
    client_done: set[int] = attrs.field(factory=set)  # server syms the client completed
    completions: dict[int, tuple[Any, ...]] = attrs.field(factory=dict)

    def reset(self, state: str = "DNE") -> None:
        self.state = state
        self.agent = False
        self.devices.clear()
        self.closed.clear()
        self.buffers.clear()
        self.commands.clear()
        self.done.clear()
        self.fifo.clear()
        self.ioerror.clear()
        self.client_done.clear()

    def queued(self, idx: int) -> int:
        return len(self.fifo.get(idx, ()))

    def deliverable(self, idx: int, outstanding: int) -> bool:
        """A GetCommand on device ``idx`` will get a command (§6.6: in IO-ERROR only a
        ClearError, and only once nothing is outstanding)."""
        q = self.fifo.get(idx) or []
        if not q:
            return False
        if idx in self.ioerror:
            return q[0][1] == VDC_ClearError and outstanding == 0
        return True


def _index_of(name: str, device_count: int) -> int | None:
    if name == "{set}":
        return 0
    if name.startswith("{set}") and name[5:].isdigit():
        i = int(name[5:])
        return i if 0 < i < device_count else None
    return None


def _names(device_count: int) -> list[str]:
    return ["{set}"] + [f"{{set}}{i}" for i in range(1, device_count)]


# ---------------------------------------------------------------------------------------------
# "Odd" steps: everything besides the well-behaved conversation (out-of-order server calls,
# client calls in any state, garbage arguments, ...).  They are methods registered here, drawn
# by one Hypothesis rule, so that they do not crowd out the conversation itself.

Pre = Callable[[Any], bool] | None
_ODD: list[tuple[str, Pre, dict[str, Any]]] = []


def odd(pre: Pre, **strategies: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        _ODD.append((fn.__name__, pre, strategies))
        return fn
    return register


class VDIStateMachine(RuleBasedStateMachine):
    """Random VDI conversations on ``backend_factory()``'s backend, judged by the model."""

    backend_factory: ClassVar[Callable[[], Backend]] = staticmethod(
        lambda: open_backend("sim"))
    judge_factory: ClassVar[Callable[[], JudgeLike]] = staticmethod(default_judge)
    _backend: ClassVar[Backend | None] = None
    last_failure: ClassVar[Failure | None] = None
    held_counts: ClassVar[collections.Counter[str] | None] = None  # rules judged held
    steps_run: ClassVar[int] = 0
    examples_run: ClassVar[int] = 0

    @classmethod
    def backend(cls) -> Backend:
        b = cls.__dict__.get("_backend")
        if b is None:
            b = cls.backend_factory()
            b.open()
            atexit.register(b.close)
            cls._backend = b
        return b

    def __init__(self) -> None:
        super().__init__()
        self.b = type(self).backend()
        self.ex = Executor(self.b)
        self.judge = type(self).judge_factory()
        self.views = {"client": ClientView(), "secondary": ClientView()}
        self.srv = ServerView()
        self.secondary_gone = False
        self.kills = 0
        self.sets = 0
        self.opened: set[int] = set()  # client sets a server has opened (one Open per set)
        type(self).examples_run += 1

    # -- capability helpers ----------------------------------------------------------------
    def has(self, cap: Capability) -> bool:
        return self.b.has(cap)

    # -- performing and judging --------------------------------------------------------------
    def do(self, actor: str, call: str, /, **args: Any) -> Obs:
        step = Step(actor, call, args)
        expected = None
        with contextlib.suppress(Exception):
            expected = self.judge.expect(step)
        try:
            obs = self.ex.perform(step)
        except NotCapable:
            raise
        except HarnessError as exc:
            note(f"{step} -> harness error: {exc}")
            raise
        type(self).steps_run += 1
        exp = ("" if not expected else " (model: " + "|".join(f"0x{h:08X}" for h in
                                                               sorted(expected)) + ")")
        note(f"{obs}{exp}")
        if obs.out.get("hang"):
            self._fail(HANG_RULE, f"{step} did not return within "
                                  f"{obs.out.get('deadline_ms')} ms")
        judgement = self.judge.observe(obs)
        self._count_held(judgement)
        violations = _violations(judgement)
        if violations:
            v = violations[0]
            self._fail(v.rule_id, f"{v.message} (at {step})")
        self._track(obs)
        return obs

    def _count_held(self, judgement: Any) -> None:
        counts = type(self).held_counts
        if counts is not None:
            counts.update(getattr(judgement, "held", None) or [])

    def _fail(self, rule_id: str, message: str) -> None:
        steps = tuple(o.step.to_json() for o in self.ex.trace)
        type(self).last_failure = Failure(rule_id, message, steps)
        raise AssertionError(f"{rule_id}: {message}")

    def _track(self, obs: Obs) -> None:
        st_, hr, out, a = obs.step, obs.hr, obs.out, obs.step.args
        if st_.actor in ("client", "secondary"):
            v = self.views[st_.actor]
            self._track_client(v, st_.call, hr, out, a)
        elif st_.actor == "server":
            self._track_server(st_.call, hr, out, a)

    def _track_client(self, v: ClientView, call: str, hr: int | None, out: dict[str, Any],
                      a: dict[str, Any]) -> None:
        if hr == VD_E_ABORT:
            v.aborted = True
        if call == "create" and hr == OK:
            v.reset()
            v.attached = True
            self.sets += 1
            v.gen = self.sets
            v.device_count = int((a.get("config") or {}).get("device_count", 1))
        elif call == "open_in_secondary" and hr == OK:
            v.reset()
            v.attached = v.configured = True
            v.gen = self.srv.gen
            v.device_count = self.srv.device_count
        elif call == "get_configuration" and hr == OK:
            v.configured = True
        elif call == "open_device" and hr == OK and out.get("device") is not None:
            idx = _index_of(str(a.get("name")), v.device_count)
            v.devices[int(out["device"])] = idx if idx is not None else 0
        elif call == "get_command":
            dev = int(a["device"])
            if hr == OK and out.get("command") is not None:
                sym = int(out["command"])
                v.outstanding[sym] = (dev, int(out.get("code", 0)), int(out.get("size", 0)))
                v.commands.append(sym)
                idx = v.devices.get(dev)
                q = self.srv.fifo.get(idx, []) if idx is not None else []
                if q:
                    v.srv_of[sym] = q.pop(0)[0]
            elif hr == VD_E_CLOSE:
                v.closed.add(dev)
        elif call == "complete_command" and hr == OK:
            which = a.get("command")
            got = v.outstanding.pop(which, None) if isinstance(which, int) else None
            if got is not None and isinstance(which, int):
                v.finished.append(which)
                dev, code, _size = got
                srv_sym = v.srv_of.get(which)
                if srv_sym is not None:
                    self.srv.client_done.add(srv_sym)
                idx = v.devices.get(dev)
                if idx is not None and a.get("code", 0) != 0 and code != VDC_ClearError:
                    # §6.6: IO-ERROR; commands queued but not delivered fail with 1117
                    self.srv.ioerror.add(idx)
                    q = self.srv.fifo.get(idx, [])
                    for k, c in q:
                        if c != VDC_ClearError:
                            self.srv.done.add(k)
                    self.srv.fifo[idx] = [(k, c) for k, c in q if c == VDC_ClearError]
                elif idx is not None and code == VDC_ClearError and a.get("code", 0) == 0:
                    self.srv.ioerror.discard(idx)
        elif call == "signal_abort" and hr == OK:
            v.aborted = True
            if self.srv.state not in ("DNE", "DEAD"):
                self.srv.state = "ABORT"
        elif call == "close" and hr is not None and hr != 0x8077000C:
            if v.attached and v.devices and self.srv.state == "ACTIVE":
                self.srv.state = "ABORT"  # VD_E_OPEN aborts; a clean close ends anyway
            v.reset()

    def _track_server(self, call: str, hr: int | None, out: dict[str, Any],
                      a: dict[str, Any]) -> None:
        s = self.srv
        if call == "open" and hr == OK:
            s.reset("CONNECTED")
            c = self.views["client"]
            s.gen = c.gen if a.get("name") == "{set}" and c.attached else -1
            self.opened.add(s.gen)
        elif call == "get_configuration" and hr == OK and out.get("config"):
            s.device_count = int(out["config"].get("device_count", 1))
        elif call == "begin_configuration" and hr == OK:
            s.state = "CONFIGURABLE"
            s.features = int(a.get("features", 0))
        elif call == "end_configuration" and hr == OK:
            s.state = "INITIALIZING"
            self.views["client"].device_count = s.device_count
        elif call == "open_device" and hr == OK and out.get("device") is not None:
            s.devices[int(out["device"])] = int(out.get("index", 0))
            s.state = "ACTIVE" if s.state != "ABORT" else s.state
        elif call == "start_agent":
            # ExecuteCompletionAgent returns at once unless the set is Initializing/Active
            s.agent = s.state in ("INITIALIZING", "ACTIVE")
        elif call == "allocate_buffer" and hr == OK and out.get("buffer") is not None:
            s.buffers.append(int(out["buffer"]))
        elif call == "send_command" and out.get("command") is not None:
            sym = int(out["command"])
            idx = s.devices.get(int(a["device"]), 0)
            s.commands[sym] = (idx, int(a.get("code", 0)))
            if hr == OK:
                s.fifo.setdefault(idx, []).append((sym, int(a.get("code", 0))))
            else:
                s.done.add(sym)
        elif call == "wait_completion" and out.get("done"):
            sym = int(a["command"])
            s.done.add(sym)
            seen = (out.get("completion_code"), out.get("bytes_transferred"))
            first = s.completions.setdefault(sym, seen)
            if first != seen:
                self._fail("COMPLETE-COMMAND-AT-MOST-ONCE",
                           f"server command #{sym} completed as {first}, later as {seen}")
        elif call == "close_device" and hr == OK:
            s.closed.add(int(a["device"]))
        elif call == "signal_abort" and hr == OK:
            s.state = "ABORT"
        elif call == "close":
            s.reset("DNE")
        elif call == "state" and out.get("state"):
            if s.state != "DEAD":
                s.state = str(out["state"]).upper().replace("NORMALLY_TERMINATED", "NT")
            if out.get("violations"):
                self._fail("SERVER-NO-WIRE-VIOLATIONS",
                           f"the engine recorded protocol violations: {out['violations']}")
        elif call == "die":
            s.reset("DEAD")
            self.kills += 1

    # -- choosing arguments ----------------------------------------------------------------
    def _outstanding_on(self, idx: int) -> int:
        return sum(1 for v in self.views.values() for dev, _c, _s in v.outstanding.values()
                   if v.devices.get(dev) == idx)

    def _wait_for(self, actor: str, dev: int) -> bool:
        """True when the model knows something will come on ``dev`` (so wait for it)."""
        v = self.views[actor]
        idx = v.devices.get(dev)
        if v.aborted:
            return True
        if idx is None or v.gen != self.srv.gen or not v.attached:
            return False
        if self.srv.state in ("ABORT", "DEAD"):
            return True
        if self.srv.deliverable(idx, self._outstanding_on(idx)):
            return True
        return any(s_idx == idx for sym, s_idx in self.srv.devices.items()
                   if sym in self.srv.closed)

    # ================================================================== initialize
    @initialize(depth=st.sampled_from(["none", "created", "configured", "active", "active",
                                       "active2"]))
    def setup(self, depth: str) -> None:
        """Start from a prefix of the canonical sequence (§1.6, §1.7), so the random walk
        spends its steps in the interesting states."""
        if depth == "none":
            return
        n = 2 if depth == "active2" and self.has(Capability.MULTI_DEVICE) else 1
        self.do("client", "create", name="{set}", config={"device_count": n})
        if depth == "created":
            return
        self.do("server", "open", name="{set}")
        self.do("server", "get_configuration")
        self.do("server", "begin_configuration", features=VDF_WriteMedia, block_size=512,
                alignment=0, max_transfer_size=65536, timeout_ms=0)
        self.do("server", "request_buffers", size=65536, alignment=0, count=4)
        self.do("server", "end_configuration")
        self.do("client", "get_configuration", timeout_ms=2000)
        if depth == "configured":
            return
        for _ in range(n):
            self.do("server", "open_device")
        self.do("server", "start_agent")
        self.do("client", "open_device", name="{set}")

    # ================================================================== client rules
    def _actors(self) -> list[str]:
        return ["client", "secondary"] if self._secondary_ok() else ["client"]

    def _secondary_ok(self) -> bool:
        return self.has(Capability.SECONDARY_PROCESS) and not self.secondary_gone

    @odd(None, n=st.integers(1, 3), features=st.sampled_from(
        [0, 0, VDF_Removable, VDF_LikeTape, VDF_LikeDisk, VDF_RequestComplete, VDF_WriteMedia]),
        bad=st.sampled_from([None] * 6 + ["count0", "count65", "name"]))
    def client_create(self, n: int, features: int, bad: str | None) -> None:
        if not self.has(Capability.MULTI_DEVICE):
            n = 1
        if (features & VDF_LikeTape and not self.has(Capability.TAPE)) or (
                features & VDF_LikeDisk and not self.has(Capability.DISK)):
            features = 0
        if features & VDF_RequestComplete and not self.has(Capability.COMPLETE):
            features = 0
        cfg = {"device_count": {"count0": 0, "count65": 65}.get(bad or "", n),
               "features": features}
        self.do("client", "create", name="" if bad == "name" else "{set}", config=cfg)

    @odd(None, data=st.data(), timeout=st.sampled_from([0, 0, 50]))
    def get_configuration(self, data: st.DataObject, timeout: int) -> None:
        actor = data.draw(st.sampled_from(self._actors()), label="actor")
        v = self.views[actor]
        if v.attached and (v.aborted or (v.gen == self.srv.gen and self.srv.state in (
                "INITIALIZING", "ACTIVE", "ABORT", "NT", "DEAD"))):
            timeout = 1000  # configured or aborted: returns at once
        self.do(actor, "get_configuration", timeout_ms=timeout)

    @odd(None, data=st.data())
    def open_device(self, data: st.DataObject) -> None:
        actor = data.draw(st.sampled_from(self._actors()), label="actor")
        v = self.views[actor]
        names = [*_names(max(v.device_count, 1)), "{set}99", "{other}"]
        self.do(actor, "open_device", name=data.draw(st.sampled_from(names), label="name"))

    def _with(self, what: str) -> list[str]:
        """The usable actors whose ``what`` (devices, commands, old_devices) is not empty."""
        return [a for a in self._actors() if getattr(self.views[a], what)]

    def _has_devices(self) -> bool:
        return bool(self._with("devices"))

    @odd(lambda self: self._has_devices(),
         data=st.data(),
         timeout=st.sampled_from([0, 0, 0, 20, 100]))
    def get_command(self, data: st.DataObject, timeout: int) -> None:
        actor = data.draw(st.sampled_from(self._with("devices")), label="actor")
        dev = data.draw(st.sampled_from(sorted(self.views[actor].devices)), label="device")
        if self._wait_for(actor, dev):
            timeout = 1000
        self.do(actor, "get_command", device=dev, timeout_ms=timeout)

    @odd(lambda self: bool(self._with("commands")),
         data=st.data(),
         code=st.sampled_from([0, 0, 0, 0, *ABNORMAL_WIN32]),
         size_kind=st.sampled_from(["size", "size", "zero", "half", "over"]))
    def complete_command(self, data: st.DataObject, code: int, size_kind: str) -> None:
        actor = data.draw(st.sampled_from(self._with("commands")), label="actor")
        v = self.views[actor]
        choices = sorted(v.outstanding) or v.commands
        kind = data.draw(st.sampled_from(["outstanding"] * 4 + ["any", "garbage"]),
                         label="which")
        if kind == "outstanding":
            cmd = data.draw(st.sampled_from(choices), label="command")
        elif kind == "any":
            cmd = data.draw(st.sampled_from(v.commands), label="command")
        else:
            cmd = 999
        dev, _code, size = v.outstanding.get(cmd, (None, 0, 0))
        if dev is None:
            devs = sorted(v.devices) or v.old_devices
            if not devs:
                return
            dev = data.draw(st.sampled_from(devs), label="device")
        nbytes = {"size": size, "zero": 0, "half": size // 2, "over": size + 512}[size_kind]
        self.do(actor, "complete_command", device=dev, command=cmd, code=code, bytes=nbytes,
                position=0)

    @odd(lambda self: self._secondary_ok(),
         name=st.sampled_from(["{set}", "{set}", "{set}", "{other}"]))
    def open_in_secondary(self, name: str) -> None:
        self.do("secondary", "open_in_secondary", name=name)

    @odd(lambda self: self.has(Capability.BUFFER_HANDLES) and bool(self._with("commands")),
         data=st.data())
    def get_buffer_handle(self, data: st.DataObject) -> None:
        actor = data.draw(st.sampled_from(self._with("commands")), label="actor")
        cmd = data.draw(st.sampled_from([*self.views[actor].commands, 999]), label="command")
        self.do(actor, "get_buffer_handle", command=cmd)

    @odd(lambda self: self.has(Capability.BUFFER_HANDLES), data=st.data())
    def map_buffer_handle(self, data: st.DataObject) -> None:
        actor = data.draw(st.sampled_from(self._actors()), label="actor")
        handle = data.draw(st.sampled_from([*list(range(len(self.ex.handles))), 999]),
                           label="handle")
        self.do(actor, "map_buffer_handle", handle=handle)

    @odd(lambda self: self.has(Capability.SAFE_AFTER_CLOSE)
         and bool(self._with("old_devices")),
         data=st.data(), call=st.sampled_from(["get_command", "complete_command"]))
    def device_after_close(self, data: st.DataObject, call: str) -> None:
        actor = data.draw(st.sampled_from(self._with("old_devices")), label="actor")
        dev = data.draw(st.sampled_from(self.views[actor].old_devices), label="device")
        args: dict[str, Any] = {"device": dev, "call": call}
        if call == "get_command":
            args["timeout_ms"] = 0
        else:
            args.update(command=999, code=0, bytes=0, position=0)
        self.do(actor, "device_after_close", **args)

    # ================================================================== server rules
    def _scripted(self) -> bool:
        return self.has(Capability.SCRIPTED_SERVER)

    def _srv_up(self) -> bool:
        return self._scripted() and self.srv.state not in ("DNE", "DEAD")

    # One server Open per set, as one T-SQL statement opens it (re-opening a set a server
    # already used is outside the documented protocol, and the scripting API's open starts
    # a new server-side set).
    @odd(lambda self: self._scripted() and self.srv.state in ("DNE", "DEAD")
         and self.views["client"].gen not in self.opened,
         name=st.sampled_from(["{set}", "{set}", "{set}", "{other}"]))
    def server_open(self, name: str) -> None:
        self.do("server", "open", name=name)

    @odd(lambda self: self._srv_up())
    def server_get_configuration(self) -> None:
        self.do("server", "get_configuration")

    @odd(lambda self: self._srv_up(),
         direction=st.sampled_from([VDF_WriteMedia, VDF_WriteMedia, VDF_ReadMedia, 0]),
         block=st.sampled_from([512, 512, 4096, 1000]),
         mts=st.sampled_from([65536, 65536, 131072, 1000]),
         timeout=st.sampled_from([0, 0, 1000]))
    def server_begin_configuration(self, direction: int, block: int, mts: int,
                                   timeout: int) -> None:
        features = direction
        self.do("server", "begin_configuration", features=features, block_size=block,
                alignment=0, max_transfer_size=mts, timeout_ms=timeout)

    @odd(lambda self: self._srv_up(),
         size=st.sampled_from([65536, 4096, 0]),
         count=st.sampled_from([1, 4, 0]))
    def server_request_buffers(self, size: int, count: int) -> None:
        self.do("server", "request_buffers", size=size, alignment=0, count=count)

    @odd(lambda self: self._srv_up())
    def server_end_configuration(self) -> None:
        self.do("server", "end_configuration")

    @odd(lambda self: self._srv_up())
    def server_open_device(self) -> None:
        self.do("server", "open_device")

    @odd(lambda self: self._srv_up() and not self.srv.agent)
    def server_start_agent(self) -> None:
        self.do("server", "start_agent")

    # §3: ExecuteCompletionAgent "must be running before any command is sent" -- a duty of
    # the server (here: the harness), so commands are sent only once the agent runs.
    @odd(lambda self: self._srv_up() and bool(self.srv.devices) and self.srv.agent,
         data=st.data(),
         code=st.sampled_from([VDC_Write, VDC_Write, VDC_Read, VDC_Read,
                               VDC_ClearError, 12, 12, *ALL_CODES, 99]),
         size=st.sampled_from([4096, 4096, 65536, 512, 0, 1 << 20]))
    def server_send_command(self, data: st.DataObject, code: int, size: int) -> None:
        dev = data.draw(st.sampled_from(sorted(self.srv.devices)), label="device")
        if code == VDC_ClearError and self.srv.devices[dev] not in self.srv.ioerror:
            # ClearError to a device that is not in IO-ERROR: undocumented (§6.6 only has the
            # server send it after an error), and the model and vdisim disagree on what it
            # does to commands queued behind it -- left out until the spec says.
            code = 12
        if dev in self.srv.closed or self.srv.devices[dev] in self.srv.ioerror:
            # Which error wins when a closed / IO-ERROR device gets an invalid command is not
            # documented (§3 SendCommand lists no VD_E_INVALID at all): send valid ones there.
            size = 4096 if code in (VDC_Read, VDC_Write) else 0
            code = code if code in ALL_CODES else 12
        buffer = None
        if code in (VDC_Read, VDC_Write):
            got = self.do("server", "allocate_buffer", size=max(size, 512), alignment=0,
                          fill="a5")
            buffer = got.out.get("buffer")
        else:
            size = 0
        self.do("server", "send_command", device=dev, code=code, size=size, position=0,
                buffer=buffer)

    @odd(lambda self: self._srv_up() and bool(self.srv.commands), data=st.data())
    def server_wait_completion(self, data: st.DataObject) -> None:
        cmd = data.draw(st.sampled_from(sorted(self.srv.commands)), label="command")
        known = (cmd in self.srv.done or cmd in self.srv.client_done
                 or self.srv.state == "ABORT")
        timeout = 1000 if known else data.draw(st.sampled_from([0, 0, 20]), label="timeout")
        self.do("server", "wait_completion", command=cmd, timeout_ms=timeout)

    @odd(lambda self: self._srv_up() and bool(self.srv.devices), data=st.data())
    def server_close_device(self, data: st.DataObject) -> None:
        dev = data.draw(st.sampled_from(sorted(self.srv.devices)), label="device")
        self.do("server", "close_device", device=dev)

    @odd(lambda self: self._srv_up() and self.has(Capability.OBSERVE_SERVER))
    def server_state(self) -> None:
        self.do("server", "state")

    # ================================================================== endings
    def _endings(self) -> list[tuple[str, str]]:
        out = [("client", "signal_abort"), ("client", "close")]
        if self._secondary_ok() and self.views["secondary"].attached:
            out += [("secondary", "signal_abort"), ("secondary", "close")]
        if self._srv_up():
            out += [("server", "signal_abort"), ("server", "close")]
            if (self.has(Capability.KILL_SERVER) and self.kills == 0
                    and self.srv.state == "ACTIVE" and self.srv.done):
                out.append(("server", "die"))  # the engine dies mid-protocol (§8.1)
        return out

    @rule(data=st.data())
    def ending(self, data: st.DataObject) -> None:
        """Abort or Close from either side, or the engine's death (one rule, so endings do
        not crowd out the rest of the conversation)."""
        actor, call = data.draw(st.sampled_from(self._endings()), label="ending")
        if actor == "server":
            self._sync_completions()
        self.do(actor, call)

    def _sync_completions(self) -> None:
        """Before the server aborts or closes: let it see the completions the client already
        made (a wait of SYNC length), so the model and the implementation agree on which
        completions arrived.  The race itself (a completion in flight while the server aborts)
        is not judged: the model does not yet allow both outcomes (reported)."""
        s = self.srv
        for sym in sorted(s.client_done - s.done):
            if sym in s.commands:
                self.do("server", "wait_completion", command=sym, timeout_ms=1000)

    # ================================================================== progress
    def _sensible(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The next steps of a well-behaved conversation from here (§1.6, §1.7)."""
        c, sec, s = self.views["client"], self.views["secondary"], self.srv
        out: list[tuple[str, str, dict[str, Any]]] = []
        scripted = self._scripted()
        if not c.attached:
            n = 2 if self.has(Capability.MULTI_DEVICE) else 1
            out.append(("client", "create", {"name": "{set}", "config": {"device_count": n}}))
            return out
        if scripted and s.state not in ("DNE", "DEAD") and s.gen != c.gen:
            return [("server", "close", {})]  # the server holds an earlier set
        if (scripted and s.state in ("DNE", "DEAD") and not c.aborted
                and c.gen not in self.opened):
            out.append(("server", "open", {"name": "{set}"}))
        if scripted and s.state == "CONNECTED":
            out.append(("server", "get_configuration", {}))
            out.append(("server", "begin_configuration", {
                "features": VDF_WriteMedia, "block_size": 512, "alignment": 0,
                "max_transfer_size": 65536, "timeout_ms": 0}))
        if scripted and s.state == "CONFIGURABLE":
            out.append(("server", "request_buffers", {"size": 65536, "alignment": 0,
                                                      "count": 4}))
            out.append(("server", "end_configuration", {}))
        live = s.state in ("INITIALIZING", "ACTIVE")
        if live and not c.configured:
            out.append(("client", "get_configuration", {"timeout_ms": 2000}))
        if live and len(s.devices) < s.device_count:
            out.append(("server", "open_device", {}))
        if live and s.devices and not s.agent:
            out.append(("server", "start_agent", {}))
        opened = {i for v in (c, sec) for i in v.devices.values()}
        free = [i for i in range(s.device_count) if i not in opened]
        if live and c.configured and free:
            name = _names(s.device_count)[free[0]]
            out.append(("client", "open_device", {"name": name}))
            if self._secondary_ok():
                if not sec.attached:
                    out.append(("secondary", "open_in_secondary", {"name": "{set}"}))
                else:
                    out.append(("secondary", "open_device", {"name": name}))
        if s.state == "ACTIVE" and s.agent:
            for sym, idx in sorted(s.devices.items()):
                if sym in s.closed:
                    continue
                if idx in s.ioerror:
                    if not s.queued(idx):
                        out.append(("server", "+clear", {"device": sym}))
                elif s.queued(idx) < 2:
                    out.append(("server", "+command", {"device": sym}))
                pending = [k for k, (i, _c) in s.commands.items() if i == idx and k not in s.done
                           and k not in s.client_done]
                if not pending and not s.queued(idx):
                    out.append(("server", "close_device", {"device": sym}))
            waiting = [k for k in s.commands if k not in s.done and k in s.client_done]
            if waiting:
                out.append(("server", "wait_completion", {"command": waiting[0],
                                                          "timeout_ms": 1000}))
        for actor, v in (("client", c), ("secondary", sec)):
            if actor == "secondary" and not self._secondary_ok():
                continue
            for dev, idx in sorted(v.devices.items()):
                if dev not in v.closed and (s.deliverable(idx, self._outstanding_on(idx)) or any(
                        sd in s.closed and i == idx for sd, i in s.devices.items())):
                    out.append((actor, "get_command", {"device": dev, "timeout_ms": 1000}))
            for cmd, (dev, _code, size) in sorted(v.outstanding.items()):
                out.append((actor, "complete_command", {"device": dev, "command": cmd,
                                                        "code": 0, "bytes": size,
                                                        "position": 0}))
            if v.finished and v.devices:  # the classic slip: completing a command twice
                dev = min(v.devices)
                out.append((actor, "complete_command", {"device": dev, "command": v.finished[-1],
                                                        "code": 0, "bytes": 0, "position": 0}))
        if c.devices and all(d in c.closed for d in c.devices):
            out.append(("client", "close", {}))
        if s.state == "NT":
            out.append(("server", "close", {}))
        return out

    def _progress(self, data: st.DataObject) -> None:
        options = self._sensible()
        if not options:
            return
        actor, call, args = data.draw(st.sampled_from(options), label="next")
        if call == "+clear":
            self.do("server", "send_command", device=args["device"], code=VDC_ClearError,
                    size=0, position=0, buffer=None)
            return
        if call == "+command":
            code = data.draw(st.sampled_from([VDC_Write, VDC_Write, VDC_Write, 12]),
                             label="code")
            if code == VDC_Write:
                got = self.do("server", "allocate_buffer", size=4096, alignment=0, fill="5a")
                self.do("server", "send_command", device=args["device"], code=code,
                        size=4096, position=0, buffer=got.out.get("buffer"))
            else:
                self.do("server", "send_command", device=args["device"], code=code, size=0,
                        position=0, buffer=None)
            return
        if call == "complete_command" and data.draw(st.integers(0, 7), label="fail") == 0:
            args = {**args, "code": data.draw(st.sampled_from(ABNORMAL_WIN32), label="code")}
        self.do(actor, call, **args)

    @rule(data=st.data())
    def progress(self, data: st.DataObject) -> None:
        """One step forward in a well-behaved conversation."""
        self._progress(data)

    @rule(data=st.data())
    def progress_more(self, data: st.DataObject) -> None:
        self._progress(data)

    @rule(data=st.data())
    def progress_again(self, data: st.DataObject) -> None:
        self._progress(data)

    @rule(data=st.data())
    def progress_further(self, data: st.DataObject) -> None:
        self._progress(data)

    def _odd(self, data: st.DataObject) -> None:
        names = [(n, strats) for n, pre, strats in _ODD if pre is None or pre(self)]
        name, strats = data.draw(st.sampled_from(names), label="odd step")
        kwargs = {k: (data if k == "data" else data.draw(v, label=k))
                  for k, v in strats.items()}
        getattr(self, name)(**kwargs)

    @rule(data=st.data())
    def odd_step(self, data: st.DataObject) -> None:
        """A step off the well-behaved path."""
        self._odd(data)

    @rule(data=st.data())
    def another_odd_step(self, data: st.DataObject) -> None:
        self._odd(data)

    @odd(lambda self: self._secondary_ok() and self.views["secondary"].attached
         and bool(self.views["secondary"].commands))
    def secondary_dies(self) -> None:
        """A secondary process dies (§1.9): VDI does not notice; the primary carries on."""
        self.do("harness", "kill_secondary")
        self.secondary_gone = True

    # ================================================================== invariants / teardown
    @invariant()
    def executor_usable(self) -> None:
        if self.ex.wedged is not None:
            self._fail(HANG_RULE, f"{self.ex.wedged} never returned")

    def teardown(self) -> None:
        try:
            if self.ex.wedged is None:
                problems = self.ex.cleanup()
                if problems:
                    self._fail(HANG_RULE, "; ".join(problems))
                step = Step("harness", "leak_check", {})
                obs = self.ex.perform(step)
                note(str(obs))
                judgement = self.judge.observe(obs)
                self._count_held(judgement)
                for v in _violations(judgement):
                    self._fail(v.rule_id, v.message)
                if obs.out.get("leaks"):
                    self._fail(LEAK_RULE, f"left behind: {obs.out['leaks']}")
        finally:
            with contextlib.suppress(Exception):
                self.ex.close()


# ---------------------------------------------------------------------------------------------
# Running a recorded sequence (directed sequences, replay files)


def run_steps(backend: Backend, steps: Iterable[Step], judge: JudgeLike,
              *, stop_at_violation: bool = False) -> tuple[list[Obs], list[tuple[int, Violation]],
                                                            list[str]]:
    """Perform ``steps`` on a fresh executor, judging each; then clean up and check leaks.
    Returns (observations, [(step index, violation)], held rule IDs)."""
    ex = Executor(backend)
    violations: list[tuple[int, Violation]] = []
    held: list[str] = []
    try:
        for i, step in enumerate(steps):
            obs = ex.perform(step)
            if obs.out.get("hang"):
                violations.append((i, Violation(HANG_RULE, f"{step} never returned", i)))
                break
            j = judge.observe(obs)
            held.extend(getattr(j, "held", None) or [])
            for v in _violations(j):
                violations.append((i, v))
            if violations and stop_at_violation:
                break
    finally:
        if ex.wedged is None:
            problems = ex.cleanup()
            if problems:
                violations.append((len(ex.trace), Violation(HANG_RULE, "; ".join(problems))))
            else:
                obs = ex.perform(Step("harness", "leak_check", {}))
                j = judge.observe(obs)
                held.extend(getattr(j, "held", None) or [])
                for v in _violations(j):
                    violations.append((len(ex.trace) - 1, v))
                if obs.out.get("leaks"):
                    violations.append((len(ex.trace) - 1, Violation(
                        LEAK_RULE, f"left behind: {obs.out['leaks']}")))
        with contextlib.suppress(Exception):
            ex.close()
    return ex.trace, violations, held


def judge_steps(backend: Backend, steps: list[Step],
                judge_factory: Callable[[], JudgeLike] | None = None) -> list[Violation]:
    """The violations ``steps`` produce on ``backend`` (a fresh judge; by default one whose
    server is opaque when no step is a scripted server's)."""
    if judge_factory is None:
        from conformance.judge import Judge

        opaque = not any(s.actor == "server" for s in steps)
        judge: JudgeLike = Judge(opaque_server=opaque)
    else:
        judge = judge_factory()
    _trace, violations, _held = run_steps(backend, steps, judge)
    return [v for _i, v in violations]


#: How many times ``vdisim replay`` performs a conform witness before it calls the violation
#: not reproduced.  A witness whose steps race with frames in flight (a command the server sent
#: that may or may not have reached the client yet) can come out the other way on a loaded
#: machine; the steps are the same each time, only the timing differs.
REPLAY_ATTEMPTS = 5


def replay(doc: dict[str, Any]) -> int:
    """``vdisim replay FILE`` for kind ``conform``: perform the recorded steps on a fresh
    backend (``payload.backend``, default sim) and judge them, up to ``attempts`` times (the
    document's ``attempts``, default :data:`REPLAY_ATTEMPTS`), each attempt with a fresh
    executor and its own set names on that backend.  0: the case passed every
    attempt; 1: the recorded violation (``rule``; any, if none recorded) reproduced; 3:
    harness error."""
    payload = doc.get("payload") or {}
    rule_id = doc.get("rule")
    try:
        steps = [Step.from_json(s) for s in payload.get("steps") or []]
    except (KeyError, TypeError, ValueError) as exc:
        print(f"vdisim replay: bad steps in payload: {exc}")
        return 3
    name = str(payload.get("backend") or "sim")
    options = dict(payload.get("options") or {})
    try:
        attempts = max(1, int(doc.get("attempts") or REPLAY_ATTEMPTS))
    except (TypeError, ValueError):
        print(f"vdisim replay: attempts must be a whole number, not {doc.get('attempts')!r}")
        return 3
    print(f"replaying {len(steps)} steps on backend {name}"
          + (f" (rule {rule_id})" if rule_id else "") + f", up to {attempts} attempts")
    relevant: list[Violation] = []
    try:
        backend = open_backend(name, **options)
        with backend:
            if any(s.actor == "harness" and s.call == "start_statement" for s in steps):
                backend.server.scratch_database()  # the database the statement backs up
            for attempt in range(1, attempts + 1):
                violations = judge_steps(backend, steps)
                relevant = [v for v in violations if rule_id is None or v.rule_id == rule_id]
                if relevant:
                    for v in violations:
                        print(f"  {v.rule_id}: {v.message}")
                    print(f"FAILED: {relevant[0].rule_id} reproduces (attempt {attempt} of "
                          f"{attempts})")
                    return 1
                for v in violations:
                    print(f"  attempt {attempt}, another rule: {v.rule_id}: {v.message}")
    except (NotCapable, HarnessError, ImportError, ValueError, TypeError) as exc:
        print(f"vdisim replay: harness error: {exc}")
        return 3
    print(f"passed: the recorded violation does not reproduce ({attempts} attempts)")
    return 0
