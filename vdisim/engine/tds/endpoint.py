"""The TDS listener: real SQL Server drivers connect to the engine process.

One thread accepts connections; each connection gets a reader thread (PRELOGIN, TLS, LOGIN7,
then requests and ATTENTION) and, per request, a worker thread that runs the statements
exactly as the engine's own statement channel does (:class:`vdisim.engine.server.Session`)
and streams the outcome as TDS tokens: INFO/ERROR as they happen (STATS progress, 3014...),
COLMETADATA/ROW for rowsets, DONE per statement.  ATTENTION while a request runs cancels it
(a BACKUP's VDI set is aborted, the client library sees VD_E_ABORT, the statement ends with
3013) and is acknowledged with DONE(ATTN); ATTENTION while idle is acknowledged at once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import ssl
import struct
import sys
import threading
import traceback
from typing import Any, cast

import attrs

from vdisim.engine import operations, tsql, wire
from vdisim.engine.results import Rowset
from vdisim.engine.server import EngineState, Session
from vdisim.engine.sqlerrors import SqlError, SqlMessage, message
from vdisim.engine.tds import login as login7
from vdisim.engine.tds import packets, prelogin, requests, tls, tokens
from vdisim.engine.tds.packets import MessageReader, ProtocolError
from vdisim.engine.tds.requests import RequestError, RpcCall
from vdisim.engine.tds.types import TdsTypeError

SYSTEM_DATABASES = ("master", "msdb", "tempdb", "model")
_DEBUG = bool(os.environ.get("VDISIM_TDS_DEBUG"))


def _debug(text: str) -> None:
    if _DEBUG:
        print(f"vdisim tds: {text}", file=sys.stderr, flush=True)


@attrs.frozen
class TdsConfig:
    """How the endpoint listens.  ``cert``/``key``: PEM files enabling TLS (wrapped, login-only
    and strict); ``login``: (user, password) to require, else any login is accepted."""

    address: str = "127.0.0.1:0"
    cert: str | None = None
    key: str | None = None
    login: tuple[str, str] | None = None
    address_file: str | None = None

    @property
    def tls(self) -> bool:
        return self.cert is not None and self.key is not None


class _Closed(Exception):
    """The client went away."""


class TdsSession(Session):
    """A statement session (the engine's own) whose output goes out as TDS tokens."""

    def __init__(self, engine: EngineState, conn: TdsConnection) -> None:
        # No statement-channel stream: TdsConnection drives this session (run() is unused).
        super().__init__(engine, cast(wire.Stream, None))
        self.conn = conn
        self.response: Response | None = None
        self.rowset_seen = False
        self._use_from: str | None = None

    def emit(self, msg: SqlMessage) -> None:
        resp = self.response
        if resp is None:
            return
        try:
            if msg.number == 5701 and self._use_from is not None:
                resp.token(tokens.envchange_text(tokens.ENV_DATABASE, self.database,
                                                 self._use_from))
                self._use_from = None
            resp.token(tokens.message(msg, version=self.conn.version), flush=True)
        except _Closed:
            self.cancel.set()  # the client is gone: abort the statement

    def rowset(self, rs: Rowset) -> None:
        resp = self.response
        if resp is None:
            return
        self.rowset_seen = True
        try:
            resp.token(tokens.rowset(rs, version=self.conn.version))
            resp.statement_done(tokens.DONE_COUNT, tokens.CURCMD_SELECT, len(rs.rows))
        except _Closed:
            self.cancel.set()

    def _select(self, stmt: tsql.Select) -> Rowset:
        rs = super()._select(stmt)
        if "@@SPID" not in stmt.expressions:
            return rs
        row = tuple(self.conn.spid if e == "@@SPID" else v  # the SPID of the packet headers
                    for e, v in zip(stmt.expressions, rs.rows[0], strict=True))
        return Rowset(rs.columns, (row,))

    def execute(self, stmt: tsql.Statement) -> None:
        if isinstance(stmt, tsql.Use):
            self._use_from = self.database
        try:
            super().execute(stmt)
        finally:
            self._use_from = None


class Response:
    """One response message, streamed: tokens go out in non-final packets as they come; the
    DONE of the last statement is held back so that the final one can clear DONE_MORE."""

    def __init__(self, conn: TdsConnection, *, inproc: bool) -> None:
        self.conn = conn
        self.inproc = inproc
        self._buf = bytearray()
        self._pending: tuple[int, int, int] | None = None
        self._lock = threading.RLock()
        self._packet_id = 1
        self.error = False

    def _release_pending(self) -> None:
        if self._pending is not None:
            status, curcmd, count = self._pending
            self._pending = None
            self._buf += tokens.done(status | tokens.DONE_MORE, curcmd, count,
                                     token=tokens.DONEINPROC if self.inproc else tokens.DONE,
                                     version=self.conn.version)

    def token(self, data: bytes, *, flush: bool = False) -> None:
        with self._lock:
            self._release_pending()
            self._buf += data
            if flush or len(self._buf) >= self.conn.packet_size:
                self._flush(final=False)

    def statement_done(self, status: int = 0, curcmd: int = 0, count: int = 0) -> None:
        with self._lock:
            self._release_pending()
            if status & tokens.DONE_ERROR:
                self.error = True
            self._pending = (status, curcmd, count)

    def _flush(self, *, final: bool) -> None:
        if not self._buf and not final:
            return
        data = bytes(self._buf)
        self._buf.clear()
        pkts = packets.packets(packets.REPLY, data, packet_size=self.conn.packet_size,
                               spid=self.conn.spid, final=final, first_id=self._packet_id)
        self._packet_id = (self._packet_id + len(pkts)) % 256
        self.conn.send(b"".join(pkts))

    def finish(self, *, attention: bool, tail: bytes = b"") -> None:
        """End the message.  ``tail``: RETURNSTATUS/RETURNVALUE/DONEPROC of an RPC (which
        then ends the message itself).  With ``attention`` the message is ended and the
        acknowledgment, DONE(ATTN), follows as a message of its own (MS-TDS §3.2.5.7: the
        client reads to the end of the current message, then looks for the acknowledgment;
        tedious relies on that)."""
        with self._lock:
            self._end(tail)
            self._flush(final=True)
            if attention:
                self.conn.send(packets.pack_message(
                    packets.REPLY, tokens.done(tokens.DONE_ATTN, version=self.conn.version),
                    packet_size=self.conn.packet_size, spid=self.conn.spid))

    def _end(self, tail: bytes) -> None:
        """The last token(s): the RPC tail, or the held-back DONE without DONE_MORE."""
        if tail:
            self._release_pending()
            self._buf += tail
        elif self._pending is not None:
            status, curcmd, count = self._pending
            self._pending = None
            self._buf += tokens.done(status, curcmd, count, version=self.conn.version)
        else:
            self._buf += tokens.done(tokens.DONE_ERROR if self.error else 0,
                                     version=self.conn.version)


class TdsConnection:
    """One client connection."""

    _spids = itertools.count(51)

    def __init__(self, listener: TdsListener, sock: socket.socket) -> None:
        self.listener = listener
        self.sock = sock
        self.transport: tls.Transport = tls.PlainTransport(sock)
        self.reader = MessageReader()
        self.version = tokens.TDS74
        self.packet_size = packets.DEFAULT_PACKET
        self.spid = next(self._spids)
        self.session = TdsSession(listener.engine, self)
        self._state = threading.Lock()
        self._running = False
        self._attention = False
        self._worker: threading.Thread | None = None
        self._prepared: dict[int, tuple[str, tuple[str, ...]]] = {}
        self._handles = itertools.count(1)
        self._tran_ids = itertools.count(1)
        self._tran: bytes = bytes(8)

    # ------------------------------------------------------------------ I/O
    def send(self, data: bytes) -> None:
        try:
            self.transport.send(data)
        except OSError as exc:
            raise _Closed(str(exc)) from exc

    def _recv_message(self) -> tuple[int, int, bytes]:
        while True:
            msg = self.reader.next_message()
            if msg is not None:
                return msg
            try:
                data = self.transport.recv()
            except (OSError, ssl.SSLError) as exc:
                raise _Closed(str(exc)) from exc
            if not data:
                raise _Closed("end of stream")
            self.reader.feed(data)

    def _send_message(self, kind: int, payload: bytes) -> None:
        self.send(packets.pack_message(kind, payload, packet_size=self.packet_size,
                                       spid=self.spid))

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> None:
        try:
            if self._connect():
                self._serve()
        except (_Closed, ProtocolError, login7.LoginError, prelogin.PreloginError,
                ssl.SSLError, ConnectionError) as exc:
            _debug(f"connection {self.spid} ended: {type(exc).__name__}: {exc}")
        except Exception:  # never take the engine down
            traceback.print_exc(file=sys.stderr)
        finally:
            self.session.cancel.set()
            worker = self._worker
            if worker is not None:
                worker.join(timeout=60)
            with contextlib.suppress(OSError):
                self.transport.close()
            self.session.script.dispose()
            self.listener.forget(self)

    def _connect(self) -> bool:
        """PRELOGIN (and TLS), then LOGIN7.  True when logged in."""
        cfg = self.listener.config
        first = self.sock.recv(1, socket.MSG_PEEK)
        if not first:
            return False
        if first[0] == 0x16:  # a TLS ClientHello: TDS 8 strict
            if self.listener.strict_ctx is None:
                raise ProtocolError("strict TLS requested, but the endpoint has no certificate")
            strict_tls = tls.strict_handshake(self.sock, self.listener.strict_ctx)
            self.transport = strict_tls
            _debug(f"{self.spid}: strict TLS established ({strict_tls.obj.version()}, "
                   f"ALPN {strict_tls.obj.selected_alpn_protocol()})")
        kind, _, payload = self._recv_message()
        login_only = False
        if kind == packets.PRELOGIN:
            client = prelogin.parse(payload)
            strict = isinstance(self.transport, tls.TlsTransport)
            if strict:
                answer = prelogin.ENCRYPT_ON
            else:
                answer = prelogin.negotiate(client.encryption, tls_available=cfg.tls)
            _debug(f"{self.spid}: PRELOGIN client encryption {client.encryption}, "
                   f"answer {answer}")
            self._send_message(packets.REPLY, prelogin.server_reply(answer).pack())
            if not strict and answer in (prelogin.ENCRYPT_ON, prelogin.ENCRYPT_OFF):
                self._wrapped_handshake()
                login_only = answer == prelogin.ENCRYPT_OFF
            kind, _, payload = self._recv_message()
        if kind != packets.LOGIN7:
            raise ProtocolError(f"expected LOGIN7, got packet type 0x{kind:02X}")
        if login_only:
            plain = tls.PlainTransport(self.sock)
            self.transport = plain
        login = login7.parse(payload)
        self.version = login7.agreed_version(login.tds_version)
        self.packet_size = login7.negotiated_packet_size(login.packet_size)
        _debug(f"{self.spid}: LOGIN7 version 0x{login.tds_version:08X} user {login.username!r}"
               f" app {login.appname!r} packet size {login.packet_size} db {login.database!r}")
        failure = self._check_login(login)
        if failure is not None:
            self._send_message(packets.REPLY, failure)
            return False
        database = login.database or "master"
        self.session.database = database
        self._send_message(packets.REPLY, login7.response(
            login, database=database, packet_size=self.packet_size, version=self.version))
        return True

    def _check_login(self, login: login7.Login7) -> bytes | None:
        cfg = self.listener.config
        v = self.version
        if login.integrated_security:
            # SQL Server answers an SSPI login it cannot serve with 18452 (class 14).
            msg = SqlMessage(18452, 14, 1, "Login failed. The login is from an untrusted "
                                           "domain and cannot be used with Integrated "
                                           "authentication.")
            return tokens.message(msg, version=v) + tokens.done(tokens.DONE_ERROR, version=v)
        if cfg.login is not None and (login.username, login.password) != cfg.login:
            return login7.failure(login.username, version=v)
        db = login.database
        if db and db.lower() not in SYSTEM_DATABASES:
            try:
                self.listener.engine.lookup(db)
            except SqlError:
                # 4060 (class 11) then 18456, as SQL Server reports a missing login database.
                msg = SqlMessage(4060, 11, 1, f'Cannot open database "{db}" requested by the '
                                              "login. The login failed.")
                return (tokens.message(msg, version=v)
                        + login7.failure(login.username, version=v))
        return None

    def _wrapped_handshake(self) -> None:
        """TLS inside PRELOGIN packets; afterwards TLS records flow raw on the socket."""
        ctx = self.listener.wrapped_ctx
        assert ctx is not None
        obj, incoming, outgoing = tls.server_objects(ctx)
        while True:
            got = self.reader.next_packet()
            if got is None:
                data = self.transport.recv()
                if not data:
                    raise _Closed("end of stream in the TLS handshake")
                self.reader.feed(data)
                continue
            header, payload = got
            if header.type != packets.PRELOGIN:
                raise ProtocolError(f"packet type 0x{header.type:02X} in the TLS handshake")
            incoming.write(payload)
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            out = outgoing.read()
            if out:
                self._send_message(packets.PRELOGIN, out)
            if done:
                break
        if self.reader.pending:  # already TLS records
            incoming.write(self.reader.pending)
            self.reader.clear()
        self.transport = tls.TlsTransport(self.sock, obj, incoming, outgoing)
        _debug(f"{self.spid}: TLS established ({obj.version()})")

    # ------------------------------------------------------------------ requests
    def _serve(self) -> None:
        while True:
            try:
                kind, _status, payload = self._recv_message()
            except _Closed:
                return
            if kind == packets.ATTENTION:
                with self._state:
                    if self._running:
                        self._attention = True
                        self.session.cancel.set()
                        continue
                    self._send_message(packets.REPLY,
                                       tokens.done(tokens.DONE_ATTN, version=self.version))
                continue
            worker = self._worker
            if worker is not None:
                worker.join(timeout=60)
            with self._state:
                self._running = True
                self._attention = False
                self.session.cancel.clear()
            self._worker = threading.Thread(target=self._request, args=(kind, payload),
                                            daemon=True, name=f"tds-{self.spid}")
            self._worker.start()

    def _request(self, kind: int, payload: bytes) -> None:
        resp = Response(self, inproc=kind == packets.RPC)
        self.session.response = resp
        tail = b""
        try:
            if kind == packets.SQL_BATCH:
                text = requests.sql_batch(payload, self.version)
                _debug(f"{self.spid}: batch {text!r}")
                self._batch(resp, text, None)
            elif kind == packets.RPC:
                tail = self._rpc(resp, requests.rpc(payload, self.version))
            elif kind == packets.TRANSACTION_MANAGER:
                req = requests.transaction_manager(payload, self.version)
                _debug(f"{self.spid}: transaction manager {req}")
                self._transaction(resp, req)
            else:  # bulk load, federated authentication tokens, SSPI...
                self.session.emit(message(40517, f"TDS packet type 0x{kind:02X}"))
                resp.statement_done(tokens.DONE_ERROR)
        except _Closed:
            self.session.cancel.set()  # the client is gone; nothing more can be said
        except (RequestError, TdsTypeError) as exc:
            # 8009: SQL Server's "The incoming tabular data stream (TDS) ... is incorrect."
            self.session.emit(SqlMessage(8009, 16, 1, f"The incoming tabular data stream "
                                                      f"(TDS) protocol stream is incorrect. "
                                                      f"{exc}"))
            resp.statement_done(tokens.DONE_ERROR)
            tail = b""
        except Exception as exc:  # never a traceback to the client
            traceback.print_exc(file=sys.stderr)
            self.session.emit(SqlMessage(3013, 16, 1, f"Statement failed in the emulator: "
                                                      f"{exc!r}"))
            resp.statement_done(tokens.DONE_ERROR)
            tail = b""
        finally:
            with self._state, contextlib.suppress(_Closed):
                attention = self._attention
                self._attention = False
                self._running = False
                resp.finish(attention=attention, tail=tail)
            self.session.response = None

    def _batch(self, resp: Response, text: str, params: dict[str, Any] | None) -> bool:
        """Run a batch's statements as Session._request does; True when it succeeded."""
        s = self.session
        s.sql_text = text
        try:
            batch = tsql.parse_batch(text, params)
            for stmt in batch:
                s.rowset_seen = False
                was = s.in_transaction
                s.execute(stmt)
                if s.in_transaction != was:
                    resp.token(self._tran_change(s.in_transaction, stmt))
                if not s.rowset_seen:
                    resp.statement_done()
            return True
        except SqlError as err:
            for m in err.messages:
                s.emit(m)
        except operations.Cancelled as exc:
            if exc.args:
                s.emit(message(3013, exc.args[0]))
        resp.statement_done(tokens.DONE_ERROR)
        return False

    def _tran_change(self, now_open: bool, stmt: object = None) -> bytes:
        if now_open:
            self._tran = struct.pack("<Q", next(self._tran_ids))
            return tokens.envchange_bytes(tokens.ENV_BEGIN_TRAN, self._tran, b"")
        kind = tokens.ENV_ROLLBACK_TRAN if (isinstance(stmt, tsql.Transaction)
                                            and stmt.action == "rollback"
                                            ) else tokens.ENV_COMMIT_TRAN
        old, self._tran = self._tran, bytes(8)
        return tokens.envchange_bytes(kind, b"", old)

    def _transaction(self, resp: Response, req: requests.TransactionRequest) -> None:
        s = self.session
        if req.kind == requests.TM_BEGIN_XACT:
            if not s.in_transaction:
                s.in_transaction = True
                resp.token(self._tran_change(True))
        elif req.kind in (requests.TM_COMMIT_XACT, requests.TM_ROLLBACK_XACT):
            if s.in_transaction:
                s.in_transaction = False
                rollback = req.kind == requests.TM_ROLLBACK_XACT
                stmt = tsql.Transaction("rollback" if rollback else "commit")
                resp.token(self._tran_change(False, stmt))
            if req.begin_after:
                s.in_transaction = True
                resp.token(self._tran_change(True))
        elif req.kind != requests.TM_SAVE_XACT:
            s.emit(SqlMessage(40517, 16, 1, "Keyword or statement option 'distributed "
                                            "transaction' is not supported in this version "
                                            "of SQL Server."))
            resp.statement_done(tokens.DONE_ERROR)
            return
        resp.statement_done()

    # ------------------------------------------------------------------ RPC
    def _rpc(self, resp: Response, calls: list[RpcCall]) -> bytes:
        """Run each call; returns the tail of the last (RETURNSTATUS, RETURNVALUE, DONEPROC);
        the tails of the others go out with DONEPROC(MORE)."""
        tail = b""
        for k, call in enumerate(calls):
            _debug(f"{self.spid}: rpc {call.proc} "
                   f"{[(p.name, p.value) for p in call.params]!r}")
            resp.error = False
            outputs = self._call(resp, call)
            ok = not resp.error
            more = k < len(calls) - 1
            tail = (tokens.return_status(0 if ok else 1)
                    + b"".join(tokens.return_value(idx, name, "int", value,
                                                   version=self.version)
                               for idx, name, value in outputs)
                    + tokens.done((0 if ok else tokens.DONE_ERROR)
                                  | (tokens.DONE_MORE if more else 0),
                                  token=tokens.DONEPROC, version=self.version))
            if more:
                resp.token(b"", flush=False)  # the last statement's DONEINPROC first
                resp.token(tail)
                tail = b""
        return tail

    def _call(self, resp: Response, call: RpcCall) -> list[tuple[int, str, Any]]:
        """Execute one RPC; returns its OUTPUT parameters (ordinal, name, value)."""
        proc = call.proc.lower().split(".")[-1].strip("[]")
        p = list(call.params)
        if proc == "sp_executesql":
            if not p:
                raise RequestError("sp_executesql without a statement")
            names = _declared(p[1].value if len(p) > 1 else None)
            self._batch(resp, str(p[0].value or ""), _bind(names, p[2:]))
            return []
        if proc in ("sp_prepare", "sp_prepexec"):
            if len(p) < 3:
                raise RequestError(f"{proc} needs @handle, @params and @stmt")
            handle = next(self._handles)
            names = _declared(p[1].value)
            self._prepared[handle] = (str(p[2].value or ""), names)
            if proc == "sp_prepexec":
                self._batch(resp, str(p[2].value or ""), _bind(names, p[3:]))
            else:
                resp.statement_done()
            return [(0, p[0].name or "@handle", handle)]
        if proc == "sp_execute":
            handle = int(p[0].value) if p and p[0].value is not None else -1
            if handle not in self._prepared:
                self.session.emit(SqlMessage(8179, 16, 4, f"Could not find prepared "
                                                          f"statement with handle {handle}."))
                resp.statement_done(tokens.DONE_ERROR)
                return []
            text, names = self._prepared[handle]
            self._batch(resp, text, _bind(names, p[1:]))
            return []
        if proc == "sp_unprepare":
            if p and p[0].value is not None:
                self._prepared.pop(int(p[0].value), None)
            resp.statement_done()
            return []
        if proc.startswith("sp_cursor") or proc.startswith("#proc"):
            self.session.emit(message(40517, call.proc))
            resp.statement_done(tokens.DONE_ERROR)
            return []
        # A named procedure: EXEC it with its parameters as variables.
        args = []
        params: dict[str, Any] = {}
        for k, prm in enumerate(p):
            var = prm.name if prm.name else f"@__p{k}"
            params[var] = prm.value
            args.append(f"{prm.name} = {prm.name}" if prm.name else var)
        quoted = "[" + call.proc.replace("]", "]]") + "]"
        self._batch(resp, f"EXEC {quoted} {', '.join(args)}", params)
        return []


def _declared(decl: object) -> tuple[str, ...]:
    """Parameter names of an sp_executesql/sp_prepare declaration ('@P0 int, @P1 nvarchar')."""
    if not isinstance(decl, str):
        return ()
    return tuple(re.findall(r"@[A-Za-z_0-9@#$]+", decl))


def _bind(names: tuple[str, ...], params: list[requests.Param]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, prm in enumerate(params):
        name = prm.name or (names[k] if k < len(names) else f"@P{k}")
        out[name] = prm.value
    return out


class TdsListener:
    """Accepts TDS connections for one engine."""

    def __init__(self, engine: EngineState, config: TdsConfig) -> None:
        self.engine = engine
        self.config = config
        self.wrapped_ctx: ssl.SSLContext | None = None
        self.strict_ctx: ssl.SSLContext | None = None
        if config.cert and config.key:
            self.wrapped_ctx = tls.wrapped_context(config.cert, config.key)
            self.strict_ctx = tls.strict_context(config.cert, config.key)
        host, _, port = config.address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"TDS address {config.address!r}: use HOST:PORT")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, int(port)))
        self.sock.listen(64)
        bound = self.sock.getsockname()
        self.address = f"[{bound[0]}]:{bound[1]}" if family == socket.AF_INET6 else \
            f"{bound[0]}:{bound[1]}"
        self._conns: set[TdsConnection] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if config.address_file:
            tmp = config.address_file + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(self.address + "\n")
            os.replace(tmp, config.address_file)

    def start(self) -> str:
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tds-accept")
        self._thread.start()
        return self.address

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = TdsConnection(self, sock)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=conn.run, daemon=True, name=f"tds-conn-{conn.spid}").start()

    def forget(self, conn: TdsConnection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.session.cancel.set()
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_RDWR)
        if self.config.address_file:
            with contextlib.suppress(OSError):
                os.unlink(self.config.address_file)


__all__ = ["Response", "TdsConfig", "TdsConnection", "TdsListener", "TdsSession"]
