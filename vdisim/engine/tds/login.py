"""LOGIN7 (MS-TDS §2.2.6.4) decode and the login response.

The fixed part is 36 bytes (length, TDS version, packet size, client program version, PID,
connection id, four option-flag bytes, time zone, LCID), followed by (offset, length in
characters) pairs of UTF-16LE fields: HostName, UserName, Password, AppName, ServerName,
Extension, CltIntName, Language, Database, then the 6-byte ClientID, SSPI and AtchDBFile;
TDS 7.2 adds ChangePassword and a 4-byte SSPI length.  A TDS 7.1 client (jTDS) sends the
shorter layout, without PRELOGIN.  The password is obfuscated: each byte had its nibbles
swapped and was XORed with 0xA5.
"""

from __future__ import annotations

import struct

import attrs

from vdisim.engine.tds import tokens
from vdisim.engine.tds.types import COLLATION

_FIXED = struct.Struct("<IIIIIIBBBBiI")
_FIELDS = ("hostname", "username", "password", "appname", "servername", "extension",
           "cltintname", "language", "database")


class LoginError(ValueError):
    pass


@attrs.frozen
class Login7:
    tds_version: int
    packet_size: int
    client_prog_version: int
    client_pid: int
    option_flags1: int
    option_flags2: int
    type_flags: int
    option_flags3: int
    hostname: str = ""
    username: str = ""
    password: str = ""
    appname: str = ""
    servername: str = ""
    cltintname: str = ""
    language: str = ""
    database: str = ""

    @property
    def integrated_security(self) -> bool:
        """fIntSecurity (OptionFlags2 bit 7): an SSPI/Kerberos login."""
        return bool(self.option_flags2 & 0x80)


def decode_password(data: bytes) -> str:
    plain = bytes((((b ^ 0xA5) << 4) & 0xF0) | (((b ^ 0xA5) >> 4) & 0x0F) for b in data)
    return plain.decode("utf-16-le", errors="replace")


def encode_password(text: str) -> bytes:
    """The client's obfuscation (tests build LOGIN7 messages with it)."""
    raw = text.encode("utf-16-le")
    return bytes(((((b << 4) & 0xF0) | (b >> 4)) ^ 0xA5) for b in raw)


def parse(payload: bytes) -> Login7:
    if len(payload) < _FIXED.size + 4 * len(_FIELDS):
        raise LoginError("LOGIN7 shorter than its fixed part")
    (length, version, packet_size, progver, pid, _conn, f1, f2, tf, f3, _tz,
     _lcid) = _FIXED.unpack_from(payload)
    if length > len(payload):
        raise LoginError(f"LOGIN7 says {length} bytes, got {len(payload)}")
    values: dict[str, str] = {}
    pos = _FIXED.size
    for name in _FIELDS:
        offset, chars = struct.unpack_from("<HH", payload, pos)
        pos += 4
        raw = payload[offset:offset + 2 * chars]
        if len(raw) != 2 * chars:
            raise LoginError(f"LOGIN7 field {name} points past the message")
        if name == "password":
            values[name] = decode_password(raw)
        elif name != "extension":
            values[name] = raw.decode("utf-16-le", errors="replace")
    return Login7(version, packet_size, progver, pid, f1, f2, tf, f3, **values)


def build(*, username: str = "sa", password: str = "", database: str = "",
          appname: str = "vdisim-test", hostname: str = "localhost",
          tds_version: int = tokens.TDS74, packet_size: int = 4096) -> bytes:
    """A LOGIN7 message as a client writes it (golden tests and the self-test client)."""
    fields = [hostname, username, None, appname, "localhost", "", "vdisim", "", database]
    header_len = _FIXED.size + 4 * len(_FIELDS) + 6 + 4 * 2 + (4 + 4 if tds_version >=
                                                               0x72000000 else 0)
    data = bytearray()
    pairs = bytearray()
    for i, text in enumerate(fields):
        raw = encode_password(password) if i == 2 else (text or "").encode("utf-16-le")
        pairs += struct.pack("<HH", header_len + len(data), len(raw) // 2)
        data += raw
    tail = bytes(6) + struct.pack("<HH", header_len + len(data), 0) \
        + struct.pack("<HH", header_len + len(data), 0)
    if tds_version >= 0x72000000:
        tail += struct.pack("<HHI", header_len + len(data), 0, 0)
    total = header_len + len(data)
    fixed = _FIXED.pack(total, tds_version, packet_size, 7, 1234, 0, 0xE0, 0x03, 0, 0, 0,
                        0x0409)
    return fixed + bytes(pairs) + tail + bytes(data)


def agreed_version(client: int) -> int:
    """The version LOGINACK answers: the client's, capped at 7.4 (a TDS 8 login, whose
    version field reads 0x08000000, is answered as 7.4)."""
    if client < 0x70000000 or client > tokens.TDS74:
        return tokens.TDS74
    return client


def negotiated_packet_size(requested: int) -> int:
    if requested == 0:
        return 4096
    return max(512, min(32767, requested))


def response(login: Login7, *, database: str, packet_size: int, version: int) -> bytes:
    """The tokens of a successful login: ENVCHANGE(database) + INFO 5701, ENVCHANGE
    (collation), ENVCHANGE(language) + INFO 5703, LOGINACK, ENVCHANGE(packet size), DONE."""
    from vdisim.engine.sqlerrors import SqlMessage

    return b"".join([
        tokens.envchange_text(tokens.ENV_DATABASE, database, "master"),
        tokens.message(SqlMessage(5701, 0, 2, f"Changed database context to '{database}'."),
                       version=version),
        tokens.envchange_bytes(tokens.ENV_COLLATION, COLLATION, b""),
        tokens.envchange_text(tokens.ENV_LANGUAGE, "us_english", ""),
        tokens.message(SqlMessage(5703, 0, 1, "Changed language setting to us_english."),
                       version=version),
        tokens.loginack(version),
        tokens.envchange_text(tokens.ENV_PACKETSIZE, str(packet_size), str(packet_size)),
        tokens.done(version=version),
    ])


def failure(username: str, *, version: int) -> bytes:
    """SQL Server's answer to a wrong password: ERROR 18456 class 14 state 1, DONE(ERROR)."""
    from vdisim.engine.sqlerrors import SqlMessage

    return (tokens.message(SqlMessage(18456, 14, 1, f"Login failed for user '{username}'."),
                           version=version)
            + tokens.done(tokens.DONE_ERROR, version=version))


__all__ = ["Login7", "LoginError", "agreed_version", "build", "decode_password",
           "encode_password", "failure", "negotiated_packet_size", "parse", "response"]
