"""Where a set's objects live, and what they are called.

A set is identified by (instance, name).  Its objects are named after a short hash of that pair
so that any set name (up to 255 UTF-8 bytes, no backslash, §1.3) maps to POSIX names that fit
macOS's 30-character shm limit and the 107-byte ``sun_path``.  The human name is stored inside
the control segment.  See docs/wire.md "Objects".
"""

from __future__ import annotations

import hashlib
import os
import tempfile


def _namespace() -> str:
    """``$VDISIM_NAMESPACE`` (up to 4 letters or digits) separates independent groups of
    engines and clients on one host: their objects are ``vdisim<ns>-...``.  Test runs use it
    so that concurrent runs do not see each other's segments."""
    ns = os.environ.get("VDISIM_NAMESPACE", "")
    if len(ns) > 4 or (not ns.isalnum() and ns):
        raise ValueError(f"VDISIM_NAMESPACE must be up to 4 letters or digits, not {ns!r}")
    return ns


PREFIX = f"vdisim{_namespace()}-"
MAX_NAME_BYTES = 255


def valid_set_name(name: object) -> bool:
    """CreateFileMapping rules (§1.3 [D]): any character but backslash; non-empty; vdisim
    also limits the UTF-8 length to 255 bytes and refuses NUL [I]."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    try:
        return len(name.encode("utf-8")) <= MAX_NAME_BYTES
    except UnicodeEncodeError:
        return False


def valid_instance(instance: object) -> bool:
    """CreateEx instance: None or "" = default; no ``machine\\`` prefix (§1.4 [D])."""
    if instance is None:
        return True
    return isinstance(instance, str) and "\\" not in instance and len(instance) <= 128


def normalize_instance(instance: str | None) -> str:
    return (instance or "MSSQLSERVER").upper()  # instance names are case-insensitive [I]


def set_key(instance: str | None, name: str) -> str:
    """16 hex digits naming a set's objects.  Set names match case-sensitively (§1.3)."""
    raw = normalize_instance(instance).encode() + b"\0" + name.encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:16]


def control_segment_name(key: str) -> str:
    return f"{PREFIX}{key}-c"  # 24 chars with the leading slash: fits macOS


def buffer_segment_name(key: str, generation: int) -> str:
    return f"{PREFIX}{key}-b{generation & 0xFFFF:x}"


def runtime_dir() -> str:
    """A private (0700) directory for control sockets: ``$VDISIM_RUNTIME_DIR`` or
    ``<tmp>/vdisim-<uid>``.  Created if missing; refused if another user owns it."""
    path = os.environ.get("VDISIM_RUNTIME_DIR") or os.path.join(
        tempfile.gettempdir(), f"vdisim-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.stat(path)
    if st.st_uid != os.geteuid():
        raise PermissionError(f"runtime directory {path} belongs to uid {st.st_uid}")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def socket_path(key: str) -> str:
    return os.path.join(runtime_dir(), f"{key}.sock")
