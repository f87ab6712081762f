"""Shared fixtures: one engine process per test session, and a leak check after every test."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vdisim.client import VirtualDeviceSet
from vdisim.engine import Connection, Engine
from vdisim.transport import naming
from vdisim.transport.segments import SHM_DIR

# Replay files written by failing cases in tests go to a temporary directory, not the cwd.
os.environ.setdefault("VDISIM_REPLAY_DIR", tempfile.mkdtemp(prefix="vdisim-test-replays-"))


def shm_entries() -> set[str]:
    try:
        return {e for e in os.listdir(SHM_DIR) if e.startswith(naming.PREFIX)}
    except FileNotFoundError:
        return set()


def socket_entries() -> set[str]:
    d = naming.runtime_dir()
    return {e for e in os.listdir(d) if e.endswith(".sock")}


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``pred`` until true or the deadline passes (tests never sleep blindly)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    eng = Engine.start()
    yield eng
    eng.stop()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    c = engine.connect()
    yield c
    c.close()


@pytest.fixture
def set_name() -> str:
    return "{" + str(uuid.uuid4()).upper() + "}"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """No shared-memory segment or socket file may survive a test."""
    before_shm, before_sock = shm_entries(), socket_entries()
    yield
    ok = wait_until(lambda: shm_entries() <= before_shm and socket_entries() <= before_sock,
                    timeout=5.0)
    assert ok, (f"leaked segments {sorted(shm_entries() - before_shm)} "
                f"sockets {sorted(socket_entries() - before_sock)}")


class Blocked:
    """Run one blocking call on a thread; remember its result and when it returned."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.returned_at: float | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # pragma: no cover - reported by the test
                self.error = exc
            self.returned_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 5.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "blocked call did not return"
        assert self.error is None, f"blocked call raised {self.error!r}"
        return self.result


def wait_blocked(vds: VirtualDeviceSet, waiters: int = 1) -> None:
    """Wait until ``waiters`` API calls of ``vds`` sleep on the set's condition variable."""
    core = vds._core
    assert core is not None
    assert wait_until(lambda: len(core.cond._waiters) >= waiters, 5.0),  \
        "the call never blocked"
