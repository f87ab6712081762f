"""Run a native client (examples/pipe_client.cpp and its seeded-bug variants) as a client-harness
``--exec`` program (docs/client-harness.md, docs/native.md).

    vdisim check-client --capabilities "$(python -m vdisim.native.exec_client --capabilities)" \\
        --exec 'python -m vdisim.native.exec_client --bin DIR/pipe_client {context}'

It reads the case's context JSON and starts the native program with the case's set name,
statement, media file (``<media_dir>/stripe0.vbak``), GetCommand timeout and engine address
(``-S unix:<engine_address>``).  The program's environment is the caller's with only
LD_LIBRARY_PATH (the directory of vdisim's libsqlvdi.so, default: next to the program) and PATH
(the sqlcmd shims first) changed; its exit status is the case's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["CAPABILITIES", "main"]

#: What pipe_client can do: one pipe device, every statement (it never asks for VDC_Complete).
CAPABILITIES = {"operations": ["backup", "restore", "verifyonly", "headeronly", "filelistonly",
                               "labelonly"],
                "multi_device": False, "complete": False, "snapshot": False, "tape": False,
                "disk": False, "restore": True}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vdisim.native.exec_client")
    p.add_argument("--bin", help="the native client (built by vdisim build-libsqlvdi --examples)")
    p.add_argument("--lib", help="directory of libsqlvdi.so (default: the program's directory)")
    p.add_argument("--shims", help="directory with the sqlcmd shim (default: DIR/shims)")
    p.add_argument("--capabilities", action="store_true", help="print the capabilities JSON")
    p.add_argument("context", nargs="?")
    args = p.parse_args(argv)
    if args.capabilities:
        print(json.dumps(CAPABILITIES))
        return 0
    if not args.bin or not args.context:
        p.error("--bin and CONTEXT are required")
    with open(args.context, encoding="utf-8") as f:
        ctx = json.load(f)
    exe = os.path.abspath(args.bin)
    lib = os.path.abspath(args.lib or os.path.dirname(exe))
    shims = os.path.abspath(args.shims or os.path.join(lib, "shims"))
    os.makedirs(ctx["media_dir"], exist_ok=True)
    writing = ctx["operation"] == "backup"
    timeouts = ctx.get("timeouts") or {}
    argv_out = [exe, "B" if writing else "R", ctx.get("database") or "-",
                os.path.join(ctx["media_dir"], "stripe0.vbak"),
                "-S", "unix:" + str(ctx["engine_address"]), "-U", "sa", "-P", "vdisim",
                "-N", str(ctx["set_name"]), "-Q", str(ctx["statement"]),
                "-T", str(int(timeouts.get("get_command_ms", 1000)))]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = lib
    env["PATH"] = shims + os.pathsep + env.get("PATH", "")
    sys.stdout.flush()
    os.execve(exe, argv_out, env)
    return 127  # pragma: no cover - execve does not return


if __name__ == "__main__":
    raise SystemExit(main())
