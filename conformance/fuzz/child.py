"""A client in its own process, driven one call at a time (the ``primary-death`` and
``secondary-death`` races).

``python -m conformance.fuzz.child`` reads one JSON request per line on stdin and answers one
JSON line on stdout: ``{"call": "create", "args": {...}}`` -> ``{"hr": 0, "out": {...}}``.
Calls: create{name, devices}, open_in_secondary{name}, get_configuration{timeout},
open_device{name}, get_command{device, timeout}, complete_command{device, cmd, code}, close{}.

Before each call the child *settles*: it waits until its hub thread sits in ``select`` with
nothing readable (a :mod:`vdisim.hooks` implementation that only watches the hub), so a call's
result depends only on what the engine had sent before the call was requested -- the same
argument as the engine's settling (docs/fuzz.md).  The parent kills the child's whole session
(SIGKILL) between calls.
"""

from __future__ import annotations

import json
import select
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from vdisim import hooks
from vdisim.client.api import Command, VirtualDevice, VirtualDeviceSet
from vdisim.protocol.codes import VDF_LikePipe
from vdisim.protocol.records import VDConfig


class HubSettle:
    """Tracks whether the hub waits in select; everything else behaves as uninstalled."""

    def __init__(self) -> None:
        self.idle = True
        self.fds: list[int] = []

    def monotonic(self) -> float:
        return time.monotonic()

    def point(self, name: str, info: dict[str, Any]) -> None:
        return None

    def wait(self, cond: threading.Condition, deadline: float | None, name: str) -> None:
        cond.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def wait_io(self, name: str, fds: Sequence[int], deadline: float | None) -> None:
        if name != "client.hub.select":
            try:
                select.select(list(fds), [], [], None if deadline is None
                              else max(0.0, deadline - time.monotonic()))
            except (OSError, ValueError):
                pass
            return
        self.fds = list(fds)
        self.idle = True
        try:
            select.select(self.fds, [], [], None)
        except (OSError, ValueError):
            pass
        self.idle = False

    def join(self, thread: threading.Thread, timeout: float | None) -> None:
        return None

    def adopt(self, thread: threading.Thread, kind: str) -> None:
        return None

    def exit(self) -> None:
        self.idle = True
        self.fds = []

    def settle(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle:
                try:
                    busy = bool(self.fds) and bool(select.select(self.fds, [], [], 0)[0])
                except (OSError, ValueError):
                    busy = False
                if not busy:
                    return
            time.sleep(0.0002)


def main() -> int:
    impl = HubSettle()
    hooks.install(impl)
    vds = VirtualDeviceSet()
    devices: dict[int, VirtualDevice] = {}
    commands: dict[int, Command] = {}
    for line in sys.stdin:
        req = json.loads(line)
        call, args = req["call"], req.get("args") or {}
        impl.settle()
        out: dict[str, Any] = {}
        if call == "create":
            hr = vds.create(args["name"], VDConfig(device_count=int(args["devices"]),
                                                   features=VDF_LikePipe))
        elif call == "open_in_secondary":
            hr = vds.open_in_secondary(args["name"])
        elif call == "get_configuration":
            hr, _cfg = vds.get_configuration(int(args["timeout"]))
        elif call == "open_device":
            hr, dev = vds.open_device(args["name"])
            if dev is not None:
                devices[dev.index] = dev
                out["device"] = dev.index
        elif call == "get_command":
            hr, cmd = devices[int(args["device"])].get_command(int(args["timeout"]))
            if cmd is not None:
                commands[cmd._cmd_id] = cmd
                out = {"cmd": cmd._cmd_id, "code": cmd.command_code, "size": cmd.size}
        elif call == "complete_command":
            cmd = commands.pop(int(args["cmd"]))
            hr = devices[int(args["device"])].complete_command(cmd, int(args["code"]),
                                                               cmd.size, 0)
        elif call == "close":
            hr = vds.close()
        else:
            raise SystemExit(f"unknown call {call!r}")
        impl.settle()  # what the call sent is on the wire before the reply (a secondary)
        print(json.dumps({"hr": int(hr), "out": out}), flush=True)
    if vds.state.name != "DNE":
        vds.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
