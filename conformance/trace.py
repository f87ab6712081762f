"""Steps and observations: the contract between the state machine (which performs steps on a
backend) and the judge (which checks observations against the independent model).

A :class:`Step` is one call by one actor, with JSON-able arguments that refer to devices,
commands and buffers by small *symbolic* indices (the n-th device the client opened, the n-th
command GetCommand returned, ...), never by backend handles, so a trace can be written to a
replay file and performed again on any backend.

An :class:`Obs` is the step plus what came back: the HRESULT (unsigned) or None for calls with
no return code, and ``out``: a JSON-able dict of observable effects (a command's fields, a
completion's code and byte count, the server side's state, ...).

Actors and calls (the vocabulary; the executor and the judge both accept exactly these):

client / secondary (``IClientVirtualDeviceSet2`` / ``IClientVirtualDevice``):
    create{name, instance?, config: {device_count, features, ...}}  -> hr
    get_configuration{timeout_ms}                  -> hr, out{config?}
    open_device{name}                              -> hr, out{device?}  (symbolic index)
    get_command{device, timeout_ms}                -> hr, out{command?, code, size, position}
    complete_command{device, command, code, bytes, position} -> hr
    signal_abort{}                                 -> hr
    close{}                                        -> hr
    open_in_secondary{name, instance?}             -> hr
    get_buffer_handle{command}                     -> hr, out{handle?}
    map_buffer_handle{handle}                      -> hr, out{mapped}
    device_after_close{device, call}               -> hr (a device interface used after Close)
server (scripted; ``IServerVirtualDeviceSet2`` / ``IServerVirtualDevice``):
    open{name, instance?} / begin_configuration{features, block_size, alignment,
    max_transfer_size, timeout_ms, device_names?} / request_buffers{size, alignment, count} /
    end_configuration{} / open_device{name?} -> out{device?} / start_agent{} /
    allocate_buffer{size, alignment} -> out{buffer?} / send_command{device, code, size,
    position, buffer?} -> out{command} / wait_completion{command, timeout_ms} -> out{done,
    completion_code, bytes_transferred, position} / close_device{device} / signal_abort{} /
    close{} / state{} -> out{state, abort_reason} / die{}
harness (not VDI calls): kill_client{}, kill_server{}, sleep_virtual{ms}, leak_check{} -> out{leaks}
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["ACTORS", "Obs", "Step"]

ACTORS = ("client", "secondary", "server", "harness")


@attrs.frozen(slots=True)
class Step:
    actor: str = attrs.field(validator=attrs.validators.in_(ACTORS))
    call: str
    args: dict[str, Any] = attrs.field(factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {"actor": self.actor, "call": self.call, "args": self.args}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        return cls(str(d["actor"]), str(d["call"]), dict(d.get("args") or {}))

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.actor}.{self.call}({args})"


@attrs.frozen(slots=True)
class Obs:
    step: Step
    hr: int | None = None
    out: dict[str, Any] = attrs.field(factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step.to_json(), "hr": self.hr, "out": self.out}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Obs:
        hr = d.get("hr")
        return cls(Step.from_json(d["step"]), None if hr is None else int(hr),
                   dict(d.get("out") or {}))

    def __str__(self) -> str:
        hr = "" if self.hr is None else f" -> 0x{self.hr:08X}"
        return f"{self.step}{hr}{' ' + str(self.out) if self.out else ''}"
