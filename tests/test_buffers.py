"""Buffers: prefix zone and alignment (§1.10), data zones exactly the command's size."""

from __future__ import annotations

import threading

from vdisim.client import DeviceSet
from vdisim.engine import Connection
from vdisim.protocol import VDConfig
from vdisim.protocol.codes import CommandCode


def test_prefix_zone_and_alignment_are_honoured(conn: Connection, set_name: str) -> None:
    conn.execute("CREATE DATABASE buf_src WITH SIZE_MB = 1", check=True)
    cfg = VDConfig(device_count=1, prefix_zone_size=512, alignment=8192)
    captured = bytearray()
    out: dict[str, object] = {}
    with DeviceSet(set_name, cfg) as ds:
        t = threading.Thread(target=lambda: out.setdefault("r", conn.execute(
            f"BACKUP DATABASE buf_src TO VIRTUAL_DEVICE='{set_name}' WITH BLOCKSIZE = 512, "
            "MAXTRANSFERSIZE = 65536")))
        t.start()
        final = ds.get_configuration(timeout_s=10)
        assert final.prefix_zone_size == 512 and final.alignment == 8192
        (dev,) = ds.open_devices()
        core = ds.raw._core
        assert core is not None and core.area is not None
        writes = 0
        for cmd in dev.commands(timeout_s=10):
            if cmd.command_code == CommandCode.VDC_Write:
                writes += 1
                assert cmd.buffer is not None and len(cmd.buffer) == cmd.size
                assert cmd.prefix is not None and len(cmd.prefix) == 512
                desc = core.area.descriptor(cmd._buffer_id)
                assert desc is not None and desc[0] % 8192 == 0  # data zone aligned (§1.10)
                captured += cmd.buffer
                cmd.prefix[:] = b"\xee" * 512  # the client's own zone: must not touch data
                assert bytes(cmd.buffer) == captured[-cmd.size:]
            dev.complete(cmd)
        t.join(30)
    assert writes > 0
    result = out["r"]
    assert result.ok, result.text()  # type: ignore[attr-defined]
    assert b"\xee" * 64 not in captured  # no prefix bytes leaked into the backup stream
