"""The bundled scenarios (scenarios/, docs/scenarios.md): every plan is valid, described and
documented, and runs against the reference client with the outcome its metadata promises --
byte-identical databases after every restore.  The engine follows each plan through
``Connection.run_plan`` (conformance.harness.clients.direct)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import scenarios
from conformance.harness.clients import direct
from conformance.harness.clients.reference import ReferenceClient
from vdisim.engine import Engine
from vdisim.engine.connection import Connection
from vdisim.engine.plan import Plan
from vdisim.protocol.codes import HResult

NAMES = scenarios.scenario_names()
DOCS = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("engine-data"))


@pytest.fixture(scope="module")
def sengine(data_dir: str) -> Iterator[Engine]:
    eng = Engine.start(data_dir=data_dir)
    with eng.connect() as c:
        direct.prepare_engine(c)
    yield eng
    eng.stop()


@pytest.fixture
def sconn(sengine: Engine) -> Iterator[Connection]:
    c = sengine.connect()
    yield c
    c.close()


def checksum(conn: Connection, db: str) -> object:
    return conn.execute(f"EXEC sp_vdisim_checksum '{db}'", check=True).rowsets[0].rows[0][1]


# ------------------------------------------------------------------------- the files

def test_at_least_thirty_scenarios_each_with_metadata() -> None:
    assert len(NAMES) >= 30
    assert set(NAMES) == set(scenarios.CASES), "every JSON has a CASES entry and back"
    assert scenarios.names() == [f"{n}.json" for n in NAMES]


@pytest.mark.parametrize("name", NAMES)
def test_scenario_is_valid_and_described(name: str) -> None:
    with open(scenarios.path(name), encoding="utf-8") as f:
        raw = f.read()
    doc = json.loads(raw)
    assert doc["devices"][0] == "{SET}"
    assert all(d == "{SET}" + (str(i) if i else "") for i, d in enumerate(doc["devices"]))
    plan = scenarios.load(name, "{AB-CD}")
    assert isinstance(plan, Plan) and plan.validate() is plan
    assert plan.devices[0] == "{AB-CD}"
    assert scenarios.load(name + ".json", "x").devices[0] == "x"
    desc = scenarios.describe(name)
    assert desc == plan.description and 20 <= len(desc) <= 120 and "\n" not in desc
    info = scenarios.info(name)
    assert info.name == name and info.sections
    assert all(re.fullmatch(r"§\d+(\.\d+)?", s) for s in info.sections), info.sections
    assert all(s in desc for s in info.sections[:1]), "the description cites the section"
    if info.source is not None:
        src = scenarios.load(info.source, "s")
        assert src.operation == "backup" and plan.operation != "backup"
        assert len(src.devices) == len(plan.devices)
        assert scenarios.info(info.source).device_model == info.device_model
        assert (src.block_size or 512) == (plan.block_size or 512)  # §1.10
    else:
        assert plan.operation == "backup", "a restore-type scenario names its media"
    for step in info.setup:
        if step.startswith("scenario:"):
            assert step.split(":", 1)[1] in scenarios.CASES
    assert info.expect_success == (info.outcome == "ok")
    assert bool(info.errors) == (info.outcome == "fail")


def test_set_name_is_inserted_as_a_json_string() -> None:
    plan = scenarios.load("backup-full-2dev", 'we"ird\\name')
    assert plan.devices == ('we"ird\\name', 'we"ird\\name1')


def test_unknown_scenario_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no bundled scenario 'nope'"):
        scenarios.load("nope", "s")
    with pytest.raises(KeyError, match="nope"):
        scenarios.info("nope")


def test_docs_page_lists_every_scenario() -> None:
    text = DOCS.read_text(encoding="utf-8").split("\n## The scenarios\n", 1)[1]
    text = text.split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, re.M))
    assert listed == set(NAMES), (sorted(set(NAMES) - listed), sorted(listed - set(NAMES)))


def test_docs_table_agrees_with_the_metadata() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in NAMES:
        info = scenarios.info(name)
        (row,) = [ln for ln in text.splitlines() if ln.startswith(f"| `{name}` |")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == " ".join(info.sections), name
        assert cells[3].endswith(info.device_model), name
        want = {"ok": "succeeds", "engine-dies": "connection lost"}.get(
            info.outcome, "fails " + ", ".join(map(str, info.errors)))
        assert cells[4] == want, name
        if info.source:
            assert f"reads `{info.source}`" in cells[5], name


def test_module_doctests() -> None:
    import doctest

    from conformance.harness.clients import direct as direct_mod

    for mod in (scenarios, direct_mod):
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


def test_statement_for_renders_what_tsql_can_say() -> None:
    plan = scenarios.load("backup-blocksize-65536", "S")
    assert direct.statement_for(plan) == (
        "BACKUP DATABASE [demo] TO VIRTUAL_DEVICE = 'S' WITH BLOCKSIZE = 65536, "
        "MAXTRANSFERSIZE = 1048576, BUFFERCOUNT = 4")
    assert direct.statement_for(scenarios.load("headeronly", "S")) == (
        "RESTORE HEADERONLY FROM VIRTUAL_DEVICE = 'S'")


# ------------------------------------------------------------------------- runs

RUNNABLE = [n for n in NAMES if scenarios.info(n).outcome != "engine-dies"]


@pytest.mark.parametrize("name", RUNNABLE)
def test_scenario_runs_against_the_reference_client(name: str, sconn: Connection,
                                                    data_dir: str, tmp_path: Path) -> None:
    info = scenarios.info(name)
    out = direct.run_scenario(sconn, name, media_dir=str(tmp_path / "media"),
                              data_dir=data_dir)
    rep = out.report
    assert rep.result is not None, rep.log
    assert out.ok is info.expect_success, (rep.log, rep.result.text())
    expected = list(info.errors)
    if name == "backup-no-such-database":
        expected = [911]  # RUN_PLAN does not add the 3013 a T-SQL BACKUP ends with (below)
    assert rep.result.error_numbers == expected, rep.result.text()
    assert rep.close_hr == HResult.NOERROR, "Close only after VD_E_CLOSE or after abort"
    ends = {d.end for d in rep.devices}
    if info.outcome == "ok":
        assert ends == {"VD_E_CLOSE"}, ends
    plan = out.plan
    cmds: dict[str, int] = {}
    for d in rep.devices:
        for k, v in d.commands.items():
            cmds[k] = cmds.get(k, 0) + v
    if plan.operation == "restore" and info.outcome == "ok":
        # Byte-identical: the restored database equals its source at backup time.
        assert checksum(sconn, "demo_restored") == checksum(sconn, scenarios.DATABASE)
    if plan.operation == "backup" and info.outcome == "ok" and not plan.snapshot:
        n = len(plan.devices)
        assert cmds.get("VDC_Flush", 0) >= plan.flushes * n
        complete = "VDF_RequestComplete" in info.features and plan.complete_supported
        assert cmds.get("VDC_Complete", 0) == (n if complete else 0)
        assert rep.result.messages[-1].number == 3014
    if plan.flush_every:
        assert cmds["VDC_Flush"] > plan.flushes, "Flushes between the Writes"
    if "media_capacity" in info.extra:  # the failed Write, then ClearError (§6.6)
        assert cmds.get("VDC_ClearError") == 1 and rep.devices[0].end == "VD_E_CLOSE"
    if plan.optional_commands:
        assert cmds.get("VDC_ClearError", 0) >= len(plan.optional_commands)
    if info.device_model == "tape" and info.outcome == "ok":
        assert cmds.get("VDC_WriteMark" if plan.operation == "backup" else "VDC_Rewind") == 1
    if plan.operation == "verifyonly":
        assert rep.result.messages[-1].number == 3262
    if plan.operation in ("headeronly", "filelistonly", "labelonly"):
        assert rep.result.rowsets and rep.result.rowsets[0].rows
    if plan.snapshot:
        assert cmds.get("VDC_Snapshot" if plan.operation == "backup"
                        else "VDC_MountSnapshot") == 1


def test_engine_dies_scenario(tmp_path: Path) -> None:
    """backup-engine-dies needs an engine of its own: the client sees VD_E_ABORT, the
    statement's connection is lost, and the reference client reports failure."""
    with Engine.start(data_dir=str(tmp_path / "data")) as eng:
        conn = eng.connect()
        direct.prepare_engine(conn)
        out = direct.run_scenario(conn, "backup-engine-dies", media_dir=str(tmp_path / "m"))
    rep = out.report
    assert out.ok is False and rep.result is None
    assert rep.statement_error is not None and "EOFError" in rep.statement_error
    assert [d.end for d in rep.devices] == ["VD_E_ABORT"]
    assert rep.close_hr == HResult.NOERROR


def test_restore_reads_what_the_same_client_wrote(sconn: Connection, data_dir: str,
                                                  tmp_path: Path) -> None:
    """A restore scenario runs its source backup first into the same media directory."""
    out = direct.run_scenario(sconn, "restore-2dev", media_dir=str(tmp_path))
    assert out.ok
    assert sorted(os.listdir(tmp_path)) == ["stripe0.vbak", "stripe1.vbak"]
    written = sum(os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path))
    assert out.report.devices and sum(d.bytes for d in out.report.devices) == written


def test_reference_client_is_a_program(sconn: Connection, tmp_path: Path) -> None:
    """The --exec form of the reference client: a context file in, exit status out.  Here the
    statement is plain T-SQL (no plan armed), so the engine compiles it itself."""
    import subprocess
    import sys

    ctx, _plan = direct.context_for("backup-plain", set_name=direct.new_set_name(),
                                    media_dir=str(tmp_path / "m"),
                                    engine_address=sconn.address)
    path = ctx.write(str(tmp_path / "ctx.json"))
    env = dict(os.environ)
    for mod, ok in (("conformance.harness.clients.reference", True),
                    ("conformance.harness.clients.exec_example", True)):
        p = subprocess.run([sys.executable, "-m", mod, path], capture_output=True, text=True,
                           timeout=60, env=env)
        assert (p.returncode == 0) is ok, (mod, p.stdout, p.stderr)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    p = subprocess.run([sys.executable, "-m", "conformance.harness.clients.reference",
                        str(bad)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "error:" in p.stderr


def test_reference_reports_failure_of_its_own_statement(sconn: Connection,
                                                        tmp_path: Path) -> None:
    """Plain T-SQL that fails before opening the set: the client stops waiting in
    GetConfiguration as soon as the statement has ended, and reports failure."""
    ctx, _ = direct.context_for("backup-no-such-database", set_name=direct.new_set_name(),
                                media_dir=str(tmp_path), engine_address=sconn.address,
                                timeouts={"case_s": 60})
    client = ReferenceClient(ctx)
    assert client.run() is False
    assert client.report.config_hr == HResult.VD_E_TIMEOUT
    assert client.report.result is not None
    assert client.report.result.error_numbers == list(scenarios.info(ctx.case).errors)
