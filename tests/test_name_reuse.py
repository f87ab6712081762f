"""A backup tool that reuses its set name right after a crash must not lose the new set to the
cleanup of the dead one (found by the race fuzzer: the dead-client cleanup checked the owner
lock, then unlinked by name).  Cleanup now unlinks only the very segment it checked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from vdisim.transport import naming
from vdisim.transport.segments import SHM_DIR, remove_if_dead, remove_when_dead

CHILD = """
import sys, time
from vdisim.client import VirtualDeviceSet
from vdisim.protocol.records import VDConfig
vds = VirtualDeviceSet()
assert vds.create(sys.argv[1], VDConfig(device_count=1)) == 0
print("ready", flush=True)
time.sleep(60)
"""


def test_cleanup_of_a_dead_set_spares_a_new_set_with_its_name() -> None:
    name = "{" + str(uuid.uuid4()).upper() + "}"
    seg = naming.control_segment_name(naming.set_key(None, name))
    path = os.path.join(SHM_DIR, seg)
    child = subprocess.Popen([sys.executable, "-c", CHILD, name], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        old_inode = os.stat(path).st_ino
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    # The tool restarts and creates its set again under the same name.  Catch the new
    # creator in its window between O_CREAT and taking its owner lock: a new file, no lock.
    os.unlink(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        new_inode = os.fstat(fd).st_ino
        assert new_inode != old_inode
        # A late cleanup of the dead set (what the engine does when its client died) must
        # leave the new file alone, although no one holds its lock yet.
        assert remove_if_dead(seg, inode=old_inode) is False
        assert remove_when_dead(seg, grace_s=0.2, inode=old_inode) is False
        assert os.stat(path).st_ino == new_inode
    finally:
        os.close(fd)
        os.unlink(path)
        sock = naming.socket_path(naming.set_key(None, name))
        if os.path.exists(sock):
            os.unlink(sock)


def test_dead_owner_segment_is_removed_when_it_is_the_one_checked() -> None:
    name = "{" + str(uuid.uuid4()).upper() + "}"
    seg = naming.control_segment_name(naming.set_key(None, name))
    path = os.path.join(SHM_DIR, seg)
    child = subprocess.Popen([sys.executable, "-c", CHILD, name], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        inode = os.stat(path).st_ino
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert remove_when_dead(seg, grace_s=2.0, inode=inode) is True
    assert not os.path.exists(path)
    sock = naming.socket_path(naming.set_key(None, name))
    if os.path.exists(sock):
        os.unlink(sock)  # the dead child's socket file (the engine removes it in real runs)
