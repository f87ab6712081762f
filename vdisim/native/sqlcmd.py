"""``vdisim-sqlcmd``: a small ``sqlcmd`` that runs statements on a vdisim engine.

Native VDI clients start their BACKUP/RESTORE by shelling out to ``sqlcmd -Q "..."`` (Microsoft's
Linux sample does).  With ``vdisim/native/shims`` first on PATH, that ``sqlcmd`` is this module,
and the statement reaches the engine named by ``$VDISIM_ENGINE`` (an engine address, see
docs/engine.md; ``-S`` is used instead when it is an address such as ``unix:/path``).

Options accepted as sqlcmd spells them: ``-S server``, ``-U user``, ``-P password`` (accepted,
not checked: the engine has no logins), ``-d database`` (accepted), ``-Q "query"`` (run and
exit), ``-q "query"`` (same), ``-i file``, ``-b`` (exit 1 when a statement fails), ``-C``
(trust the server certificate), ``-N``, ``-h n``, ``-W``, ``-s c``, ``-l n``, ``-t n``, ``-V n``
(messages of lower severity do not set the exit code), ``-r [0|1]`` (error messages to stderr).
Messages print as sqlcmd prints them: ``Msg 3013, Level 16, State 1, Server S, Line 1``.
"""

from __future__ import annotations

import argparse
import os
import sys

from vdisim.engine.connection import Connection

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sqlcmd", add_help=False,
                                description="vdisim's sqlcmd (docs/native.md)")
    p.add_argument("-S", dest="server", default=None)
    p.add_argument("-U", dest="user", default=None)
    p.add_argument("-P", dest="password", default=None)
    p.add_argument("-d", dest="database", default=None)
    p.add_argument("-Q", dest="query", default=None)
    p.add_argument("-q", dest="query_stay", default=None)
    p.add_argument("-i", dest="input", default=None)
    p.add_argument("-b", dest="on_error_exit", action="store_true")
    p.add_argument("-C", dest="trust", action="store_true")
    p.add_argument("-N", dest="encrypt", nargs="?", const="m", default=None)
    p.add_argument("-E", dest="trusted", action="store_true")
    p.add_argument("-h", dest="headers", type=int, default=None)
    p.add_argument("-W", dest="trim", action="store_true")
    p.add_argument("-s", dest="separator", default=" ")
    p.add_argument("-l", dest="login_timeout", type=int, default=None)
    p.add_argument("-t", dest="query_timeout", type=int, default=None)
    p.add_argument("-V", dest="severity", type=int, default=11)
    p.add_argument("-r", dest="errors_to_stderr", nargs="?", const="0", default=None)
    p.add_argument("-?", "--help", action="help")
    return p


def _address(server: str | None) -> str | None:
    env = os.environ.get("VDISIM_ENGINE")
    if env:
        return env
    if server and (server.startswith("unix:") or "/" in server):
        return server
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sql = args.query or args.query_stay
    if args.input:
        with open(args.input, encoding="utf-8") as f:
            sql = f.read()
    if not sql:
        print("Sqlcmd: this sqlcmd runs only -Q, -q or -i batches.", file=sys.stderr)
        return 1
    address = _address(args.server)
    if address is None:
        print("Sqlcmd: Error: no vdisim engine: set VDISIM_ENGINE to its address "
              "(unix:/path or host:port).", file=sys.stderr)
        return 1
    server = args.server or "vdisim"
    err_out = sys.stderr if args.errors_to_stderr is not None else sys.stdout
    try:
        conn = Connection(address)
    except OSError as exc:
        print(f"Sqlcmd: Error: cannot connect to the vdisim engine at {address}: {exc}",
              file=sys.stderr)
        return 1
    failed = False
    batches = [b for b in _split_go(sql) if b.strip()]
    try:
        for batch in batches:
            result = conn.execute(batch, on_message=lambda m: print(
                f"Msg {m.number}, Level {m.severity}, State {m.state}, Server {server}, "
                f"Line 1\n{m.text}" if m.severity > 10 else m.text,
                file=err_out if m.severity > 10 else sys.stdout, flush=True))
            for rs in result.rowsets:
                sep = args.separator
                if args.headers != -1:
                    print(sep.join(c.name for c in rs.columns))
                    print(sep.join("-" * max(1, len(c.name)) for c in rs.columns))
                for row in rs.rows:
                    print(sep.join("NULL" if v is None else str(v) for v in row))
                print(f"\n({len(rs.rows)} row{'s' if len(rs.rows) != 1 else ''} affected)")
            if not result.ok and any(m.severity >= args.severity for m in result.messages):
                failed = True
    except (OSError, EOFError) as exc:
        print(f"Sqlcmd: Error: the connection to the engine failed: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 1 if failed and args.on_error_exit else 0


def _split_go(sql: str) -> list[str]:
    """Batches separated by lines that say GO, as sqlcmd splits them."""
    out: list[str] = [""]
    for line in sql.splitlines(keepends=True):
        if line.strip().upper() == "GO":
            out.append("")
        else:
            out[-1] += line
    return out


if __name__ == "__main__":
    raise SystemExit(main())
