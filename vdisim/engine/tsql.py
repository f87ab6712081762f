"""T-SQL recogniser for the emulated engine: the statements a backup tool and a driver send.

This is not a T-SQL parser.  It recognises the statements the emulated engine executes
(BACKUP, RESTORE, a few engine-control statements and the connection chatter drivers send)
and answers everything else with the error SQL Server itself would give, or with 40517 when
the statement is valid T-SQL that the emulator does not implement.  It never raises anything
but :class:`~vdisim.engine.sqlerrors.SqlError`.

Entry points
------------
* :func:`parse` -- exactly one statement (an optional trailing ``;``).
* :func:`parse_batch` -- a batch of statements, e.g. the ``SET ...;SET ...`` batch drivers
  send at connect.  A bare procedure name is taken as ``EXEC`` only as the batch's first
  statement, as in SQL Server.
* :func:`statement_label` -- the words SQL Server uses for a statement in its messages
  (3013 "... is terminating abnormally", 3014 "... successfully processed").
* :func:`render` -- the canonical T-SQL text of a statement; ``parse(render(s)) == s``.

Error order
-----------
SQL Server reports compile errors before execution errors, so a statement (or a whole
batch) is first read completely; syntax errors (102, 103, 105, 113, 119, 155, 137, 1038,
and 245 for a variable whose value does not convert) come from that pass in source
order.  Each statement is then checked in this order:

1. 40517 -- the first option or clause the emulator knows but does not implement;
2. 3025 (empty database name), 3205 (more than 64 devices), 3044 (empty device name),
   3011 (devices of different classes);
3. 3032 -- options that exist but do not apply to this statement (all of them, lower case);
4. 3031 -- the first option that conflicts with (or repeats) a later one;
5. 3277 (SNAPSHOT needs exactly one virtual device);
6. value ranges: 8115 (does not fit the SQL type), 3253 (BLOCKSIZE not a power of two),
   3250 (out of range).

A ``@variable`` used where T-SQL allows one takes its value from ``params`` (keys with or
without the ``@``, case-insensitive); an undeclared one is 137.  A NULL (``None``) value
leaves a WITH option unset, as if it had not been given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, TypeAlias

import attrs

from vdisim.engine.sqlerrors import SqlError, sql_error

__all__ = [
    "MAX_BACKUP_DEVICES",
    "Backup",
    "BackupOptions",
    "Checksum",
    "CreateDatabase",
    "Device",
    "DeviceKind",
    "DropDatabase",
    "ListDatabases",
    "RecoveryModel",
    "Restore",
    "RestoreKind",
    "RestoreOptions",
    "Select",
    "SetOption",
    "SetRecovery",
    "Statement",
    "Transaction",
    "TransactionAction",
    "Use",
    "Workload",
    "parse",
    "parse_batch",
    "render",
    "statement_label",
]

#: SQL Server accepts at most this many backup devices in one statement (error 3205).
MAX_BACKUP_DEVICES = 64

DeviceKind: TypeAlias = Literal["virtual_device", "disk", "tape", "url", "logical"]
RestoreKind: TypeAlias = Literal[
    "database", "log", "verifyonly", "headeronly", "filelistonly", "labelonly"
]
RecoveryModel: TypeAlias = Literal["FULL", "SIMPLE", "BULK_LOGGED"]
TransactionAction: TypeAlias = Literal["begin", "commit", "rollback"]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_MAX_IDENTIFIER = 128


# --------------------------------------------------------------------------- statements


@attrs.frozen
class Device:
    """One ``TO``/``FROM`` device.  ``kind`` is ``'logical'`` for a bare name (a backup device
    created with sp_addumpdevice); :func:`parse` never returns ``'url'`` (URL devices are
    rejected with 40517) but the kind exists so callers can describe one."""

    kind: DeviceKind
    name: str


@attrs.frozen
class BackupOptions:
    """WITH options of BACKUP.  ``None`` = not given (the engine applies its default).

    Paired options map to one field: ``checksum`` is True for CHECKSUM, False for NO_CHECKSUM;
    likewise compression (COMPRESSION/NO_COMPRESSION), init (INIT/NOINIT), format
    (FORMAT/NOFORMAT), skip (SKIP/NOSKIP), rewind (REWIND/NOREWIND), unload (UNLOAD/NOUNLOAD)
    and continue_after_error (CONTINUE_AFTER_ERROR/STOP_ON_ERROR).  STATS without a value is
    10.  ``snapshot`` and ``metadata_only`` record which of the two synonyms was written; use
    :attr:`is_snapshot`.
    """

    differential: bool | None = None
    copy_only: bool | None = None
    blocksize: int | None = None
    buffercount: int | None = None
    maxtransfersize: int | None = None
    stats: int | None = None
    checksum: bool | None = None
    compression: bool | None = None
    init: bool | None = None
    format: bool | None = None
    skip: bool | None = None
    rewind: bool | None = None
    unload: bool | None = None
    name: str | None = None
    description: str | None = None
    medianame: str | None = None
    mediadescription: str | None = None
    snapshot: bool | None = None
    metadata_only: bool | None = None
    continue_after_error: bool | None = None
    retaindays: int | None = None
    expiredate: str | None = None
    norecovery: bool | None = None
    no_truncate: bool | None = None

    @property
    def is_snapshot(self) -> bool:
        return bool(self.snapshot or self.metadata_only)


@attrs.frozen
class RestoreOptions:
    """WITH options of RESTORE.  ``None`` = not given.  ``recovery`` is True for RECOVERY,
    False for NORECOVERY; ``moves`` holds the MOVE 'logical' TO 'physical' pairs in order.
    The pairs and synonyms work as in :class:`BackupOptions`."""

    recovery: bool | None = None
    replace: bool | None = None
    moves: tuple[tuple[str, str], ...] = ()
    file: int | None = None
    stats: int | None = None
    checksum: bool | None = None
    blocksize: int | None = None
    buffercount: int | None = None
    maxtransfersize: int | None = None
    snapshot: bool | None = None
    metadata_only: bool | None = None
    continue_after_error: bool | None = None
    partial: bool | None = None
    restricted_user: bool | None = None
    keep_replication: bool | None = None
    loadhistory: bool | None = None
    rewind: bool | None = None
    unload: bool | None = None
    medianame: str | None = None

    @property
    def is_snapshot(self) -> bool:
        return bool(self.snapshot or self.metadata_only)


@attrs.frozen
class Backup:
    """``BACKUP DATABASE|LOG database TO device [, ...] [WITH ...]``."""

    database: str
    log: bool
    devices: tuple[Device, ...]
    options: BackupOptions = BackupOptions()


@attrs.frozen
class Restore:
    """``RESTORE DATABASE|LOG database [FROM ...]`` or ``RESTORE VERIFYONLY|HEADERONLY|
    FILELISTONLY|LABELONLY FROM ...``.  ``database`` is None for the last four; ``devices``
    is empty only for ``RESTORE DATABASE|LOG db WITH RECOVERY`` (recover without restoring)."""

    kind: RestoreKind
    database: str | None
    devices: tuple[Device, ...]
    options: RestoreOptions = RestoreOptions()


@attrs.frozen
class CreateDatabase:
    """Engine extension: ``CREATE DATABASE name [WITH SIZE_MB = n] [, SEED = n]``."""

    name: str
    size_mb: int | None = None
    seed: int | None = None


@attrs.frozen
class DropDatabase:
    """``DROP DATABASE [IF EXISTS] name``."""

    name: str
    if_exists: bool = False


@attrs.frozen
class SetRecovery:
    """``ALTER DATABASE name SET RECOVERY FULL|SIMPLE|BULK_LOGGED`` (an optional
    ``WITH NO_WAIT`` / ``WITH ROLLBACK IMMEDIATE|AFTER n [SECONDS]`` is accepted)."""

    name: str
    model: RecoveryModel


@attrs.frozen
class Workload:
    """Engine extension: ``EXEC sp_vdisim_workload @database, @changes [, @seed]``."""

    database: str
    changes: int
    seed: int | None = None


@attrs.frozen
class Checksum:
    """Engine extension: ``EXEC sp_vdisim_checksum @database``."""

    database: str


@attrs.frozen
class ListDatabases:
    """Engine extension: ``EXEC sp_vdisim_databases``."""


@attrs.frozen
class SetOption:
    """``SET <anything>``: ``text`` is what follows SET, as written (e.g. ``'NOCOUNT ON'``)."""

    text: str

    @property
    def name(self) -> str:
        """The first word after SET, upper case (``'NOCOUNT'``, ``'TRANSACTION'``...)."""
        return self.text.split(None, 1)[0].upper() if self.text.strip() else ""


@attrs.frozen
class Use:
    """``USE database``."""

    database: str


@attrs.frozen
class Transaction:
    """``BEGIN TRAN[SACTION]``, ``COMMIT``, ``ROLLBACK`` (with optional TRAN/TRANSACTION/WORK
    and name).  ``if_open`` is True for the ``IF @@TRANCOUNT > 0 COMMIT|ROLLBACK`` form
    that drivers send."""

    action: TransactionAction
    name: str | None = None
    if_open: bool = False


@attrs.frozen
class Select:
    """``SELECT expr [[AS] alias], ...`` without FROM.  ``expressions`` are canonical texts:
    ``'@@VERSION'`` (upper case), ``"SERVERPROPERTY('ProductVersion')"``, an integer or
    decimal literal as written (with its sign), ``"N'text'"``/``"'text'"`` and ``'NULL'``.
    ``aliases[i]`` is the alias of ``expressions[i]`` or None."""

    expressions: tuple[str, ...]
    aliases: tuple[str | None, ...]


Statement: TypeAlias = (
    Backup
    | Restore
    | CreateDatabase
    | DropDatabase
    | SetRecovery
    | Workload
    | Checksum
    | ListDatabases
    | SetOption
    | Use
    | Transaction
    | Select
)

_RESTORE_LABELS: dict[str, str] = {
    "database": "RESTORE DATABASE",
    "log": "RESTORE LOG",
    "verifyonly": "VERIFY DATABASE",
    "headeronly": "RESTORE HEADERONLY",
    "filelistonly": "RESTORE FILELIST",
    "labelonly": "RESTORE LABELONLY",
}


def statement_label(stmt: Statement, *, success: bool = False) -> str:
    """The name SQL Server gives ``stmt`` in its messages.

    The default is the 3013 form ("BACKUP DATABASE is terminating abnormally."): note that
    SQL Server says "VERIFY DATABASE" for RESTORE VERIFYONLY and "RESTORE FILELIST" for
    RESTORE FILELISTONLY.  ``success=True`` gives the 3014 form, which differs only for a
    differential backup ("BACKUP DATABASE WITH DIFFERENTIAL successfully processed ...").
    """
    if isinstance(stmt, Backup):
        if stmt.log:
            return "BACKUP LOG"
        if success and stmt.options.differential:
            return "BACKUP DATABASE WITH DIFFERENTIAL"
        return "BACKUP DATABASE"
    if isinstance(stmt, Restore):
        return _RESTORE_LABELS[stmt.kind]
    if isinstance(stmt, CreateDatabase):
        return "CREATE DATABASE"
    if isinstance(stmt, DropDatabase):
        return "DROP DATABASE"
    if isinstance(stmt, SetRecovery):
        return "ALTER DATABASE"
    if isinstance(stmt, Workload | Checksum | ListDatabases):
        return "EXECUTE"
    if isinstance(stmt, SetOption):
        return "SET"
    if isinstance(stmt, Use):
        return "USE"
    if isinstance(stmt, Transaction):
        return f"{stmt.action.upper()} TRANSACTION"
    return "SELECT"


# --------------------------------------------------------------------------- lexer

_TokKind: TypeAlias = Literal[
    "word", "qident", "string", "number", "binary", "var", "sysvar", "op", "eof"
]

_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BINARY_RE = re.compile(r"0[xX][0-9a-fA-F]*")
_INT_TEXT_RE = re.compile(r"[+-]?[0-9]+")


@attrs.frozen
class _Token:
    kind: _TokKind
    value: str  # identifier / string contents, number text, variable name with its @
    text: str  # as written
    start: int
    end: int
    national: bool = False  # N'...'

    @property
    def upper(self) -> str:
        return self.value.upper() if self.kind == "word" else ""

    @property
    def near(self) -> str:
        """What SQL Server quotes in "Incorrect syntax near '...'"."""
        return self.value if self.kind in ("string", "qident") else self.text


def _is_word_start(c: str) -> bool:
    return c.isalpha() or c in "_#"


def _is_word_part(c: str) -> bool:
    return c.isalnum() or c in "_@#$"


def _scan_delimited(sql: str, i: int, close: str) -> tuple[str, int]:
    """Read a delimited token whose opening character is at ``i``; a doubled closing
    character stands for itself.  Returns (contents, index after the closing character)."""
    parts: list[str] = []
    j = i + 1
    n = len(sql)
    while True:
        k = sql.find(close, j)
        if k < 0:
            parts.append(sql[j:])
            raise sql_error(105, "".join(parts))
        parts.append(sql[j:k])
        if k + 1 < n and sql[k + 1] == close:
            parts.append(close)
            j = k + 2
            continue
        return "".join(parts), k + 1


def _check_length(value: str) -> None:
    if len(value) > _MAX_IDENTIFIER:
        raise sql_error(103, "identifier", value[:_MAX_IDENTIFIER], _MAX_IDENTIFIER)


def _tokenize(sql: str) -> list[_Token]:
    toks: list[_Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
            continue
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            depth, j = 1, i + 2
            while depth:
                close = sql.find("*/", j)
                if close < 0:
                    raise sql_error(113)
                opening = sql.find("/*", j, close)
                if opening >= 0:
                    depth, j = depth + 1, opening + 2
                else:
                    depth, j = depth - 1, close + 2
            i = j
            continue
        start = i
        if c in "Nn" and i + 1 < n and sql[i + 1] == "'":
            value, i = _scan_delimited(sql, i + 1, "'")
            toks.append(_Token("string", value, sql[start:i], start, i, national=True))
        elif c == "'":
            value, i = _scan_delimited(sql, i, "'")
            toks.append(_Token("string", value, sql[start:i], start, i))
        elif c in '["':
            value, i = _scan_delimited(sql, i, "]" if c == "[" else '"')
            _check_length(value)
            toks.append(_Token("qident", value, sql[start:i], start, i))
        elif c == "@" and i + 1 < n and (_is_word_part(sql[i + 1])):
            kind: _TokKind = "sysvar" if sql[i + 1] == "@" else "var"
            j = i + 1
            while j < n and _is_word_part(sql[j]):
                j += 1
            text = sql[i:j]
            _check_length(text)
            toks.append(_Token(kind, text, text, i, j))
            i = j
        elif (m := _BINARY_RE.match(sql, i)) is not None:
            i = m.end()
            toks.append(_Token("binary", m.group(), m.group(), start, i))
        elif (m := _NUMBER_RE.match(sql, i)) is not None:
            i = m.end()
            toks.append(_Token("number", m.group(), m.group(), start, i))
        elif _is_word_start(c):
            j = i + 1
            while j < n and _is_word_part(sql[j]):
                j += 1
            text = sql[i:j]
            _check_length(text)
            toks.append(_Token("word", text, text, i, j))
            i = j
        else:
            i += 1
            toks.append(_Token("op", c, c, start, i))
    toks.append(_Token("eof", "", "", n, n))
    return toks


# T-SQL reserved keywords (Microsoft "Reserved keywords (Transact-SQL)"): never a bare name.
_RESERVED = frozenset(
    """ADD ALL ALTER AND ANY AS ASC AUTHORIZATION BACKUP BEGIN BETWEEN BREAK BROWSE BULK BY
    CASCADE CASE CHECK CHECKPOINT CLOSE CLUSTERED COALESCE COLLATE COLUMN COMMIT COMPUTE
    CONSTRAINT CONTAINS CONTAINSTABLE CONTINUE CONVERT CREATE CROSS CURRENT CURRENT_DATE
    CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURSOR DATABASE DBCC DEALLOCATE DECLARE
    DEFAULT DELETE DENY DESC DISK DISTINCT DISTRIBUTED DOUBLE DROP DUMP ELSE END ERRLVL ESCAPE
    EXCEPT EXEC EXECUTE EXISTS EXIT EXTERNAL FETCH FILE FILLFACTOR FOR FOREIGN FREETEXT
    FREETEXTTABLE FROM FULL FUNCTION GOTO GRANT GROUP HAVING HOLDLOCK IDENTITY IDENTITY_INSERT
    IDENTITYCOL IF IN INDEX INNER INSERT INTERSECT INTO IS JOIN KEY KILL LEFT LIKE LINENO LOAD
    MERGE NATIONAL NOCHECK NONCLUSTERED NOT NULL NULLIF OF OFF OFFSETS ON OPEN OPENDATASOURCE
    OPENQUERY OPENROWSET OPENXML OPTION OR ORDER OUTER OVER PERCENT PIVOT PLAN PRECISION
    PRIMARY PRINT PROC PROCEDURE PUBLIC RAISERROR READ READTEXT RECONFIGURE REFERENCES
    REPLICATION RESTORE RESTRICT RETURN REVERT REVOKE RIGHT ROLLBACK ROWCOUNT ROWGUIDCOL RULE
    SAVE SCHEMA SECURITYAUDIT SELECT SEMANTICKEYPHRASETABLE SEMANTICSIMILARITYDETAILSTABLE
    SEMANTICSIMILARITYTABLE SESSION_USER SET SETUSER SHUTDOWN SOME STATISTICS SYSTEM_USER
    TABLE TABLESAMPLE TEXTSIZE THEN TO TOP TRAN TRANSACTION TRIGGER TRUNCATE TRY_CONVERT
    TSEQUAL UNION UNIQUE UNPIVOT UPDATE UPDATETEXT USE USER VALUES VARYING VIEW WAITFOR WHEN
    WHERE WHILE WITH WITHIN WRITETEXT""".split()
)

# Valid T-SQL statements the emulator does not implement (-> 40517 with the keyword).
_UNSUPPORTED_STATEMENTS = frozenset(
    """INSERT UPDATE DELETE MERGE DECLARE PRINT WHILE RETURN DBCC WAITFOR GRANT REVOKE DENY
    TRUNCATE SAVE RAISERROR THROW CHECKPOINT KILL SHUTDOWN RECONFIGURE GOTO BREAK CONTINUE
    OPEN CLOSE FETCH DEALLOCATE BULK READTEXT WRITETEXT UPDATETEXT REVERT SETUSER DUMP LOAD
    DISABLE ENABLE MOVE GET SEND RECEIVE""".split()
)

# Keywords that start a statement: a SET statement's text stops before one of them.
_STATEMENT_STARTS = _UNSUPPORTED_STATEMENTS | frozenset(
    "SELECT SET USE BACKUP RESTORE EXEC EXECUTE BEGIN COMMIT ROLLBACK CREATE DROP ALTER IF "
    "WITH".split()
)


# --------------------------------------------------------------------------- WITH options

# How each option known to BACKUP/RESTORE is written.
_G_FLAG = "flag"
_G_INT = "int"
_G_STR = "str"  # 'string' or @var
_G_NAME = "name"  # 'string', @var or identifier
_G_STATS = "stats"
_G_MOVE = "move"
_G_COMPRESSION = "compression"
_G_UNSUPPORTED_FLAG = "unsupported_flag"
_G_UNSUPPORTED_VALUE = "unsupported_value"
_G_UNSUPPORTED_MARK = "unsupported_mark"
_G_UNSUPPORTED_PARENS = "unsupported_parens"

_OPTION_GRAMMAR: dict[str, str] = {
    **dict.fromkeys(
        """DIFFERENTIAL COPY_ONLY NO_COMPRESSION INIT NOINIT SKIP NOSKIP FORMAT NOFORMAT
        CHECKSUM NO_CHECKSUM STOP_ON_ERROR CONTINUE_AFTER_ERROR REWIND NOREWIND UNLOAD
        NOUNLOAD NORECOVERY NO_TRUNCATE RECOVERY REPLACE PARTIAL RESTRICTED_USER
        KEEP_REPLICATION LOADHISTORY SNAPSHOT METADATA_ONLY""".split(),
        _G_FLAG,
    ),
    **dict.fromkeys("BLOCKSIZE BUFFERCOUNT MAXTRANSFERSIZE RETAINDAYS FILE".split(), _G_INT),
    **dict.fromkeys("DESCRIPTION MEDIADESCRIPTION EXPIREDATE".split(), _G_STR),
    **dict.fromkeys("NAME MEDIANAME".split(), _G_NAME),
    "STATS": _G_STATS,
    "MOVE": _G_MOVE,
    "COMPRESSION": _G_COMPRESSION,
    **dict.fromkeys(
        """CREDENTIAL FILE_SNAPSHOT RESTART KEEP_CDC ENABLE_BROKER ERROR_BROKER_CONVERSATIONS
        NEW_BROKER""".split(),
        _G_UNSUPPORTED_FLAG,
    ),
    **dict.fromkeys("PASSWORD MEDIAPASSWORD STANDBY STOPAT DBNAME".split(), _G_UNSUPPORTED_VALUE),
    **dict.fromkeys("STOPATMARK STOPBEFOREMARK".split(), _G_UNSUPPORTED_MARK),
    **dict.fromkeys("ENCRYPTION FILESTREAM".split(), _G_UNSUPPORTED_PARENS),
}

_BACKUP_COMMON = frozenset(
    """COPY_ONLY COMPRESSION NO_COMPRESSION DESCRIPTION NAME EXPIREDATE RETAINDAYS INIT NOINIT
    SKIP NOSKIP FORMAT NOFORMAT MEDIADESCRIPTION MEDIANAME BLOCKSIZE BUFFERCOUNT MAXTRANSFERSIZE
    CHECKSUM NO_CHECKSUM STOP_ON_ERROR CONTINUE_AFTER_ERROR STATS REWIND NOREWIND UNLOAD
    NOUNLOAD""".split()
)
_RESTORE_MEDIA = frozenset(
    """MEDIANAME BLOCKSIZE BUFFERCOUNT MAXTRANSFERSIZE CHECKSUM NO_CHECKSUM STOP_ON_ERROR
    CONTINUE_AFTER_ERROR REWIND NOREWIND UNLOAD NOUNLOAD""".split()
)
_RESTORE_LOG_OPTIONS = _RESTORE_MEDIA | frozenset(
    "FILE STATS MOVE RECOVERY NORECOVERY REPLACE RESTRICTED_USER KEEP_REPLICATION".split()
)
# Which options apply to which statement (others known to BACKUP/RESTORE -> 3032).
_APPLICABLE: dict[str, frozenset[str]] = {
    "backup_database": _BACKUP_COMMON | {"DIFFERENTIAL", "SNAPSHOT", "METADATA_ONLY"},
    "backup_log": _BACKUP_COMMON | {"NORECOVERY", "NO_TRUNCATE"},
    "restore_database": _RESTORE_LOG_OPTIONS | {"PARTIAL", "SNAPSHOT", "METADATA_ONLY"},
    "restore_log": _RESTORE_LOG_OPTIONS,
    "restore_verifyonly": _RESTORE_MEDIA | {"FILE", "STATS", "LOADHISTORY", "MOVE"},
    "restore_headeronly": _RESTORE_MEDIA | {"FILE"},
    "restore_filelistonly": _RESTORE_MEDIA | {"FILE"},
    "restore_labelonly": _RESTORE_MEDIA,
}

# Mutually exclusive options (3031).  Repeating an option (other than MOVE) also conflicts.
_CONFLICTS = frozenset(
    frozenset(pair)
    for pair in (
        ("RECOVERY", "NORECOVERY"),
        ("NORECOVERY", "KEEP_REPLICATION"),
        ("CHECKSUM", "NO_CHECKSUM"),
        ("COMPRESSION", "NO_COMPRESSION"),
        ("INIT", "NOINIT"),
        ("FORMAT", "NOFORMAT"),
        ("SKIP", "NOSKIP"),
        ("REWIND", "NOREWIND"),
        ("UNLOAD", "NOUNLOAD"),
        ("STOP_ON_ERROR", "CONTINUE_AFTER_ERROR"),
        ("SNAPSHOT", "METADATA_ONLY"),
        ("EXPIREDATE", "RETAINDAYS"),
        ("DIFFERENTIAL", "SNAPSHOT"),
        ("DIFFERENTIAL", "METADATA_ONLY"),
    )
)

_OptValue: TypeAlias = bool | int | str | tuple[str, str] | None


@attrs.frozen
class _RawOption:
    name: str  # canonical upper-case keyword
    value: _OptValue
    token: _Token


def _int_of(digits: str) -> int:
    """int() of an ASCII digit string, capped so that huge literals stay cheap (anything
    past 30 digits is out of every SQL integer type's range anyway)."""
    sign = -1 if digits.startswith("-") else 1
    body = digits.lstrip("+-")
    if len(body) > 30:
        return sign * 10**30
    return sign * int(body)


def _check_int(
    param: str,
    value: int,
    lo: int,
    hi: int,
    *,
    sql_type: str = "int",
) -> None:
    type_lo, type_hi = (_BIGINT_MIN, _BIGINT_MAX) if sql_type == "bigint" else (_INT_MIN, _INT_MAX)
    if not type_lo <= value <= type_hi:
        raise sql_error(8115, "expression", sql_type)
    if not lo <= value <= hi:
        raise sql_error(3250, value, param)


def _check_blocksize(value: int) -> None:
    _check_int("BLOCKSIZE", value, _INT_MIN, _INT_MAX)
    if 512 <= value <= 65536 and value & (value - 1):
        raise sql_error(3253)
    _check_int("BLOCKSIZE", value, 512, 65536)


def _check_maxtransfersize(value: int) -> None:
    _check_int("MAXTRANSFERSIZE", value, 65536, 4194304)
    if value % 65536:
        raise sql_error(3250, value, "MAXTRANSFERSIZE")


_RANGE_CHECKS: dict[str, Callable[[int], None]] = {
    "BLOCKSIZE": _check_blocksize,
    "MAXTRANSFERSIZE": _check_maxtransfersize,
    "BUFFERCOUNT": lambda v: _check_int("BUFFERCOUNT", v, 1, _INT_MAX),
    "STATS": lambda v: _check_int("STATS", v, 1, 100),
    "FILE": lambda v: _check_int("FILE", v, 1, _INT_MAX),
    "RETAINDAYS": lambda v: _check_int("RETAINDAYS", v, 0, _INT_MAX),
}


class _Options:
    """The WITH options of one statement, checked and ready to be read field by field."""

    def __init__(self, raw: Sequence[_RawOption]) -> None:
        self.raw = raw
        self.by_name: dict[str, _RawOption] = {}
        for opt in raw:
            self.by_name.setdefault(opt.name, opt)

    def check(self, statement_key: str) -> None:
        """3032, 3031 and the value ranges (the steps after 40517 and the device checks)."""
        applicable = _APPLICABLE[statement_key]
        wrong = [o.name.lower() for o in self.raw if o.name not in applicable]
        if wrong:
            raise sql_error(3032, ", ".join(dict.fromkeys(wrong)))
        for i, first in enumerate(self.raw):
            later = [
                o.name.lower()
                for o in self.raw[i + 1 :]
                if (o.name == first.name and o.name != "MOVE")
                or frozenset((o.name, first.name)) in _CONFLICTS
            ]
            if later:
                raise sql_error(3031, first.name.lower(), ", ".join(dict.fromkeys(later)))

    def check_ranges(self) -> None:
        for opt in self.raw:
            check = _RANGE_CHECKS.get(opt.name)
            if check is not None and isinstance(opt.value, int):
                check(opt.value)

    def flag(self, on: str, off: str | None = None) -> bool | None:
        if on in self.by_name:
            return True
        if off is not None and off in self.by_name:
            return False
        return None

    def int_option(self, name: str) -> int | None:
        opt = self.by_name.get(name)
        return opt.value if opt is not None and isinstance(opt.value, int) else None

    def str_option(self, name: str) -> str | None:
        opt = self.by_name.get(name)
        return opt.value if opt is not None and isinstance(opt.value, str) else None

    def moves(self) -> tuple[tuple[str, str], ...]:
        return tuple(o.value for o in self.raw if isinstance(o.value, tuple))

    def backup(self) -> BackupOptions:
        return BackupOptions(
            differential=self.flag("DIFFERENTIAL"),
            copy_only=self.flag("COPY_ONLY"),
            blocksize=self.int_option("BLOCKSIZE"),
            buffercount=self.int_option("BUFFERCOUNT"),
            maxtransfersize=self.int_option("MAXTRANSFERSIZE"),
            stats=self.int_option("STATS"),
            checksum=self.flag("CHECKSUM", "NO_CHECKSUM"),
            compression=self.flag("COMPRESSION", "NO_COMPRESSION"),
            init=self.flag("INIT", "NOINIT"),
            format=self.flag("FORMAT", "NOFORMAT"),
            skip=self.flag("SKIP", "NOSKIP"),
            rewind=self.flag("REWIND", "NOREWIND"),
            unload=self.flag("UNLOAD", "NOUNLOAD"),
            name=self.str_option("NAME"),
            description=self.str_option("DESCRIPTION"),
            medianame=self.str_option("MEDIANAME"),
            mediadescription=self.str_option("MEDIADESCRIPTION"),
            snapshot=self.flag("SNAPSHOT"),
            metadata_only=self.flag("METADATA_ONLY"),
            continue_after_error=self.flag("CONTINUE_AFTER_ERROR", "STOP_ON_ERROR"),
            retaindays=self.int_option("RETAINDAYS"),
            expiredate=self.str_option("EXPIREDATE"),
            norecovery=self.flag("NORECOVERY"),
            no_truncate=self.flag("NO_TRUNCATE"),
        )

    def restore(self) -> RestoreOptions:
        return RestoreOptions(
            recovery=self.flag("RECOVERY", "NORECOVERY"),
            replace=self.flag("REPLACE"),
            moves=self.moves(),
            file=self.int_option("FILE"),
            stats=self.int_option("STATS"),
            checksum=self.flag("CHECKSUM", "NO_CHECKSUM"),
            blocksize=self.int_option("BLOCKSIZE"),
            buffercount=self.int_option("BUFFERCOUNT"),
            maxtransfersize=self.int_option("MAXTRANSFERSIZE"),
            snapshot=self.flag("SNAPSHOT"),
            metadata_only=self.flag("METADATA_ONLY"),
            continue_after_error=self.flag("CONTINUE_AFTER_ERROR", "STOP_ON_ERROR"),
            partial=self.flag("PARTIAL"),
            restricted_user=self.flag("RESTRICTED_USER"),
            keep_replication=self.flag("KEEP_REPLICATION"),
            loadhistory=self.flag("LOADHISTORY"),
            rewind=self.flag("REWIND", "NOREWIND"),
            unload=self.flag("UNLOAD", "NOUNLOAD"),
            medianame=self.str_option("MEDIANAME"),
        )


def _check_devices(devices: Sequence[Device]) -> None:
    if len(devices) > MAX_BACKUP_DEVICES:
        raise sql_error(3205, MAX_BACKUP_DEVICES)
    if any(d.name == "" for d in devices):
        raise sql_error(3044)
    classes = {d.kind for d in devices if d.kind != "logical"}
    if len(classes) > 1:
        raise sql_error(3011)


def _check_snapshot(options: _Options, devices: Sequence[Device]) -> None:
    virtual = [d for d in devices if d.kind == "virtual_device"]
    if "SNAPSHOT" in options.by_name and (len(devices) != 1 or len(virtual) != 1):
        raise sql_error(3277)
    if "METADATA_ONLY" in options.by_name and virtual and len(devices) != 1:
        raise sql_error(3277)


# --------------------------------------------------------------------------- procedures

_ProcParam: TypeAlias = tuple[str, Literal["str", "int", "bigint"], bool]  # name, type, required

_PROCEDURES: dict[str, tuple[_ProcParam, ...]] = {
    "sp_vdisim_workload": (
        ("@database", "str", True),
        ("@changes", "int", True),
        ("@seed", "bigint", False),
    ),
    "sp_vdisim_checksum": (("@database", "str", True),),
    "sp_vdisim_databases": (),
}


@attrs.frozen
class _Arg:
    name: str | None  # '@name' for a named argument
    default: bool  # DEFAULT keyword
    value: int | str | None
    sql_type: str  # int, varchar, nvarchar, numeric, float, NULL


def _convert_arg(param: _ProcParam, arg: _Arg) -> int | str:
    pname, ptype, _ = param
    value = arg.value
    if value is None:
        raise sql_error(3250, "NULL", pname)
    if ptype == "str":
        return str(value)
    if isinstance(value, str):
        if arg.sql_type in ("varchar", "nvarchar") and _INT_TEXT_RE.fullmatch(value.strip()):
            number = _int_of(value.strip())
        elif arg.sql_type in ("numeric", "float"):
            approx = float(value)  # T-SQL truncates numeric/float arguments to int
            if not math.isfinite(approx) or abs(approx) > 1e30:
                raise sql_error(8115, arg.sql_type, ptype)
            number = int(approx)
        else:
            raise sql_error(8114, arg.sql_type, ptype)
    else:
        number = value
    if ptype == "int":
        _check_int(pname, number, 0, _INT_MAX)
    else:
        _check_int(pname, number, 0, _BIGINT_MAX, sql_type="bigint")
    return number


def _bind(proc: str, args: Sequence[_Arg]) -> dict[str, int | str | None]:
    """Bind EXEC arguments to the procedure's parameters as SQL Server does."""
    spec = _PROCEDURES[proc]
    by_name = {p[0]: p for p in spec}
    bound: dict[str, _Arg] = {}
    for index, arg in enumerate(args):
        if arg.name is None:
            if index >= len(spec):
                raise sql_error(8144, proc)
            pname = spec[index][0]
        else:
            pname = arg.name.lower()
            if pname not in by_name:
                raise sql_error(8145, arg.name, proc)
        if pname in bound:
            raise sql_error(8143, pname)
        bound[pname] = arg
    values: dict[str, int | str | None] = {}
    for param in spec:
        pname, _, required = param
        arg_or_none = bound.get(pname)
        if arg_or_none is None or arg_or_none.default:
            if required:
                raise sql_error(201, proc, pname)
            values[pname] = None
            continue
        if not required and arg_or_none.value is None:
            values[pname] = None
            continue
        values[pname] = _convert_arg(param, arg_or_none)
    return values


def _build_procedure(proc: str, args: Sequence[_Arg]) -> Statement:
    values = _bind(proc, args)
    if proc == "sp_vdisim_workload":
        seed = values["@seed"]
        return Workload(
            str(values["@database"]),
            int(values["@changes"] or 0),
            None if seed is None else int(seed),
        )
    if proc == "sp_vdisim_checksum":
        return Checksum(str(values["@database"]))
    return ListDatabases()


# --------------------------------------------------------------------------- parser

_Builder: TypeAlias = Callable[[], Statement]

_SYSVARS = frozenset(
    "@@VERSION @@SPID @@SERVERNAME @@SERVICENAME @@MAX_PRECISION @@TRANCOUNT".split()
)
_SELECT_CLAUSES = frozenset(
    "FROM WHERE INTO GROUP ORDER HAVING UNION EXCEPT INTERSECT OPTION FOR".split()
)


def _unsupported(what: str) -> _Builder:
    def build() -> Statement:
        raise sql_error(40517, what)

    return build


def _raise_later(error: SqlError) -> _Builder:
    def build() -> Statement:
        raise error

    return build


class _Parser:
    def __init__(self, sql: str, params: Mapping[str, object] | None) -> None:
        self.sql = sql
        self.toks = _tokenize(sql)
        self.i = 0
        self.params: dict[str, object] = {}
        for key, value in (params or {}).items():
            self.params[str(key).lstrip("@").casefold()] = value

    # ---- token access

    def peek(self, k: int = 0) -> _Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> _Token:
        tok = self.peek()
        if tok.kind != "eof":
            self.i += 1
        return tok

    def at_eof(self) -> bool:
        return self.peek().kind == "eof"

    def at_kw(self, *keywords: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == "word" and tok.upper in keywords

    def accept_kw(self, *keywords: str) -> _Token | None:
        return self.advance() if self.at_kw(*keywords) else None

    def expect_kw(self, *keywords: str) -> _Token:
        if not self.at_kw(*keywords):
            raise self.error()
        return self.advance()

    def at_op(self, op: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == "op" and tok.value == op

    def accept_op(self, op: str) -> bool:
        if self.at_op(op):
            self.advance()
            return True
        return False

    def expect_op(self, op: str) -> None:
        if not self.accept_op(op):
            raise self.error()

    def error(self, tok: _Token | None = None) -> SqlError:
        """102 near ``tok`` (default: the current token); at the end of the text SQL Server
        quotes the last token."""
        tok = tok or self.peek()
        if tok.kind == "eof":
            near = self.toks[-2].near if len(self.toks) > 1 else ""
        else:
            near = tok.near
        return sql_error(102, near)

    def skip_rest(self) -> None:
        self.i = len(self.toks) - 1

    def at_name(self, k: int = 0) -> bool:
        tok = self.peek(k)
        return (tok.kind == "word" and tok.upper not in _RESERVED) or tok.kind == "qident"

    # ---- values

    def name(self) -> str:
        """A plain (non-reserved) or delimited identifier."""
        if not self.at_name():
            raise self.error()
        tok = self.advance()
        if tok.value == "":
            raise sql_error(1038)
        return tok.value

    def variable(self, tok: _Token) -> object:
        key = tok.value.lstrip("@").casefold()
        if key not in self.params:
            raise sql_error(137, tok.value)
        return self.params[key]

    def name_or_variable(self) -> str | None:
        """An identifier or an @variable holding one (BACKUP/RESTORE database names)."""
        tok = self.peek()
        if tok.kind == "var":
            self.advance()
            value = self.variable(tok)
            return None if value is None else str(value)
        return self.name()

    def signed_number(self) -> tuple[str, _Token] | None:
        """``[+|-] number`` -> (text with sign, number token), or None if not at one."""
        sign = ""
        k = 0
        if self.at_op("-") or self.at_op("+"):
            sign = "-" if self.peek().value == "-" else ""
            k = 1
        tok = self.peek(k)
        if tok.kind != "number":
            return None
        self.i += k + 1
        return sign + tok.value, tok

    def int_value(self) -> int | None:
        tok = self.peek()
        if tok.kind == "var":
            self.advance()
            return self.int_from_variable(tok)
        signed = self.signed_number()
        if signed is None:
            raise self.error()
        text, number = signed
        if not _INT_TEXT_RE.fullmatch(text):
            raise self.error(number)
        return _int_of(text)

    def int_from_variable(self, tok: _Token) -> int | None:
        value = self.variable(tok)
        if value is None:
            return None
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise sql_error(8115, "float", "int")
            return int(value)
        if isinstance(value, str) and _INT_TEXT_RE.fullmatch(value.strip()):
            return _int_of(value.strip())
        raise sql_error(245, "nvarchar", str(value), "int")

    def str_value(self, *, allow_name: bool) -> str | None:
        tok = self.peek()
        if tok.kind == "string":
            self.advance()
            return tok.value
        if tok.kind == "var":
            self.advance()
            value = self.variable(tok)
            return None if value is None else str(value)
        if allow_name and self.at_name():
            return self.name()
        raise self.error()

    def skip_value(self) -> None:
        """One value of an option the emulator does not implement."""
        if self.signed_number() is not None:
            return
        if self.peek().kind in ("string", "var", "word", "qident", "binary"):
            self.advance()
            return
        raise self.error()

    def skip_parens(self) -> None:
        self.expect_op("(")
        depth = 1
        while depth:
            tok = self.advance()
            if tok.kind == "eof":
                raise self.error(tok)
            if tok.kind == "op" and tok.value in "()":
                depth += 1 if tok.value == "(" else -1

    # ---- batches

    def batch(self, *, single: bool) -> list[_Builder]:
        builders: list[_Builder] = []
        while True:
            while self.accept_op(";"):
                pass
            if self.at_eof():
                break
            if single and builders:
                raise self.error()
            builders.append(self.statement(first=not builders))
        if single and not builders:
            raise self.error()
        return builders

    def statement(self, *, first: bool) -> _Builder:
        tok = self.peek()
        kw = tok.upper
        handlers: dict[str, Callable[[], _Builder]] = {
            "BACKUP": self.backup,
            "RESTORE": self.restore,
            "CREATE": self.create,
            "DROP": self.drop,
            "ALTER": self.alter,
            "EXEC": self.execute,
            "EXECUTE": self.execute,
            "SET": self.set_option,
            "USE": self.use,
            "BEGIN": self.transaction,
            "COMMIT": self.transaction,
            "ROLLBACK": self.transaction,
            "IF": self.if_statement,
            "SELECT": self.select,
        }
        handler = handlers.get(kw)
        if handler is not None:
            return handler()
        if kw in _UNSUPPORTED_STATEMENTS:
            self.skip_rest()
            return _unsupported(kw)
        if first and self.at_name():
            return self.procedure_call()
        raise self.error()

    # ---- BACKUP

    def backup(self) -> _Builder:
        self.advance()
        if self.accept_kw("DATABASE"):
            log = False
        elif self.accept_kw("LOG"):
            log = True
        elif self.at_kw("SERVER", "GROUP", "CERTIFICATE", "MASTER", "SERVICE", "SYMMETRIC"):
            what = "BACKUP " + self.peek().upper
            self.skip_rest()
            return _unsupported(what)
        else:
            raise self.error()
        database = self.name_or_variable()
        unsupported: list[str] = []
        if not log:
            self.file_list(unsupported)
        self.expect_kw("TO")
        devices = self.device_list(unsupported)
        while self.at_kw("MIRROR"):
            self.advance()
            self.expect_kw("TO")
            self.device_list(unsupported)
            unsupported.append("MIRROR TO")
        raw = self.with_options("BACKUP", unsupported) if self.accept_kw("WITH") else []
        key = "backup_log" if log else "backup_database"

        def build() -> Statement:
            if unsupported:
                raise sql_error(40517, unsupported[0])
            if not database:
                raise sql_error(3025)
            _check_devices(devices)
            options = _Options(raw)
            options.check(key)
            _check_snapshot(options, devices)
            options.check_ranges()
            return Backup(database, log, tuple(devices), options.backup())

        return build

    def file_list(self, unsupported: list[str]) -> None:
        """``FILE = x | FILEGROUP = x | READ_WRITE_FILEGROUPS | PAGE = 'f:p'`` list of a file,
        partial or page backup/restore: parsed, then rejected with 40517."""
        while self.at_kw("FILE", "FILEGROUP", "READ_WRITE_FILEGROUPS", "PAGE"):
            tok = self.advance()
            unsupported.append(tok.upper)
            if tok.upper != "READ_WRITE_FILEGROUPS":
                self.expect_op("=")
                self.str_value(allow_name=True)
            if not self.accept_op(","):
                break

    def device_list(self, unsupported: list[str]) -> list[Device]:
        devices = [self.device(unsupported)]
        while self.accept_op(","):
            devices.append(self.device(unsupported))
        return devices

    def device(self, unsupported: list[str]) -> Device:
        tok = self.peek()
        if self.at_kw("VIRTUAL_DEVICE", "DISK", "TAPE", "URL", "DATABASE_SNAPSHOT") and self.at_op(
            "=", 1
        ):
            self.advance()
            self.advance()
            value = self.str_value(allow_name=tok.upper == "DATABASE_SNAPSHOT") or ""
            if tok.upper in ("URL", "DATABASE_SNAPSHOT"):
                unsupported.append(tok.upper)
                kind: DeviceKind = "url"
            elif tok.upper == "VIRTUAL_DEVICE":
                kind = "virtual_device"
            elif tok.upper == "DISK":
                kind = "disk"
            else:
                kind = "tape"
            return Device(kind, value)
        if tok.kind == "var":
            self.advance()
            value_obj = self.variable(tok)
            return Device("logical", "" if value_obj is None else str(value_obj))
        return Device("logical", self.name())

    def with_options(self, statement: str, unsupported: list[str]) -> list[_RawOption]:
        options: list[_RawOption] = []
        while True:
            tok = self.peek()
            if tok.kind != "word":
                raise self.error()
            name = tok.upper
            grammar = _OPTION_GRAMMAR.get(name)
            if grammar is None:
                raise sql_error(155, tok.text, statement)
            self.advance()
            value: _OptValue = True
            if grammar == _G_INT:
                self.expect_op("=")
                value = self.int_value()
            elif grammar == _G_STATS:
                value = self.int_value() if self.accept_op("=") else 10
            elif grammar in (_G_STR, _G_NAME):
                self.expect_op("=")
                value = self.str_value(allow_name=grammar == _G_NAME)
            elif grammar == _G_MOVE:
                logical = self.str_value(allow_name=False) or ""
                self.expect_kw("TO")
                value = (logical, self.str_value(allow_name=False) or "")
            elif grammar == _G_COMPRESSION:
                if self.at_op("("):
                    self.skip_parens()
                    unsupported.append("ALGORITHM")
            elif grammar == _G_FLAG:
                pass
            else:
                unsupported.append(name)
                if grammar == _G_UNSUPPORTED_PARENS:
                    self.skip_parens()
                elif grammar in (_G_UNSUPPORTED_VALUE, _G_UNSUPPORTED_MARK):
                    self.expect_op("=")
                    self.skip_value()
                    if grammar == _G_UNSUPPORTED_MARK and self.accept_kw("AFTER"):
                        self.skip_value()
            if value is not None:
                options.append(_RawOption(name, value, tok))
            if not self.accept_op(","):
                return options

    # ---- RESTORE

    def restore(self) -> _Builder:
        self.advance()
        tok = self.peek()
        kinds: dict[str, RestoreKind] = {
            "DATABASE": "database",
            "LOG": "log",
            "VERIFYONLY": "verifyonly",
            "HEADERONLY": "headeronly",
            "FILELISTONLY": "filelistonly",
            "LABELONLY": "labelonly",
        }
        if tok.upper == "REWINDONLY":
            self.skip_rest()
            return _unsupported("RESTORE REWINDONLY")
        kind = kinds.get(tok.upper)
        if kind is None:
            raise self.error()
        self.advance()
        unsupported: list[str] = []
        database: str | None = None
        devices: list[Device] = []
        if kind in ("database", "log"):
            database = self.name_or_variable()
            self.file_list(unsupported)
            if self.accept_kw("FROM"):
                devices = self.device_list(unsupported)
        else:
            self.expect_kw("FROM")
            devices = self.device_list(unsupported)
        raw = self.with_options("RESTORE", unsupported) if self.accept_kw("WITH") else []
        key = "restore_" + kind

        def build() -> Statement:
            if unsupported:
                raise sql_error(40517, unsupported[0])
            if kind in ("database", "log") and not database:
                raise sql_error(3025)
            _check_devices(devices)
            options = _Options(raw)
            options.check(key)
            _check_snapshot(options, devices)
            options.check_ranges()
            return Restore(kind, database, tuple(devices), options.restore())

        return build

    # ---- CREATE / DROP / ALTER DATABASE

    def create(self) -> _Builder:
        self.advance()
        if not self.accept_kw("DATABASE"):
            what = "CREATE " + (self.peek().upper or self.peek().text)
            if self.at_eof():
                raise self.error()
            self.skip_rest()
            return _unsupported(what.strip())
        name = self.name()
        if self.at_kw("ON", "COLLATE", "CONTAINMENT", "FOR", "AS", "LOG"):
            what = self.peek().upper
            self.skip_rest()
            return _unsupported(what)
        raw: list[_RawOption] = []
        unsupported: list[str] = []
        known_real = frozenset(
            """FILESTREAM DEFAULT_FULLTEXT_LANGUAGE DEFAULT_LANGUAGE NESTED_TRIGGERS
            TRANSFORM_NOISE_WORDS TWO_DIGIT_YEAR_CUTOFF DB_CHAINING TRUSTWORTHY
            PERSISTENT_LOG_BUFFER CATALOG_COLLATION LEDGER""".split()
        )
        if self.accept_kw("WITH"):
            while True:
                tok = self.peek()
                if tok.kind != "word":
                    raise self.error()
                if tok.upper in ("SIZE_MB", "SEED"):
                    self.advance()
                    self.expect_op("=")
                    value = self.int_value()
                    if value is not None:
                        raw.append(_RawOption(tok.upper, value, tok))
                elif tok.upper in known_real:
                    self.advance()
                    unsupported.append(tok.upper)
                    if self.at_op("("):
                        self.skip_parens()
                    elif self.accept_op("="):
                        if self.at_op("("):
                            self.skip_parens()
                        else:
                            self.skip_value()
                    else:
                        self.skip_value()
                else:
                    raise sql_error(155, tok.text, "CREATE DATABASE")
                if not self.accept_op(","):
                    break

        def build() -> Statement:
            if unsupported:
                raise sql_error(40517, unsupported[0])
            for i, opt in enumerate(raw):
                if any(o.name == opt.name for o in raw[i + 1 :]):
                    raise sql_error(3031, opt.name.lower(), opt.name.lower())
            values = {o.name: o.value for o in raw if isinstance(o.value, int)}
            size_mb = values.get("SIZE_MB")
            seed = values.get("SEED")
            if size_mb is not None:
                _check_int("SIZE_MB", size_mb, 1, _INT_MAX)
            if seed is not None:
                _check_int("SEED", seed, 0, _BIGINT_MAX, sql_type="bigint")
            return CreateDatabase(name, size_mb, seed)

        return build

    def drop(self) -> _Builder:
        self.advance()
        if not self.accept_kw("DATABASE"):
            if self.at_eof():
                raise self.error()
            what = "DROP " + (self.peek().upper or self.peek().text)
            self.skip_rest()
            return _unsupported(what)
        if_exists = False
        if self.at_kw("IF") and self.at_kw("EXISTS", k=1):
            self.advance()
            self.advance()
            if_exists = True
        name = self.name()
        return lambda: DropDatabase(name, if_exists)

    def alter(self) -> _Builder:
        self.advance()
        if not self.accept_kw("DATABASE"):
            if self.at_eof():
                raise self.error()
            what = "ALTER " + (self.peek().upper or self.peek().text)
            self.skip_rest()
            return _unsupported(what)
        name = self.name()
        if not self.accept_kw("SET"):
            if self.at_eof():
                raise self.error()
            what = self.peek().upper or self.peek().text
            self.skip_rest()
            return _unsupported(what)
        if not self.at_kw("RECOVERY"):
            if not self.at_name() and not self.at_kw(*_RESERVED):
                raise self.error()
            what = self.peek().upper or self.peek().value
            self.skip_rest()
            return _unsupported(what)
        self.advance()
        model_tok = self.expect_kw("FULL", "SIMPLE", "BULK_LOGGED")
        model: RecoveryModel = (
            "FULL"
            if model_tok.upper == "FULL"
            else "SIMPLE"
            if model_tok.upper == "SIMPLE"
            else "BULK_LOGGED"
        )
        if self.at_op(","):
            self.advance()
            what = self.peek().upper or self.peek().text
            self.skip_rest()
            return _unsupported(what)
        if self.accept_kw("WITH"):
            if self.accept_kw("ROLLBACK"):
                if not self.accept_kw("IMMEDIATE"):
                    self.expect_kw("AFTER")
                    self.int_value()
                    self.accept_kw("SECONDS")
            else:
                self.expect_kw("NO_WAIT")
        return lambda: SetRecovery(name, model)

    # ---- EXEC

    def execute(self) -> _Builder:
        self.advance()
        if self.at_op("(") or (self.peek().kind == "var" and self.at_op("=", 1)):
            self.skip_rest()
            return _unsupported("EXECUTE")
        return self.procedure_call()

    def procedure_call(self) -> _Builder:
        parts = [self.name()]
        while self.accept_op("."):
            parts.append(self.name())
        written = ".".join(parts)
        proc = parts[-1].lower()
        args: list[_Arg] = []
        unsupported: list[str] = []
        named_seen = False
        if not self.at_statement_end():
            while True:
                arg_name: str | None = None
                tok = self.peek()
                if tok.kind == "var" and self.at_op("=", 1):
                    self.advance()
                    self.advance()
                    arg_name = tok.value
                    named_seen = True
                elif named_seen:
                    raise sql_error(119, len(args) + 1)
                args.append(self.argument(arg_name))
                if self.accept_kw("OUTPUT", "OUT"):
                    unsupported.append("OUTPUT")
                if not self.accept_op(","):
                    break
        if self.at_kw("WITH"):
            self.skip_rest()
            unsupported.append("WITH")

        def build() -> Statement:
            if proc not in _PROCEDURES or len(parts) > 3:
                raise sql_error(2812, written)
            if unsupported:
                raise sql_error(40517, unsupported[0])
            return _build_procedure(proc, args)

        return build

    def at_statement_end(self) -> bool:
        tok = self.peek()
        if tok.kind == "eof" or self.at_op(";"):
            return True
        return (
            tok.kind == "word"
            and tok.upper in _RESERVED
            and tok.upper
            not in (
                "DEFAULT",
                "NULL",
            )
        )

    def argument(self, name: str | None) -> _Arg:
        tok = self.peek()
        if tok.kind == "string":
            self.advance()
            return _Arg(name, False, tok.value, "nvarchar" if tok.national else "varchar")
        signed = self.signed_number()
        if signed is not None:
            text, _ = signed
            if _INT_TEXT_RE.fullmatch(text):
                return _Arg(name, False, _int_of(text), "int")
            return _Arg(name, False, text, "float" if "e" in text.lower() else "numeric")
        if tok.kind == "var":
            self.advance()
            value = self.variable(tok)
            if value is None:
                return _Arg(name, False, None, "NULL")
            if isinstance(value, bool | int):
                return _Arg(name, False, int(value), "int")
            if isinstance(value, float):
                return _Arg(name, False, repr(value), "float")
            return _Arg(name, False, str(value), "nvarchar")
        if self.accept_kw("DEFAULT"):
            return _Arg(name, True, None, "NULL")
        if self.accept_kw("NULL"):
            return _Arg(name, False, None, "NULL")
        if self.at_name():
            return _Arg(name, False, self.name(), "nvarchar")
        raise self.error()

    # ---- connection-level statements

    def set_option(self) -> _Builder:
        set_tok = self.advance()
        first = self.peek()
        if first.kind in ("eof",) or self.at_op(";"):
            raise self.error(set_tok if first.kind == "eof" else first)
        last = first
        depth = 0
        while True:
            tok = self.peek()
            if tok.kind == "eof" or (depth == 0 and self.at_op(";")):
                break
            if depth == 0 and tok is not first and tok.upper in _STATEMENT_STARTS:
                break
            if tok.kind == "op" and tok.value == "(":
                depth += 1
            elif tok.kind == "op" and tok.value == ")":
                depth = max(0, depth - 1)
            last = self.advance()
        text = self.sql[first.start : last.end]
        return lambda: SetOption(text)

    def use(self) -> _Builder:
        self.advance()
        database = self.name()
        return lambda: Use(database)

    def transaction(self) -> _Builder:
        tok = self.advance()
        return self.transaction_rest(tok, if_open=False)

    def transaction_rest(self, tok: _Token, *, if_open: bool) -> _Builder:
        if tok.upper == "BEGIN":
            if self.at_kw("DISTRIBUTED"):
                self.skip_rest()
                return _unsupported("BEGIN DISTRIBUTED TRANSACTION")
            if not self.accept_kw("TRAN", "TRANSACTION"):
                what = "BEGIN " + self.peek().upper if self.at_kw("TRY", "CATCH") else "BEGIN"
                self.skip_rest()
                return _unsupported(what)
            action: TransactionAction = "begin"
        else:
            action = "commit" if tok.upper == "COMMIT" else "rollback"
            if self.accept_kw("WORK") or not self.accept_kw("TRAN", "TRANSACTION"):
                return lambda: Transaction(action, None, if_open)
        name: str | None = None
        if self.peek().kind == "var":
            var = self.advance()
            value = self.variable(var)
            name = None if value is None else str(value)
        elif self.at_name():
            name = self.name()
        if action == "begin" and self.at_kw("WITH"):
            self.skip_rest()
            return _unsupported("WITH MARK")
        return lambda: Transaction(action, name, if_open)

    def if_statement(self) -> _Builder:
        self.advance()
        if (
            self.peek().kind == "sysvar"
            and self.peek().value.upper() == "@@TRANCOUNT"
            and self.at_op(">", 1)
            and self.peek(2).kind == "number"
            and self.peek(2).value == "0"
            and self.at_kw("COMMIT", "ROLLBACK", k=3)
        ):
            self.i += 3
            return self.transaction_rest(self.advance(), if_open=True)
        self.skip_rest()
        return _unsupported("IF")

    # ---- SELECT

    def select(self) -> _Builder:
        self.advance()
        expressions: list[str] = []
        aliases: list[str | None] = []
        column: str | None = None
        while True:
            alias: str | None = None
            if self.at_name() and self.at_op("=", 1):
                alias = self.name()
                self.advance()
            expression = self.select_expression()
            if isinstance(expression, SqlError):
                return _raise_later(expression)
            if expression.startswith("["):  # a column reference
                column = column or expression[1:-1].replace("]]", "]")
            if self.accept_kw("AS"):
                alias = self.alias()
            elif self.at_name() or self.peek().kind == "string":
                alias = self.alias()
            expressions.append(expression)
            aliases.append(alias)
            if not self.accept_op(","):
                break
        if self.at_kw(*_SELECT_CLAUSES):
            what = self.peek().upper
            self.skip_rest()
            return _unsupported(what)
        tok = self.peek()
        if tok.kind == "op" and tok.value not in ";":
            self.skip_rest()
            return _unsupported(tok.text)
        if column is not None:
            return _raise_later(sql_error(207, column))
        return lambda: Select(tuple(expressions), tuple(aliases))

    def alias(self) -> str:
        tok = self.peek()
        if tok.kind == "string":
            self.advance()
            if tok.value == "":
                raise sql_error(1038)
            return tok.value
        return self.name()

    def select_expression(self) -> str | SqlError:
        """Canonical text of one supported select-list expression, a ``[column]`` reference
        (reported as 207 unless a FROM makes the whole statement unsupported), or the
        40517 error of an unsupported expression (the rest of the text is skipped)."""
        tok = self.peek()
        text: str
        signed = self.signed_number()
        if signed is not None:
            text = signed[0]
        elif tok.kind == "string":
            self.advance()
            text = ("N" if tok.national else "") + "'" + tok.value.replace("'", "''") + "'"
        elif tok.kind == "sysvar":
            self.advance()
            if tok.value.upper() not in _SYSVARS:
                self.skip_rest()
                return sql_error(40517, tok.value)
            text = tok.value.upper()
        elif self.at_kw("SERVERPROPERTY") and self.at_op("(", 1):
            self.advance()
            self.advance()
            arg = self.peek()
            if arg.kind != "string":
                self.skip_rest()
                return sql_error(40517, "SERVERPROPERTY")
            self.advance()
            self.expect_op(")")
            text = "SERVERPROPERTY('" + arg.value.replace("'", "''") + "')"
        elif self.accept_kw("NULL"):
            text = "NULL"
        elif self.at_name():
            if self.at_op("(", 1):
                what = tok.value.upper()
                self.skip_rest()
                return sql_error(40517, what)
            if tok.value == "":
                raise sql_error(1038)
            self.advance()
            text = "[" + tok.value.replace("]", "]]") + "]"
        elif tok.kind == "word" and tok.upper not in _SELECT_CLAUSES | _STATEMENT_STARTS:
            self.skip_rest()
            return sql_error(40517, tok.upper)
        elif tok.kind in ("var", "binary") or (tok.kind == "op" and tok.value in "(*"):
            self.skip_rest()
            return sql_error(40517, tok.text)
        else:
            raise self.error()
        nxt = self.peek()
        if nxt.kind == "op" and nxt.value not in ",;":
            self.skip_rest()
            return sql_error(40517, nxt.text)
        return text


# --------------------------------------------------------------------------- public API


def parse(sql: str, params: Mapping[str, object] | None = None) -> Statement:
    """Parse exactly one statement (optionally followed by ``;``).

    ``params`` supplies the values of ``@variables``.  Raises :class:`SqlError` (and nothing
    else) for anything the emulated engine would reject; see the module docstring for the
    numbers and their order.
    """
    parser = _Parser(sql, params)
    (builder,) = parser.batch(single=True)
    return builder()


def parse_batch(sql: str, params: Mapping[str, object] | None = None) -> tuple[Statement, ...]:
    """Parse a batch: statements separated by ``;`` or simply following one another, as
    SQL Server allows.  The whole batch is read before any statement is checked, so a
    syntax error anywhere fails the batch first; then each statement is checked in order
    and the first failure is raised.  An empty batch gives ``()``."""
    parser = _Parser(sql, params)
    return tuple(builder() for builder in parser.batch(single=False))


# --------------------------------------------------------------------------- rendering


def _quote_name(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def _quote_string(value: str) -> str:
    return "N'" + value.replace("'", "''") + "'"


def _render_device(device: Device) -> str:
    if device.kind == "logical":
        return _quote_name(device.name)
    return f"{device.kind.upper()} = {_quote_string(device.name)}"


def _pair(value: bool | None, on: str, off: str) -> list[str]:
    if value is None:
        return []
    return [on if value else off]


def _flag(value: bool | None, keyword: str) -> list[str]:
    return [keyword] if value else []


def _valued(value: int | str | None, keyword: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [f"{keyword} = {_quote_string(value)}"]
    return [f"{keyword} = {value}"]


def _render_backup_options(o: BackupOptions) -> list[str]:
    return [
        *_flag(o.differential, "DIFFERENTIAL"),
        *_flag(o.copy_only, "COPY_ONLY"),
        *_flag(o.snapshot, "SNAPSHOT"),
        *_flag(o.metadata_only, "METADATA_ONLY"),
        *_flag(o.norecovery, "NORECOVERY"),
        *_flag(o.no_truncate, "NO_TRUNCATE"),
        *_pair(o.compression, "COMPRESSION", "NO_COMPRESSION"),
        *_pair(o.checksum, "CHECKSUM", "NO_CHECKSUM"),
        *_pair(o.continue_after_error, "CONTINUE_AFTER_ERROR", "STOP_ON_ERROR"),
        *_pair(o.init, "INIT", "NOINIT"),
        *_pair(o.format, "FORMAT", "NOFORMAT"),
        *_pair(o.skip, "SKIP", "NOSKIP"),
        *_pair(o.rewind, "REWIND", "NOREWIND"),
        *_pair(o.unload, "UNLOAD", "NOUNLOAD"),
        *_valued(o.blocksize, "BLOCKSIZE"),
        *_valued(o.buffercount, "BUFFERCOUNT"),
        *_valued(o.maxtransfersize, "MAXTRANSFERSIZE"),
        *_valued(o.stats, "STATS"),
        *_valued(o.name, "NAME"),
        *_valued(o.description, "DESCRIPTION"),
        *_valued(o.medianame, "MEDIANAME"),
        *_valued(o.mediadescription, "MEDIADESCRIPTION"),
        *_valued(o.retaindays, "RETAINDAYS"),
        *_valued(o.expiredate, "EXPIREDATE"),
    ]


def _render_restore_options(o: RestoreOptions) -> list[str]:
    return [
        *_pair(o.recovery, "RECOVERY", "NORECOVERY"),
        *_flag(o.replace, "REPLACE"),
        *_flag(o.partial, "PARTIAL"),
        *_flag(o.restricted_user, "RESTRICTED_USER"),
        *_flag(o.keep_replication, "KEEP_REPLICATION"),
        *_flag(o.loadhistory, "LOADHISTORY"),
        *_flag(o.snapshot, "SNAPSHOT"),
        *_flag(o.metadata_only, "METADATA_ONLY"),
        *(f"MOVE {_quote_string(a)} TO {_quote_string(b)}" for a, b in o.moves),
        *_valued(o.file, "FILE"),
        *_pair(o.checksum, "CHECKSUM", "NO_CHECKSUM"),
        *_pair(o.continue_after_error, "CONTINUE_AFTER_ERROR", "STOP_ON_ERROR"),
        *_pair(o.rewind, "REWIND", "NOREWIND"),
        *_pair(o.unload, "UNLOAD", "NOUNLOAD"),
        *_valued(o.blocksize, "BLOCKSIZE"),
        *_valued(o.buffercount, "BUFFERCOUNT"),
        *_valued(o.maxtransfersize, "MAXTRANSFERSIZE"),
        *_valued(o.stats, "STATS"),
        *_valued(o.medianame, "MEDIANAME"),
    ]


def _with(options: list[str]) -> str:
    return " WITH " + ", ".join(options) if options else ""


def render(stmt: Statement) -> str:
    """Canonical T-SQL for ``stmt`` (names bracketed, strings as N'...').  For every
    statement :func:`parse` returns, ``parse(render(stmt)) == stmt``."""
    if isinstance(stmt, Backup):
        devices = ", ".join(_render_device(d) for d in stmt.devices)
        what = "LOG" if stmt.log else "DATABASE"
        options = _render_backup_options(stmt.options)
        return f"BACKUP {what} {_quote_name(stmt.database)} TO {devices}{_with(options)}"
    if isinstance(stmt, Restore):
        head = f"RESTORE {stmt.kind.upper()}"
        if stmt.database is not None:
            head += " " + _quote_name(stmt.database)
        if stmt.devices:
            head += " FROM " + ", ".join(_render_device(d) for d in stmt.devices)
        return head + _with(_render_restore_options(stmt.options))
    if isinstance(stmt, CreateDatabase):
        opts = [*_valued(stmt.size_mb, "SIZE_MB"), *_valued(stmt.seed, "SEED")]
        return f"CREATE DATABASE {_quote_name(stmt.name)}{_with(opts)}"
    if isinstance(stmt, DropDatabase):
        exists = "IF EXISTS " if stmt.if_exists else ""
        return f"DROP DATABASE {exists}{_quote_name(stmt.name)}"
    if isinstance(stmt, SetRecovery):
        return f"ALTER DATABASE {_quote_name(stmt.name)} SET RECOVERY {stmt.model}"
    if isinstance(stmt, Workload):
        seed = "" if stmt.seed is None else f", @seed = {stmt.seed}"
        return (
            f"EXEC sp_vdisim_workload @database = {_quote_string(stmt.database)}, "
            f"@changes = {stmt.changes}{seed}"
        )
    if isinstance(stmt, Checksum):
        return f"EXEC sp_vdisim_checksum @database = {_quote_string(stmt.database)}"
    if isinstance(stmt, ListDatabases):
        return "EXEC sp_vdisim_databases"
    if isinstance(stmt, SetOption):
        return f"SET {stmt.text}"
    if isinstance(stmt, Use):
        return f"USE {_quote_name(stmt.database)}"
    if isinstance(stmt, Transaction):
        text = f"{stmt.action.upper()} TRANSACTION"
        if stmt.name is not None:
            text += " " + _quote_name(stmt.name)
        return ("IF @@TRANCOUNT > 0 " + text) if stmt.if_open else text
    items = [
        expr if alias is None else f"{expr} AS {_quote_name(alias)}"
        for expr, alias in zip(stmt.expressions, stmt.aliases, strict=True)
    ]
    return "SELECT " + ", ".join(items)
