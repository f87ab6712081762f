"""A thin Pythonic layer over the mirror API, for people writing clients.

Errors become :class:`VdiError` (carrying the HRESULT); a :class:`DeviceSet` is a context
manager that aborts on an exception and always closes; a device's commands are an iterator
that ends at VD_E_CLOSE.  Conformance is checked on the mirror API (``vdisim.client.api``);
this layer only calls it.

    with DeviceSet("{GUID}", devices=1) as ds:
        cfg = ds.get_configuration(timeout_s=10)
        (dev,) = ds.open_devices()
        for cmd in dev.commands():
            ...
            dev.complete(cmd)
"""

from __future__ import annotations

from collections.abc import Iterator

from vdisim.client.api import Command, VirtualDevice, VirtualDeviceSet
from vdisim.protocol.codes import INFINITE, HResult, Win32, hresult_name
from vdisim.protocol.records import VDConfig


class VdiError(Exception):
    """A VDI call failed; ``hresult`` is the unsigned code, ``call`` the method."""

    def __init__(self, call: str, hresult: int) -> None:
        self.call = call
        self.hresult = hresult
        super().__init__(f"{call} failed: {hresult_name(hresult)} (0x{hresult:08X})")

    @property
    def aborted(self) -> bool:
        return self.hresult == HResult.VD_E_ABORT


def check(call: str, hr: int) -> None:
    if hr != HResult.NOERROR:
        raise VdiError(call, hr)


def _ms(timeout_s: float | None) -> int:
    return INFINITE if timeout_s is None else max(0, int(timeout_s * 1000))


class Device:
    def __init__(self, dev: VirtualDevice) -> None:
        self.raw = dev
        self.name = dev.name

    def commands(self, timeout_s: float | None = None) -> Iterator[Command]:
        """Yield commands until the server closes the device (VD_E_CLOSE).  VD_E_TIMEOUT and
        VD_E_ABORT raise VdiError."""
        while True:
            hr, cmd = self.raw.get_command(_ms(timeout_s))
            if hr == HResult.VD_E_CLOSE:
                return
            check("GetCommand", hr)
            assert cmd is not None
            yield cmd

    def complete(self, cmd: Command, code: int = Win32.ERROR_SUCCESS,
                 bytes_transferred: int | None = None, position: int = 0) -> None:
        n = cmd.size if bytes_transferred is None and code == Win32.ERROR_SUCCESS else (
            bytes_transferred or 0)
        check("CompleteCommand", self.raw.complete_command(cmd, code, n, position))


class DeviceSet:
    def __init__(self, name: str, config: VDConfig | None = None, *, devices: int = 1,
                 features: int = 0, instance: str | None = None) -> None:
        self.raw = VirtualDeviceSet()
        self.name = name
        self.config = config or VDConfig(device_count=devices, features=features)
        check("Create", self.raw.create(name, self.config, instance))
        self.final: VDConfig | None = None

    def get_configuration(self, timeout_s: float | None = None) -> VDConfig:
        hr, cfg = self.raw.get_configuration(_ms(timeout_s))
        check("GetConfiguration", hr)
        assert cfg is not None
        self.final = cfg
        return cfg

    def device_names(self) -> list[str]:
        core = self.raw._core
        return [d.name for d in core.devices] if core is not None else []

    def open_devices(self) -> list[Device]:
        out = []
        for n in self.device_names():
            hr, dev = self.raw.open_device(n)
            check("OpenDevice", hr)
            assert dev is not None
            out.append(Device(dev))
        return out

    def abort(self) -> None:
        self.raw.signal_abort()

    def close(self) -> int:
        """Close; returns the HRESULT (VD_E_OPEN is not raised: the set is released anyway)."""
        return self.raw.close()

    def __enter__(self) -> DeviceSet:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is not None:
            self.raw.signal_abort()
        self.raw.close()
