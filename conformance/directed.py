"""Directed step sequences, as data: for every rule reachable through steps, a conversation
that makes the judge judge that rule (held when the implementation is right).

The sequences use the executor's vocabulary (``conformance.trace`` / ``conformance.executor``):
``{set}`` is the executor's unique set name (``{set}1`` its second device, ``{other}`` a name
no set has); a client ``device`` / ``command`` is the n-th device / command that actor got, a
server ``device`` / ``buffer`` / ``command`` the n-th one the server opened / allocated / sent
(0-based over the whole sequence).  Each sequence ends by closing what it opened, so it leaves
nothing behind.

* ``DIRECTED``: rule ID -> steps (``covers(rule_id)`` is the same lookup).
* ``REQUIRES``: rule ID -> capabilities a backend needs to run the rule's sequence; a runner
  marks the rule *not checkable* on a backend without them.
* ``NO_SEQUENCE``: rules no step sequence can reach, with the reason (they are judged from
  statement-driven runs or recorded traces; their negative examples still run in CI).
"""

from __future__ import annotations

from collections.abc import Callable

from conformance.backend import Capability
from conformance.model import VDF_COMPLETE_ENABLED, VDF_REQUEST_COMPLETE, VDF_WRITE_MEDIA
from conformance.trace import Step

__all__ = ["DIRECTED", "NO_SEQUENCE", "REQUIRES", "Seq", "covers", "sequences"]

WRITE, READ, CLEAR, FLUSH, COMPLETE = 2, 1, 3, 12, 19
BLOCK, MTS = 512, 65536
WAIT = 5000  # a wait long enough to see everything already sent (>= model.SYNC_MS)
DISK_FULL = 112

Cap = Capability


class Seq:
    """Builds one sequence and keeps the symbolic counters the executor keeps."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.cdev: dict[str, int] = {"client": 0, "secondary": 0}
        self.ccmd: dict[str, int] = {"client": 0, "secondary": 0}
        self.sdev = 0
        self.sbuf = 0
        self.scmd = 0
        self.handles = 0
        self.srv_dev: dict[int, int] = {}  # set index -> server device symbol (current server)
        self.used_secondary = False
        self.secondary_dead = False
        self.used_server = False
        self.caps: set[Capability] = set()

    # -- raw steps ------------------------------------------------------------------------
    def c(self, call: str, actor: str = "client", /, **args: object) -> Seq:
        if actor == "secondary":
            self.used_secondary = True
            self.caps.add(Cap.SECONDARY_PROCESS)
        if call in ("get_buffer_handle", "map_buffer_handle"):
            self.caps.add(Cap.BUFFER_HANDLES)
        if call == "device_after_close":
            self.caps.add(Cap.SAFE_AFTER_CLOSE)
        self.steps.append(Step(actor, call, dict(args)))
        return self

    def s(self, call: str, /, **args: object) -> Seq:
        self.used_server = True
        self.caps.add(Cap.SCRIPTED_SERVER)
        if call == "state":
            self.caps.add(Cap.OBSERVE_SERVER)
        self.steps.append(Step("server", call, dict(args)))
        return self

    def h(self, call: str, /, **args: object) -> Seq:
        self.caps.add({"kill_server": Cap.KILL_SERVER, "kill_client": Cap.KILL_CLIENT,
                       "kill_secondary": Cap.SECONDARY_PROCESS}.get(call, Cap.SCRIPTED_SERVER))
        if call == "kill_secondary":
            self.secondary_dead = True
        if call == "kill_server":
            self.used_server = False  # nothing left to close on that side
        self.steps.append(Step("harness", call, dict(args)))
        return self

    # -- building blocks ------------------------------------------------------------------
    @staticmethod
    def dev_name(i: int) -> str:
        return "{set}" if i == 0 else f"{{set}}{i}"

    def create(self, n: int = 1, features: int = 0, actor: str = "client",
               **cfg: int) -> Seq:
        if n > 1:
            self.caps.add(Cap.MULTI_DEVICE)
        if features & VDF_REQUEST_COMPLETE:
            self.caps.add(Cap.COMPLETE)
        return self.c("create", actor, name="{set}",
                      config={"device_count": n, "features": features, **cfg})

    def srv_config(self, features: int = VDF_WRITE_MEDIA) -> Seq:
        self.s("open", name="{set}")
        self.srv_dev = {}
        self.s("begin_configuration", features=features, block_size=BLOCK, alignment=0,
               max_transfer_size=MTS, timeout_ms=0)
        self.s("request_buffers", size=MTS, alignment=0, count=4)
        return self.s("end_configuration")

    def srv_devices(self, n: int) -> Seq:
        for i in range(n):
            self.s("open_device")
            self.srv_dev[i] = self.sdev
            self.sdev += 1
        return self.s("start_agent")

    def initializing(self, n: int = 1, features: int = 0, srv_features: int = VDF_WRITE_MEDIA,
                     **cfg: int) -> Seq:
        self.create(n, features, "client", **cfg)
        self.srv_config(srv_features)
        self.c("get_configuration", timeout_ms=WAIT)
        return self.srv_devices(n)

    def open(self, i: int, actor: str = "client") -> int:
        self.c("open_device", actor, name=self.dev_name(i))
        sym = self.cdev[actor]
        self.cdev[actor] += 1
        return sym

    def active(self, n: int = 1, opened: int = 1, **kw: int) -> list[int]:
        self.initializing(n, **kw)
        return [self.open(i) for i in range(opened)]

    def send(self, i: int, code: int = WRITE, size: int = 4096) -> int:
        """Server SendCommand to the set's device ``i``; the server command symbol."""
        if code in (READ, WRITE):
            self.s("allocate_buffer", size=size, alignment=0)
            buf = self.sbuf
            self.sbuf += 1
            self.s("send_command", device=self.srv_dev[i], code=code, size=size, position=0,
                   buffer=buf)
        else:
            self.s("send_command", device=self.srv_dev[i], code=code, size=0, position=0)
        sym = self.scmd
        self.scmd += 1
        return sym

    def get(self, dev: int, actor: str = "client", timeout: int = WAIT) -> int:
        """A GetCommand that returns a command; the client command symbol."""
        self.c("get_command", actor, device=dev, timeout_ms=timeout)
        sym = self.ccmd[actor]
        self.ccmd[actor] += 1
        return sym

    def command(self, i: int, dev: int, actor: str = "client", code: int = WRITE,
                size: int = 4096) -> tuple[int, int]:
        """(server command, client command) of a command sent to device ``i`` and fetched."""
        sc = self.send(i, code, size)
        return sc, self.get(dev, actor)

    def complete(self, dev: int, cmd: int, code: int = 0, nbytes: int = 4096,
                 position: int = 0, actor: str = "client") -> Seq:
        return self.c("complete_command", actor, device=dev, command=cmd, code=code,
                      bytes=nbytes, position=position)

    def handle(self, cmd: int, actor: str = "client") -> int:
        self.c("get_buffer_handle", actor, command=cmd)
        sym = self.handles
        self.handles += 1
        return sym

    def normally_terminated(self, keep: bool = True) -> tuple[int, int]:
        (dev,) = self.active(1)
        _sc, cmd = self.command(0, dev)
        if not keep:
            self.complete(dev, cmd)
        self.s("close_device", device=self.srv_dev[0])
        self.c("get_command", device=dev, timeout_ms=WAIT)
        return dev, cmd

    def aborted(self) -> tuple[int, int, int]:
        (dev,) = self.active(1)
        sc, cmd = self.command(0, dev)
        self.c("signal_abort")
        return dev, cmd, sc

    def stale(self) -> tuple[int, int]:
        """A device and a command of an earlier Create/Close of the same object."""
        dev, cmd = self.normally_terminated()
        self.c("close")
        self.s("close")
        self.caps.add(Cap.SAFE_AFTER_CLOSE)
        return dev, cmd

    def secondary(self) -> Seq:
        return self.c("open_in_secondary", "secondary", name="{set}")

    def finish(self) -> list[Step]:
        if self.used_secondary and not self.secondary_dead:
            self.c("close", "secondary")
        self.c("close")
        if self.used_server:
            self.s("close")
        return self.steps


# ---------------------------------------------------------------------------------------------
# The sequences, by rule.

Builder = Callable[[Seq], object]
_BUILDERS: dict[str, Builder] = {}


def _seq(*rule_ids: str) -> Callable[[Builder], Builder]:
    def reg(fn: Builder) -> Builder:
        for r in rule_ids:
            assert r not in _BUILDERS, r
            _BUILDERS[r] = fn
        return fn
    return reg


# -- DNE -----------------------------------------------------------------------------------------
_seq("CT-DNE-CREATE")(lambda q: q.create(1))
_seq("CT-DNE-CREATE-BAD_CONFIG")(lambda q: q.create(0))
_seq("CT-DNE-CREATE-BAD_NAME")(lambda q: q.c("create", name="a\\b", config={"device_count": 1}))
_seq("CT-DNE-CREATE-BAD_INSTANCE")(lambda q: q.c("create", name="{set}", instance="HOST\\INST",
                                                 config={"device_count": 1}))
_seq("CT-DNE-CREATE-NAME_IN_USE")(lambda q: (q.create(1, actor="secondary"), q.create(1)))
_seq("CT-DNE-GET_CONFIGURATION")(lambda q: q.c("get_configuration", timeout_ms=0))
_seq("CT-DNE-OPEN_DEVICE")(lambda q: q.c("open_device", name="{set}"))
_seq("CT-DNE-SIGNAL_ABORT")(lambda q: q.c("signal_abort"))
_seq("CT-DNE-CLOSE")(lambda q: q.c("close"))
_seq("CT-DNE-GET_BUFFER_HANDLE")(lambda q: q.c("get_buffer_handle", command=-1))
_seq("CT-DNE-MAP_BUFFER_HANDLE")(lambda q: q.c("map_buffer_handle", handle=-1))


@_seq("CT-DNE-GET_COMMAND", "CT-DNE-COMPLETE_COMMAND")
def _dne_stale(q: Seq) -> None:
    dev, cmd = q.stale()
    q.c("get_command", device=dev, timeout_ms=0)
    q.complete(dev, cmd)


@_seq("CT-DNE-OPEN_IN_SECONDARY")
def _dne_ois(q: Seq) -> None:
    q.initializing(2)
    q.secondary()
    q.c("get_configuration", "secondary", timeout_ms=0)


@_seq("CT-DNE-OPEN_IN_SECONDARY-ABORTED")
def _dne_ois_aborted(q: Seq) -> None:
    q.initializing(1)
    q.c("signal_abort")
    q.secondary()


@_seq("CT-DNE-OPEN_IN_SECONDARY-NOT_READY")
def _dne_ois_not_ready(q: Seq) -> None:
    q.create(2)
    q.srv_config()
    q.secondary()
    q.c("open_in_secondary", "secondary", name="{other}")


# -- Configurable ------------------------------------------------------------------------------
_seq("CT-CONFIGURABLE-CREATE")(lambda q: (q.create(1), q.create(1)))
_seq("CT-CONFIGURABLE-OPEN_DEVICE")(lambda q: (q.create(1), q.c("open_device", name="{set}")))
_seq("CT-CONFIGURABLE-SIGNAL_ABORT")(lambda q: (q.create(1), q.c("signal_abort")))
_seq("CT-CONFIGURABLE-CLOSE")(lambda q: (q.create(1), q.c("get_configuration", timeout_ms=0),
                                         q.c("close"), q.s("open", name="{set}")))
_seq("CT-CONFIGURABLE-OPEN_IN_SECONDARY")(lambda q: (q.create(1),
                                                     q.c("open_in_secondary", name="{set}")))
_seq("CT-CONFIGURABLE-MAP_BUFFER_HANDLE")(lambda q: (q.create(1),
                                                     q.c("map_buffer_handle", handle=-1)))
_seq("CT-CONFIGURABLE-GET_CONFIGURATION-TIMEOUT")(
    lambda q: (q.create(1), q.c("get_configuration", timeout_ms=0),
               q.c("get_configuration", timeout_ms=200)))
_seq("CT-CONFIGURABLE-GET_CONFIGURATION", "CONFIG-SERVER-CHOICES", "CONFIG-MAXIODEPTH-4")(
    lambda q: (q.create(1, features=1), q.srv_config(VDF_WRITE_MEDIA | 1),
               q.c("get_configuration", timeout_ms=WAIT)))


@_seq("CT-CONFIGURABLE-GET_CONFIGURATION-ABORTED")
def _conf_getconf_abort(q: Seq) -> None:
    q.create(1)
    q.s("open", name="{set}")
    q.s("signal_abort")
    q.c("get_configuration", timeout_ms=WAIT)


@_seq("CT-CONFIGURABLE-GET_COMMAND", "CT-CONFIGURABLE-COMPLETE_COMMAND",
      "CT-CONFIGURABLE-GET_BUFFER_HANDLE")
def _conf_stale(q: Seq) -> None:
    dev, cmd = q.stale()
    q.create(1)
    q.c("get_command", device=dev, timeout_ms=0)
    q.complete(dev, cmd)
    q.c("get_buffer_handle", command=cmd)


# -- Initializing ------------------------------------------------------------------------------
_seq("CT-INITIALIZING-CREATE")(lambda q: (q.initializing(1), q.create(1)))
_seq("CT-INITIALIZING-GET_CONFIGURATION")(lambda q: (q.initializing(1),
                                                     q.c("get_configuration", timeout_ms=0)))
_seq("CT-INITIALIZING-OPEN_DEVICE")(lambda q: (q.initializing(2), q.open(0)))
_seq("CT-INITIALIZING-OPEN_DEVICE-BAD_NAME", "OPEN_DEVICE-NULL-ON-FAILURE")(
    lambda q: (q.initializing(2), q.c("open_device", name="nope")))
_seq("CT-INITIALIZING-SIGNAL_ABORT")(lambda q: (q.initializing(1), q.c("signal_abort")))
_seq("CT-INITIALIZING-CLOSE")(lambda q: (q.initializing(1), q.c("close")))
_seq("CT-INITIALIZING-OPEN_IN_SECONDARY")(lambda q: (q.initializing(1),
                                                     q.c("open_in_secondary", name="{set}")))
_seq("CT-INITIALIZING-GET_BUFFER_HANDLE")(lambda q: (q.initializing(1),
                                                     q.c("get_buffer_handle", command=-1)))
_seq("CT-INITIALIZING-MAP_BUFFER_HANDLE-INVALID_ARG")(
    lambda q: (q.initializing(1), q.c("map_buffer_handle", handle=-1)))


@_seq("CT-INITIALIZING-OPEN_DEVICE-ALREADY_OPEN")
def _init_already(q: Seq) -> None:
    q.initializing(2)
    q.secondary()
    q.open(1, "secondary")
    q.c("open_device", name=q.dev_name(1))


@_seq("CT-INITIALIZING-OPEN_DEVICE-ALL_OPEN")
def _init_all_open(q: Seq) -> None:
    q.initializing(1)
    q.secondary()
    q.open(0, "secondary")
    q.c("open_device", name=q.dev_name(0))


@_seq("CT-INITIALIZING-GET_COMMAND", "CT-INITIALIZING-COMPLETE_COMMAND")
def _init_stale(q: Seq) -> None:
    dev, cmd = q.stale()
    q.initializing(1)
    q.c("get_command", device=dev, timeout_ms=0)
    q.complete(dev, cmd)


@_seq("CT-INITIALIZING-MAP_BUFFER_HANDLE")
def _init_map(q: Seq) -> None:
    q.initializing(2)
    q.secondary()
    sdev = q.open(1, "secondary")
    _sc, cmd = q.command(1, sdev, "secondary")
    h = q.handle(cmd, "secondary")
    q.c("map_buffer_handle", handle=h)
    q.complete(sdev, cmd, actor="secondary")


# -- Active ------------------------------------------------------------------------------------
_seq("CT-ACTIVE-CREATE")(lambda q: (q.active(1), q.create(1)))
_seq("CT-ACTIVE-GET_CONFIGURATION")(lambda q: (q.active(1),
                                               q.c("get_configuration", timeout_ms=0)))
_seq("CT-ACTIVE-OPEN_DEVICE")(lambda q: (q.active(2, 1), q.open(1)))
_seq("CT-ACTIVE-OPEN_DEVICE-ALREADY_OPEN")(lambda q: (q.active(2, 1),
                                                      q.c("open_device", name="{set}")))
_seq("CT-ACTIVE-OPEN_DEVICE-ALL_OPEN")(lambda q: (q.active(1),
                                                  q.c("open_device", name="{set}")))
_seq("CT-ACTIVE-OPEN_DEVICE-BAD_NAME")(lambda q: (q.active(2, 1),
                                                  q.c("open_device", name="{other}")))
_seq("CT-ACTIVE-GET_COMMAND-TIMEOUT")(lambda q: (q.active(1),
                                                 q.c("get_command", device=0, timeout_ms=0)))
_seq("CT-ACTIVE-SIGNAL_ABORT")(lambda q: (q.active(1), q.c("signal_abort")))
_seq("CT-ACTIVE-CLOSE-DEVICES_OPEN")(lambda q: (q.active(1), q.c("close")))
_seq("CT-ACTIVE-OPEN_IN_SECONDARY")(lambda q: (q.active(1),
                                               q.c("open_in_secondary", name="{set}")))
_seq("CT-ACTIVE-GET_BUFFER_HANDLE-INVALID_ARG")(lambda q: (q.active(1), q.c(
    "get_buffer_handle", command=-1)))
_seq("CT-ACTIVE-MAP_BUFFER_HANDLE-INVALID_ARG")(lambda q: (q.active(1), q.c(
    "map_buffer_handle", handle=-1)))


@_seq("CT-ACTIVE-GET_COMMAND", "CT-ACTIVE-COMPLETE_COMMAND", "GET_COMMAND-RETURNS-SENT-COMMAND",
      "COMPLETE_COMMAND-REACHES-SERVER", "COMPLETE-COMMAND-AT-MOST-ONCE",
      "CT-ACTIVE-GET_BUFFER_HANDLE", "CT-ACTIVE-MAP_BUFFER_HANDLE", "TIMEOUT-CALL-RETURNS")
def _active_round_trip(q: Seq) -> None:
    (dev,) = q.active(1)
    q.s("allocate_buffer", size=8192, alignment=0)
    q.s("send_command", device=q.srv_dev[0], code=WRITE, size=8192, position=4096, buffer=0)
    cmd = q.get(dev)
    h = q.handle(cmd)
    q.c("map_buffer_handle", handle=h)
    q.complete(dev, cmd, 0, 8000, 77)
    q.s("wait_completion", command=0, timeout_ms=WAIT)
    q.s("wait_completion", command=0, timeout_ms=0)


@_seq("CT-ACTIVE-GET_COMMAND-DEVICE_CLOSED", "GET_COMMAND-AFTER-VD_E_CLOSE",
      "ST-ACTIVE-CLOSE_DEVICE")
def _active_dev_closed(q: Seq) -> None:
    d0, _d1 = q.active(2, 2)
    q.s("close_device", device=q.srv_dev[0])
    q.c("get_command", device=d0, timeout_ms=WAIT)
    q.c("get_command", device=d0, timeout_ms=0)


@_seq("CT-ACTIVE-GET_COMMAND-LAST_DEVICE_CLOSED", "CT-NT-CLOSE", "CLOSE-WAIT-FOR-VD_E_CLOSE",
      "ST-NT-CLOSE", "CLOSE-RELEASES-RESOURCES")
def _active_last_closed(q: Seq) -> None:
    (dev,) = q.active(1)
    _sc, cmd = q.command(0, dev)
    q.complete(dev, cmd)
    q.s("close_device", device=q.srv_dev[0])
    q.c("get_command", device=dev, timeout_ms=WAIT)
    q.c("close")
    q.s("close")
    q.h("leak_check")


@_seq("CT-ACTIVE-GET_COMMAND-ABORTED", "ABORT-SERVER-SIGNAL-995", "ST-ACTIVE-SIGNAL_ABORT")
def _active_server_abort(q: Seq) -> None:
    (dev,) = q.active(1)
    sc, _cmd = q.command(0, dev)
    q.s("signal_abort")
    q.c("get_command", device=dev, timeout_ms=WAIT)
    q.s("wait_completion", command=sc, timeout_ms=WAIT)


@_seq("CT-ACTIVE-COMPLETE_COMMAND-NOT_OUTSTANDING")
def _active_twice(q: Seq) -> None:
    d0, d1 = q.active(2, 2)
    _s0, c0 = q.command(0, d0)
    _s1, c1 = q.command(1, d1)
    q.complete(d1, c0)
    q.complete(d0, -1)
    q.complete(d0, c0)
    q.complete(d0, c0)
    q.complete(d1, c1)


@_seq("CT-ACTIVE-COMPLETE_COMMAND-DEVICE_CLOSED")
def _active_complete_closed(q: Seq) -> None:
    d0, _d1 = q.active(2, 2)
    _sc, cmd = q.command(0, d0)
    q.s("close_device", device=q.srv_dev[0])
    q.c("get_command", device=d0, timeout_ms=WAIT)
    q.complete(d0, cmd)


@_seq("CT-ACTIVE-CLOSE")
def _active_close_ok(q: Seq) -> None:
    (d0,) = q.active(2, 1)
    q.secondary()
    q.open(1, "secondary")
    q.h("kill_secondary")
    q.s("close_device", device=q.srv_dev[0])
    q.c("get_command", device=d0, timeout_ms=WAIT)
    q.c("close")
    q.s("close")


# -- Normally Terminated -----------------------------------------------------------------------
def _nt(call: str, **args: object) -> Builder:
    def b(q: Seq) -> None:
        q.normally_terminated()
        q.c(call, **args)
    return b


_seq("CT-NT-CREATE")(_nt("create", name="{set}", config={"device_count": 1}))
_seq("CT-NT-GET_CONFIGURATION")(_nt("get_configuration", timeout_ms=0))
_seq("CT-NT-OPEN_DEVICE")(_nt("open_device", name="{set}"))
_seq("CT-NT-GET_COMMAND")(_nt("get_command", device=0, timeout_ms=0))
_seq("CT-NT-COMPLETE_COMMAND")(_nt("complete_command", device=0, command=0, code=0, bytes=4096,
                                   position=0))
_seq("CT-NT-SIGNAL_ABORT")(_nt("signal_abort"))
_seq("CT-NT-OPEN_IN_SECONDARY")(_nt("open_in_secondary", name="{set}"))
_seq("CT-NT-GET_BUFFER_HANDLE-INVALID_ARG")(_nt("get_buffer_handle", command=-1))
_seq("CT-NT-MAP_BUFFER_HANDLE-INVALID_ARG")(_nt("map_buffer_handle", handle=-1))


@_seq("CT-NT-GET_BUFFER_HANDLE", "CT-NT-MAP_BUFFER_HANDLE")
def _nt_handles(q: Seq) -> None:
    _dev, cmd = q.normally_terminated()
    h = q.handle(cmd)
    q.c("map_buffer_handle", handle=h)


# -- Abort -------------------------------------------------------------------------------------
def _ab(call: str, **args: object) -> Builder:
    def b(q: Seq) -> None:
        q.aborted()
        q.c(call, **args)
    return b


_seq("CT-ABORT-CREATE")(_ab("create", name="{set}", config={"device_count": 1}))
_seq("CT-ABORT-GET_CONFIGURATION")(_ab("get_configuration", timeout_ms=0))
_seq("CT-ABORT-OPEN_DEVICE")(_ab("open_device", name="{set}"))


@_seq("CT-ABORT-GET_COMMAND")
def _abort_get_command(q: Seq) -> None:
    """A command still queued at the abort is never delivered (§8.2)."""
    d0, d1 = q.active(2, 2)
    q.command(0, d0)
    q.send(0)  # stays queued in the library ...
    q.command(1, d1)  # ... which has it once this later command reached device 1
    q.c("signal_abort")
    q.c("get_command", device=d0, timeout_ms=0)


_seq("CT-ABORT-SIGNAL_ABORT")(_ab("signal_abort"))
_seq("CT-ABORT-OPEN_IN_SECONDARY")(_ab("open_in_secondary", name="{set}"))
_seq("CT-ABORT-GET_BUFFER_HANDLE-INVALID_ARG")(_ab("get_buffer_handle", command=-1))
_seq("CT-ABORT-MAP_BUFFER_HANDLE-INVALID_ARG")(_ab("map_buffer_handle", handle=-1))
_seq("CT-ABORT-CLOSE")(lambda q: (q.initializing(1), q.c("signal_abort"), q.c("close")))


@_seq("CT-ABORT-COMPLETE_COMMAND", "ABORT-COMPLETION-IGNORED")
def _abort_complete(q: Seq) -> None:
    dev, cmd, sc = q.aborted()
    q.complete(dev, cmd)
    q.s("wait_completion", command=sc, timeout_ms=WAIT)


@_seq("CT-ABORT-GET_BUFFER_HANDLE", "CT-ABORT-MAP_BUFFER_HANDLE")
def _abort_handles(q: Seq) -> None:
    _dev, cmd, _sc = q.aborted()
    h = q.handle(cmd)
    q.c("map_buffer_handle", handle=h)


# -- server transitions ------------------------------------------------------------------------
def _srv_dne(q: Seq) -> None:
    q.create(1)
    q.s("open", name="{set}")
    q.s("close")


def _srv_connected(q: Seq) -> None:
    q.create(1)
    q.s("open", name="{set}")


def _srv_configurable(q: Seq) -> None:
    _srv_connected(q)
    q.s("begin_configuration", features=VDF_WRITE_MEDIA, block_size=BLOCK, alignment=0,
        max_transfer_size=MTS, timeout_ms=0)


def _srv_initializing(q: Seq) -> None:
    _srv_configurable(q)
    q.s("request_buffers", size=MTS, alignment=0, count=4)
    q.s("end_configuration")


def _srv_active(q: Seq, n: int = 2) -> None:
    q.active(n, n)


def _srv_nt(q: Seq) -> None:
    (dev,) = q.active(1)
    q.s("close_device", device=q.srv_dev[0])
    q.c("get_command", device=dev, timeout_ms=WAIT)


def _srv_abort(q: Seq) -> None:
    q.active(1)
    q.s("signal_abort")


_SRV_PREFIX: dict[str, Callable[[Seq], object]] = {
    "DNE": _srv_dne, "CONNECTED": _srv_connected, "CONFIGURABLE": _srv_configurable,
    "INITIALIZING": _srv_initializing, "ACTIVE": _srv_active, "NT": _srv_nt,
    "ABORT": _srv_abort,
}
_SRV_CALL: dict[str, Callable[[Seq], object]] = {
    "GET_CONFIGURATION": lambda q: q.s("get_configuration"),
    "BEGIN_CONFIGURATION": lambda q: q.s("begin_configuration", features=VDF_WRITE_MEDIA,
                                         block_size=BLOCK, alignment=0, max_transfer_size=MTS,
                                         timeout_ms=0),
    "REQUEST_BUFFERS": lambda q: q.s("request_buffers", size=MTS, alignment=0, count=1),
    "END_CONFIGURATION": lambda q: q.s("end_configuration"),
    "OPEN_DEVICE": lambda q: q.s("open_device"),
    "ALLOCATE_BUFFER": lambda q: q.s("allocate_buffer", size=4096, alignment=0),
    "SIGNAL_ABORT": lambda q: q.s("signal_abort"),
    "CLOSE": lambda q: q.s("close"),
    "SEND_COMMAND": lambda q: q.s("send_command", device=q.srv_dev.get(0, 0), code=FLUSH,
                                  size=0, position=0),
    "CLOSE_DEVICE": lambda q: q.s("close_device", device=q.srv_dev.get(0, 0)),
}


def _server_generic(state: str, call: str) -> Builder:
    def b(q: Seq) -> None:
        _SRV_PREFIX[state](q)
        _SRV_CALL[call](q)
    return b


for _state, _call in [
    ("DNE", "GET_CONFIGURATION"), ("DNE", "BEGIN_CONFIGURATION"), ("DNE", "REQUEST_BUFFERS"),
    ("DNE", "END_CONFIGURATION"), ("DNE", "OPEN_DEVICE"), ("DNE", "ALLOCATE_BUFFER"),
    ("DNE", "SIGNAL_ABORT"), ("DNE", "CLOSE"),
    ("CONNECTED", "GET_CONFIGURATION"), ("CONNECTED", "END_CONFIGURATION"),
    ("CONNECTED", "SIGNAL_ABORT"), ("CONNECTED", "CLOSE"),
    ("CONFIGURABLE", "GET_CONFIGURATION"), ("CONFIGURABLE", "BEGIN_CONFIGURATION"),
    ("CONFIGURABLE", "REQUEST_BUFFERS"), ("CONFIGURABLE", "END_CONFIGURATION"),
    ("CONFIGURABLE", "OPEN_DEVICE"), ("CONFIGURABLE", "ALLOCATE_BUFFER"),
    ("CONFIGURABLE", "SIGNAL_ABORT"), ("CONFIGURABLE", "CLOSE"),
    ("INITIALIZING", "GET_CONFIGURATION"), ("INITIALIZING", "BEGIN_CONFIGURATION"),
    ("INITIALIZING", "REQUEST_BUFFERS"), ("INITIALIZING", "END_CONFIGURATION"),
    ("INITIALIZING", "OPEN_DEVICE"), ("INITIALIZING", "ALLOCATE_BUFFER"),
    ("INITIALIZING", "SIGNAL_ABORT"), ("INITIALIZING", "CLOSE"),
    ("ACTIVE", "GET_CONFIGURATION"), ("ACTIVE", "BEGIN_CONFIGURATION"),
    ("ACTIVE", "REQUEST_BUFFERS"),
    ("NT", "GET_CONFIGURATION"), ("NT", "REQUEST_BUFFERS"), ("NT", "SEND_COMMAND"),
    ("NT", "CLOSE_DEVICE"),
    ("ABORT", "GET_CONFIGURATION"), ("ABORT", "BEGIN_CONFIGURATION"),
    ("ABORT", "REQUEST_BUFFERS"), ("ABORT", "CLOSE_DEVICE"), ("ABORT", "SIGNAL_ABORT"),
    ("ABORT", "CLOSE"),
]:
    _seq(f"ST-{_state}-{_call}")(_server_generic(_state, _call))

_seq("ST-DNE-OPEN", "ST-CONNECTED-BEGIN_CONFIGURATION")(_srv_configurable)
_seq("ST-DNE-OPEN-NO_SET")(lambda q: (q.create(1), q.s("open", name="{other}")))


@_seq("ST-CONNECTED-BEGIN_CONFIGURATION-INVALID_ARG")
def _begin_invalid(q: Seq) -> None:
    _srv_connected(q)
    q.s("begin_configuration", features=VDF_WRITE_MEDIA, block_size=1000, alignment=0,
        max_transfer_size=MTS, timeout_ms=0)


_seq("ST-ACTIVE-OPEN_DEVICE")(lambda q: (q.active(2, 1), q.s("open_device")))
_seq("ST-ACTIVE-OPEN_DEVICE-ALL_OPEN")(lambda q: (q.active(1), q.s("open_device")))
_seq("ST-ACTIVE-SEND_COMMAND", "ST-OTHER-CELLS")(lambda q: (q.active(1), q.command(0, 0)))
_seq("ST-ACTIVE-CLOSE-DEVICES_OPEN", "ABORT-SERVER-CLOSE-DEVICES-OPEN")(
    lambda q: (q.active(1), q.s("close"), q.c("get_command", device=0, timeout_ms=WAIT)))


@_seq("ST-ABORT-SEND_COMMAND", "CODES-SEND-FAILURE-CALLBACK")
def _send_in_abort(q: Seq) -> None:
    _srv_abort(q)
    _SRV_CALL["SEND_COMMAND"](q)
    q.s("wait_completion", command=0, timeout_ms=0)


_seq("ST-STATE-OBSERVED", "SERVER-NO-WIRE-VIOLATIONS")(
    lambda q: (q.create(1), q.s("open", name="{set}"), q.s("close"), q.s("state")))


@_seq("ST-ACTIVE-SEND_COMMAND-DEVICE_CLOSED")
def _send_closed(q: Seq) -> None:
    q.active(2, 2)
    q.s("close_device", device=q.srv_dev[0])
    q.s("send_command", device=q.srv_dev[0], code=FLUSH, size=0, position=0)


@_seq("ST-ACTIVE-CLOSE_DEVICE-DEVICE_CLOSED")
def _close_dev_twice(q: Seq) -> None:
    q.active(2, 2)
    q.s("close_device", device=q.srv_dev[0])
    q.s("close_device", device=q.srv_dev[0])


# -- Close page rules ------------------------------------------------------------------------
_seq("CLOSE-CREATE-AGAIN")(lambda q: (q.create(1), q.c("close"), q.create(2)))
_seq("CLOSE-VD_E_OPEN-RELEASES")(lambda q: (q.active(1), q.c("close"), q.create(1)))


@_seq("CLOSE-VD_E_OPEN-ABORTS", "CLOSE-VD_E_OPEN-SIGNALS-ABORT")
def _close_open_aborts(q: Seq) -> None:
    (dev,) = q.active(1)
    sc, _cmd = q.command(0, dev)
    q.c("close")
    q.s("wait_completion", command=sc, timeout_ms=WAIT)
    q.s("state")


@_seq("CLOSE-DEVICES-INVALID")
def _close_invalid(q: Seq) -> None:
    (dev,) = q.active(1)
    _sc, _cmd = q.command(0, dev)
    q.c("close")
    q.create(1)
    q.srv_config()
    q.c("get_configuration", timeout_ms=WAIT)
    q.srv_devices(1)
    q.open(0)
    q.c("device_after_close", device=dev, call="get_command", timeout_ms=0)


@_seq("ABORT-CLOSE-WITHOUT-VD_E_CLOSE")
def _abnormal_close(q: Seq) -> None:
    (dev,) = q.active(1)
    q.s("signal_abort")
    q.c("get_command", device=dev, timeout_ms=WAIT)
    q.c("close")


# -- abort model ---------------------------------------------------------------------------------
@_seq("SIGNAL_ABORT-COMPLETES-995")
def _client_abort_995(q: Seq) -> None:
    _dev, _cmd, sc = q.aborted()
    q.s("wait_completion", command=sc, timeout_ms=WAIT)
    q.s("state")


@_seq("ABORT-CLIENT-GONE")
def _client_gone(q: Seq) -> None:
    q.initializing(1)
    sc = q.send(0)
    q.c("close")
    q.s("wait_completion", command=sc, timeout_ms=WAIT)


@_seq("ABORT-SERVER-DEATH")
def _server_death(q: Seq) -> None:
    (dev,) = q.active(1)
    q.h("kill_server")
    q.c("get_command", device=dev, timeout_ms=WAIT)
    q.c("close")


# -- IO-ERROR ----------------------------------------------------------------------------------
@_seq("IOERR-QUEUED-1117", "IOERR-SEND-REJECTED", "ST-ACTIVE-SEND_COMMAND-IO_ERROR",
      "IOERR-NOT-ABORT", "IOERR-CLEARERROR-HELD", "IOERR-CLEARERROR-RESUMES")
def _io_error(q: Seq) -> None:
    (dev,) = q.active(1)
    a = q.send(0)
    b = q.send(0)
    ca = q.get(dev)
    cb = q.get(dev)
    c = q.send(0)
    q.complete(dev, ca, DISK_FULL, 0)
    q.s("wait_completion", command=a, timeout_ms=WAIT)
    q.s("wait_completion", command=c, timeout_ms=WAIT)
    q.s("state")
    d = q.send(0)
    q.s("wait_completion", command=d, timeout_ms=0)
    clear = q.send(0, CLEAR)
    q.c("get_command", device=dev, timeout_ms=1000)
    q.complete(dev, cb)
    cc = q.get(dev)
    q.complete(dev, cc, 0, 0)
    q.s("wait_completion", command=clear, timeout_ms=WAIT)
    q.s("wait_completion", command=b, timeout_ms=WAIT)
    _e, ce = q.command(0, dev)
    q.complete(dev, ce)


# -- VDC_Complete ----------------------------------------------------------------------------
@_seq("COMPLETE-DELIVERED", "COMPLETE-FAILURE-REACHES-SERVER")
def _complete(q: Seq) -> None:
    (dev,) = q.active(1, features=VDF_REQUEST_COMPLETE,
                      srv_features=VDF_WRITE_MEDIA | VDF_REQUEST_COMPLETE | VDF_COMPLETE_ENABLED)
    sc, cmd = q.command(0, dev, code=COMPLETE)
    q.complete(dev, cmd, DISK_FULL, 0)
    q.s("wait_completion", command=sc, timeout_ms=WAIT)


# -- serverTimeOut -------------------------------------------------------------------------------
@_seq("TIMEOUT-SERVER-ABORTS")
def _server_timeout(q: Seq) -> None:
    (dev,) = q.active(1, server_timeout=300)
    sc, _cmd = q.command(0, dev)
    q.s("wait_completion", command=sc, timeout_ms=2 * 300 + 2000)
    q.s("state")
    q.c("get_command", device=dev, timeout_ms=WAIT)


@_seq("TIMEOUT-ZERO-INFINITE")
def _server_timeout_zero(q: Seq) -> None:
    (dev,) = q.active(1)
    sc, cmd = q.command(0, dev)
    q.s("wait_completion", command=sc, timeout_ms=1000)
    q.complete(dev, cmd)


#: Rules no step sequence reaches, with the reason.
NO_SEQUENCE: dict[str, str] = {
    "TRANSFER-BLOCK-MULTIPLE": "binds the server's own choice of transfer sizes: judged from "
                               "statement-driven runs (a scripted server sends what it is told)",
    "TRANSFER-MAX-SIZE": "binds the server's own choice of transfer sizes (statement runs)",
    "CONFIG-BLOCKSIZE-RANGE": "binds the server's configuration (statement runs)",
    "CONFIG-MAXTRANSFER-RANGE": "binds the server's configuration (statement runs)",
    "COMPLETE-ONLY-IF-ENABLED": "binds the server's choice to send VDC_Complete (statement runs)",
}


def _build() -> tuple[dict[str, list[Step]], dict[str, frozenset[Capability]]]:
    seqs: dict[str, list[Step]] = {}
    reqs: dict[str, frozenset[Capability]] = {}
    for rule_id, fn in _BUILDERS.items():
        q = Seq()
        fn(q)
        steps = q.finish()
        seqs[rule_id] = steps
        reqs[rule_id] = frozenset(q.caps)
    return seqs, reqs


DIRECTED, REQUIRES = _build()
for _r in NO_SEQUENCE:
    REQUIRES[_r] = frozenset({Capability.STATEMENTS})


def sequences() -> dict[str, list[Step]]:
    return dict(DIRECTED)


def covers(rule_id: str) -> list[Step]:
    """The sequence that exercises ``rule_id`` (KeyError when none does)."""
    return DIRECTED[rule_id]
