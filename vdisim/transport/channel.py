"""A framed, connected AF_UNIX stream: the control channel and the liveness signal.

EOF, ECONNRESET and EPIPE all mean the same thing: the peer is gone (:class:`PeerGone`).
A peer that stops reading makes ``send`` fail after ``SEND_TIMEOUT`` seconds instead of
blocking forever.  Sockets live in the private runtime directory (0700) and are created 0600;
the accepting side checks ``SO_PEERCRED`` where the platform has it.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import sys
import threading

from vdisim import hooks
from vdisim.transport import frames
from vdisim.transport.frames import Frame, FrameError

SEND_TIMEOUT = 10.0
_RECV_CHUNK = 1 << 16


class PeerGone(Exception):
    """The peer closed the connection or died."""


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(SEND_TIMEOUT)
        self.sock = sock
        self._send_lock = threading.Lock()
        self._deferred: list[bytes] = []
        self._rbuf = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- sending --------------------------------------------------------------------------
    def defer(self, data: bytes) -> None:
        """Queue bytes to go out with the next :meth:`send` (one syscall for both)."""
        with self._send_lock:
            self._deferred.append(data)

    def send(self, data: bytes = b"") -> None:
        with self._send_lock:
            if self._deferred:
                data = b"".join(self._deferred) + data
                self._deferred.clear()
            if not data:
                return
            if self.closed:
                raise PeerGone("channel closed")
            try:
                # One write(2) on the fast path (sendall on a socket with a timeout polls
                # first); the fd is non-blocking, so a full socket falls back to sendall,
                # which waits at most SEND_TIMEOUT.
                try:
                    n = os.write(self.sock.fileno(), data)
                except BlockingIOError:
                    n = 0
                if n < len(data):
                    self.sock.sendall(memoryview(data)[n:])
            except (OSError, TimeoutError) as exc:
                raise PeerGone(f"send failed: {exc}") from exc

    def send_quietly(self, data: bytes = b"") -> bool:
        try:
            self.send(data)
            return True
        except PeerGone:
            return False

    # -- receiving ------------------------------------------------------------------------
    def read_available(self) -> list[Frame]:
        """Read what the socket has (call when it is readable) and return complete frames."""
        try:
            # read(2) on the non-blocking fd: no poll first, and never waits.
            chunk = os.read(self.sock.fileno(), _RECV_CHUNK)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise PeerGone(str(exc)) from exc
        except (BlockingIOError, InterruptedError, TimeoutError):
            return []
        except OSError as exc:
            raise PeerGone(str(exc)) from exc
        if not chunk:
            raise PeerGone("EOF")
        self._rbuf += chunk
        return self._parse()

    def _parse(self) -> list[Frame]:
        out, off = frames.decode_frames(self._rbuf)
        if off:
            del self._rbuf[:off]
        return out

    def take_buffered(self) -> list[Frame]:
        """Complete frames already read from the socket but not yet returned (``recv_frame``
        keeps what arrived after the frame it returns); a reader must take them before it
        waits for the socket to become readable again."""
        return self._parse()

    def recv_frame(self, timeout: float | None) -> Frame:
        """Block for one frame (for handshakes).  Raises TimeoutError or PeerGone."""
        deadline = None if timeout is None else hooks.monotonic() + timeout
        pending = self._parse()
        while not pending:
            remaining = None if deadline is None else max(0.0, deadline - hooks.monotonic())
            if hooks.ACTIVE:
                hooks.wait_io("channel.recv_frame", [self.sock.fileno()], deadline)
                remaining = 0.0
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                raise TimeoutError("no frame before the deadline")
            pending = self.read_available()
        first, rest = pending[0], pending[1:]
        if rest:  # put back what we did not consume
            self._rbuf[:0] = b"".join(f.encode() for f in rest)
        return first

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def listen(path: str) -> socket.socket:
    """Bind a listening AF_UNIX socket at ``path`` with mode 0600.

    The mode is set between bind and listen, when nobody can connect yet (connect needs a
    listening socket), and never through the umask: the umask is per process, and changing it
    here raced with other threads of the caller's program (two overlapping Creates could leave
    it at 0177 for good, and every file the program made afterwards was 0600)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    try:
        os.chmod(path, 0o600)
        sock.listen(128)
    except OSError:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return sock


def connect(path: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def peer_uid(sock: socket.socket) -> int | None:
    """The peer's uid (Linux SO_PEERCRED), or None where the platform cannot tell."""
    if sys.platform.startswith("linux"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    return None


def socket_alive(path: str) -> bool:
    """True if something accepts connections at ``path``."""
    try:
        s = connect(path, timeout=0.5)
    except OSError:
        return False
    s.close()
    return True


__all__ = ["Channel", "FrameError", "PeerGone", "connect", "listen", "peer_uid", "socket_alive"]
