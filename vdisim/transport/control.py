"""The control segment: how a set is found by name (docs/wire.md "Control segment").

Created by the primary client at Create (mode 0600, owner lock held while alive).  It carries the
set's name, the owner, a random token that every process attaching over the control socket must
present, and the client's requested VDConfig (what server GetConfiguration returns, §1.7).
"""

from __future__ import annotations

import os
import struct
import time

import attrs

from vdisim.protocol.records import VDConfig
from vdisim.transport.segments import Segment

MAGIC = b"VDSC"
VERSION = 1
SIZE = 4096
HEADER = struct.Struct("<4sHHIIQ16s44sII")  # 92 bytes
NAME_OFFSET = 128
NAME_MAX = 255
INSTANCE_OFFSET = 512
INSTANCE_MAX = 128


class ControlError(Exception):
    pass


@attrs.frozen
class ControlInfo:
    name: str
    instance: str
    owner_pid: int
    owner_uid: int
    token: bytes
    config: VDConfig


def write(seg: Segment, name: str, instance: str, token: bytes, config: VDConfig) -> None:
    raw_name = name.encode("utf-8")
    raw_inst = instance.encode("utf-8")
    if len(raw_name) > NAME_MAX or len(raw_inst) > INSTANCE_MAX:
        raise ControlError("name too long")
    buf = seg.buf
    buf[NAME_OFFSET:NAME_OFFSET + len(raw_name)] = raw_name
    buf[INSTANCE_OFFSET:INSTANCE_OFFSET + len(raw_inst)] = raw_inst
    HEADER.pack_into(buf, 0, MAGIC, VERSION, 0, os.getpid(), os.geteuid(), time.time_ns(), token,
                     config.pack(), len(raw_name), len(raw_inst))


def read(seg: Segment) -> ControlInfo:
    if seg.size < SIZE:
        raise ControlError("control segment too small")
    buf = seg.buf
    magic, version, _f, pid, uid, _t, token, cfg, nlen, ilen = HEADER.unpack_from(buf, 0)
    if magic != MAGIC or version != VERSION:
        raise ControlError("not a vdisim control segment")
    if nlen > NAME_MAX or ilen > INSTANCE_MAX:
        raise ControlError("control segment header is inconsistent")
    try:
        name = bytes(buf[NAME_OFFSET:NAME_OFFSET + nlen]).decode("utf-8")
        instance = bytes(buf[INSTANCE_OFFSET:INSTANCE_OFFSET + ilen]).decode("utf-8")
        config = VDConfig.unpack(cfg)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(f"control segment is damaged: {exc}") from exc
    return ControlInfo(name, instance, pid, uid, bytes(token), config)
