"""Shared-memory segments: create, attach, lock, release, and sweep stale ones.

Rules (python-platform.md §1, docs/wire.md "Objects"):

- Segments are ``multiprocessing.shared_memory.SharedMemory`` objects, mode 0600.
- The creator holds ``flock(LOCK_SH)`` on the segment for as long as it lives; the kernel drops
  the lock when the process dies, so anyone can tell a dead owner's segment (``LOCK_EX|LOCK_NB``
  succeeds) and remove it.  The creator keeps the resource tracker's registration (a lone
  SIGKILLed creator's tracker unlinks ~40 ms later); survivors and the start-up sweep cover the
  rest.
- A process that only attaches never registers with its resource tracker (3.13: ``track=False``;
  3.11/3.12: registration is suppressed while attaching), so it never unlinks or warns about
  another process's segment.
- ``close()`` never fails because a caller still holds a view: the mapping is then left to the
  garbage collector, the name is still unlinked by its owner.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing import shared_memory

from vdisim.transport.naming import PREFIX

SHM_DIR = "/dev/shm"
MADV_POPULATE_WRITE = 23  # Linux >= 5.14; not exported by the 3.11 mmap module

_attach_lock = threading.Lock()


class _NoTracking:
    """Stands in for ``resource_tracker`` inside shared_memory while attaching (3.11/3.12)."""

    @staticmethod
    def register(name: str, rtype: str) -> None:
        pass

    @staticmethod
    def unregister(name: str, rtype: str) -> None:
        pass


@contextlib.contextmanager
def _untracked() -> Iterator[None]:
    with _attach_lock:
        saved = shared_memory.resource_tracker  # type: ignore[attr-defined]
        shared_memory.resource_tracker = _NoTracking  # type: ignore[attr-defined]
        try:
            yield
        finally:
            shared_memory.resource_tracker = saved  # type: ignore[attr-defined]


class SegmentError(Exception):
    """A segment could not be created or attached.  ``no_space`` tells a full /dev/shm."""

    def __init__(self, message: str, *, no_space: bool = False, exists: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space
        self.exists = exists


class Segment:
    """One shared-memory segment owned (created) or attached by this process."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool, size: int) -> None:
        self._shm = shm
        self.owner = owner
        self.name = shm.name
        self.size = size  # logical size; never trust shm.size (page rounding on macOS)
        assert shm.buf is not None
        self.buf: memoryview = shm.buf
        self._closed = False
        try:  # identifies this segment's file even if its name is reused later
            self.inode: int | None = os.fstat(_fd(shm)).st_ino
        except (OSError, SegmentError):
            self.inode = None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, size: int, *, reserve: bool = True,
               prefault: bool = False) -> Segment:
        """Create ``name`` exclusively (mode 0600), take the owner lock and reserve its pages.

        ``reserve`` uses posix_fallocate so a /dev/shm too small fails here with
        ``SegmentError(no_space=True)`` instead of a SIGBUS later (python-platform.md §1.7).
        """
        if size <= 0:
            raise SegmentError(f"segment size must be positive, got {size}")
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError as exc:
            raise SegmentError(f"segment {name} exists", exists=True) from exc
        except OSError as exc:
            raise SegmentError(f"cannot create segment {name}: {exc}",
                               no_space=exc.errno in (errno.ENOSPC, errno.ENOMEM)) from exc
        fd = _fd(shm)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if reserve and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            if prefault:
                _prefault(shm)
        except OSError as exc:
            _destroy(shm)
            raise SegmentError(f"cannot reserve {size} bytes for {name}: {exc}",
                               no_space=exc.errno in (errno.ENOSPC, errno.ENOMEM)) from exc
        return cls(shm, True, size)

    @classmethod
    def attach(cls, name: str, *, expect_uid: int | None = None) -> Segment:
        """Attach an existing segment without letting this process own it.

        Refuses a segment owned by another uid or readable by others (name squatting,
        python-platform.md §1.3).
        """
        try:
            if sys.version_info >= (3, 13):
                shm = shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
            else:
                with _untracked():
                    shm = shared_memory.SharedMemory(name=name)
        except FileNotFoundError as exc:
            raise SegmentError(f"no segment {name}") from exc
        except OSError as exc:
            raise SegmentError(f"cannot attach segment {name}: {exc}") from exc
        st = os.fstat(_fd(shm))
        uid = os.geteuid() if expect_uid is None else expect_uid
        if st.st_uid != uid or st.st_mode & 0o077:
            _close_quietly(shm)
            raise SegmentError(
                f"segment {name} is owned by uid {st.st_uid} mode {st.st_mode & 0o777:o}; "
                f"expected uid {uid} mode 0600")
        return cls(shm, False, st.st_size)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap (and, for the owner, unlink).  Never raises for views callers still hold."""
        if self._closed:
            return
        self._closed = True
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()
        self.buf = memoryview(b"")
        _close_quietly(self._shm)

    @property
    def closed(self) -> bool:
        return self._closed


def _fd(shm: shared_memory.SharedMemory) -> int:
    fd = getattr(shm, "_fd", -1)
    if not isinstance(fd, int) or fd < 0:
        raise SegmentError("shared memory has no file descriptor on this platform")
    return fd


def _prefault(shm: shared_memory.SharedMemory) -> None:
    mm = getattr(shm, "_mmap", None)
    if isinstance(mm, mmap.mmap):
        try:
            mm.madvise(MADV_POPULATE_WRITE)
            return
        except (OSError, ValueError, AttributeError):
            pass
    buf = shm.buf
    assert buf is not None
    for off in range(0, len(buf), mmap.PAGESIZE):
        buf[off] = 0


def _close_quietly(shm: shared_memory.SharedMemory) -> None:
    try:
        shm.close()
    except BufferError:
        # A caller still holds a view.  The half-closed object keeps the mmap alive until the
        # views die; close the descriptor now so the owner lock and fd are released.
        fd = getattr(shm, "_fd", -1)
        if isinstance(fd, int) and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
            shm._fd = -1  # type: ignore[attr-defined]


def _destroy(shm: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()
    _close_quietly(shm)


def owner_alive(name: str) -> bool | None:
    """True if the segment's creator still holds its lock, False if not, None if gone."""
    path = os.path.join(SHM_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except PermissionError:
        return True  # someone else's: not ours to judge
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def remove_if_dead(name: str, *, min_age: float = 0.0, inode: int | None = None) -> bool:
    """Unlink segment ``name`` if its owner is dead.  Returns True if removed.

    ``min_age`` (seconds) protects a segment created a moment ago whose creator has not yet
    taken its lock (the start-up sweep uses 2 s; a survivor that saw its peer die uses 0).
    ``inode``, when given, is the segment the caller knew (``Segment.inode``): a new segment
    created under the same name since -- a backup tool reusing its set name right after a
    crash -- is a different file and is left alone.  The unlink happens while this process
    holds the owner lock of the very file it checked, and only if the name still refers to it.
    """
    path = os.path.join(SHM_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, PermissionError):
        return False
    try:
        st = os.fstat(fd)
        if inode is not None and st.st_ino != inode:
            return False
        if min_age and time.time() - st.st_ctime < min_age:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # the owner is alive
        try:
            if os.stat(path).st_ino != st.st_ino:
                return False  # the name was reused meanwhile
            os.unlink(path)
            return True
        except (FileNotFoundError, PermissionError):
            return False
    finally:
        os.close(fd)


def remove_when_dead(name: str, grace_s: float = 2.0, inode: int | None = None) -> bool:
    """A peer's connection dropped: wait up to ``grace_s`` for the kernel to release its owner
    lock on ``name`` (it may report the closed socket first), then unlink the segment if its
    owner is dead.  False if the owner is still alive (it only dropped the connection), or if
    ``name`` now names another segment than ``inode`` (reused by a new set)."""
    deadline = time.monotonic() + grace_s
    while owner_alive(name):
        if inode is not None and _inode_of(name) != inode:
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    if inode is not None and _inode_of(name) not in (inode, None):
        return False
    remove_if_dead(name, inode=inode)
    return True


def _inode_of(name: str) -> int | None:
    try:
        return os.stat(os.path.join(SHM_DIR, name)).st_ino
    except OSError:
        return None


def sweep_stale(prefix: str = PREFIX, min_age: float = 2.0) -> list[str]:
    """Remove every vdisim segment in /dev/shm whose owner is dead (start-up cleanup)."""
    removed: list[str] = []
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.startswith(prefix) and remove_if_dead(entry, min_age=min_age):
            removed.append(entry)
    return removed
