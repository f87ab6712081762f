"""The engine process: statements, concurrency, cancellation, plans, CLI (issue: core §4, §5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

import scenarios
from vdisim import refclient
from vdisim.client import VirtualDeviceSet
from vdisim.engine import Connection, Engine, Plan
from vdisim.engine.plan import Fault, PlanError
from vdisim.protocol import VDConfig
from vdisim.protocol.codes import HResult

from .conftest import wait_until


def test_database_statements_and_errors(conn: Connection) -> None:
    assert conn.execute("CREATE DATABASE eng_a WITH SIZE_MB = 1").ok
    assert conn.execute("CREATE DATABASE eng_a").error_numbers == [1801]
    assert conn.execute("EXEC sp_vdisim_checksum 'nope'").error_numbers == [911]
    assert conn.execute("DROP DATABASE nope").error_numbers == [3701]
    assert conn.execute("BACKUP DATABASE nope TO VIRTUAL_DEVICE='x'").error_numbers == [911, 3013]
    rs = conn.execute("SELECT @@VERSION, 1 AS one").rowsets[0]
    assert "SQL Server" in rs.rows[0][0] and rs.rows[0][1] == 1 and rs.columns[1].name == "one"
    assert conn.execute("this is not sql").error_numbers  # a SQL error, never a traceback
    assert conn.execute("DROP DATABASE eng_a").ok


def test_backup_inside_transaction_fails_3021(conn: Connection) -> None:
    conn.execute("CREATE DATABASE eng_t WITH SIZE_MB = 1", check=True)
    r = conn.execute("BEGIN TRANSACTION; BACKUP DATABASE eng_t TO VIRTUAL_DEVICE='x'")
    assert r.error_numbers == [3021, 3013]
    assert conn.execute("COMMIT").ok


def test_statement_naming_no_set_fails_18210(conn: Connection) -> None:
    conn.execute("CREATE DATABASE eng_n WITH SIZE_MB = 1", check=True)
    r = conn.execute("BACKUP DATABASE eng_n TO VIRTUAL_DEVICE='{no-such-set}'")
    assert r.error_numbers == [18210, 3013]
    assert "0x80070002" in r.messages[0].text


def test_two_backups_run_concurrently(engine: Engine, tmp_path: object) -> None:
    c1, c2 = engine.connect(), engine.connect()
    try:
        for c, db in ((c1, "eng_c1"), (c2, "eng_c2")):
            c.execute(f"CREATE DATABASE {db} WITH SIZE_MB = 2", check=True)
        reports: dict[str, refclient.ClientReport] = {}
        threads = [threading.Thread(target=lambda c=c, db=db: reports.setdefault(
            db, refclient.backup(c, db, os.path.join(str(tmp_path), db), devices=2)))
            for c, db in ((c1, "eng_c1"), (c2, "eng_c2"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(r.ok for r in reports.values()), [r.log for r in reports.values()]
    finally:
        c1.close()
        c2.close()


def test_attention_aborts_running_backup(engine: Engine, set_name: str) -> None:
    """conn.cancel() (ATTENTION) aborts the statement; the VDI client sees VD_E_ABORT."""
    conn = engine.connect()
    conn.execute("CREATE DATABASE eng_att WITH SIZE_MB = 1", check=True)
    vds = VirtualDeviceSet()
    assert vds.create(set_name, VDConfig(device_count=1)) == HResult.NOERROR
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", conn.execute(
        f"BACKUP DATABASE eng_att TO VIRTUAL_DEVICE='{set_name}'")))
    t.start()
    try:
        assert vds.get_configuration(10_000)[0] == HResult.NOERROR
        hr, dev = vds.open_device(set_name)
        assert dev is not None
        hr, cmd = dev.get_command(10_000)
        assert hr == HResult.NOERROR and cmd is not None  # hold it: the backup cannot finish
        conn.cancel()
        held = [cmd]
        while True:  # commands already queued may still arrive until the abort does
            hr, more = dev.get_command(10_000)
            if more is None:
                break
            held.append(more)
        assert hr == HResult.VD_E_ABORT
        assert dev.complete_command(cmd, 0, cmd.size, 0) == HResult.VD_E_ABORT
        t.join(10)
        result = out["r"]
        assert result.attention and not result.ok  # type: ignore[attr-defined]
        assert result.error_numbers == [3013]  # type: ignore[attr-defined]
    finally:
        assert vds.close() == HResult.NOERROR
        t.join(10)
        conn.close()


def test_plan_json_round_trip_and_validation() -> None:
    p = Plan("backup", "db", ("a", "b"), "diff", 4096, 8, 1 << 20, faults=(Fault("abort", 1, 2),))
    assert Plan.loads(p.dumps()) == p
    bad = [({"operation": "backup", "database": "d", "devices": []}, "devices"),
           ({"operation": "nope", "database": "d", "devices": ["a"]}, "operation"),
           ({"operation": "backup", "database": "d", "devices": ["a"], "block_size": 1000},
            "block_size"),
           ({"operation": "backup", "database": "d", "devices": ["a"], "version": 9},
            "version"),
           ({"operation": "backup", "database": "d", "devices": ["a"], "zzz": 1}, "unknown"),
           ({"operation": "backup", "database": "d", "devices": ["a"],
             "faults": [{"kind": "abort", "device": 3}]}, "fault device")]
    for d, word in bad:
        with pytest.raises(PlanError, match=word):
            Plan.from_json(d)
    with pytest.raises(PlanError, match="JSON"):
        Plan.loads("{not json")


def test_bundled_scenarios_load() -> None:
    names = scenarios.names()
    assert "backup-abort-midstream.json" in names
    for n in names:
        plan = scenarios.load(n, "{S}")
        assert isinstance(plan, Plan) and plan.devices[0] == "{S}"


def test_invalid_plan_is_a_clear_error(conn: Connection) -> None:
    from vdisim.engine import wire

    conn._stream.send(wire.Msg.RUN_PLAN, {"operation": "backup"})
    msgs = []
    while True:
        kind, data = conn._stream.recv()
        if kind is wire.Msg.DONE:
            assert json.loads(data)["ok"] is False
            break
        msgs.append(json.loads(data))
    assert msgs and "Invalid plan" in msgs[0]["text"]


def test_cli_sql_and_cleanup(engine: Engine) -> None:
    r = subprocess.run([sys.executable, "-m", "vdisim", "sql", "--address", engine.address,
                        "SELECT 42 AS answer"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "answer" in r.stdout and "42" in r.stdout
    r = subprocess.run([sys.executable, "-m", "vdisim", "sql", "--address", engine.address,
                        "DROP DATABASE nope"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Msg 3701" in r.stdout
    r = subprocess.run([sys.executable, "-m", "vdisim", "cleanup"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "stale segment" in r.stdout


def test_engine_stop_closes_live_sets(set_name: str) -> None:
    """SIGTERM of an engine with a set open: the client sees abort, nothing leaks."""
    eng = Engine.start()
    try:
        s = eng.connect().script()
        vds = VirtualDeviceSet()
        assert vds.create(set_name, VDConfig(device_count=1)) == HResult.NOERROR
        assert s.open(set_name) == HResult.NOERROR
    finally:
        eng.stop()
    assert wait_until(lambda: vds.state.name == "ABORT", 5.0)
    assert vds.get_configuration(1000)[0] == HResult.VD_E_ABORT
    assert vds.close() == HResult.NOERROR


def test_tape_model_uses_marks_and_positions(conn: Connection, tmp_path: object) -> None:
    """§5.1 tape: GetPosition + WriteMark on backup; Rewind, GetPosition, SetPosition and
    SkipMarks on restore, against the reference client's file-backed tape."""
    conn.execute("CREATE DATABASE eng_tape WITH SIZE_MB = 1", check=True)
    media = os.path.join(str(tmp_path), "tape")
    b = refclient.backup(conn, "eng_tape", media, devices=1, model="tape")
    assert b.ok, b.log
    cmds = b.devices[0].commands
    assert cmds["VDC_GetPosition"] == 1 and cmds["VDC_WriteMark"] == 1
    with open(refclient.media_paths(media, 1)[0] + ".marks") as f:
        assert len(json.load(f)) == 1
    r = refclient.restore(conn, "eng_tape2", media, devices=1, model="tape")
    assert r.ok, r.log
    rc = r.devices[0].commands
    assert [rc[k] for k in ("VDC_Rewind", "VDC_GetPosition", "VDC_SetPosition",
                            "VDC_SkipMarks")] == [1, 1, 1, 1]
    sums = {conn.execute(f"EXEC sp_vdisim_checksum '{d}'").rowsets[0].rows[0][1]
            for d in ("eng_tape", "eng_tape2")}
    assert len(sums) == 1
