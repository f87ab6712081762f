"""Tests for vdisim.engine.tsql: every statement, every option, every error path."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdisim.engine.sqlerrors import SqlError
from vdisim.engine.tsql import (
    MAX_BACKUP_DEVICES,
    Backup,
    BackupOptions,
    Checksum,
    CreateDatabase,
    Device,
    DropDatabase,
    ListDatabases,
    RecoveryModel,
    Restore,
    RestoreOptions,
    Select,
    SetOption,
    SetRecovery,
    Statement,
    Transaction,
    Use,
    Workload,
    parse,
    parse_batch,
    render,
    statement_label,
)

VD = "VIRTUAL_DEVICE = N'{0D0F5BA0-B21A-4519-A961-A6E2292A17CA}'"


def err(sql: str, params: dict[str, object] | None = None) -> SqlError:
    with pytest.raises(SqlError) as info:
        parse(sql, params)
    return info.value


def backup_options(sql_with: str) -> BackupOptions:
    stmt = parse(f"BACKUP DATABASE db TO {VD} WITH {sql_with}")
    assert isinstance(stmt, Backup)
    return stmt.options


def log_options(sql_with: str) -> BackupOptions:
    stmt = parse(f"BACKUP LOG db TO {VD} WITH {sql_with}")
    assert isinstance(stmt, Backup)
    return stmt.options


def restore_options(sql_with: str, kind: str = "DATABASE db") -> RestoreOptions:
    stmt = parse(f"RESTORE {kind} FROM {VD} WITH {sql_with}")
    assert isinstance(stmt, Restore)
    return stmt.options


# --------------------------------------------------------------------------- BACKUP


def test_backup_database_minimal() -> None:
    stmt = parse(f"BACKUP DATABASE db TO {VD}")
    assert stmt == Backup(
        "db",
        False,
        (Device("virtual_device", "{0D0F5BA0-B21A-4519-A961-A6E2292A17CA}"),),
        BackupOptions(),
    )


def test_backup_log() -> None:
    stmt = parse("BACKUP LOG [db] TO DISK = 'c:\\x.trn'")
    assert stmt == Backup("db", True, (Device("disk", "c:\\x.trn"),), BackupOptions())


def test_backup_all_device_kinds() -> None:
    assert parse("BACKUP DATABASE db TO TAPE = '\\\\.\\tape0'") == Backup(
        "db", False, (Device("tape", "\\\\.\\tape0"),)
    )
    assert parse("BACKUP DATABASE db TO mydevice") == Backup(
        "db", False, (Device("logical", "mydevice"),)
    )
    assert parse("BACKUP DATABASE db TO [my device]") == Backup(
        "db", False, (Device("logical", "my device"),)
    )
    # a logical device may be mixed with physical ones: its class is only known at run time
    stmt = parse("BACKUP DATABASE db TO dev1, DISK = 'x'")
    assert isinstance(stmt, Backup)
    assert [d.kind for d in stmt.devices] == ["logical", "disk"]


def test_backup_multiple_virtual_devices_keep_order() -> None:
    names = [f"set{i}" for i in range(MAX_BACKUP_DEVICES)]
    sql = "BACKUP DATABASE db TO " + ", ".join(f"VIRTUAL_DEVICE='{n}'" for n in names)
    stmt = parse(sql)
    assert isinstance(stmt, Backup)
    assert [d.name for d in stmt.devices] == names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DIFFERENTIAL", BackupOptions(differential=True)),
        ("COPY_ONLY", BackupOptions(copy_only=True)),
        ("BLOCKSIZE = 512", BackupOptions(blocksize=512)),
        ("BLOCKSIZE = 65536", BackupOptions(blocksize=65536)),
        ("BUFFERCOUNT = 1", BackupOptions(buffercount=1)),
        ("BUFFERCOUNT = 2147483647", BackupOptions(buffercount=2147483647)),
        ("MAXTRANSFERSIZE = 65536", BackupOptions(maxtransfersize=65536)),
        ("MAXTRANSFERSIZE = 4194304", BackupOptions(maxtransfersize=4194304)),
        ("STATS", BackupOptions(stats=10)),
        ("STATS = 1", BackupOptions(stats=1)),
        ("STATS = 100", BackupOptions(stats=100)),
        ("CHECKSUM", BackupOptions(checksum=True)),
        ("NO_CHECKSUM", BackupOptions(checksum=False)),
        ("COMPRESSION", BackupOptions(compression=True)),
        ("NO_COMPRESSION", BackupOptions(compression=False)),
        ("INIT", BackupOptions(init=True)),
        ("NOINIT", BackupOptions(init=False)),
        ("FORMAT", BackupOptions(format=True)),
        ("NOFORMAT", BackupOptions(format=False)),
        ("SKIP", BackupOptions(skip=True)),
        ("NOSKIP", BackupOptions(skip=False)),
        ("REWIND", BackupOptions(rewind=True)),
        ("NOREWIND", BackupOptions(rewind=False)),
        ("UNLOAD", BackupOptions(unload=True)),
        ("NOUNLOAD", BackupOptions(unload=False)),
        ("NAME = N'Full backup'", BackupOptions(name="Full backup")),
        ("NAME = nightly", BackupOptions(name="nightly")),
        ("NAME = [night ly]", BackupOptions(name="night ly")),
        ("DESCRIPTION = 'it''s'", BackupOptions(description="it's")),
        ("MEDIANAME = media1", BackupOptions(medianame="media1")),
        ("MEDIADESCRIPTION = N'm'", BackupOptions(mediadescription="m")),
        ("SNAPSHOT", BackupOptions(snapshot=True)),
        ("METADATA_ONLY", BackupOptions(metadata_only=True)),
        ("CONTINUE_AFTER_ERROR", BackupOptions(continue_after_error=True)),
        ("STOP_ON_ERROR", BackupOptions(continue_after_error=False)),
        ("RETAINDAYS = 0", BackupOptions(retaindays=0)),
        ("RETAINDAYS = 30", BackupOptions(retaindays=30)),
        ("EXPIREDATE = '2030-01-01'", BackupOptions(expiredate="2030-01-01")),
    ],
)
def test_backup_database_option(text: str, expected: BackupOptions) -> None:
    assert backup_options(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NORECOVERY", BackupOptions(norecovery=True)),
        ("NO_TRUNCATE", BackupOptions(no_truncate=True)),
        (
            "NORECOVERY, NO_TRUNCATE, COPY_ONLY",
            BackupOptions(norecovery=True, no_truncate=True, copy_only=True),
        ),
        ("INIT, CHECKSUM, STATS = 5", BackupOptions(init=True, checksum=True, stats=5)),
    ],
)
def test_backup_log_option(text: str, expected: BackupOptions) -> None:
    assert log_options(text) == expected


def test_backup_snapshot_properties() -> None:
    assert backup_options("SNAPSHOT").is_snapshot
    assert backup_options("METADATA_ONLY").is_snapshot
    assert not backup_options("INIT").is_snapshot


def test_backup_many_options_together() -> None:
    opts = backup_options(
        "BLOCKSIZE = 4096, BUFFERCOUNT = 8, MAXTRANSFERSIZE = 1048576, STATS = 25, CHECKSUM,"
        " COMPRESSION, INIT, FORMAT, SKIP, NAME = 'n', DESCRIPTION = 'd', MEDIANAME = 'm',"
        " MEDIADESCRIPTION = 'md', COPY_ONLY, CONTINUE_AFTER_ERROR, REWIND, NOUNLOAD,"
        " RETAINDAYS = 7"
    )
    assert opts == BackupOptions(
        blocksize=4096,
        buffercount=8,
        maxtransfersize=1048576,
        stats=25,
        checksum=True,
        compression=True,
        init=True,
        format=True,
        skip=True,
        name="n",
        description="d",
        medianame="m",
        mediadescription="md",
        copy_only=True,
        continue_after_error=True,
        rewind=True,
        unload=False,
        retaindays=7,
    )


def test_backup_differential_and_copy_only_are_accepted_by_the_parser() -> None:
    # SQL Server rejects this pair at run time (3035), not at parse time.
    assert backup_options("DIFFERENTIAL, COPY_ONLY") == BackupOptions(
        differential=True, copy_only=True
    )


# --------------------------------------------------------------------------- RESTORE


def test_restore_database() -> None:
    stmt = parse(f"RESTORE DATABASE db FROM {VD}")
    assert isinstance(stmt, Restore)
    assert (stmt.kind, stmt.database, stmt.options) == ("database", "db", RestoreOptions())


def test_restore_log() -> None:
    stmt = parse("RESTORE LOG db FROM DISK = 'x' WITH NORECOVERY")
    assert stmt == Restore("log", "db", (Device("disk", "x"),), RestoreOptions(recovery=False))


def test_restore_without_from_recovers_only() -> None:
    assert parse("RESTORE DATABASE db WITH RECOVERY") == Restore(
        "database", "db", (), RestoreOptions(recovery=True)
    )
    assert parse("RESTORE LOG db") == Restore("log", "db", ())


@pytest.mark.parametrize(
    ("kind", "word"),
    [
        ("verifyonly", "VERIFYONLY"),
        ("headeronly", "HEADERONLY"),
        ("filelistonly", "FILELISTONLY"),
        ("labelonly", "LABELONLY"),
    ],
)
def test_restore_metadata_statements(kind: str, word: str) -> None:
    stmt = parse(f"restore {word.lower()} from {VD}")
    assert isinstance(stmt, Restore)
    assert (stmt.kind, stmt.database, len(stmt.devices)) == (kind, None, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RECOVERY", RestoreOptions(recovery=True)),
        ("NORECOVERY", RestoreOptions(recovery=False)),
        ("REPLACE", RestoreOptions(replace=True)),
        ("MOVE 'data' TO '/var/db.mdf'", RestoreOptions(moves=(("data", "/var/db.mdf"),))),
        (
            "MOVE N'a' TO N'b', MOVE 'c' TO 'd'",
            RestoreOptions(moves=(("a", "b"), ("c", "d"))),
        ),
        ("FILE = 3", RestoreOptions(file=3)),
        ("STATS", RestoreOptions(stats=10)),
        ("STATS = 50", RestoreOptions(stats=50)),
        ("CHECKSUM", RestoreOptions(checksum=True)),
        ("NO_CHECKSUM", RestoreOptions(checksum=False)),
        ("BLOCKSIZE = 1024", RestoreOptions(blocksize=1024)),
        ("BUFFERCOUNT = 20", RestoreOptions(buffercount=20)),
        ("MAXTRANSFERSIZE = 131072", RestoreOptions(maxtransfersize=131072)),
        ("SNAPSHOT", RestoreOptions(snapshot=True)),
        ("METADATA_ONLY", RestoreOptions(metadata_only=True)),
        ("CONTINUE_AFTER_ERROR", RestoreOptions(continue_after_error=True)),
        ("STOP_ON_ERROR", RestoreOptions(continue_after_error=False)),
        ("PARTIAL", RestoreOptions(partial=True)),
        ("RESTRICTED_USER", RestoreOptions(restricted_user=True)),
        ("KEEP_REPLICATION", RestoreOptions(keep_replication=True)),
        ("REWIND", RestoreOptions(rewind=True)),
        ("NOREWIND", RestoreOptions(rewind=False)),
        ("UNLOAD", RestoreOptions(unload=True)),
        ("NOUNLOAD", RestoreOptions(unload=False)),
        ("MEDIANAME = m", RestoreOptions(medianame="m")),
    ],
)
def test_restore_database_option(text: str, expected: RestoreOptions) -> None:
    assert restore_options(text) == expected


def test_restore_verifyonly_options() -> None:
    assert restore_options("LOADHISTORY, FILE = 2, STATS, MOVE 'a' TO 'b'", "VERIFYONLY") == (
        RestoreOptions(loadhistory=True, file=2, stats=10, moves=(("a", "b"),))
    )
    assert restore_options("FILE = 1, CHECKSUM", "HEADERONLY") == RestoreOptions(
        file=1, checksum=True
    )
    assert restore_options("FILE = 1", "FILELISTONLY") == RestoreOptions(file=1)
    assert restore_options("MEDIANAME = m, REWIND", "LABELONLY") == RestoreOptions(
        medianame="m", rewind=True
    )


def test_restore_snapshot_property() -> None:
    assert restore_options("SNAPSHOT").is_snapshot
    assert restore_options("METADATA_ONLY").is_snapshot
    assert not restore_options("REPLACE").is_snapshot


# --------------------------------------------------------------------------- engine statements


def test_create_database() -> None:
    assert parse("CREATE DATABASE sales") == CreateDatabase("sales")
    assert parse("CREATE DATABASE [s] WITH SIZE_MB = 64") == CreateDatabase("s", 64)
    assert parse("create database s with seed = 7, size_mb = 2") == CreateDatabase("s", 2, 7)
    assert parse("CREATE DATABASE s WITH SEED = 0") == CreateDatabase("s", None, 0)


def test_drop_database() -> None:
    assert parse("DROP DATABASE sales") == DropDatabase("sales")
    assert parse("DROP DATABASE IF EXISTS [sales]") == DropDatabase("sales", True)


@pytest.mark.parametrize("model", ["FULL", "SIMPLE", "BULK_LOGGED"])
def test_set_recovery(model: RecoveryModel) -> None:
    assert parse(f"ALTER DATABASE db SET RECOVERY {model.lower()}") == SetRecovery("db", model)


@pytest.mark.parametrize(
    "tail",
    [
        "WITH NO_WAIT",
        "WITH ROLLBACK IMMEDIATE",
        "WITH ROLLBACK AFTER 5 SECONDS",
        "WITH ROLLBACK AFTER 5",
    ],
)
def test_set_recovery_termination_clause(tail: str) -> None:
    assert parse(f"ALTER DATABASE db SET RECOVERY SIMPLE {tail}") == SetRecovery("db", "SIMPLE")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "EXEC sp_vdisim_workload @database = 'x', @changes = 100, @seed = 7",
            Workload("x", 100, 7),
        ),
        ("EXEC sp_vdisim_workload 'x', 100, 7", Workload("x", 100, 7)),
        ("EXEC sp_vdisim_workload 'x', 100", Workload("x", 100, None)),
        ("EXECUTE sp_vdisim_workload @changes = 5, @database = N'x'", Workload("x", 5)),
        ("exec SP_VDISIM_WORKLOAD 'x', @changes = 0", Workload("x", 0)),
        ("EXEC sp_vdisim_workload 'x', '12', DEFAULT", Workload("x", 12)),
        ("EXEC sp_vdisim_workload 'x', 12, NULL", Workload("x", 12)),
        ("EXEC sp_vdisim_workload x, 12.9", Workload("x", 12)),
        ("EXEC master.dbo.sp_vdisim_workload 'x', 1", Workload("x", 1)),
        ("EXEC sp_vdisim_checksum 'x'", Checksum("x")),
        ("EXEC sp_vdisim_checksum @database = [x]", Checksum("x")),
        ("EXEC sp_vdisim_databases", ListDatabases()),
        ("sp_vdisim_databases", ListDatabases()),
        ("[sp_vdisim_checksum] db1", Checksum("db1")),
    ],
)
def test_procedures(sql: str, expected: Statement) -> None:
    assert parse(sql) == expected


def test_procedure_arguments_from_params() -> None:
    params: dict[str, object] = {"@db": "x", "n": 10, "s": "3"}
    assert parse("EXEC sp_vdisim_workload @db, @n, @s", params) == Workload("x", 10, 3)


# --------------------------------------------------------------------------- connection chatter


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SET NOCOUNT ON", "NOCOUNT ON"),
        ("set textsize 2147483647;", "textsize 2147483647"),
        (
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "TRANSACTION ISOLATION LEVEL READ COMMITTED",
        ),
        ("SET DATEFORMAT mdy", "DATEFORMAT mdy"),
        ("SET LANGUAGE N'us_english'", "LANGUAGE N'us_english'"),
        ("SET LOCK_TIMEOUT -1", "LOCK_TIMEOUT -1"),
    ],
)
def test_set(sql: str, text: str) -> None:
    stmt = parse(sql)
    assert stmt == SetOption(text)
    assert isinstance(stmt, SetOption)
    assert stmt.name == text.split()[0].upper()


def test_use() -> None:
    assert parse("USE master") == Use("master")
    assert parse('USE "my db"') == Use("my db")
    assert parse("use [a]]b]") == Use("a]b")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("BEGIN TRAN", Transaction("begin")),
        ("BEGIN TRANSACTION t1", Transaction("begin", "t1")),
        ("begin tran @t", Transaction("begin", "named")),
        ("COMMIT", Transaction("commit")),
        ("COMMIT TRAN", Transaction("commit")),
        ("COMMIT TRANSACTION t1", Transaction("commit", "t1")),
        ("COMMIT WORK", Transaction("commit")),
        ("ROLLBACK", Transaction("rollback")),
        ("ROLLBACK TRAN", Transaction("rollback")),
        ("ROLLBACK WORK", Transaction("rollback")),
        ("IF @@TRANCOUNT > 0 COMMIT TRAN", Transaction("commit", None, True)),
        ("if @@trancount > 0 rollback", Transaction("rollback", None, True)),
    ],
)
def test_transactions(sql: str, expected: Transaction) -> None:
    assert parse(sql, {"t": "named"}) == expected


@pytest.mark.parametrize(
    ("sql", "expressions", "aliases"),
    [
        ("SELECT @@VERSION", ("@@VERSION",), (None,)),
        ("select @@version", ("@@VERSION",), (None,)),
        ("SELECT @@SPID", ("@@SPID",), (None,)),
        ("SELECT @@SERVERNAME", ("@@SERVERNAME",), (None,)),
        ("SELECT @@MAX_PRECISION", ("@@MAX_PRECISION",), (None,)),
        ("SELECT @@TRANCOUNT", ("@@TRANCOUNT",), (None,)),
        ("SELECT SERVERPROPERTY('ProductVersion')", ("SERVERPROPERTY('ProductVersion')",), (None,)),
        ("SELECT serverproperty(N'Edition') AS ed", ("SERVERPROPERTY('Edition')",), ("ed",)),
        ("SELECT 1", ("1",), (None,)),
        ("SELECT -1", ("-1",), (None,)),
        ("SELECT 1.5", ("1.5",), (None,)),
        ("SELECT 'it''s', N'x'", ("'it''s'", "N'x'"), (None, None)),
        ("SELECT NULL", ("NULL",), (None,)),
        (
            "SELECT 1 AS one, @@SPID spid, v = @@VERSION, 2 [two], 3 'three'",
            ("1", "@@SPID", "@@VERSION", "2", "3"),
            ("one", "spid", "v", "two", "three"),
        ),
    ],
)
def test_select(sql: str, expressions: tuple[str, ...], aliases: tuple[str | None, ...]) -> None:
    assert parse(sql) == Select(expressions, aliases)


# --------------------------------------------------------------------------- lexical


@pytest.mark.parametrize(
    "sql",
    [
        "backup database db to virtual_device = 'v'",
        "BaCkUp DaTaBaSe db To ViRtUaL_dEvIcE = 'v'",
        "  BACKUP DATABASE db TO VIRTUAL_DEVICE = 'v' ;  ",
        "BACKUP DATABASE db TO VIRTUAL_DEVICE = 'v';;",
        "-- leading comment\nBACKUP DATABASE db TO VIRTUAL_DEVICE = 'v' -- trailing",
        "/* a */BACKUP/* b */DATABASE/* c\n */db TO VIRTUAL_DEVICE='v'/* d */",
        "/* outer /* nested */ still comment */ BACKUP DATABASE db TO VIRTUAL_DEVICE=N'v'",
        "BACKUP\tDATABASE\r\n[db]\nTO\nVIRTUAL_DEVICE\n=\n'v'",
        "BACKUP DATABASE \"db\" TO VIRTUAL_DEVICE = 'v'",
        "BACKUP DATABASE @d TO VIRTUAL_DEVICE = @v",
    ],
)
def test_lexical_variants(sql: str) -> None:
    assert parse(sql, {"d": "db", "@V": "v"}) == Backup(
        "db", False, (Device("virtual_device", "v"),)
    )


def test_escapes() -> None:
    stmt = parse("BACKUP DATABASE [a]]b] TO DISK = N'it''s' WITH NAME = \"x\"\"y\"")
    assert isinstance(stmt, Backup)
    assert stmt.database == "a]b"
    assert stmt.devices[0].name == "it's"
    assert stmt.options.name == 'x"y'


def test_comment_markers_inside_strings_are_text() -> None:
    stmt = parse("BACKUP DATABASE db TO DISK = '--not /* a comment' -- real comment")
    assert isinstance(stmt, Backup)
    assert stmt.devices[0].name == "--not /* a comment"


def test_params_for_options() -> None:
    params: dict[str, object] = {
        "bs": 4096,
        "bc": "8",
        "mts": 65536.0,
        "st": True,
        "name": "n",
        "null": None,
    }
    opts = backup_options_with_params(
        "BLOCKSIZE = @bs, BUFFERCOUNT = @bc, MAXTRANSFERSIZE = @mts, STATS = @st,"
        " NAME = @name, DESCRIPTION = @null, RETAINDAYS = @null",
        params,
    )
    assert opts == BackupOptions(
        blocksize=4096, buffercount=8, maxtransfersize=65536, stats=1, name="n"
    )


def backup_options_with_params(sql_with: str, params: dict[str, object]) -> BackupOptions:
    stmt = parse(f"BACKUP DATABASE db TO {VD} WITH {sql_with}", params)
    assert isinstance(stmt, Backup)
    return stmt.options


def test_params_logical_device_and_names() -> None:
    assert parse("BACKUP DATABASE db TO @dev", {"dev": "tapes"}) == Backup(
        "db", False, (Device("logical", "tapes"),)
    )


def test_identifier_of_128_characters_is_accepted() -> None:
    name = "d" * 128
    assert parse(f"USE {name}") == Use(name)
    assert parse(f"USE [{name}]") == Use(name)


# --------------------------------------------------------------------------- batches


def test_parse_batch_driver_connect_batch() -> None:
    batch = (
        "SET ARITHABORT ON;SET CONCAT_NULL_YIELDS_NULL ON;SET ANSI_NULLS ON;"
        "SET TEXTSIZE 2147483647;use [db]"
    )
    assert parse_batch(batch) == (
        SetOption("ARITHABORT ON"),
        SetOption("CONCAT_NULL_YIELDS_NULL ON"),
        SetOption("ANSI_NULLS ON"),
        SetOption("TEXTSIZE 2147483647"),
        Use("db"),
    )


def test_parse_batch_without_semicolons() -> None:
    batch = "set ansi_nulls on\nset textsize 1024\nSELECT @@MAX_PRECISION\nBEGIN TRAN"
    assert parse_batch(batch) == (
        SetOption("ansi_nulls on"),
        SetOption("textsize 1024"),
        Select(("@@MAX_PRECISION",), (None,)),
        Transaction("begin"),
    )


def test_parse_batch_empty() -> None:
    assert parse_batch("") == ()
    assert parse_batch("  ;; -- nothing\n") == ()


def test_parse_batch_syntax_errors_come_before_execution_errors() -> None:
    with pytest.raises(SqlError) as info:
        parse_batch("BACKUP DATABASE db TO DISK='x' WITH STATS = 0; SELECT 1 +")
    assert info.value.number == 3250  # 40517 is an execution error: statements run in order
    with pytest.raises(SqlError) as info:
        parse_batch("BACKUP DATABASE db TO DISK='x' WITH STATS = 0; BACKUP LOG")
    assert info.value.number == 102


def test_parse_batch_bare_procedure_only_first() -> None:
    assert parse_batch("sp_vdisim_databases") == (ListDatabases(),)
    with pytest.raises(SqlError) as info:
        parse_batch("SET NOCOUNT ON; sp_vdisim_databases")
    assert info.value.number == 102


def test_parse_rejects_a_second_statement() -> None:
    e = err("SELECT 1; SELECT 2")
    assert (e.number, e.messages[0].text) == (102, "Incorrect syntax near 'SELECT'.")


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("sql", "label"),
    [
        (f"BACKUP DATABASE db TO {VD}", "BACKUP DATABASE"),
        (f"BACKUP DATABASE db TO {VD} WITH DIFFERENTIAL", "BACKUP DATABASE"),
        (f"BACKUP LOG db TO {VD}", "BACKUP LOG"),
        (f"RESTORE DATABASE db FROM {VD}", "RESTORE DATABASE"),
        (f"RESTORE LOG db FROM {VD}", "RESTORE LOG"),
        (f"RESTORE VERIFYONLY FROM {VD}", "VERIFY DATABASE"),
        (f"RESTORE HEADERONLY FROM {VD}", "RESTORE HEADERONLY"),
        (f"RESTORE FILELISTONLY FROM {VD}", "RESTORE FILELIST"),
        (f"RESTORE LABELONLY FROM {VD}", "RESTORE LABELONLY"),
        ("CREATE DATABASE x", "CREATE DATABASE"),
        ("DROP DATABASE x", "DROP DATABASE"),
        ("ALTER DATABASE x SET RECOVERY FULL", "ALTER DATABASE"),
        ("EXEC sp_vdisim_databases", "EXECUTE"),
        ("SET NOCOUNT ON", "SET"),
        ("USE x", "USE"),
        ("BEGIN TRAN", "BEGIN TRANSACTION"),
        ("COMMIT", "COMMIT TRANSACTION"),
        ("SELECT 1", "SELECT"),
    ],
)
def test_statement_label(sql: str, label: str) -> None:
    assert statement_label(parse(sql)) == label


def test_statement_label_success_form() -> None:
    diff = parse(f"BACKUP DATABASE db TO {VD} WITH DIFFERENTIAL")
    full = parse(f"BACKUP DATABASE db TO {VD}")
    assert statement_label(diff, success=True) == "BACKUP DATABASE WITH DIFFERENTIAL"
    assert statement_label(full, success=True) == "BACKUP DATABASE"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("sql", "number", "text"),
    [
        # 102: syntax, quoting the offending token (the last one at the end of the text)
        ("", 102, "Incorrect syntax near ''."),
        ("BACKUP", 102, "Incorrect syntax near 'BACKUP'."),
        ("BACKUP DATABASE", 102, "Incorrect syntax near 'DATABASE'."),
        ("BACKUP DATABASE db", 102, "Incorrect syntax near 'db'."),
        ("BACKUP DATABASE db TO", 102, "Incorrect syntax near 'TO'."),
        ("BACKUP DATABASE TO DISK='x'", 102, "Incorrect syntax near 'TO'."),
        ("BACKUP DATABASE db FROM DISK='x'", 102, "Incorrect syntax near 'FROM'."),
        ("BACKUP DATABASE db TO DISK 'x'", 102, "Incorrect syntax near 'DISK'."),
        ("BACKUP DATABASE db TO DISK = x", 102, "Incorrect syntax near 'x'."),
        ("BACKUP DATABASE db TO 'x'", 102, "Incorrect syntax near 'x'."),
        ("BACKUP DATABASE db TO DISK='x' WITH", 102, "Incorrect syntax near 'WITH'."),
        ("BACKUP DATABASE db TO DISK='x' WITH INIT,", 102, "Incorrect syntax near ','."),
        ("BACKUP DATABASE db TO DISK='x' WITH INIT = 1", 102, "Incorrect syntax near '='."),
        (
            "BACKUP DATABASE db TO DISK='x' WITH BLOCKSIZE",
            102,
            "Incorrect syntax near 'BLOCKSIZE'.",
        ),
        (
            "BACKUP DATABASE db TO DISK='x' WITH BLOCKSIZE = 'big'",
            102,
            "Incorrect syntax near 'big'.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH STATS = 1.5", 102, "Incorrect syntax near '1.5'."),
        ("BACKUP DATABASE db TO DISK='x' WITH 'INIT'", 102, "Incorrect syntax near 'INIT'."),
        ("BACKUP DATABASE db TO DISK='x' INIT", 102, "Incorrect syntax near 'INIT'."),
        ("BACKUP TABLE t TO DISK='x'", 102, "Incorrect syntax near 'TABLE'."),
        ("RESTORE", 102, "Incorrect syntax near 'RESTORE'."),
        ("RESTORE DATABASE db FROM", 102, "Incorrect syntax near 'FROM'."),
        ("RESTORE HEADERONLY", 102, "Incorrect syntax near 'HEADERONLY'."),
        ("RESTORE DATABASE db FROM DISK='x' WITH MOVE 'a' 'b'", 102, "Incorrect syntax near 'b'."),
        ("CREATE DATABASE", 102, "Incorrect syntax near 'DATABASE'."),
        ("CREATE DATABASE x WITH SIZE_MB", 102, "Incorrect syntax near 'SIZE_MB'."),
        ("DROP DATABASE", 102, "Incorrect syntax near 'DATABASE'."),
        ("DROP DATABASE a, b", 102, "Incorrect syntax near ','."),
        ("ALTER DATABASE x SET RECOVERY", 102, "Incorrect syntax near 'RECOVERY'."),
        ("ALTER DATABASE x SET RECOVERY PARTIAL", 102, "Incorrect syntax near 'PARTIAL'."),
        ("USE", 102, "Incorrect syntax near 'USE'."),
        ("USE 'db'", 102, "Incorrect syntax near 'db'."),
        ("SET", 102, "Incorrect syntax near 'SET'."),
        ("SELECT", 102, "Incorrect syntax near 'SELECT'."),
        ("SELECT FROM t", 102, "Incorrect syntax near 'FROM'."),
        ("SELECT 1,", 102, "Incorrect syntax near ','."),
        ("EXEC", 102, "Incorrect syntax near 'EXEC'."),
        ("FROM x", 102, "Incorrect syntax near 'FROM'."),
        (")", 102, "Incorrect syntax near ')'."),
        ("'lonely string'", 102, "Incorrect syntax near 'lonely string'."),
        # lexical errors
        (
            "BACKUP DATABASE db TO DISK='x",
            105,
            "Unclosed quotation mark after the character string 'x'.",
        ),
        ("USE [db", 105, "Unclosed quotation mark after the character string 'db'."),
        ('USE "db', 105, "Unclosed quotation mark after the character string 'db'."),
        ("SELECT 1 /* open", 113, "Missing end comment mark '*/'."),
        ("SELECT 1 /* /* nested */", 113, "Missing end comment mark '*/'."),
        (
            "USE " + "x" * 129,
            103,
            f"The identifier that starts with '{'x' * 128}' is too long. Maximum length is 128.",
        ),
        ("USE []", 1038, None),
        ("SELECT 1 AS ''", 1038, None),
        # 155: unknown WITH option
        (
            "BACKUP DATABASE db TO DISK='x' WITH FOO",
            155,
            "'FOO' is not a recognized BACKUP option.",
        ),
        (
            "BACKUP LOG db TO DISK='x' WITH truncate_only",
            155,
            "'truncate_only' is not a recognized BACKUP option.",
        ),
        (
            "RESTORE DATABASE db FROM DISK='x' WITH bar",
            155,
            "'bar' is not a recognized RESTORE option.",
        ),
        (
            "CREATE DATABASE x WITH SIZE = 5",
            155,
            "'SIZE' is not a recognized CREATE DATABASE option.",
        ),
        # 137: undeclared variable
        ("BACKUP DATABASE @db TO DISK='x'", 137, 'Must declare the scalar variable "@db".'),
        ("BACKUP DATABASE db TO DISK=@p", 137, 'Must declare the scalar variable "@p".'),
        (
            "BACKUP DATABASE db TO DISK='x' WITH STATS = @s",
            137,
            'Must declare the scalar variable "@s".',
        ),
    ],
)
def test_syntax_errors(sql: str, number: int, text: str | None) -> None:
    e = err(sql)
    assert e.number == number
    if text is not None:
        assert e.messages[0].text == text
    assert e.messages[0].severity == 15


UNSUPPORTED = [
    ("BACKUP DATABASE db TO URL = 'https://x/y.bak'", "URL"),
    ("RESTORE DATABASE db FROM URL = 'https://x/y.bak'", "URL"),
    ("RESTORE DATABASE db FROM DATABASE_SNAPSHOT = snap", "DATABASE_SNAPSHOT"),
    (
        "BACKUP DATABASE db TO DISK='x' WITH ENCRYPTION (ALGORITHM = AES_256, "
        "SERVER CERTIFICATE = c)",
        "ENCRYPTION",
    ),
    ("BACKUP DATABASE db TO DISK='x' WITH CREDENTIAL", "CREDENTIAL"),
    ("BACKUP DATABASE db TO DISK='x' WITH FILE_SNAPSHOT", "FILE_SNAPSHOT"),
    ("BACKUP DATABASE db TO DISK='x' WITH RESTART", "RESTART"),
    ("BACKUP DATABASE db TO DISK='x' WITH PASSWORD = 'p'", "PASSWORD"),
    ("BACKUP DATABASE db TO DISK='x' WITH MEDIAPASSWORD = 'p'", "MEDIAPASSWORD"),
    ("BACKUP DATABASE db TO DISK='x' WITH COMPRESSION (ALGORITHM = MS_XPRESS)", "ALGORITHM"),
    ("BACKUP LOG db TO DISK='x' WITH STANDBY = 'undo.ldf'", "STANDBY"),
    ("RESTORE DATABASE db FROM DISK='x' WITH STANDBY = 'undo.ldf'", "STANDBY"),
    ("RESTORE LOG db FROM DISK='x' WITH STOPAT = '2024-01-01T00:00:00'", "STOPAT"),
    ("RESTORE LOG db FROM DISK='x' WITH STOPATMARK = 'lsn:15000000040000037'", "STOPATMARK"),
    ("RESTORE LOG db FROM DISK='x' WITH STOPBEFOREMARK = 'm' AFTER '2024-01-01'", "STOPBEFOREMARK"),
    ("RESTORE DATABASE db FROM DISK='x' WITH DBNAME = d", "DBNAME"),
    ("RESTORE DATABASE db FROM DISK='x' WITH KEEP_CDC", "KEEP_CDC"),
    ("RESTORE DATABASE db FROM DISK='x' WITH FILESTREAM (DIRECTORY_NAME = d)", "FILESTREAM"),
    ("RESTORE DATABASE db FROM DISK='x' WITH NEW_BROKER", "NEW_BROKER"),
    ("RESTORE DATABASE db FROM DISK='x' WITH ENABLE_BROKER", "ENABLE_BROKER"),
    (
        "RESTORE DATABASE db FROM DISK='x' WITH ERROR_BROKER_CONVERSATIONS",
        "ERROR_BROKER_CONVERSATIONS",
    ),
    ("BACKUP DATABASE db FILE = 'f1' TO DISK='x'", "FILE"),
    ("BACKUP DATABASE db FILEGROUP = 'PRIMARY', FILE = f2 TO DISK='x'", "FILEGROUP"),
    ("BACKUP DATABASE db READ_WRITE_FILEGROUPS TO DISK='x'", "READ_WRITE_FILEGROUPS"),
    ("RESTORE DATABASE db PAGE = '1:57' FROM DISK='x'", "PAGE"),
    ("BACKUP DATABASE db TO DISK='x' MIRROR TO DISK='y' WITH FORMAT", "MIRROR TO"),
    ("BACKUP SERVER TO DISK='x' WITH METADATA_ONLY", "BACKUP SERVER"),
    ("BACKUP CERTIFICATE c TO FILE = 'x'", "BACKUP CERTIFICATE"),
    ("RESTORE REWINDONLY FROM TAPE = 't'", "RESTORE REWINDONLY"),
    ("CREATE TABLE t (a int)", "CREATE TABLE"),
    ("CREATE DATABASE x ON (NAME = a, FILENAME = 'b')", "ON"),
    ("CREATE DATABASE x COLLATE Latin1_General_CI_AS", "COLLATE"),
    ("CREATE DATABASE x WITH TRUSTWORTHY ON", "TRUSTWORTHY"),
    ("DROP TABLE t", "DROP TABLE"),
    ("ALTER TABLE t ADD c int", "ALTER TABLE"),
    ("ALTER DATABASE x SET SINGLE_USER", "SINGLE_USER"),
    ("ALTER DATABASE x SET OFFLINE WITH ROLLBACK IMMEDIATE", "OFFLINE"),
    ("ALTER DATABASE x MODIFY NAME = y", "MODIFY"),
    ("ALTER DATABASE x SET RECOVERY FULL, PAGE_VERIFY CHECKSUM", "PAGE_VERIFY"),
    ("INSERT INTO t VALUES (1)", "INSERT"),
    ("UPDATE t SET a = 1", "UPDATE"),
    ("DELETE FROM t", "DELETE"),
    ("DECLARE @x int", "DECLARE"),
    ("DBCC CHECKDB", "DBCC"),
    ("WAITFOR DELAY '00:00:01'", "WAITFOR"),
    ("PRINT 'x'", "PRINT"),
    ("IF 1 = 1 SELECT 1", "IF"),
    ("BEGIN DISTRIBUTED TRANSACTION", "BEGIN DISTRIBUTED TRANSACTION"),
    ("BEGIN TRY SELECT 1 END TRY", "BEGIN TRY"),
    ("BEGIN SELECT 1 END", "BEGIN"),
    ("BEGIN TRAN t WITH MARK 'm'", "WITH MARK"),
    ("EXEC ('SELECT 1')", "EXECUTE"),
    ("EXEC @rc = sp_vdisim_databases", "EXECUTE"),
    ("EXEC sp_vdisim_checksum @database = 'x' OUTPUT", "OUTPUT"),
    ("EXEC sp_vdisim_databases WITH RECOMPILE", "WITH"),
    ("SELECT name FROM sys.databases", "FROM"),
    ("SELECT 1 WHERE 1 = 1", "WHERE"),
    ("SELECT 1 + 1", "+"),
    ("SELECT @@ROWCOUNT", "@@ROWCOUNT"),
    ("SELECT DB_NAME()", "DB_NAME"),
    ("SELECT SERVERPROPERTY(@p)", "SERVERPROPERTY"),
    ("SELECT *", "*"),
    ("SELECT (1)", "("),
    ("SELECT @x", "@x"),
    ("SELECT TOP 1 a FROM t", "TOP"),
    ("SELECT 0x01", "0x01"),
]


@pytest.mark.parametrize(("sql", "option"), UNSUPPORTED)
def test_unsupported_gives_40517(sql: str, option: str) -> None:
    e = err(sql)
    assert e.number == 40517
    assert e.messages[0].text == (
        f"Keyword or statement option '{option}' is not supported in this version of SQL Server."
    )


def test_unsupported_comes_before_other_execution_errors() -> None:
    assert err("BACKUP DATABASE db TO URL='u', DISK='d' WITH STATS = 0").number == 40517


@pytest.mark.parametrize(
    ("sql", "number", "text"),
    [
        # devices
        (
            "BACKUP DATABASE db TO " + ", ".join(f"VIRTUAL_DEVICE='v{i}'" for i in range(65)),
            3205,
            "Too many backup devices specified for backup or restore; only 64 are allowed.",
        ),
        ("RESTORE DATABASE db FROM " + ", ".join(f"DISK='v{i}'" for i in range(65)), 3205, None),
        ("BACKUP DATABASE db TO DISK = ''", 3044, None),
        ("RESTORE VERIFYONLY FROM VIRTUAL_DEVICE = N''", 3044, None),
        (
            "BACKUP DATABASE db TO DISK='x', TAPE='y'",
            3011,
            "All backup devices must be of the same general class (for example, DISK and TAPE).",
        ),
        ("BACKUP DATABASE db TO VIRTUAL_DEVICE='x', DISK='y'", 3011, None),
        ("RESTORE DATABASE db FROM TAPE='x', VIRTUAL_DEVICE='y'", 3011, None),
        # options that do not apply
        (
            "BACKUP LOG db TO DISK='x' WITH DIFFERENTIAL",
            3032,
            "One or more of the options (differential) are not supported for this statement. "
            "Review the documentation for supported options.",
        ),
        (
            "BACKUP DATABASE db TO DISK='x' WITH NORECOVERY, NO_TRUNCATE, REPLACE",
            3032,
            "One or more of the options (norecovery, no_truncate, replace) are not supported for "
            "this statement. Review the documentation for supported options.",
        ),
        ("BACKUP LOG db TO VIRTUAL_DEVICE='x' WITH SNAPSHOT", 3032, None),
        ("BACKUP DATABASE db TO DISK='x' WITH FILE = 1", 3032, None),
        ("BACKUP DATABASE db TO DISK='x' WITH MOVE 'a' TO 'b'", 3032, None),
        ("RESTORE DATABASE db FROM DISK='x' WITH INIT", 3032, None),
        ("RESTORE DATABASE db FROM DISK='x' WITH LOADHISTORY", 3032, None),
        ("RESTORE LOG db FROM DISK='x' WITH PARTIAL", 3032, None),
        ("RESTORE LOG db FROM VIRTUAL_DEVICE='x' WITH SNAPSHOT", 3032, None),
        ("RESTORE HEADERONLY FROM DISK='x' WITH RECOVERY", 3032, None),
        ("RESTORE FILELISTONLY FROM DISK='x' WITH STATS", 3032, None),
        ("RESTORE LABELONLY FROM DISK='x' WITH FILE = 1", 3032, None),
        ("RESTORE VERIFYONLY FROM DISK='x' WITH REPLACE", 3032, None),
        # conflicts
        (
            "RESTORE DATABASE db FROM DISK='x' WITH RECOVERY, NORECOVERY",
            3031,
            "Option 'recovery' conflicts with option(s) 'norecovery'. Remove the conflicting "
            "option and reissue the statement.",
        ),
        (
            "RESTORE DATABASE db FROM DISK='x' WITH NORECOVERY, KEEP_REPLICATION",
            3031,
            "Option 'norecovery' conflicts with option(s) 'keep_replication'. Remove the "
            "conflicting option and reissue the statement.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH CHECKSUM, NO_CHECKSUM", 3031, None),
        ("BACKUP DATABASE db TO DISK='x' WITH COMPRESSION, NO_COMPRESSION", 3031, None),
        ("BACKUP DATABASE db TO DISK='x' WITH INIT, NOINIT", 3031, None),
        ("BACKUP DATABASE db TO DISK='x' WITH FORMAT, NOFORMAT", 3031, None),
        ("BACKUP DATABASE db TO DISK='x' WITH SKIP, NOSKIP", 3031, None),
        ("BACKUP DATABASE db TO DISK='x' WITH REWIND, NOREWIND", 3031, None),
        ("BACKUP DATABASE db TO DISK='x' WITH UNLOAD, NOUNLOAD", 3031, None),
        ("BACKUP DATABASE db TO DISK='x' WITH STOP_ON_ERROR, CONTINUE_AFTER_ERROR", 3031, None),
        (
            "BACKUP DATABASE db TO DISK='x' WITH RETAINDAYS = 1, EXPIREDATE = '2030-01-01'",
            3031,
            None,
        ),
        ("BACKUP DATABASE db TO VIRTUAL_DEVICE='x' WITH SNAPSHOT, METADATA_ONLY", 3031, None),
        ("BACKUP DATABASE db TO VIRTUAL_DEVICE='x' WITH DIFFERENTIAL, SNAPSHOT", 3031, None),
        (
            "BACKUP DATABASE db TO DISK='x' WITH INIT, INIT",
            3031,
            "Option 'init' conflicts with option(s) 'init'. Remove the conflicting option and "
            "reissue the statement.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH STATS, STATS = 5", 3031, None),
        (
            "BACKUP DATABASE db TO DISK='x' WITH CHECKSUM, INIT, NO_CHECKSUM, CHECKSUM",
            3031,
            "Option 'checksum' conflicts with option(s) 'no_checksum, checksum'. Remove the "
            "conflicting option and reissue the statement.",
        ),
        ("CREATE DATABASE x WITH SEED = 1, SEED = 2", 3031, None),
        # snapshot needs exactly one virtual device
        (
            "BACKUP DATABASE db TO VIRTUAL_DEVICE='a', VIRTUAL_DEVICE='b' WITH SNAPSHOT",
            3277,
            "WITH SNAPSHOT must be used with only one virtual device.",
        ),
        ("BACKUP DATABASE db TO DISK='a' WITH SNAPSHOT", 3277, None),
        ("RESTORE DATABASE db WITH SNAPSHOT", 3277, None),
        (
            "RESTORE DATABASE db FROM VIRTUAL_DEVICE='a', VIRTUAL_DEVICE='b' WITH METADATA_ONLY",
            3277,
            None,
        ),
        # ranges
        (
            "BACKUP DATABASE db TO DISK='x' WITH BLOCKSIZE = 1000",
            3253,
            "The block size parameter must supply a value that is a power of 2.",
        ),
        (
            "BACKUP DATABASE db TO DISK='x' WITH BLOCKSIZE = 256",
            3250,
            "The value '256' is not within range for the BLOCKSIZE parameter.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH BLOCKSIZE = 131072", 3250, None),
        ("BACKUP DATABASE db TO DISK='x' WITH BLOCKSIZE = 0", 3250, None),
        ("BACKUP DATABASE db TO DISK='x' WITH BLOCKSIZE = -512", 3250, None),
        ("RESTORE DATABASE db FROM DISK='x' WITH BLOCKSIZE = 3000", 3253, None),
        (
            "BACKUP DATABASE db TO DISK='x' WITH MAXTRANSFERSIZE = 100000",
            3250,
            "The value '100000' is not within range for the MAXTRANSFERSIZE parameter.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH MAXTRANSFERSIZE = 32768", 3250, None),
        ("BACKUP DATABASE db TO DISK='x' WITH MAXTRANSFERSIZE = 4259840", 3250, None),
        (
            "BACKUP DATABASE db TO DISK='x' WITH BUFFERCOUNT = 0",
            3250,
            "The value '0' is not within range for the BUFFERCOUNT parameter.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH BUFFERCOUNT = -3", 3250, None),
        (
            "BACKUP DATABASE db TO DISK='x' WITH STATS = 0",
            3250,
            "The value '0' is not within range for the STATS parameter.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH STATS = 101", 3250, None),
        (
            "RESTORE DATABASE db FROM DISK='x' WITH FILE = 0",
            3250,
            "The value '0' is not within range for the FILE parameter.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH RETAINDAYS = -1", 3250, None),
        (
            "BACKUP DATABASE db TO DISK='x' WITH BUFFERCOUNT = 2147483648",
            8115,
            "Arithmetic overflow error converting expression to data type int.",
        ),
        ("BACKUP DATABASE db TO DISK='x' WITH BLOCKSIZE = " + "9" * 50, 8115, None),
        (
            "CREATE DATABASE x WITH SIZE_MB = 0",
            3250,
            "The value '0' is not within range for the SIZE_MB parameter.",
        ),
        ("CREATE DATABASE x WITH SEED = -1", 3250, None),
        (
            "CREATE DATABASE x WITH SEED = 9223372036854775808",
            8115,
            "Arithmetic overflow error converting expression to data type bigint.",
        ),
        # procedures
        ("EXEC nope", 2812, "Could not find stored procedure 'nope'."),
        (
            "EXEC dbo.sp_vdisim_nope 1",
            2812,
            "Could not find stored procedure 'dbo.sp_vdisim_nope'.",
        ),
        ("garbage here", 2812, "Could not find stored procedure 'garbage'."),
        (
            "EXEC sp_vdisim_workload 'x'",
            201,
            "Procedure or function 'sp_vdisim_workload' expects parameter '@changes', which was "
            "not supplied.",
        ),
        ("EXEC sp_vdisim_workload @changes = 1", 201, None),
        ("EXEC sp_vdisim_workload DEFAULT, 1", 201, None),
        ("EXEC sp_vdisim_checksum", 201, None),
        (
            "EXEC sp_vdisim_workload 'x', 1, 2, 3",
            8144,
            "Procedure or function sp_vdisim_workload has too many arguments specified.",
        ),
        ("EXEC sp_vdisim_databases 1", 8144, None),
        (
            "EXEC sp_vdisim_workload @Foo = 1",
            8145,
            "@Foo is not a parameter for procedure sp_vdisim_workload.",
        ),
        (
            "EXEC sp_vdisim_workload 'x', 1, @database = 'y'",
            8143,
            "Parameter '@database' was supplied multiple times.",
        ),
        ("EXEC sp_vdisim_workload 'x', 'abc'", 8114, "Error converting data type varchar to int."),
        (
            "EXEC sp_vdisim_workload 'x', N'abc'",
            8114,
            "Error converting data type nvarchar to int.",
        ),
        (
            "EXEC sp_vdisim_workload 'x', -1",
            3250,
            "The value '-1' is not within range for the @changes parameter.",
        ),
        ("EXEC sp_vdisim_workload 'x', NULL", 3250, None),
        ("EXEC sp_vdisim_workload 'x', 1, -5", 3250, None),
        ("EXEC sp_vdisim_workload 'x', 99999999999", 8115, None),
        ("EXEC sp_vdisim_workload 'x', 1e400", 8115, None),
        ("EXEC sp_vdisim_checksum NULL", 3250, None),
        # select
        ("SELECT foo", 207, "Invalid column name 'foo'."),
        ("SELECT 1, [my col]", 207, "Invalid column name 'my col'."),
    ],
)
def test_execution_errors(sql: str, number: int, text: str | None) -> None:
    e = err(sql)
    assert e.number == number, e
    if text is not None:
        assert e.messages[0].text == text
    assert e.messages[0].severity == 16


def test_positional_after_named_is_119() -> None:
    e = err("EXEC sp_vdisim_workload @database = 'x', 5")
    assert e.number == 119
    assert e.messages[0].text.startswith("Must pass parameter number 2 ")


def test_empty_database_name_from_variable_is_3025() -> None:
    assert err("BACKUP DATABASE @d TO DISK='x'", {"d": ""}).number == 3025
    assert err("RESTORE DATABASE @d FROM DISK='x'", {"d": None}).number == 3025


def test_null_device_variable_is_3044() -> None:
    assert err("BACKUP DATABASE db TO DISK = @p", {"p": None}).number == 3044


@pytest.mark.parametrize(
    ("value", "number"),
    [("abc", 245), ("1.5", 245), (object(), 245), (float("inf"), 8115), (2**40, 8115)],
)
def test_bad_variable_values(value: object, number: int) -> None:
    assert err("BACKUP DATABASE db TO DISK='x' WITH BUFFERCOUNT = @v", {"v": value}).number == (
        number
    )


def test_error_order_devices_before_options() -> None:
    assert err("BACKUP DATABASE db TO DISK='', TAPE='t' WITH STATS = 0").number == 3044
    assert err("BACKUP DATABASE db TO DISK='d', TAPE='t' WITH NORECOVERY").number == 3011
    assert err("BACKUP DATABASE db TO DISK='d' WITH NORECOVERY, INIT, NOINIT").number == 3032
    assert err("BACKUP DATABASE db TO DISK='d' WITH STATS = 0, INIT, NOINIT").number == 3031


# --------------------------------------------------------------------------- round trip

names = st.text(min_size=1, max_size=40)
texts = st.text(max_size=30)
pow2 = st.sampled_from([512 << i for i in range(8)])
transfer = st.integers(1, 64).map(lambda n: n * 65536)
int32 = st.integers(1, 2**31 - 1)
pair = st.sampled_from([None, True, False])
flag = st.sampled_from([None, True])


@st.composite
def device_lists(draw: st.DrawFn, min_size: int = 1) -> tuple[Device, ...]:
    kind = draw(st.sampled_from(["virtual_device", "disk", "tape"]))
    count = draw(st.integers(min_size, 4))
    return tuple(
        Device(draw(st.sampled_from([kind, "logical"])), draw(names)) for _ in range(count)
    )


@st.composite
def backups(draw: st.DrawFn) -> Backup:
    log = draw(st.booleans())
    devices = draw(device_lists())
    expire = draw(st.sampled_from(["none", "retaindays", "expiredate"]))
    snapshot: bool | None = None
    metadata_only: bool | None = None
    differential: bool | None = None
    if not log:
        choice = draw(st.sampled_from(["none", "snapshot", "metadata_only", "differential"]))
        if choice == "snapshot":
            snapshot = True
            devices = (Device("virtual_device", draw(names)),)
        elif choice == "metadata_only":
            metadata_only = True
            if any(d.kind == "virtual_device" for d in devices):
                devices = devices[:1]
        elif choice == "differential":
            differential = True
    options = BackupOptions(
        differential=differential,
        copy_only=draw(flag),
        blocksize=draw(st.none() | pow2),
        buffercount=draw(st.none() | int32),
        maxtransfersize=draw(st.none() | transfer),
        stats=draw(st.none() | st.integers(1, 100)),
        checksum=draw(pair),
        compression=draw(pair),
        init=draw(pair),
        format=draw(pair),
        skip=draw(pair),
        rewind=draw(pair),
        unload=draw(pair),
        name=draw(st.none() | texts),
        description=draw(st.none() | texts),
        medianame=draw(st.none() | texts),
        mediadescription=draw(st.none() | texts),
        snapshot=snapshot,
        metadata_only=metadata_only,
        continue_after_error=draw(pair),
        retaindays=draw(st.integers(0, 2**31 - 1)) if expire == "retaindays" else None,
        expiredate=draw(texts) if expire == "expiredate" else None,
        norecovery=draw(flag) if log else None,
        no_truncate=draw(flag) if log else None,
    )
    return Backup(draw(names), log, devices, options)


@st.composite
def restores(draw: st.DrawFn) -> Restore:
    kind = draw(
        st.sampled_from(
            ["database", "log", "verifyonly", "headeronly", "filelistonly", "labelonly"]
        )
    )
    full = kind in ("database", "log")
    devices = draw(device_lists(min_size=0 if full else 1))
    snapshot: bool | None = None
    metadata_only: bool | None = None
    if kind == "database":
        choice = draw(st.sampled_from(["none", "snapshot", "metadata_only"]))
        if choice == "snapshot":
            snapshot = True
            devices = (Device("virtual_device", draw(names)),)
        elif choice == "metadata_only":
            metadata_only = True
            if any(d.kind == "virtual_device" for d in devices):
                devices = devices[:1]
    recovery = draw(pair) if full else None
    options = RestoreOptions(
        recovery=recovery,
        replace=draw(flag) if full else None,
        moves=tuple(draw(st.lists(st.tuples(texts, texts), max_size=3)))
        if kind in ("database", "log", "verifyonly")
        else (),
        file=draw(st.none() | int32) if kind != "labelonly" else None,
        stats=draw(st.none() | st.integers(1, 100)) if full or kind == "verifyonly" else None,
        checksum=draw(pair),
        blocksize=draw(st.none() | pow2),
        buffercount=draw(st.none() | int32),
        maxtransfersize=draw(st.none() | transfer),
        snapshot=snapshot,
        metadata_only=metadata_only,
        continue_after_error=draw(pair),
        partial=draw(flag) if kind == "database" else None,
        restricted_user=draw(flag) if full else None,
        keep_replication=draw(flag) if full and recovery is not False else None,
        loadhistory=draw(flag) if kind == "verifyonly" else None,
        rewind=draw(pair),
        unload=draw(pair),
        medianame=draw(st.none() | texts),
    )
    return Restore(kind, draw(names) if full else None, devices, options)  # type: ignore[arg-type]


others = st.one_of(
    st.builds(CreateDatabase, names, st.none() | int32, st.none() | st.integers(0, 2**63 - 1)),
    st.builds(DropDatabase, names, st.booleans()),
    st.builds(SetRecovery, names, st.sampled_from(["FULL", "SIMPLE", "BULK_LOGGED"])),
    st.builds(Workload, texts, st.integers(0, 2**31 - 1), st.none() | st.integers(0, 2**63 - 1)),
    st.builds(Checksum, texts),
    st.just(ListDatabases()),
    st.sampled_from(
        [
            SetOption("NOCOUNT ON"),
            SetOption("TEXTSIZE 2147483647"),
            SetOption("TRANSACTION ISOLATION LEVEL READ COMMITTED"),
        ]
    ),
    st.builds(Use, names),
    st.builds(
        Transaction,
        st.sampled_from(["begin", "commit", "rollback"]),
        st.none() | names,
        st.just(False),
    ),
    st.builds(
        Transaction, st.sampled_from(["commit", "rollback"]), st.none() | names, st.just(True)
    ),
    st.builds(
        lambda exprs, aliases: Select(
            tuple(exprs),
            tuple(aliases[: len(exprs)]) + (None,) * (len(exprs) - len(aliases[: len(exprs)])),
        ),
        st.lists(
            st.sampled_from(
                [
                    "@@VERSION",
                    "@@SPID",
                    "1",
                    "-7",
                    "N'x'",
                    "'y'",
                    "NULL",
                    "SERVERPROPERTY('Edition')",
                ]
            ),
            min_size=1,
            max_size=4,
        ),
        st.lists(st.none() | names, max_size=4),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(backups(), restores(), others))
def test_round_trip(stmt: Statement) -> None:
    assert parse(render(stmt)) == stmt


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(backups(), restores(), others), min_size=1, max_size=4))
def test_round_trip_batch(stmts: list[Statement]) -> None:
    assert parse_batch(";\n".join(render(s) for s in stmts)) == tuple(stmts)


# --------------------------------------------------------------------------- fuzz

VOCABULARY = [
    "BACKUP",
    "RESTORE",
    "DATABASE",
    "LOG",
    "TO",
    "FROM",
    "WITH",
    "VIRTUAL_DEVICE",
    "DISK",
    "TAPE",
    "URL",
    "VERIFYONLY",
    "HEADERONLY",
    "FILELISTONLY",
    "LABELONLY",
    "MOVE",
    "STATS",
    "BLOCKSIZE",
    "BUFFERCOUNT",
    "MAXTRANSFERSIZE",
    "CHECKSUM",
    "NO_CHECKSUM",
    "RECOVERY",
    "NORECOVERY",
    "SNAPSHOT",
    "DIFFERENTIAL",
    "FILE",
    "NAME",
    "INIT",
    "FORMAT",
    "STANDBY",
    "ENCRYPTION",
    "CREATE",
    "DROP",
    "ALTER",
    "SET",
    "RECOVERY",
    "FULL",
    "SIMPLE",
    "EXEC",
    "sp_vdisim_workload",
    "sp_vdisim_checksum",
    "sp_vdisim_databases",
    "SELECT",
    "USE",
    "BEGIN",
    "TRAN",
    "COMMIT",
    "ROLLBACK",
    "IF",
    "@@TRANCOUNT",
    "@@VERSION",
    "SERVERPROPERTY",
    "SIZE_MB",
    "SEED",
    "DEFAULT",
    "NULL",
    "OUTPUT",
    "AFTER",
    "EXISTS",
    "AS",
    "=",
    ",",
    ";",
    "(",
    ")",
    ".",
    "+",
    "-",
    "*",
    ">",
    "0",
    "1",
    "512",
    "65536",
    "1.5",
    "1e5",
    "0x0F",
    "99999999999999999999999999999999999999999",
    "'s'",
    "N'n'",
    "''",
    "[b]",
    '"q"',
    "@v",
    "@w",
    "@@",
    "@",
    "--c\n",
    "/*c*/",
    "'",
    "[",
    '"',
    "/*",
    "*/",
    "x",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(VOCABULARY), max_size=16), st.sampled_from([" ", "", "\n"]))
def test_fuzz_token_soup_only_raises_sql_error(words: list[str], sep: str) -> None:
    sql = sep.join(words)
    params: dict[str, object] = {"v": 512, "w": "abc"}
    for fn in (parse, parse_batch):
        try:
            fn(sql, params)
        except SqlError as e:
            assert e.messages and e.number > 0


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.characters(codec="utf-8") | st.sampled_from(string.punctuation), max_size=60
    )
)
def test_fuzz_random_text_only_raises_sql_error(sql: str) -> None:
    for fn in (parse, parse_batch):
        try:
            fn(sql)
        except SqlError as e:
            assert e.messages and e.number > 0


@settings(max_examples=100, deadline=None)
@given(st.one_of(backups(), restores(), others), st.data())
def test_fuzz_mutated_statements_only_raise_sql_error(stmt: Statement, data: st.DataObject) -> None:
    text = render(stmt)
    cut = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.sampled_from(["", "'", "[", ",", " WITH ", "--", "/*", "(", "@x", "9"]))
    for fn in (parse, parse_batch):
        try:
            fn(text[:cut] + insert + text[cut:])
        except SqlError:
            pass


# --------------------------------------------------------------------------- docs


def test_every_example_in_docs_parses_and_round_trips() -> None:
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "sql.md"
    examples = re.findall(r'^vdisim sql "(.*)"$', page.read_text(encoding="utf-8"), re.M)
    assert len(examples) >= 20
    kinds = set()
    for sql in examples:
        stmt = parse(sql)
        assert parse(render(stmt)) == stmt
        kinds.add(type(stmt).__name__)
    assert kinds == {
        "Backup",
        "Restore",
        "CreateDatabase",
        "DropDatabase",
        "SetRecovery",
        "Workload",
        "Checksum",
        "ListDatabases",
        "SetOption",
        "Use",
        "Transaction",
        "Select",
    }
