"""TDS packets (MS-TDS §2.2.3): the 8-byte header and message framing, sans I/O.

Header: type, status (0x01 = end of message), length (big-endian, header included), SPID
(big-endian), packet id, window.  A message is one or more packets of the same type; the
last carries the EOM bit.
"""

from __future__ import annotations

import struct

import attrs

HEADER = struct.Struct(">BBHHBB")

# Packet types
SQL_BATCH, PRE_TDS7_LOGIN, RPC, REPLY, ATTENTION = 0x01, 0x02, 0x03, 0x04, 0x06
BULK_LOAD, FEDAUTH_TOKEN, TRANSACTION_MANAGER, LOGIN7, SSPI, PRELOGIN = (
    0x07, 0x08, 0x0E, 0x10, 0x11, 0x12)

# Status bits
EOM, IGNORE, RESET_CONNECTION, RESET_CONNECTION_SKIP_TRAN = 0x01, 0x02, 0x08, 0x10

MIN_PACKET, MAX_PACKET, DEFAULT_PACKET = 512, 32767, 4096


class ProtocolError(Exception):
    """The client sent something that is not TDS."""


@attrs.frozen
class Header:
    type: int
    status: int
    length: int
    spid: int = 0
    packet_id: int = 1
    window: int = 0

    def pack(self) -> bytes:
        return HEADER.pack(self.type, self.status, self.length, self.spid, self.packet_id,
                           self.window)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        if len(data) < HEADER.size:
            raise ProtocolError("short packet header")
        t, s, n, spid, pid, win = HEADER.unpack_from(data)
        if n < HEADER.size:
            raise ProtocolError(f"packet length {n} is shorter than its header")
        return cls(t, s, n, spid, pid, win)


def packets(kind: int, payload: bytes, *, packet_size: int = DEFAULT_PACKET, spid: int = 0,
            final: bool = True, first_id: int = 1) -> list[bytes]:
    """Split ``payload`` into packets of at most ``packet_size`` bytes (header included).
    ``final`` puts EOM on the last one (a message sent in several flushes leaves it off
    until its end).  An empty payload still makes one packet."""
    room = packet_size - HEADER.size
    if room <= 0:
        raise ValueError("packet size too small")
    chunks = [payload[i:i + room] for i in range(0, len(payload), room)] or [b""]
    out = []
    for k, chunk in enumerate(chunks):
        last = k == len(chunks) - 1
        status = EOM if (last and final) else 0
        pid = (first_id + k) % 256
        out.append(Header(kind, status, HEADER.size + len(chunk), spid, pid).pack() + chunk)
    return out


def pack_message(kind: int, payload: bytes, *, packet_size: int = DEFAULT_PACKET,
                 spid: int = 0) -> bytes:
    return b"".join(packets(kind, payload, packet_size=packet_size, spid=spid))


class MessageReader:
    """Assembles messages from bytes fed in any pieces (sans I/O)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._type: int | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> tuple[Header, bytes] | None:
        """One whole packet if buffered, else None."""
        if len(self._buf) < HEADER.size:
            return None
        h = Header.unpack(bytes(self._buf[:HEADER.size]))
        if len(self._buf) < h.length:
            return None
        payload = bytes(self._buf[HEADER.size:h.length])
        del self._buf[:h.length]
        return h, payload

    def next_message(self) -> tuple[int, int, bytes] | None:
        """(type, status of the last packet, payload) of one whole message, or None.
        An ATTENTION packet is a message of its own even without EOM."""
        while True:
            got = self.next_packet()
            if got is None:
                return None
            h, payload = got
            if h.type == ATTENTION:
                return h.type, h.status, payload
            if self._type is not None and h.type != self._type:
                raise ProtocolError(f"packet type 0x{h.type:02X} inside a 0x{self._type:02X} "
                                    "message")
            self._type = h.type
            self._parts.append(payload)
            if h.status & EOM:
                kind, self._type = self._type, None
                data = b"".join(self._parts)
                self._parts = []
                return kind, h.status, data

    @property
    def pending(self) -> bytes:
        """Bytes buffered beyond whole packets (after the TLS switch they belong to TLS)."""
        return bytes(self._buf)

    def clear(self) -> None:
        self._buf.clear()


__all__ = [
    "ATTENTION", "EOM", "HEADER", "LOGIN7", "PRELOGIN", "REPLY", "RPC", "SQL_BATCH",
    "TRANSACTION_MANAGER", "Header", "MessageReader", "ProtocolError", "pack_message",
    "packets",
]
