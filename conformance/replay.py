"""Replay files: every failure anywhere in vdisim writes one, and ``vdisim replay FILE`` reruns
exactly that case.

A replay file is self-contained JSON (never pickle)::

    {"format": "vdisim-replay", "version": 1, "kind": "conform" | "client" | "fuzz" | ...,
     "seed": 1234, "rule": "CLOSE-VD_E_OPEN-ABORTS" | null, "created": "2026-11-25T19:30:00Z",
     "versions": {"vdisim": "0.1.0", "python": "3.11.7", "hypothesis": "6.x"},
     "command": "vdisim conform --backend sim --seed 1234",   # how it was found
     "payload": {...}}                                          # kind-specific: steps, plan, ...

The kind selects the function that replays it (``KINDS``: ``module:function`` taking the
decoded document and returning an exit code: 0 when the case now passes, 1 when it still fails,
3 on a harness error).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import tempfile
from typing import Any

FORMAT = "vdisim-replay"
VERSION = 1

KINDS: dict[str, str] = {
    "conform": "conformance.machine:replay",
    "client": "conformance.harness.replay:replay",
    "fuzz": "conformance.fuzz.replay:replay",
}


class ReplayError(Exception):
    """The file is not a replay file this vdisim can run."""


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("vdisim", "hypothesis", "attrs"):
        try:
            out[mod] = str(importlib.import_module(mod).__version__)
        except (ImportError, AttributeError):
            pass
    return out


def default_dir() -> str:
    """``$VDISIM_REPLAY_DIR``, else ``./vdisim-replays``."""
    return os.environ.get("VDISIM_REPLAY_DIR") or os.path.join(os.getcwd(), "vdisim-replays")


def write(kind: str, payload: dict[str, Any], *, seed: int | None, rule: str | None = None,
          command: str = "", directory: str | None = None, stem: str | None = None) -> str:
    """Write a replay file and return its path (``<dir>/<kind>-<rule>-<seed>.json``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown replay kind {kind!r}")
    directory = directory or default_dir()
    os.makedirs(directory, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, "kind": kind, "seed": seed, "rule": rule,
           "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "versions": versions(), "command": command, "payload": payload}
    stem = stem or "-".join(str(p) for p in (kind, rule, seed) if p is not None)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".replay-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    path = os.path.join(directory, f"{safe}.json")
    os.replace(tmp, path)
    return path


def load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReplayError(f"{path} is not a vdisim replay file (no format={FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ReplayError(f"{path}: replay format version {doc.get('version')!r} is not "
                          f"supported (this vdisim reads version {VERSION})")
    if doc.get("kind") not in KINDS:
        raise ReplayError(f"{path}: unknown replay kind {doc.get('kind')!r}")
    if not isinstance(doc.get("payload"), dict):
        raise ReplayError(f"{path}: payload missing")
    return doc


def run(path: str, attempts: int | None = None) -> int:
    doc = load(path)
    if attempts is not None:
        doc["attempts"] = attempts
    module, _, func = KINDS[doc["kind"]].partition(":")
    fn = getattr(importlib.import_module(module), func)
    return int(fn(doc))


def _cmd(args: argparse.Namespace) -> int:
    if args.attempts is not None and args.attempts < 1:
        print(f"vdisim replay: --attempts must be 1 or more, not {args.attempts}")
        return 2
    try:
        return run(args.file, args.attempts)
    except ReplayError as exc:
        print(f"vdisim replay: {exc}")
        return 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="rerun the case recorded in a replay file")
    p.add_argument("file", help="a replay file written by conform, check-client, run or fuzz")
    p.add_argument("--attempts", type=int, default=None, metavar="N",
                   help="conform witnesses: perform the steps up to N times (default 5) before "
                        "calling the violation not reproduced (their timing can vary); the "
                        "other kinds replay their recorded schedule once")
    p.set_defaults(func=_cmd)
