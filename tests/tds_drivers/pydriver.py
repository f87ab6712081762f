"""A Python SQL Server driver (pytds, pymssql or mssql-python/ODBC 18) driven over stdin.

Protocol (one line each): ``exec <hex of the UTF-8 statement>``, ``execp <hex statement>
<hex param>,<hex param>...`` (string parameters, in the driver's own placeholder style),
``cancel``, ``quit``.
Prints ``ready`` once connected (or ``connect-error <json>``), then one JSON line per exec:
``{"ok", "error", "error_text", "messages": [[number|null, text]], "rowsets": [...]}``.
A statement runs on a thread of its own so that ``cancel`` can reach the driver meanwhile.
Used by tests/test_tds_drivers.py.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any


def jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes | bytearray):
        return {"t": "bytes", "v": bytes(v).hex()}
    return {"t": type(v).__name__, "v": str(v)}


class Driver:
    messages: list[list[Any]]

    def __init__(self, name: str, host: str, port: int, opts: dict[str, Any]) -> None:
        self.name = name
        self.messages = []
        self.cur: Any = None
        user, password = opts.get("user", "sa"), opts.get("password", "secret")
        database = opts.get("database", "master")
        if name == "pytds":
            import pytds

            kw: dict[str, Any] = {}
            if opts.get("cafile"):
                kw.update(cafile=opts["cafile"], validate_host=False,
                          enc_login_only=bool(opts.get("login_only")))
            self.conn = pytds.connect(server=host, port=port, user=user, password=password,
                                      database=database,
                                      autocommit=opts.get("autocommit", True),
                                      login_timeout=15, timeout=opts.get("timeout", 60), **kw)
        elif name == "pymssql":
            import pymssql

            kw = {}
            if opts.get("encryption"):
                kw["encryption"] = opts["encryption"]
            self.conn = pymssql.connect(server=host, port=str(port), user=user,
                                        password=password, database=database,
                                        autocommit=opts.get("autocommit", True),
                                        login_timeout=15, **kw)
            self.conn._conn.set_msghandler(self._pymssql_msg)
        elif name == "odbc":
            import mssql_python

            conn_str = (f"Server=tcp:{host},{port};UID={user};PWD={password};"
                        f"Database={database};" + opts.get("odbc", "Encrypt=no;"))
            self.conn = mssql_python.connect(conn_str,
                                             autocommit=opts.get("autocommit", True))
        else:
            raise SystemExit(f"unknown driver {name}")

    def _pymssql_msg(self, state: int, severity: int, server: str, proc: str, line: int,
                     text: bytes | str) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if severity <= 10:
            self.messages.append([None, text])

    def _collect_messages(self, cur: Any) -> None:
        msgs = list(getattr(cur, "messages", None) or [])
        new, self._seen = msgs[self._seen:], len(msgs)
        if self.name == "pytds":
            for _cls, exc in new:
                self.messages.append([getattr(exc, "msg_no", None),
                                      getattr(exc, "text", str(exc))])
        elif self.name == "odbc":
            for head, text in new:
                num = None
                if "(" in head and ")" in head:
                    num = int(head[head.index("(") + 1:head.index(")")])
                self.messages.append([num, text.rsplit("]", 1)[-1]])

    def execute(self, sql: str, params: list[str] | None = None) -> dict[str, Any]:
        self.messages = []
        self._seen = 0
        rowsets: list[dict[str, Any]] = []
        cur = self.conn.cursor()
        self.cur = cur
        out: dict[str, Any] = {"ok": True, "error": None, "error_text": ""}
        try:
            if params is None:
                cur.execute(sql)
            else:
                cur.execute(sql, tuple(params))
            while True:
                self._collect_messages(cur)
                if cur.description:
                    cols = [[d[0], str(d[1])] for d in cur.description]
                    rows = [[jsonable(v) for v in r] for r in cur.fetchall()]
                    rowsets.append({"columns": cols, "rows": rows})
                if not cur.nextset():
                    break
            self._collect_messages(cur)
        except Exception as exc:  # the driver's error is the point
            self._collect_messages(cur)
            out.update(ok=False, error_text=f"{type(exc).__name__}: {exc}",
                       error=self._number(exc))
        out["messages"] = self.messages
        out["rowsets"] = rowsets
        return out

    def _number(self, exc: BaseException) -> int | None:
        for attr in ("msg_no", "number"):
            v = getattr(exc, attr, None)
            if isinstance(v, int):
                return v
        args = getattr(exc, "args", ())
        if args and isinstance(args[0], int):
            return args[0]  # pymssql: (number, text)
        text = str(exc)
        import re

        m = re.search(r"\((\d{3,5})\)", text) or re.search(r"(?:Msg|error) (\d{3,5})", text)
        return int(m.group(1)) if m else None

    def cancel(self) -> None:
        if self.name == "pytds":
            # pytds cancels from the executing thread only: its query timeout (option
            # "timeout") sends ATTENTION, and the next request reads up to DONE(ATTN).
            # (cursor.cancel from here would race the executing thread's reads.)
            return
        elif self.name == "pymssql":
            self.conn._conn.cancel()
        else:
            self.cur.hstmt._cancel()


def main() -> None:
    name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    try:
        drv = Driver(name, host, port, opts)
    except Exception as exc:
        print("connect-error " + json.dumps({"error_text": f"{type(exc).__name__}: {exc}",
                                            "error": Driver._number(None, exc)}),  # type: ignore[arg-type]
              flush=True)
        return
    print("ready", flush=True)
    workers: list[threading.Thread] = []
    lock = threading.Lock()

    def run(sql: str, params: list[str] | None = None) -> None:
        try:
            res = drv.execute(sql, params)
        except BaseException as exc:  # report, never hang the test
            res = {"ok": False, "error": None, "error_text": f"driver script: {exc!r}",
                   "messages": [], "rowsets": []}
        with lock:
            print(json.dumps(res), flush=True)

    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "exec":
            t = threading.Thread(target=run, args=(bytes.fromhex(arg).decode("utf-8"),))
            t.start()
            workers.append(t)
        elif cmd == "execp":
            text, _, plist = arg.partition(" ")
            values = [bytes.fromhex(v).decode("utf-8") for v in plist.split(",") if v]
            t = threading.Thread(target=run, args=(bytes.fromhex(text).decode("utf-8"), values))
            t.start()
            workers.append(t)
        elif cmd == "cancel":
            drv.cancel()
        elif cmd == "quit":
            break
    for t in workers:
        t.join(60)
    drv.conn.close()


if __name__ == "__main__":
    main()
