"""ctypes bindings to a native VDI client library, and a :class:`ClientSide` on top of them.

* :class:`LinuxVdi`: ``libsqlvdi.so`` -- Microsoft's ``/opt/mssql/lib/libsqlvdi.so`` or the one
  vdisim builds (``vdisim build-libsqlvdi``).  Two non-virtual C++ classes: the objects are
  allocated by the caller (64 bytes of storage, constructed with the ``C1Ev``/``C2Ev`` symbol),
  every method is its Itanium-mangled symbol called with ``this`` first, and every return code
  is a signed ``int`` (converted to the unsigned HRESULT here).  Spec live-mode.md §1.4, §10.
* :class:`ComVdi`: ``sqlvdi.dll`` through raw COM vtables (``IClientVirtualDeviceSet2``,
  ``IClientVirtualDevice``; slots, GUIDs and argument types from live-mode.md §2).  Only
  :func:`ComVdi.create_instance` touches Windows; the vtable marshalling is plain ctypes and is
  unit-tested on Linux against a COM object built in Python (tests/test_live.py).
* :class:`NativeClient`: the conformance ``ClientSide`` over either binding.
"""

from __future__ import annotations

import ctypes
import sys
import uuid
from collections.abc import Callable
from typing import Any

from conformance.backend import ClientSide, CommandView
from vdisim.protocol.codes import HResult
from vdisim.protocol.records import VDConfig

__all__ = [
    "COM_SET_SLOTS",
    "GUID",
    "SYMBOLS",
    "CLSID_MSSQL_ClientVirtualDeviceSet",
    "ComVdi",
    "IID_IClientVirtualDevice",
    "IID_IClientVirtualDeviceSet2",
    "LinuxVdi",
    "NativeClient",
    "VDCCommand",
    "VDConfigC",
    "VdiApi",
    "config_from_c",
    "config_to_c",
    "hresult",
]

_U32 = 0xFFFFFFFF


def hresult(rc: int) -> int:
    """A return code as the unsigned 32-bit HRESULT (the Linux API returns a signed int)."""
    return rc & _U32


class VDConfigC(ctypes.Structure):
    """``struct VDConfig`` (§4.1): eleven u32, 44 bytes."""

    _fields_ = [(n, ctypes.c_uint32) for n in (
        "deviceCount", "features", "prefixZoneSize", "alignment", "softFileMarkBlockSize",
        "EOMWarningSize", "serverTimeOut", "blockSize", "maxIODepth", "maxTransferSize",
        "bufferAreaSize")]


class VDCCommand(ctypes.Structure):
    """``struct VDC_Command`` (§6.1): 24 bytes on x86-64 (Windows: DWORD, DWORD, DWORDLONG)."""

    _fields_ = [("commandCode", ctypes.c_int32), ("size", ctypes.c_int32),
                ("position", ctypes.c_int64), ("buffer", ctypes.c_void_p)]


assert ctypes.sizeof(VDConfigC) == 44
assert ctypes.sizeof(VDCCommand) == 24 or ctypes.sizeof(ctypes.c_void_p) != 8

def config_to_c(cfg: VDConfig) -> VDConfigC:
    return VDConfigC.from_buffer_copy(cfg.pack())


def config_from_c(c: VDConfigC) -> VDConfig:
    return VDConfig.unpack(bytes(c))


# ------------------------------------------------------------------------------ the API shape

class VdiApi:
    """The VDI client calls on raw pointers; every method returns the unsigned HRESULT."""

    def new_set(self) -> int:
        raise NotImplementedError

    def free_set(self, vds: int) -> None:
        raise NotImplementedError

    def create(self, vds: int, name: str, cfg: VDConfigC, instance: str | None) -> int:
        raise NotImplementedError

    def get_configuration(self, vds: int, timeout_ms: int, cfg: VDConfigC) -> int:
        raise NotImplementedError

    def open_device(self, vds: int, name: str) -> tuple[int, int]:
        raise NotImplementedError

    def close(self, vds: int) -> int:
        raise NotImplementedError

    def signal_abort(self, vds: int) -> int:
        raise NotImplementedError

    def open_in_secondary(self, vds: int, name: str, instance: str | None) -> int:
        raise NotImplementedError

    def get_buffer_handle(self, vds: int, buffer: int) -> tuple[int, int]:
        raise NotImplementedError

    def map_buffer_handle(self, vds: int, handle: int) -> tuple[int, int]:
        raise NotImplementedError

    def get_command(self, dev: int, timeout_ms: int) -> tuple[int, int]:
        raise NotImplementedError

    def complete_command(self, dev: int, cmd: int, code: int, nbytes: int, position: int) -> int:
        raise NotImplementedError

    def release_device(self, dev: int) -> None:
        """Drop a device interface (COM Release; nothing on Linux: the set owns it)."""


# ------------------------------------------------------------------------------ Linux

#: method -> mangled symbol (live-mode.md §1.4; vdisim/native/symbols.txt lists all 19).
SYMBOLS: dict[str, str] = {
    "set_ctor": "_ZN22ClientVirtualDeviceSetC1Ev",
    "set_ctor2": "_ZN22ClientVirtualDeviceSetC2Ev",
    "set_dtor": "_ZN22ClientVirtualDeviceSetD1Ev",
    "set_dtor2": "_ZN22ClientVirtualDeviceSetD2Ev",
    "create": "_ZN22ClientVirtualDeviceSet6CreateEPcP8VDConfig",
    "get_configuration": "_ZN22ClientVirtualDeviceSet16GetConfigurationElP8VDConfig",
    "open_device": "_ZN22ClientVirtualDeviceSet10OpenDeviceEPcPP19ClientVirtualDevice",
    "close": "_ZN22ClientVirtualDeviceSet5CloseEv",
    "signal_abort": "_ZN22ClientVirtualDeviceSet11SignalAbortEv",
    "open_in_secondary": "_ZN22ClientVirtualDeviceSet15OpenInSecondaryEPc",
    "get_buffer_handle": "_ZN22ClientVirtualDeviceSet15GetBufferHandleEPhPj",
    "map_buffer_handle": "_ZN22ClientVirtualDeviceSet15MapBufferHandleEiPPh",
    "register_device_closed": "_ZN22ClientVirtualDeviceSet20RegisterDeviceClosedEv",
    "get_command": "_ZN19ClientVirtualDevice10GetCommandElPP11VDC_Command",
    "complete_command": "_ZN19ClientVirtualDevice15CompleteCommandEP11VDC_Commandiml",
}
_OBJECT_STORAGE = 64  # sizeof(ClientVirtualDeviceSet) is 8; generous and 16-byte aligned


def _linux_timeout(timeout_ms: int) -> int:
    """time_t milliseconds: INFINITE (0xFFFFFFFF) and negatives wait forever (-1)."""
    return -1 if timeout_ms < 0 or timeout_ms >= _U32 else timeout_ms


class LinuxVdi(VdiApi):
    """``libsqlvdi.so`` through ctypes (caller-allocated objects, mangled member symbols)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = ctypes.CDLL(path)
        missing = [s for k, s in SYMBOLS.items()
                   if not k.endswith("2") and not hasattr(self.lib, s)]
        # The constructor/destructor may be exported only as C2/D2 (live-mode.md §1.4).
        for one, two in (("set_ctor", "set_ctor2"), ("set_dtor", "set_dtor2")):
            if SYMBOLS[one] in missing and hasattr(self.lib, SYMBOLS[two]):
                missing.remove(SYMBOLS[one])
        if missing:
            raise OSError(f"{path} does not export {', '.join(missing)}")
        vp, c_int, c_long = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
        self._storage: dict[int, ctypes.Array[ctypes.c_char]] = {}

        def fn(key: str, restype: Any, *args: Any) -> Any:
            sym = SYMBOLS[key]
            if not hasattr(self.lib, sym):
                sym = SYMBOLS[key + "2"]
            f = getattr(self.lib, sym)
            f.restype = restype
            f.argtypes = [vp, *args]
            return f

        self._ctor = fn("set_ctor", None)
        self._dtor = fn("set_dtor", None)
        self._create = fn("create", c_int, ctypes.c_char_p, ctypes.POINTER(VDConfigC))
        self._getcfg = fn("get_configuration", c_int, c_long, ctypes.POINTER(VDConfigC))
        self._open = fn("open_device", c_int, ctypes.c_char_p, ctypes.POINTER(vp))
        self._close = fn("close", c_int)
        self._abort = fn("signal_abort", c_int)
        self._secondary = fn("open_in_secondary", c_int, ctypes.c_char_p)
        self._gbh = fn("get_buffer_handle", c_int, vp, ctypes.POINTER(ctypes.c_uint))
        self._mbh = fn("map_buffer_handle", c_int, c_int, ctypes.POINTER(vp))
        self._getcmd = fn("get_command", c_int, c_long, ctypes.POINTER(ctypes.POINTER(VDCCommand)))
        self._complete = fn("complete_command", c_int, ctypes.POINTER(VDCCommand), c_int,
                            ctypes.c_ulong, ctypes.c_int64)

    def new_set(self) -> int:
        storage = ctypes.create_string_buffer(_OBJECT_STORAGE)
        addr = ctypes.addressof(storage)
        self._ctor(addr)
        self._storage[addr] = storage
        return addr

    def free_set(self, vds: int) -> None:
        if vds in self._storage:
            self._dtor(vds)  # closes the set if still open, frees its devices
            del self._storage[vds]

    def create(self, vds: int, name: str, cfg: VDConfigC, instance: str | None) -> int:
        if instance not in (None, "", "MSSQLSERVER"):
            # Linux has no named instances and no CreateEx (§10).
            return int(HResult.VD_E_INSTANCE_NAME)
        return hresult(self._create(vds, name.encode("utf-8"), ctypes.byref(cfg)))

    def get_configuration(self, vds: int, timeout_ms: int, cfg: VDConfigC) -> int:
        return hresult(self._getcfg(vds, _linux_timeout(timeout_ms), ctypes.byref(cfg)))

    def open_device(self, vds: int, name: str) -> tuple[int, int]:
        out = ctypes.c_void_p()
        hr = hresult(self._open(vds, name.encode("utf-8"), ctypes.byref(out)))
        return hr, out.value or 0

    def close(self, vds: int) -> int:
        return hresult(self._close(vds))

    def signal_abort(self, vds: int) -> int:
        return hresult(self._abort(vds))

    def open_in_secondary(self, vds: int, name: str, instance: str | None) -> int:
        if instance not in (None, "", "MSSQLSERVER"):
            return int(HResult.VD_E_INSTANCE_NAME)
        return hresult(self._secondary(vds, name.encode("utf-8")))

    def get_buffer_handle(self, vds: int, buffer: int) -> tuple[int, int]:
        handle = ctypes.c_uint(0)
        hr = hresult(self._gbh(vds, buffer, ctypes.byref(handle)))
        return hr, handle.value

    def map_buffer_handle(self, vds: int, handle: int) -> tuple[int, int]:
        out = ctypes.c_void_p()
        # MapBufferHandle takes a signed int on Linux (§2.9).
        hr = hresult(self._mbh(vds, ctypes.c_int(handle & _U32).value, ctypes.byref(out)))
        return hr, out.value or 0

    def get_command(self, dev: int, timeout_ms: int) -> tuple[int, int]:
        out = ctypes.POINTER(VDCCommand)()
        hr = hresult(self._getcmd(dev, _linux_timeout(timeout_ms), ctypes.byref(out)))
        return hr, ctypes.cast(out, ctypes.c_void_p).value or 0

    def complete_command(self, dev: int, cmd: int, code: int, nbytes: int, position: int) -> int:
        ptr = ctypes.cast(ctypes.c_void_p(cmd), ctypes.POINTER(VDCCommand))
        return hresult(self._complete(dev, ptr, ctypes.c_int(code & _U32).value,
                                      nbytes, position))


# ------------------------------------------------------------------------------ Windows COM

class GUID(ctypes.Structure):
    _fields_ = [("Data1", ctypes.c_uint32), ("Data2", ctypes.c_uint16),
                ("Data3", ctypes.c_uint16), ("Data4", ctypes.c_ubyte * 8)]

    @classmethod
    def from_string(cls, text: str) -> GUID:
        return cls.from_buffer_copy(uuid.UUID(text).bytes_le)

    def __str__(self) -> str:
        return "{" + str(uuid.UUID(bytes_le=bytes(self))).upper() + "}"


CLSID_MSSQL_ClientVirtualDeviceSet = "{40700425-0080-11D2-851F-00C04FC21759}"
IID_IClientVirtualDeviceSet2 = "{D0E6EB07-7A62-11D2-8573-00C04FC21759}"
IID_IClientVirtualDevice = "{40700424-0080-11D2-851F-00C04FC21759}"

#: IClientVirtualDeviceSet2 vtable slots (after IUnknown 0..2), live-mode.md §2.
COM_SET_SLOTS = {"QueryInterface": 0, "AddRef": 1, "Release": 2, "Create": 3,
                 "GetConfiguration": 4, "OpenDevice": 5, "Close": 6, "SignalAbort": 7,
                 "OpenInSecondary": 8, "GetBufferHandle": 9, "MapBufferHandle": 10,
                 "CreateEx": 11, "OpenInSecondaryEx": 12}
COM_DEVICE_SLOTS = {"QueryInterface": 0, "AddRef": 1, "Release": 2, "GetCommand": 3,
                    "CompleteCommand": 4}

_FUNCTYPE: Callable[..., Any] = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)
_HR = ctypes.c_long  # HRESULT
_DW = ctypes.c_uint32  # DWORD
vp_t = ctypes.c_void_p

#: slot -> prototype (without ``this``); strings are LPCWSTR passed as pointers to UTF-16.
COM_SET_PROTOS: dict[str, tuple[Any, ...]] = {
    "Release": (ctypes.c_ulong,),
    "Create": (_HR, vp_t, ctypes.POINTER(VDConfigC)),
    "GetConfiguration": (_HR, _DW, ctypes.POINTER(VDConfigC)),
    "OpenDevice": (_HR, vp_t, ctypes.POINTER(vp_t)),
    "Close": (_HR,),
    "SignalAbort": (_HR,),
    "OpenInSecondary": (_HR, vp_t),
    "GetBufferHandle": (_HR, vp_t, ctypes.POINTER(_DW)),
    "MapBufferHandle": (_HR, _DW, ctypes.POINTER(vp_t)),
    "CreateEx": (_HR, vp_t, vp_t, ctypes.POINTER(VDConfigC)),
    "OpenInSecondaryEx": (_HR, vp_t, vp_t),
}
COM_DEVICE_PROTOS: dict[str, tuple[Any, ...]] = {
    "Release": (ctypes.c_ulong,),
    "GetCommand": (_HR, _DW, ctypes.POINTER(ctypes.POINTER(VDCCommand))),
    # CompleteCommand(VDC_Command*, DWORD code, DWORD bytes, DWORDLONG position)
    "CompleteCommand": (_HR, ctypes.POINTER(VDCCommand), _DW, _DW, ctypes.c_uint64),
}


def wide(text: str) -> ctypes.Array[ctypes.c_uint16]:
    """An LPCWSTR: NUL-terminated UTF-16 (Windows wchar_t is 16 bits, unlike Linux's)."""
    raw = text.encode("utf-16-le")
    arr = (ctypes.c_uint16 * (len(raw) // 2 + 1))()
    ctypes.memmove(arr, raw, len(raw))
    return arr


def _com_timeout(timeout_ms: int) -> int:
    """DWORD milliseconds; INFINITE is 0xFFFFFFFF (negatives mean INFINITE too)."""
    return _U32 if timeout_ms < 0 or timeout_ms >= _U32 else timeout_ms


def _method(obj: int, slot: int, proto: tuple[Any, ...]) -> Any:
    """Slot ``slot`` of the vtable of COM object ``obj``, as a callable taking ``this``."""
    vtbl = ctypes.c_void_p.from_address(obj).value
    assert vtbl is not None
    addr = ctypes.c_void_p.from_address(vtbl + slot * ctypes.sizeof(ctypes.c_void_p)).value
    restype, *args = proto
    return _FUNCTYPE(restype, vp_t, *args)(addr)


class ComVdi(VdiApi):
    """``sqlvdi.dll`` through raw COM vtables (no exceptions: raw HRESULTs)."""

    def __init__(self, factory: Callable[[], int] | None = None) -> None:
        """``factory`` returns a new ``IClientVirtualDeviceSet2*``; default CoCreateInstance."""
        self._factory = factory or self.create_instance

    @staticmethod
    def create_instance() -> int:  # pragma: no cover - Windows only
        if sys.platform != "win32":
            raise OSError("sqlvdi.dll (COM) exists only on Windows")
        windll: Any = getattr(ctypes, "WinDLL", None)
        if windll is None:
            raise OSError("ctypes has no WinDLL on this platform")
        ole32 = windll("ole32")
        ole32.CoInitializeEx(None, 0)  # COINIT_MULTITHREADED, as the samples do
        clsid = GUID.from_string(CLSID_MSSQL_ClientVirtualDeviceSet)
        iid = GUID.from_string(IID_IClientVirtualDeviceSet2)
        out = ctypes.c_void_p()
        hr = ole32.CoCreateInstance(ctypes.byref(clsid), None, 1, ctypes.byref(iid),
                                    ctypes.byref(out))
        if hr & _U32 or not out.value:
            raise OSError(f"CoCreateInstance(ClientVirtualDeviceSet) failed: 0x{hr & _U32:08X}")
        return int(out.value)

    def _set(self, vds: int, name: str) -> Any:
        return _method(vds, COM_SET_SLOTS[name], COM_SET_PROTOS[name])

    def _dev(self, dev: int, name: str) -> Any:
        return _method(dev, COM_DEVICE_SLOTS[name], COM_DEVICE_PROTOS[name])

    def new_set(self) -> int:
        return self._factory()

    def free_set(self, vds: int) -> None:
        self._set(vds, "Release")(vds)

    def create(self, vds: int, name: str, cfg: VDConfigC, instance: str | None) -> int:
        w_name, w_inst = wide(name), (wide(instance) if instance else None)
        return hresult(self._set(vds, "CreateEx")(
            vds, ctypes.cast(w_inst, vp_t) if w_inst is not None else None,
            ctypes.cast(w_name, vp_t), ctypes.byref(cfg)))

    def get_configuration(self, vds: int, timeout_ms: int, cfg: VDConfigC) -> int:
        return hresult(self._set(vds, "GetConfiguration")(vds, _com_timeout(timeout_ms),
                                                          ctypes.byref(cfg)))

    def open_device(self, vds: int, name: str) -> tuple[int, int]:
        out = ctypes.c_void_p()
        hr = hresult(self._set(vds, "OpenDevice")(vds, ctypes.cast(wide(name), vp_t),
                                                  ctypes.byref(out)))
        return hr, out.value or 0

    def close(self, vds: int) -> int:
        return hresult(self._set(vds, "Close")(vds))

    def signal_abort(self, vds: int) -> int:
        return hresult(self._set(vds, "SignalAbort")(vds))

    def open_in_secondary(self, vds: int, name: str, instance: str | None) -> int:
        w_name, w_inst = wide(name), (wide(instance) if instance else None)
        return hresult(self._set(vds, "OpenInSecondaryEx")(
            vds, ctypes.cast(w_inst, vp_t) if w_inst is not None else None,
            ctypes.cast(w_name, vp_t)))

    def get_buffer_handle(self, vds: int, buffer: int) -> tuple[int, int]:
        handle = _DW(0)
        hr = hresult(self._set(vds, "GetBufferHandle")(vds, buffer, ctypes.byref(handle)))
        return hr, handle.value

    def map_buffer_handle(self, vds: int, handle: int) -> tuple[int, int]:
        out = ctypes.c_void_p()
        hr = hresult(self._set(vds, "MapBufferHandle")(vds, handle & _U32, ctypes.byref(out)))
        return hr, out.value or 0

    def get_command(self, dev: int, timeout_ms: int) -> tuple[int, int]:
        out = ctypes.POINTER(VDCCommand)()
        hr = hresult(self._dev(dev, "GetCommand")(dev, _com_timeout(timeout_ms),
                                                  ctypes.byref(out)))
        return hr, ctypes.cast(out, ctypes.c_void_p).value or 0

    def complete_command(self, dev: int, cmd: int, code: int, nbytes: int, position: int) -> int:
        ptr = ctypes.cast(ctypes.c_void_p(cmd), ctypes.POINTER(VDCCommand))
        return hresult(self._dev(dev, "CompleteCommand")(dev, ptr, code & _U32, nbytes & _U32,
                                                         position & 0xFFFFFFFFFFFFFFFF))

    def release_device(self, dev: int) -> None:
        self._dev(dev, "Release")(dev)


# ------------------------------------------------------------------------------ ClientSide

class NativeClient(ClientSide):
    """One native client object (``ClientVirtualDeviceSet`` / ``IClientVirtualDeviceSet2``).

    Devices and commands are small integer handles.  A completed command keeps its handle and
    pointer, so completing it twice hands the library the same pointer again (the library must
    answer VD_E_INVALID); an unknown command handle passes a pointer to a zeroed VDC_Command
    the library never issued.  ``on_call`` (optional) sees every call and its result (trace
    recording)."""

    def __init__(self, api: VdiApi, on_call: Callable[[str, dict[str, Any], int, dict[str, Any]],
                                                      None] | None = None) -> None:
        self.api = api
        self.vds = api.new_set()
        self.devices: list[int] = []
        self.commands: dict[int, tuple[int, int, int]] = {}  # handle -> (device, ptr, buffer)
        self.outstanding: set[int] = set()
        self._bogus = VDCCommand()
        self._on_call = on_call
        self._released = False

    def _note(self, call: str, args: dict[str, Any], hr: int, out: dict[str, Any]) -> int:
        if self._on_call is not None:
            self._on_call(call, {**args, "client": id(self)}, hr, out)
        return hr

    def create(self, name: str, config: VDConfig, instance: str | None = None) -> int:
        cfg = config_to_c(config)
        hr = self.api.create(self.vds, name, cfg, instance)
        return self._note("create", {"name": name, "device_count": config.device_count,
                                     "features": config.features}, hr, {})

    def get_configuration(self, timeout_ms: int) -> tuple[int, VDConfig | None]:
        cfg = VDConfigC()
        hr = self.api.get_configuration(self.vds, timeout_ms, cfg)
        result = config_from_c(cfg) if hr == 0 else None
        self._note("get_configuration", {"timeout_ms": timeout_ms}, hr,
                   {"config": result.pack().hex()} if result else {})
        return hr, result

    def open_device(self, name: str) -> tuple[int, int | None]:
        hr, dev = self.api.open_device(self.vds, name)
        handle = None
        if hr == 0 and dev:
            self.devices.append(dev)
            handle = len(self.devices) - 1
        self._note("open_device", {"name": name}, hr, {"device": handle})
        return hr, handle

    def _device(self, device: int) -> int:
        return self.devices[device]

    def get_command(self, device: int, timeout_ms: int) -> tuple[int, CommandView | None]:
        hr, ptr = self.api.get_command(self._device(device), timeout_ms)
        view = None
        if hr == 0 and ptr:
            c = VDCCommand.from_address(ptr)
            handle = len(self.commands)
            self.commands[handle] = (device, ptr, int(c.buffer or 0))
            self.outstanding.add(handle)
            view = CommandView(handle, int(c.commandCode), int(c.size) & _U32, int(c.position),
                               bool(c.buffer))
        self._note("get_command", {"device": device, "timeout_ms": timeout_ms}, hr,
                   {"code": view.code, "size": view.size, "position": view.position}
                   if view else {})
        return hr, view

    def complete_command(self, device: int, command: int, completion_code: int,
                         bytes_transferred: int = 0, position: int = 0) -> int:
        entry = self.commands.get(command)
        ptr = entry[1] if entry else ctypes.addressof(self._bogus)
        hr = self.api.complete_command(self._device(device), ptr, completion_code,
                                       bytes_transferred, position)
        if hr == 0:
            self.outstanding.discard(command)
        return self._note("complete_command", {"device": device, "code": completion_code,
                                               "bytes": bytes_transferred,
                                               "position": position}, hr, {})

    def signal_abort(self) -> int:
        return self._note("signal_abort", {}, self.api.signal_abort(self.vds), {})

    def close(self) -> int:
        hr = self.api.close(self.vds)
        self.outstanding.clear()
        return self._note("close", {}, hr, {})

    def open_in_secondary(self, name: str, instance: str | None = None) -> int:
        return self._note("open_in_secondary", {"name": name},
                          self.api.open_in_secondary(self.vds, name, instance), {})

    def _buffer(self, command: int) -> tuple[int, int]:
        if command not in self.outstanding:
            raise ValueError(f"command {command} is not outstanding: its buffer is not valid")
        _dev, ptr, buf = self.commands[command]
        if not buf:
            raise ValueError(f"command {command} has no buffer")
        return buf, int(VDCCommand.from_address(ptr).size) & _U32

    def read_buffer(self, command: int, offset: int = 0, length: int | None = None) -> bytes:
        addr, size = self._buffer(command)
        n = size - offset if length is None else length
        if offset < 0 or n < 0 or offset + n > size:
            raise ValueError("read outside the command's buffer")
        return ctypes.string_at(addr + offset, n)

    def write_buffer(self, command: int, data: bytes, offset: int = 0) -> None:
        addr, size = self._buffer(command)
        if offset < 0 or offset + len(data) > size:
            raise ValueError("write outside the command's buffer")
        ctypes.memmove(addr + offset, data, len(data))

    def get_buffer_handle(self, command: int) -> tuple[int, int | None]:
        entry = self.commands.get(command)
        hr, handle = self.api.get_buffer_handle(self.vds, entry[2] if entry else 0)
        return hr, (handle if hr == 0 else None)

    def map_buffer_handle(self, handle: int) -> tuple[int, bool]:
        hr, addr = self.api.map_buffer_handle(self.vds, handle)
        return hr, bool(hr == 0 and addr)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        for dev in self.devices:
            self.api.release_device(dev)
        self.api.free_set(self.vds)
