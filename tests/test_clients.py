"""The harness's clients (conformance/harness/clients, docs/scenarios.md): the reference client
passes the client harness; every seeded bug is flagged by the harness with the rule it was
planted for; and, independently of the harness, each bug's misbehaviour shows directly (the
engine following the scenario's plan through ``Connection.run_plan``).

The whole bundled-scenario sweep of the reference client under the harness runs with
``VDISIM_FULL=1`` (about 30 s); the default run takes a representative subset."""

from __future__ import annotations

import contextlib
import inspect
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import scenarios
from conformance.harness.check import CheckRun
from conformance.harness.clients import BUGS, buggy, direct
from conformance.harness.clients.buggy import SEEDED, release_abandoned
from conformance.harness.clients.reference import ReferenceClient
from conformance.harness.context import Capabilities, capabilities_of
from conformance.harness.runner import PROFILES, ClientUnderTest, Harness, Profile
from conformance.report import Report, Verdict
from conformance.rules import select
from vdisim.engine import Engine
from vdisim.engine.connection import Connection
from vdisim.protocol.codes import HResult
from vdisim.transport import naming, segments

FULL = os.environ.get("VDISIM_FULL") == "1"
# A short watchdog: a hung seeded bug is judged after 5 s, 2.5 s without wire traffic, or 1.5 s
# after its statement ended.
PROFILE: Profile = attrs.evolve(PROFILES["ci"], name="test", cases=0, case_s=5,
                                linger_s=1.5, shrink_s=0.0, idle_s=2.5)
SUBSET = ["backup-plain", "restore-plain", "backup-mid-flush", "backup-disk-full",
          "backup-unknown-command", "backup-one-buffer-2dev", "backup-open-failure",
          "backup-server-stall"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(PROFILE, workdir=str(tmp_path_factory.mktemp("harness")))
    with h:
        yield h


def judge(harness: Harness, client: ClientUnderTest, names: list[str]) -> Report:
    return CheckRun(client, profile=PROFILE, harness=harness,
                    replay_dir=str(Path(harness.workdir) / "replays")).scenarios(names)


def sweep_killed_clients() -> None:
    """The harness SIGKILLs a hung client: its set's segment and socket stay behind (no
    process is left to remove them; the next Create of that name would).  Remove them."""
    for seg in segments.sweep_stale(naming.PREFIX, min_age=0):
        key = seg[len(naming.PREFIX):].split("-")[0]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(naming.socket_path(key))


def failed(report: Report) -> dict[str, str]:
    return {rid: r.reason for rid, r in report.results.items() if r.verdict is Verdict.FAILED}


# ------------------------------------------------------------------------- registry

def test_registry_names_catalogue_rules() -> None:
    client_rules = {r.id for r in select(binds="client")}
    assert len(BUGS) == len(SEEDED) == 12
    for name, (fn, rule) in BUGS.items():
        bug = SEEDED[name]
        assert fn is bug.run and rule == bug.rule and rule in client_rules
        assert bug.scenario in scenarios.CASES
        doc = inspect.getdoc(bug.cls) or ""
        assert doc.startswith(rule + ":"), (name, doc[:60])
        assert bug.scenario in doc.replace("\n", " ")
        assert issubclass(bug.cls, ReferenceClient) and bug.cls is not ReferenceClient
        assert getattr(buggy, bug.spec.split(":")[1]) is bug.run
    assert len({b.rule for b in SEEDED.values()}) == 12, "one rule per bug"


def test_capabilities_declared() -> None:
    caps = capabilities_of(ReferenceClient.run)
    assert caps == Capabilities.from_json(buggy.CAPABILITIES)
    assert caps.snapshot and caps.tape and caps.disk and "labelonly" in caps.operations


# ------------------------------------------------------------------------- under the harness

def test_reference_client_passes_the_harness(harness: Harness) -> None:
    names = scenarios.scenario_names() if FULL else SUBSET
    report = judge(harness, ClientUnderTest.python_client(
        "conformance.harness.clients.reference:run"), names)
    assert failed(report) == {}
    assert report.extra["skipped_cases"] == 0
    exercised = {rid for rid, r in report.results.items() if r.verdict is Verdict.PASSED}
    assert {"CLIENT-WRITE-KEPT", "CLIENT-FLUSH-DURABLE", "CLIENT-READ-EOF",
            "CLIENT-UNKNOWN-NOT-SUPPORTED", "CLIENT-SUCCESS-AGREES",
            "CLIENT-GETCONFIG-NO-HANG"} <= exercised


def test_exec_example_passes_the_harness(harness: Harness) -> None:
    caps = Capabilities.from_json({"operations": ["backup", "restore", "verifyonly"],
                                   "complete": True})
    client = ClientUnderTest.exec_client(
        f"{shlex.quote(sys.executable)} -m conformance.harness.clients.exec_example {{context}}",
        caps)
    report = judge(harness, client, ["restore-plain"])  # its backup, verify, restore
    assert failed(report) == {}
    assert report.extra["skipped_cases"] == 0


# A client hung inside a command never reports that GetCommand delivered it (the library sends
# a delivering GetCommand's EVENT with the next frame), so the harness cannot tell "hung at end
# of data" (CLIENT-READ-EOF) from a hang in general (CLIENT-NO-HANG) for the EOF spin.
ALSO_ACCEPTED = {"eof-spin": "CLIENT-NO-HANG"}


@pytest.mark.parametrize("name", list(SEEDED))
def test_seeded_bug_is_flagged_by_the_harness(name: str, harness: Harness) -> None:
    bug = SEEDED[name]
    report = judge(harness, ClientUnderTest.python_client(bug.spec), [bug.scenario])
    broken = failed(report)
    release_abandoned()
    sweep_killed_clients()
    if bug.rule not in broken and name in ALSO_ACCEPTED:
        assert ALSO_ACCEPTED[name] in broken, broken
        return
    assert bug.rule in broken, broken
    assert report.extra["skipped_cases"] == 0


# ------------------------------------------------------------------------- directly

@pytest.fixture(scope="module")
def dconn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    with Engine.start(data_dir=str(tmp_path_factory.mktemp("data"))) as eng:
        c = eng.connect()
        direct.prepare_engine(c)
        yield c
        c.close()


def run(conn: Connection, name: str, media: Path,
        client: type[ReferenceClient] = ReferenceClient, case_s: int = 30) -> direct.CaseRun:
    """Run a scenario directly; hanging bugs get ``case_s`` 1 (they give up after 3 s)."""
    return direct.run_scenario(conn, name, media_dir=str(media), client=client,
                               timeouts={"case_s": case_s})


def restore_from(conn: Connection, media: Path) -> direct.CaseRun:
    """Restore what a client backed up into ``media``, with the reference client."""
    return direct.run_scenario(conn, "restore-plain", media_dir=str(media), with_source=False)


def bug(name: str) -> type[ReferenceClient]:
    return SEEDED[name].cls


def test_direct_getconfig_hang(dconn: Connection, tmp_path: Path) -> None:
    out = run(dconn, "backup-open-failure", tmp_path, bug("getconfig-hang"), 1)
    ref = run(dconn, "backup-open-failure", tmp_path / "ref")
    # The statement failed at once; the reference stopped polling, the bug kept waiting in
    # one GetConfiguration until its own limit (3 x case_s).
    assert ref.report.result is not None and ref.report.result.error_numbers == [18210, 3013]
    assert out.report.config_hr == HResult.VD_E_TIMEOUT and not out.ok


def test_direct_eof_spin(dconn: Connection, tmp_path: Path) -> None:
    ref = run(dconn, "restore-plain", tmp_path / "ref")
    assert ref.ok
    out = run(dconn, "restore-plain", tmp_path / "bug", bug("eof-spin"), 1)
    # The EOF Read was never answered; only the bug's own limit ended the spin.
    assert not out.ok and "never filled (0 read)" in (out.report.own_failure or "")
    assert out.report.result is not None and out.report.result.error_numbers[-1] == 3013


def test_direct_flush_not_durable(dconn: Connection, tmp_path: Path) -> None:
    ref = run(dconn, "backup-flush-then-abort", tmp_path / "ref")
    out = run(dconn, "backup-flush-then-abort", tmp_path / "bug", bug("flush-not-durable"))
    assert not ref.ok and not out.ok  # the server aborts after the Flush in both
    flushed = 2 * 65536  # two Writes were acknowledged, then a Flush was acknowledged
    assert os.path.getsize(tmp_path / "ref" / "stripe0.vbak") >= flushed
    assert os.path.getsize(tmp_path / "bug" / "stripe0.vbak") == 0


@pytest.mark.parametrize("name", ["finalise-at-first-flush", "writes-dropped"])
def test_direct_backup_loses_acknowledged_data(name: str, dconn: Connection,
                                               tmp_path: Path) -> None:
    out = run(dconn, SEEDED[name].scenario, tmp_path, bug(name))
    assert out.ok, "the statement succeeded: every Write was acknowledged"
    written = sum(d.bytes for d in out.report.devices)
    assert os.path.getsize(tmp_path / "stripe0.vbak") < written
    back = restore_from(dconn, tmp_path)
    assert not back.ok and back.report.result is not None
    assert back.report.result.error_numbers[-1] == 3013


def test_direct_close_devices_open(dconn: Connection, tmp_path: Path) -> None:
    out = run(dconn, "backup-plain", tmp_path, bug("close-devices-open"))
    assert out.report.close_hr == HResult.VD_E_OPEN
    assert not out.ok and out.report.result is not None
    assert "Operating system error 995" in out.report.result.text()  # Close aborted it


def test_direct_no_signal_abort(dconn: Connection, tmp_path: Path) -> None:
    out = run(dconn, "backup-client-fails", tmp_path, bug("no-signal-abort"))
    try:
        assert not out.ok and out.report.own_failure is not None
        assert out.report.close_hr is None, "walked away without Close"
        (abandoned,) = buggy.ABANDONED
        assert abandoned.state.name == "ACTIVE", "no SignalAbort: the server still waits"
    finally:
        release_abandoned()
    ref = run(dconn, "backup-client-fails", tmp_path / "ref")
    assert ref.report.result is not None
    assert ref.report.result.error_numbers == list(scenarios.info("backup-client-fails").errors)


def test_direct_timeout_fatal(dconn: Connection, tmp_path: Path) -> None:
    ref = run(dconn, "backup-server-stall", tmp_path / "ref")
    out = run(dconn, "backup-server-stall", tmp_path / "bug", bug("timeout-fatal"))
    assert ref.ok
    assert not out.ok and "timed out" in (out.report.own_failure or "")


def test_direct_unknown_success(dconn: Connection, tmp_path: Path) -> None:
    ref = run(dconn, "backup-unknown-command", tmp_path / "ref")
    out = run(dconn, "backup-unknown-command", tmp_path / "bug", bug("unknown-success"))
    # ERROR_NOT_SUPPORTED puts the device in IO-ERROR: the server clears it after each
    # unknown command (§6.6).  Answered with success, no ClearError follows.
    assert ref.report.devices[0].commands["VDC_ClearError"] == 2
    assert "VDC_ClearError" not in out.report.devices[0].commands


def test_direct_round_robin(dconn: Connection, tmp_path: Path) -> None:
    ref = run(dconn, "backup-one-buffer-2dev", tmp_path / "ref")
    assert ref.ok
    out = run(dconn, "backup-one-buffer-2dev", tmp_path / "bug", bug("round-robin"), 1)
    assert not out.ok and out.report.own_failure == "case deadline passed"


def test_direct_buffer_after_complete(dconn: Connection, tmp_path: Path) -> None:
    ctx, plan = direct.context_for("backup-plain", set_name=direct.new_set_name(),
                                   media_dir=str(tmp_path), engine_address=dconn.address)
    client = buggy.ScrubAfterComplete(ctx, issue=lambda: dconn.run_plan(plan))
    assert client.run() is True
    # The Flush comes once every Write is completed: each buffer it wiped was the server's.
    assert client.report.devices[0].commands["VDC_Flush"] == 1
    assert client.scrubbed == len(client.kept) >= 1
    assert restore_from(dconn, tmp_path).ok, "the data itself is intact"


def test_direct_success_despite_failure(dconn: Connection, tmp_path: Path) -> None:
    out = run(dconn, "backup-close-device-early", tmp_path, bug("success-despite-failure"))
    assert out.ok is True
    assert out.report.result is not None and not out.report.result.ok
    assert [d.end for d in out.report.devices] == ["VD_E_CLOSE"]


def test_buggy_program_exit_status(dconn: Connection, tmp_path: Path) -> None:
    import subprocess

    ctx, _ = direct.context_for("backup-plain", set_name=direct.new_set_name(),
                                media_dir=str(tmp_path / "m"), engine_address=dconn.address)
    path = ctx.write(str(tmp_path / "ctx.json"))
    p = subprocess.run([sys.executable, "-m", "conformance.harness.clients.buggy",
                        "success-despite-failure", path], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "conformance.harness.clients.buggy", "nope",
                        path], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "usage" in p.stderr
