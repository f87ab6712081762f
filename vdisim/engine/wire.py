"""The statement channel between a connection and the engine process (docs/wire.md).

Same 12-byte header layout as the VDI channel (``<4sHHI``) with magic ``b"VDE1"``.  Payloads are
UTF-8: the SQL text for EXECUTE, JSON objects for everything else (plans, messages, rowsets,
script calls).  JSON, not pickle: any language can speak it.
"""

from __future__ import annotations

import enum
import json
import socket
import struct
import threading
from typing import Any

MAGIC = b"VDE1"
HEADER = struct.Struct("<4sHHI")
MAX_PAYLOAD = 16 << 20


class WireError(Exception):
    pass


class Msg(enum.IntEnum):
    EXECUTE = 1  # client -> engine: SQL text
    RUN_PLAN = 2  # client -> engine: plan JSON
    SCRIPT = 3  # client -> engine: {"op": ..., "args": {...}}
    ATTENTION = 4  # client -> engine: cancel the running request
    HARNESS = 5  # client -> engine: client-harness request JSON (arm / collect / disarm)
    MESSAGE = 10  # engine -> client: SqlMessage JSON
    ROWSET = 11  # engine -> client: Rowset JSON
    DONE = 12  # engine -> client: {"ok": bool, "attention": bool}
    SCRIPT_RESULT = 13  # engine -> client: JSON result of a SCRIPT call
    HARNESS_RESULT = 14  # engine -> client: JSON result of a HARNESS request


def encode(kind: Msg, payload: bytes | str | dict[str, Any]) -> bytes:
    if isinstance(payload, dict):
        payload = json.dumps(payload, separators=(",", ":"))
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if len(payload) > MAX_PAYLOAD:
        raise WireError("payload too large")
    return HEADER.pack(MAGIC, kind, 0, len(payload)) + payload


class Stream:
    """Blocking framed reader/writer over a connected socket (one per connection)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._buf = bytearray()

    def send(self, kind: Msg, payload: bytes | str | dict[str, Any]) -> None:
        data = encode(kind, payload)
        with self._lock:
            self.sock.sendall(data)

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("connection closed")
            self._buf += chunk

    def recv(self) -> tuple[Msg, bytes]:
        self._fill(HEADER.size)
        magic, kind, _flags, length = HEADER.unpack_from(self._buf)
        if magic != MAGIC:
            raise WireError(f"bad magic {bytes(magic)!r}")
        if length > MAX_PAYLOAD:
            raise WireError("payload too large")
        try:
            msg = Msg(kind)
        except ValueError:
            raise WireError(f"unknown message type {kind}") from None
        self._fill(HEADER.size + length)
        payload = bytes(self._buf[HEADER.size:HEADER.size + length])
        del self._buf[:HEADER.size + length]
        return msg, payload

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def parse_json(payload: bytes) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"payload is not JSON: {exc}") from exc


def parse_address(address: str) -> tuple[int, Any]:
    """``unix:/path`` or a path containing '/' -> AF_UNIX; ``host:port`` -> AF_INET."""
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[5:]
    if "/" in address:
        return socket.AF_UNIX, address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"engine address {address!r}: use unix:/path or host:port")
    return socket.AF_INET, (host, int(port))
