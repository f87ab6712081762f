"""TLS for the TDS endpoint, with the standard library's ``ssl.MemoryBIO`` only.

Three ways a client gets TLS (MS-TDS §2.2.6.5, §3.2.5.x, TDS 8):

* wrapped: after PRELOGIN agrees on encryption, the TLS handshake travels as the payload of
  PRELOGIN (0x12) packets; after it TLS records flow raw on the socket.  Capped at TLS 1.2
  (ODBC Driver 18 does not finish a wrapped TLS 1.3 handshake) and without session tickets
  (tickets sent after the handshake would be misread as TDS).
* login-only: as wrapped, but only the LOGIN7 message is encrypted; both sides then drop TLS.
* strict (TDS 8): the client opens with a TLS ClientHello on the bare socket (ALPN
  ``tds/8.0``); PRELOGIN and everything after run inside TLS.

All TLS state lives in an ``ssl.SSLObject`` guarded by one lock, so the endpoint's reader
thread and a statement's writer threads never use it at once.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from typing import Protocol


class Transport(Protocol):
    def recv(self) -> bytes:
        """Some bytes; b"" at end of stream."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class PlainTransport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def recv(self) -> bytes:
        return self.sock.recv(65536)

    def send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class TlsTransport:
    """TLS records raw on the socket, over an SSLObject whose handshake is done."""

    def __init__(self, sock: socket.socket, obj: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self.sock = sock
        self.obj = obj
        self.incoming = incoming
        self.outgoing = outgoing
        self._lock = threading.Lock()

    def _drain(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def recv(self) -> bytes:
        while True:
            with self._lock:
                try:
                    data = self.obj.read(65536)
                    self._drain()
                    return data
                except ssl.SSLWantReadError:
                    self._drain()
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
            raw = self.sock.recv(65536)
            if not raw:
                return b""
            with self._lock:
                self.incoming.write(raw)

    def send(self, data: bytes) -> None:
        with self._lock:
            self.obj.write(data)
            self._drain()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def server_objects(ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return ctx.wrap_bio(incoming, outgoing, server_side=True), incoming, outgoing


def strict_handshake(sock: socket.socket, ctx: ssl.SSLContext,
                     timeout: float = 30.0) -> TlsTransport:
    """TDS 8: a plain TLS handshake on the socket (the ClientHello is already waiting)."""
    obj, incoming, outgoing = server_objects(ctx)
    sock.settimeout(timeout)
    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = outgoing.read()
                if out:
                    sock.sendall(out)
                raw = sock.recv(65536)
                if not raw:
                    raise ConnectionError("client closed during the TLS handshake") from None
                incoming.write(raw)
        out = outgoing.read()
        if out:
            sock.sendall(out)
    finally:
        sock.settimeout(None)
    return TlsTransport(sock, obj, incoming, outgoing)


def _base_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.num_tickets = 0  # no NewSessionTicket records after the handshake
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def wrapped_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS inside PRELOGIN (full or login-only): TLS 1.2 at most."""
    ctx = _base_context(cert, key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def strict_context(cert: str, key: str) -> ssl.SSLContext:
    """TDS 8 strict: TLS 1.2 or 1.3, ALPN tds/8.0."""
    ctx = _base_context(cert, key)
    ctx.set_alpn_protocols(["tds/8.0"])
    return ctx


def generate_certificate(cert: str, key: str, *, common_name: str = "localhost") -> None:
    """A self-signed RSA-2048 certificate for ``common_name`` (SAN: it, localhost,
    127.0.0.1), made with the openssl command-line tool."""
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("openssl is not installed: cannot generate a certificate")
    for path in (cert, key):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    san = f"subjectAltName=DNS:{common_name},DNS:localhost,IP:127.0.0.1"
    subprocess.run([exe, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "3650", "-subj", f"/CN={common_name}",
                    "-addext", san], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)


__all__ = ["PlainTransport", "TlsTransport", "Transport", "generate_certificate",
           "server_objects", "strict_context", "strict_handshake", "wrapped_context"]
