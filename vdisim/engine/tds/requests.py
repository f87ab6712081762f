"""Client requests (MS-TDS §2.2.6): SQLBatch, RPC and transaction-manager requests.

From TDS 7.2 on, these three begin with ALL_HEADERS (a DWORD total length, the transaction
descriptor header and others), which the endpoint skips; before 7.2 they do not.
"""

from __future__ import annotations

from typing import Any

import attrs

from vdisim.engine.tds.types import ParamType, Reader, TdsTypeError, read_type_info, read_value

# RPC procedure ids (MS-TDS §2.2.6.6, ProcID)
PROC_IDS = {1: "sp_cursor", 2: "sp_cursoropen", 3: "sp_cursorprepare", 4: "sp_cursorexecute",
            5: "sp_cursorprepexec", 6: "sp_cursorunprepare", 7: "sp_cursorfetch",
            8: "sp_cursoroption", 9: "sp_cursorclose", 10: "sp_executesql", 11: "sp_prepare",
            12: "sp_execute", 13: "sp_prepexec", 14: "sp_prepexecrpc", 15: "sp_unprepare"}

# Transaction manager request types
TM_GET_DTC_ADDRESS, TM_PROPAGATE_XACT, TM_BEGIN_XACT, TM_PROMOTE_XACT = 0, 1, 5, 6
TM_COMMIT_XACT, TM_ROLLBACK_XACT, TM_SAVE_XACT = 7, 8, 9

PARAM_BY_REF = 0x01


class RequestError(ValueError):
    pass


def skip_all_headers(r: Reader, version: int) -> None:
    """Skip ALL_HEADERS (TDS 7.2+).  A 7.1 request has none."""
    if not (version >= 0x72000000 or version < 0x70000000):
        return
    total = r.u32()
    if total < 4 or total - 4 > len(r.data) - r.pos:
        raise RequestError(f"ALL_HEADERS length {total} is invalid")
    r.take(total - 4)


def sql_batch(payload: bytes, version: int) -> str:
    r = Reader(payload)
    try:
        skip_all_headers(r, version)
    except TdsTypeError as exc:
        raise RequestError(str(exc)) from exc
    return r.data[r.pos:].decode("utf-16-le", errors="replace")


@attrs.frozen
class Param:
    name: str  # as sent, with its @ (may be empty: a positional parameter)
    output: bool
    type: ParamType
    value: Any


@attrs.frozen
class RpcCall:
    proc: str  # sp_executesql etc. for ProcIDs, else the name as sent
    params: tuple[Param, ...]


def rpc(payload: bytes, version: int) -> list[RpcCall]:
    """Every RPC of a request (several are separated by a batch flag byte)."""
    try:
        return _rpc(payload, version)
    except TdsTypeError as exc:
        raise RequestError(str(exc)) from exc


def _rpc(payload: bytes, version: int) -> list[RpcCall]:
    r = Reader(payload)
    skip_all_headers(r, version)
    calls: list[RpcCall] = []
    while not r.at_end:
        name_len = r.u16()
        if name_len == 0xFFFF:
            proc_id = r.u16()
            proc = PROC_IDS.get(proc_id, f"#proc{proc_id}")
        else:
            proc = r.take(name_len * 2).decode("utf-16-le", errors="replace")
        r.u16()  # option flags (WithRecomp, NoMetaData, ReuseMetaData)
        params: list[Param] = []
        while not r.at_end and r.data[r.pos] not in (0x80, 0xFF, 0xFE):
            pname = r.b_varchar()
            status = r.u8()
            try:
                ptype = read_type_info(r)
                value = read_value(r, ptype)
            except TdsTypeError as exc:
                raise RequestError(f"{proc} parameter {pname or len(params)}: {exc}") from exc
            params.append(Param(pname, bool(status & PARAM_BY_REF), ptype, value))
        calls.append(RpcCall(proc, tuple(params)))
        if not r.at_end:
            r.u8()  # batch flag
    if not calls:
        raise RequestError("RPC request without a procedure")
    return calls


@attrs.frozen
class TransactionRequest:
    kind: int  # TM_*
    name: str = ""
    begin_after: bool = False  # COMMIT/ROLLBACK with fBeginXact


def transaction_manager(payload: bytes, version: int) -> TransactionRequest:
    try:
        return _transaction_manager(payload, version)
    except TdsTypeError as exc:
        raise RequestError(str(exc)) from exc


def _transaction_manager(payload: bytes, version: int) -> TransactionRequest:
    r = Reader(payload)
    skip_all_headers(r, version)
    kind = r.u16()
    if kind == TM_BEGIN_XACT:
        r.u8()  # isolation level
        return TransactionRequest(kind, r.b_varchar() if not r.at_end else "")
    if kind in (TM_COMMIT_XACT, TM_ROLLBACK_XACT):
        name = r.b_varchar() if not r.at_end else ""
        flags = r.u8() if not r.at_end else 0
        return TransactionRequest(kind, name, bool(flags & 0x01))
    if kind == TM_SAVE_XACT:
        return TransactionRequest(kind, r.b_varchar() if not r.at_end else "")
    return TransactionRequest(kind)


__all__ = ["PROC_IDS", "Param", "RequestError", "RpcCall", "TransactionRequest", "rpc",
           "skip_all_headers", "sql_batch", "transaction_manager"]
