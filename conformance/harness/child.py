"""The process a Python client under test runs in: ``python -m conformance.harness.child
MODULE:FUNCTION CONTEXT.json RESULT.json STACKS.txt``.

It arms ``faulthandler`` on SIGUSR1 (the harness's watchdog asks for thread stacks before it
kills a hung client), loads the context, calls the function and writes ``{"believed_ok": bool,
"error": str|null}`` to RESULT.json.  Exit status 0 when the client reported success.

``python -m conformance.harness.child --zygote MODULE:FUNCTION`` is a fork server: it imports
the client once, then reads one JSON request per line on stdin (``{"ctx", "result", "stacks",
"out"}``), forks a child per request (a new session, stdout/stderr to ``out``) and writes
``{"spawned": pid}`` and later ``{"exit": pid, "status": n}`` lines on stdout.  It saves the
interpreter start and the imports for every case.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any


def resolve(spec: str) -> Callable[..., Any]:
    """``module:function`` -> the function (``module.sub:obj.attr`` works too)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"client {spec!r}: use module:function")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"client {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--zygote":
        return zygote(argv[1])
    spec, ctx_path, result_path, stacks_path = argv
    return run_one(spec, ctx_path, result_path, stacks_path)


def run_one(spec: str, ctx_path: str, result_path: str, stacks_path: str) -> int:
    stacks = open(stacks_path, "w")  # kept open for the signal handler
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    from conformance.harness.context import ClientContext

    believed = False
    error: str | None = None
    try:
        fn = resolve(spec)
        ctx = ClientContext.load(ctx_path)
        believed = bool(fn(ctx))
    except BaseException:  # the client's own exception: it believes the operation failed
        error = traceback.format_exc()[-4000:]
        believed = False
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"believed_ok": believed, "error": error}, f)
    sys.stdout.flush()
    return 0 if believed else 1


def zygote(spec: str) -> int:
    """The fork server (single-threaded: forking is safe)."""
    import os
    import select

    resolve(spec)  # import the client (and vdisim) once
    import conformance.harness.context  # noqa: F401

    out = sys.stdout
    children: set[int] = set()
    stdin_open = True
    buf = b""
    while stdin_open or children:
        if stdin_open:
            r, _, _ = select.select([0], [], [], 0.02)
            if r:
                chunk = os.read(0, 65536)
                if not chunk:
                    stdin_open = False
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    pid = os.fork()
                    if pid == 0:  # the client's process
                        code = 1
                        try:
                            os.setsid()
                            fd = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                         0o600)
                            null = os.open(os.devnull, os.O_RDONLY)
                            os.dup2(null, 0)
                            os.dup2(fd, 1)
                            os.dup2(fd, 2)
                            sys.stdout = os.fdopen(1, "w", closefd=False)
                            sys.stderr = os.fdopen(2, "w", closefd=False)
                            code = run_one(spec, req["ctx"], req["result"], req["stacks"])
                            sys.stdout.flush()
                            sys.stderr.flush()
                        finally:
                            os._exit(code)
                    children.add(pid)
                    out.write(json.dumps({"spawned": pid}) + "\n")
                    out.flush()
        else:
            select.select([], [], [], 0.02)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                out.write(json.dumps({"exit": pid,
                                      "status": os.waitstatus_to_exitcode(status)}) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
