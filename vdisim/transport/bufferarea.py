"""The shared buffer area: one segment the engine creates at EndConfiguration (§1.7, §3).

Layout (docs/wire.md "Buffer area"):

====== ===================================================================================
offset contents
====== ===================================================================================
0      header ``<4sIQQIIQI16s``: magic b"VDBA", version, area size, table offset, table
       capacity, prefix zone size, data offset, reserved, token (the set's token)
4096   descriptor table: ``capacity`` entries ``<QII`` (data-zone offset, size, in-use tag)
...    data: buffers, each ``prefix zone | data zone``, the data zone aligned (§1.10)
====== ===================================================================================

Buffer ids are 1-based table indexes; a buffer's id is its process-independent *handle*
(GetBufferHandle / MapBufferHandle, §2.9).  The engine writes a descriptor before any command
names the buffer, so any attached process can map a handle from shared memory alone.
"""

from __future__ import annotations

import struct

from vdisim.transport.segments import Segment

MAGIC = b"VDBA"
VERSION = 1
HEADER = struct.Struct("<4sIQQIIQI16s")
HEADER_SPACE = 4096
DESC = struct.Struct("<QII")
IN_USE = 0x55534544  # b"DESU": descriptor allocated


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class AreaError(Exception):
    pass


class BufferArea:
    """A view of the area shared by every process of a set (read side: the client)."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        buf = segment.buf
        if segment.size < HEADER_SPACE:
            raise AreaError("buffer area smaller than its header")
        (magic, version, size, table_off, capacity, prefix, data_off, _r,
         token) = HEADER.unpack_from(buf, 0)
        if magic != MAGIC or version != VERSION:
            raise AreaError("not a vdisim buffer area")
        if (size > segment.size or table_off != HEADER_SPACE
                or data_off < table_off + capacity * DESC.size or data_off > size):
            raise AreaError("buffer area header is inconsistent")
        self.size = size
        self.capacity = capacity
        self.prefix_zone = prefix
        self.data_offset = data_off
        self.token = bytes(token)

    @property
    def buf(self) -> memoryview:
        return self.segment.buf

    def descriptor(self, buffer_id: int) -> tuple[int, int] | None:
        """(data offset, size) of an allocated buffer, or None for an invalid handle."""
        if not 1 <= buffer_id <= self.capacity:
            return None
        at = HEADER_SPACE + (buffer_id - 1) * DESC.size
        off, size, tag = DESC.unpack_from(self.segment.buf, at)
        if tag != IN_USE:
            return None
        return off, size

    def check_reference(self, buffer_id: int, offset: int, size: int) -> bool:
        """Is [offset, offset+size) inside allocated buffer ``buffer_id``?"""
        desc = self.descriptor(buffer_id)
        if desc is None:
            return False
        off, bsize = desc
        return off <= offset and offset + size <= off + bsize and off + bsize <= self.size


class Allocator:
    """The engine's side: lays out the area and hands out aligned buffers (first fit)."""

    def __init__(self, segment: Segment, capacity: int, prefix_zone: int, token: bytes) -> None:
        self.segment = segment
        self.capacity = capacity
        self.prefix_zone = prefix_zone
        data_off = _align_up(HEADER_SPACE + capacity * DESC.size, 65536)
        if data_off > segment.size:
            raise AreaError("area too small for its descriptor table")
        HEADER.pack_into(segment.buf, 0, MAGIC, VERSION, segment.size, HEADER_SPACE, capacity,
                         prefix_zone, data_off, 0, token)
        self.data_offset = data_off
        self._free: list[tuple[int, int]] = [(data_off, segment.size - data_off)]  # (start, len)
        self._ids = list(range(capacity, 0, -1))
        self._blocks: dict[int, tuple[int, int, int]] = {}  # id -> (block start, block len, data)

    @staticmethod
    def area_size(requests: list[tuple[int, int, int]], prefix_zone: int,
                  extra_ids: int = 64) -> tuple[int, int]:
        """(segment size, table capacity) for RequestBuffers requests (size, alignment, count)."""
        capacity = sum(c for _s, _a, c in requests) + extra_ids
        data_off = _align_up(HEADER_SPACE + capacity * DESC.size, 65536)
        total = data_off
        for size, alignment, count in requests:
            a = max(alignment, 64)
            total += count * _align_up(prefix_zone + size + a, 64)
        return total, capacity

    def allocate(self, size: int, alignment: int) -> tuple[int, int] | None:
        """(buffer id, data offset) or None when no space / ids are left."""
        if not self._ids or size <= 0:
            return None
        a = max(alignment, 1)
        for i, (start, length) in enumerate(self._free):
            data = _align_up(start + self.prefix_zone, a)
            end = data + size
            if end <= start + length:
                bid = self._ids.pop()
                block_end = _align_up(end, 64)
                block_end = min(block_end, start + length)
                rest = start + length - block_end
                if rest:
                    self._free[i] = (block_end, rest)
                else:
                    del self._free[i]
                self._blocks[bid] = (start, block_end - start, data)
                DESC.pack_into(self.segment.buf, HEADER_SPACE + (bid - 1) * DESC.size,
                               data, size, IN_USE)
                return bid, data
        return None

    def free(self, buffer_id: int) -> bool:
        block = self._blocks.pop(buffer_id, None)
        if block is None:
            return False
        DESC.pack_into(self.segment.buf, HEADER_SPACE + (buffer_id - 1) * DESC.size, 0, 0, 0)
        self._ids.append(buffer_id)
        start, length, _data = block
        self._free.append((start, length))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for s, n in self._free:
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((s, n))
        self._free = merged
        return True

    def contains(self, buffer_id: int) -> bool:
        return buffer_id in self._blocks
