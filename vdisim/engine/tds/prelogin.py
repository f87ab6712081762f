"""PRELOGIN (MS-TDS §2.2.6.5): option table parse and build.

The message is a table of (token, big-endian offset, big-endian length) entries ended by
0xFF, followed by the option data.  The server answers VERSION, ENCRYPTION, INSTOPT,
THREADID (empty) and MARS (0).
"""

from __future__ import annotations

import struct

import attrs

VERSION, ENCRYPTION, INSTOPT, THREADID, MARS, TRACEID, FEDAUTHREQUIRED, NONCEOPT = range(8)
TERMINATOR = 0xFF

ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0, 1, 2, 3


class PreloginError(ValueError):
    pass


@attrs.frozen
class Prelogin:
    """Options of a PRELOGIN message (raw bytes per option token)."""

    options: tuple[tuple[int, bytes], ...]

    def get(self, token: int) -> bytes | None:
        for t, v in self.options:
            if t == token:
                return v
        return None

    @property
    def encryption(self) -> int | None:
        v = self.get(ENCRYPTION)
        return v[0] if v else None

    def pack(self) -> bytes:
        table = bytearray()
        data = bytearray()
        offset = 5 * len(self.options) + 1
        for token, value in self.options:
            table += struct.pack(">BHH", token, offset + len(data), len(value))
            data += value
        return bytes(table) + bytes((TERMINATOR,)) + bytes(data)


def parse(payload: bytes) -> Prelogin:
    options: list[tuple[int, bytes]] = []
    pos = 0
    while True:
        if pos >= len(payload):
            raise PreloginError("PRELOGIN option table without terminator")
        token = payload[pos]
        if token == TERMINATOR:
            break
        if pos + 5 > len(payload):
            raise PreloginError("PRELOGIN option table truncated")
        _, offset, length = struct.unpack_from(">BHH", payload, pos)
        if offset + length > len(payload):
            raise PreloginError(f"PRELOGIN option {token} points past the message")
        options.append((token, payload[offset:offset + length]))
        pos += 5
    return Prelogin(tuple(options))


def server_reply(encryption: int, version: tuple[int, int, int] = (16, 0, 1000)) -> Prelogin:
    major, minor, build = version
    return Prelogin((
        (VERSION, struct.pack(">BBHH", major, minor, build, 0)),
        (ENCRYPTION, bytes((encryption,))),
        (INSTOPT, b"\x00"),
        (THREADID, b""),
        (MARS, b"\x00"),
    ))


def negotiate(client: int | None, *, tls_available: bool) -> int:
    """The server's ENCRYPTION answer (MS-TDS §2.2.6.5 table).  Without a certificate the
    server answers NOT_SUP; with one it mirrors the client (OFF -> OFF: TLS for LOGIN7 only;
    ON or REQ -> ON; NOT_SUP -> NOT_SUP)."""
    if not tls_available:
        return ENCRYPT_NOT_SUP
    if client in (ENCRYPT_ON, ENCRYPT_REQ):
        return ENCRYPT_ON
    if client == ENCRYPT_OFF:
        return ENCRYPT_OFF
    return ENCRYPT_NOT_SUP


__all__ = [
    "ENCRYPTION",
    "ENCRYPT_NOT_SUP",
    "ENCRYPT_OFF",
    "ENCRYPT_ON",
    "ENCRYPT_REQ",
    "MARS",
    "THREADID",
    "VERSION",
    "Prelogin",
    "PreloginError",
    "negotiate",
    "parse",
    "server_reply",
]
