"""``vdisim`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommands that live beside the library register themselves: ``module:function`` is called
# with the subparsers object.  cli.py is the only place that sits on top of everything
# (conformance/, benchmarks/); the library itself never imports them.
EXTERNAL_COMMANDS: dict[str, str] = {
    "list-rules": "conformance.cli:register_list_rules",
    "conform": "conformance.cli:register_conform",
    "replay": "conformance.replay:register",
    "check-client": "conformance.harness.cli:register_check_client",
    "run": "conformance.harness.cli:register_run",
    "fuzz": "conformance.fuzz.cli:register",
    "bench": "benchmarks.cli:register",
    "build-libsqlvdi": "vdisim.native.build:register",
}


def _register_external(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for spec in EXTERNAL_COMMANDS.values():
        module, _, func = spec.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a command whose module is not built yet
            if exc.name is not None and module.startswith(exc.name):
                continue
            raise
        getattr(mod, func)(sub)


def _engine_serve(args: argparse.Namespace) -> int:
    from vdisim.engine.server import serve
    from vdisim.engine.tds.cli import config_from_args

    address = args.address or os.path.join(os.getcwd(), "vdisim-engine.sock")
    data = args.data or os.path.join(os.getcwd(), "vdisim-data")
    os.makedirs(data, exist_ok=True)
    return serve(address, data, seed=args.seed, quiet=args.quiet,
                 tds=config_from_args(args, data))


def _sql(args: argparse.Namespace) -> int:
    from vdisim.engine.connection import Engine

    engine = None
    address = args.address or os.environ.get("VDISIM_ENGINE")
    if not address:
        engine = Engine.start()
        address = engine.address
    try:
        with Engine.connect(address) as conn:
            status = 0
            for stmt in args.statement:
                result = conn.execute(stmt, on_message=lambda m: print(
                    f"Msg {m.number}, Level {m.severity}, State {m.state}\n{m.text}"
                    if m.severity > 10 else m.text))
                for rs in result.rowsets:
                    print(" | ".join(c.name for c in rs.columns))
                    for row in rs.rows:
                        print(" | ".join("NULL" if v is None else str(v) for v in row))
                if not result.ok:
                    status = 1
            return status
    finally:
        if engine is not None:
            engine.stop()


def _cleanup(args: argparse.Namespace) -> int:
    from vdisim.transport import naming
    from vdisim.transport.channel import socket_alive
    from vdisim.transport.segments import owner_alive, sweep_stale

    removed = sweep_stale(min_age=0)
    for name in removed:
        print(f"removed /dev/shm/{name}")
    # A set's socket is stale when its control segment's owner is gone and nothing listens.
    sockets = 0
    rdir = naming.runtime_dir()
    for entry in sorted(os.listdir(rdir)):
        key, ext = os.path.splitext(entry)
        path = os.path.join(rdir, entry)
        if ext != ".sock" or owner_alive(naming.control_segment_name(key)):
            continue
        if not socket_alive(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            print(f"removed {path}")
            sockets += 1
    print(f"{len(removed)} stale segment(s) removed")
    print(f"{sockets} stale socket(s) removed")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from vdisim.demo import run_demo

    return run_demo(seed=args.seed, size_mb=args.size_mb, devices=args.devices)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdisim", description="SQL Server VDI simulator")
    sub = p.add_subparsers(dest="command", required=True)

    eng = sub.add_parser("engine", help="the emulated SQL Server engine")
    esub = eng.add_subparsers(dest="engine_command", required=True)
    serve = esub.add_parser("serve", help="run an engine process")
    serve.add_argument("--address", help="unix:/path, a path, or host:port")
    serve.add_argument("--data", help="data directory (snapshot files)")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--quiet", action="store_true")
    from vdisim.engine.tds.cli import add_serve_arguments

    add_serve_arguments(serve)
    serve.set_defaults(func=_engine_serve)

    sql = sub.add_parser("sql", help="run statements against an engine")
    sql.add_argument("statement", nargs="+")
    sql.add_argument("--address", help="engine address (default $VDISIM_ENGINE or a private "
                                       "engine)")
    sql.set_defaults(func=_sql)

    demo = sub.add_parser("demo", help="backup and restore a demo database end to end")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--size-mb", type=int, default=256)
    demo.add_argument("--devices", type=int, default=2)
    demo.set_defaults(func=_demo)

    clean = sub.add_parser("cleanup", help="remove stale shared-memory segments")
    clean.set_defaults(func=_cleanup)
    _register_external(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
