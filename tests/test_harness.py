"""The client conformance harness (issue 4): context and capabilities, the client rule
catalogue and its negative examples, the engine's wire log and armed plans, running real
clients (reference, seeded bugs, --exec, a wrong statement), reports, replay, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import attrs
import pytest

from conformance import replay as replay_files
from conformance.catalogue.client import NEGATIVE_EXAMPLES, RULES, good_backup
from conformance.harness import checks
from conformance.harness.check import CheckRun, client_rules
from conformance.harness.context import (
    Capabilities,
    ClientContext,
    ContextError,
    capabilities_of,
)
from conformance.harness.plans import CaseSpec, FaultSpec
from conformance.harness.report_html import render
from conformance.harness.runner import PROFILES, ClientUnderTest, Harness, Profile
from conformance.report import Verdict
from conformance.rules import Level
from vdisim.engine.plan import Plan, PlanError

REFERENCE = "conformance.harness.clients.reference:run"
FAST = Profile("test", cases=4, case_s=15, linger_s=3.0, shrink_s=6.0, idle_s=4.0)


# ------------------------------------------------------------------------- context

def _ctx(**kw: Any) -> ClientContext:
    base: dict[str, Any] = dict(case="c1", set_name="S", operation="backup",
                                statement="BACKUP DATABASE [d] TO VIRTUAL_DEVICE = 'S'",
                                devices=["S", "S1"], media_dir="/tmp/m",
                                engine_address="/tmp/e.sock", database="d")
    base.update(kw)
    return ClientContext(**base)


def test_context_json_round_trip_and_file(tmp_path: Any) -> None:
    ctx = _ctx(device_model="tape", features=["VDF_RequestComplete"],
               extra={"server_timeout_ms": 300})
    d = ctx.to_json()
    assert d["format"] == "vdisim-client-context" and d["version"] == 1
    assert d["devices"] == ["S", "S1"] and d["tds_address"] is None
    assert ClientContext.from_json(json.loads(json.dumps(d))) == ctx
    path = ctx.write(str(tmp_path / "ctx.json"))
    assert ClientContext.load(path) == ctx
    assert ctx.device_count == 2 and ctx.writing and ctx.timeout("get_command_ms") == 1000


@pytest.mark.parametrize("bad", [
    {"version": 2}, {"device_model": "floppy"}, {"devices": ["X"]}, {"devices": []},
])
def test_context_rejects_invalid(bad: dict[str, Any]) -> None:
    with pytest.raises(ContextError):
        _ctx(**bad)


def test_context_from_json_rejects_unknown_fields() -> None:
    d = _ctx().to_json()
    d["colour"] = "red"
    with pytest.raises(ContextError, match="colour"):
        ClientContext.from_json(d)
    with pytest.raises(ContextError):
        ClientContext.loads("{not json")


def test_capabilities_parse_inline_and_path(tmp_path: Any) -> None:
    caps = Capabilities.parse('{"operations": ["backup"], "tape": true}')
    assert caps.operations == ("backup",) and caps.tape and not caps.disk
    p = tmp_path / "caps.json"
    p.write_text(json.dumps({"multi_device": False}))
    assert Capabilities.parse(str(p)).multi_device is False
    with pytest.raises(ContextError):
        Capabilities.parse('{"operations": ["format-c"]}')
    with pytest.raises(ContextError):
        Capabilities.parse('{"tape": "yes"}')
    assert caps.missing(operation="restore", devices=1, model="pipe", complete=False,
                        snapshot=False) == "client does not claim operation 'restore'"
    assert caps.missing(operation="backup", devices=1, model="tape", complete=False,
                        snapshot=False) is None


def test_capabilities_of_python_clients() -> None:
    def f(ctx: ClientContext) -> bool:
        return True

    f.capabilities = {"operations": ["backup"]}  # type: ignore[attr-defined]
    assert capabilities_of(f).operations == ("backup",)
    from conformance.harness.clients import reference

    assert capabilities_of(reference.run).tape  # the module's CAPABILITIES dict


# ------------------------------------------------------------------------- catalogue

def test_client_rules_are_complete() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids)) >= 15
    for r in RULES:
        assert r.area == "client" and r.id.startswith("CLIENT-")
        assert r.check in checks.CHECKS, r.id
        assert r.negative in NEGATIVE_EXAMPLES, r.id
        if r.source not in ("D", "H"):
            assert r.level is not Level.MUST
    assert {r.id for r in client_rules()} == set(ids)


def test_good_backup_breaks_nothing() -> None:
    violations, held = checks.judge(good_backup())
    assert violations == []
    assert "CLIENT-WRITE-KEPT" in held and "CLIENT-FLUSH-DURABLE" in held


@pytest.mark.parametrize("rule", [r.id for r in RULES])
def test_negative_example_flagged_by_exactly_its_rule(rule: str) -> None:
    violations, _held = checks.judge(NEGATIVE_EXAMPLES[rule])
    assert sorted({v.rule_id for v in violations}) == [rule]


# ------------------------------------------------------------------------- plans

def test_plan_fields_for_the_harness() -> None:
    p = Plan("backup", "db", ("S",), flush_every=4, complete_supported=False).validate()
    assert Plan.loads(p.dumps()) == p
    with pytest.raises(PlanError, match="flush_every"):
        Plan("backup", "db", ("S",), flush_every=-1).validate()


def test_case_spec_json_and_plan() -> None:
    spec = CaseSpec(operation="restore", devices=2, optional_commands=(99,),
                    fault=FaultSpec("abort", 1, 3))
    assert CaseSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    plan = spec.plan(("A", "A1"))
    assert plan.operation == "restore" and plan.replace and plan.faults[0].device == 1
    assert "RESTORE DATABASE" in spec.statement(("A", "A1"))
    assert spec.unsupported_by(Capabilities(multi_device=False)) is not None


# ------------------------------------------------------------------------- real clients

@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with Harness(FAST) as h:
        yield h


def _judge(records: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for rec in records:
        assert "skipped" not in rec, rec
        violations, _ = checks.judge(rec)
        out |= {v.rule_id for v in violations}
    return out


@pytest.mark.parametrize("spec", [
    CaseSpec(),
    CaseSpec(devices=2, flush_every=4, flushes=2, optional_commands=(16, 99)),
    CaseSpec(complete_supported=False, flushes=2),
    CaseSpec(operation="restore", read_to_eof=True),
    CaseSpec(fault=FaultSpec("fail_open")),
    CaseSpec(fault=FaultSpec("abort", 0, 2)),
    CaseSpec(operation="restore", snapshot=True),
], ids=["plain", "2dev-midflush-unknown", "no-complete", "restore", "fail-open", "abort",
        "snapshot"])
def test_reference_client_passes(harness: Harness, spec: CaseSpec) -> None:
    client = ClientUnderTest.python_client(REFERENCE)
    records = harness.run_case(client, spec, "t")
    assert _judge(records) == set()
    rec = records[-1]
    assert rec["collected"]["issued"] is True
    if spec == CaseSpec():
        # the acknowledged bytes came back through the same client, byte for byte
        wire = rec["collected"]["wire"]
        assert rec["verify"]["read_sha256"] == wire["written_sha256"]
        assert rec["snapshot_verify"]["ok"] is True and wire["snapshots"] >= 1


def test_hang_verdict_has_thread_stacks(harness: Harness) -> None:
    from conformance.harness.clients.buggy import SEEDED

    client = ClientUnderTest.python_client(SEEDED["getconfig-hang"].spec)
    records = harness.run_scenario(client, "backup-open-failure")
    assert _judge(records) == {"CLIENT-GETCONFIG-NO-HANG"}
    rec = records[-1]
    assert rec["client"]["hung"] is True
    assert "wait_configuration" in rec["client"]["stacks"]


def wrong_statement(ctx: ClientContext) -> bool:
    """A client that issues BACKUP LOG where BACKUP DATABASE was asked."""
    from conformance.harness.clients.reference import run

    return run(attrs.evolve(ctx, statement=ctx.statement.replace("DATABASE", "LOG")))


def test_wrong_statement_is_judged(harness: Harness) -> None:
    client = ClientUnderTest.python_client(f"{__name__}:wrong_statement",
                                           Capabilities())
    records = harness.run_case(client, CaseSpec(), "wrong")
    assert "CLIENT-STATEMENT-ISSUED" in _judge(records)
    assert "is not the expected" in records[0]["collected"]["mismatch"]


def test_exec_client(harness: Harness) -> None:
    cmd = f"{sys.executable} -m conformance.harness.clients.reference {{context}}"
    client = ClientUnderTest.exec_client(cmd, Capabilities())
    records = harness.run_case(client, CaseSpec(devices=2), "exec")
    assert _judge(records) == set()
    assert records[0]["client"]["exit"] == 0 and records[0]["client"]["believed_ok"] is True


def test_unclaimed_case_is_skipped(harness: Harness) -> None:
    client = ClientUnderTest.python_client(REFERENCE, Capabilities(multi_device=False))
    rec = harness.run_case(client, CaseSpec(devices=2), "skip")[0]
    assert rec["skipped"] == "client does not claim multi_device"


# ------------------------------------------------------------------------- runs and reports
# (every seeded-bug client is flagged with its rule by tests/test_clients.py, through this
# harness)

def test_generated_run_shrinks_and_replays(harness: Harness, tmp_path: Any) -> None:
    from conformance.harness.clients.buggy import SEEDED

    bug = SEEDED["buffer-after-complete"]
    client = ClientUnderTest.python_client(bug.spec, Capabilities(multi_device=False))
    run = CheckRun(client, seed=5, profile=FAST, replay_dir=str(tmp_path), harness=harness,
                   rules=client_rules("CLIENT-BUFFER-*,CLIENT-WRITE-KEPT"))
    report = run.generated(3)
    res = report.results["CLIENT-BUFFER-AFTER-COMPLETE"]
    assert res.verdict is Verdict.FAILED and res.witness is not None
    minimal = report.extra["minimal"]["CLIENT-BUFFER-AFTER-COMPLETE"]
    assert Plan.from_json(minimal["plan"]).devices == ("{SET}",)  # the minimal plan
    doc = replay_files.load(res.witness)
    assert doc["kind"] == "client" and doc["rule"] == "CLIENT-BUFFER-AFTER-COMPLETE"
    assert doc["payload"]["spec"] == minimal["spec"]
    assert replay_files.run(res.witness) == 1  # `vdisim replay FILE`: the case still fails
    # the HTML matrix links the failing cell to its wire log
    page = render([report])
    anchors = _anchors(page)
    assert "wire-0-CLIENT-BUFFER-AFTER-COMPLETE" in anchors["ids"]
    assert "#wire-0-CLIENT-BUFFER-AFTER-COMPLETE" in anchors["links"]
    assert "VDC_Write" in page
    assert set(anchors["links"]) <= {f"#{i}" for i in anchors["ids"]}


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        a = dict(attrs_)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "a" and str(a.get("href", "")).startswith("#"):
            self.links.append(str(a["href"]))


def _anchors(page: str) -> dict[str, list[str]]:
    p = _Anchors()
    p.feed(page)
    return {"ids": p.ids, "links": p.links}


def test_cli_run_writes_every_report(tmp_path: Any) -> None:
    from vdisim.cli import main

    out = {k: str(tmp_path / f"r.{k}") for k in ("json", "xml", "html")}
    rc = main(["run", "backup-plain", "restore-plain", "--client", REFERENCE, "--seed", "3",
               "--json", out["json"], "--junit-xml", out["xml"], "--html", out["html"],
               "--replay-dir", str(tmp_path / "replays")])
    assert rc == 0
    rep = json.load(open(out["json"]))
    verdicts = {r["rule"]: r["verdict"] for r in rep["rules"]}
    assert verdicts["CLIENT-WRITE-KEPT"] == "passed"
    assert "failed" not in verdicts.values()
    assert "CLIENT-READ-EOF" in open(out["xml"]).read()
    assert "<table class='matrix'" in open(out["html"]).read()


def test_cli_usage_errors() -> None:
    from vdisim.cli import main

    assert main(["run", "no-such-scenario", "--client", REFERENCE]) == 2
    assert main(["check-client", "--profile", "ci"]) == 2
    assert main(["check-client", "--client", "nomodule_xyz:f"]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                    "(apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(tmp_path: Any) -> None:
    from conformance.report import Report

    rec = NEGATIVE_EXAMPLES["CLIENT-WRITE-KEPT"]
    rep = Report.for_rules("client-x", "client", 1, RULES)
    violations, held = checks.judge(rec)
    for r in held:
        rep.held(r)
    for v in violations:
        rep.broke(v)
    rep.extra["failing_records"] = {"CLIENT-WRITE-KEPT": rec}
    page = tmp_path / "report.html"
    page.write_text(render([rep]))
    assert CHROMIUM is not None
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--dump-dom", f"file://{page}#wire-0-CLIENT-WRITE-KEPT"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "id=\"matrix\"" in dom and "CLIENT-WRITE-KEPT" in dom
    assert "wire-0-CLIENT-WRITE-KEPT" in dom and "VDC_Write" in dom


def test_profiles() -> None:
    assert PROFILES["full"].cases == 1000 and PROFILES["ci"].cases <= 20


@pytest.mark.skipif(os.environ.get("VDISIM_HARNESS_FULL") != "1",
                    reason="1,000 generated cases take about 15 minutes: VDISIM_HARNESS_FULL=1")
def test_reference_client_no_false_verdict_full_profile(tmp_path: Any) -> None:
    client = ClientUnderTest.python_client(REFERENCE)
    seed = int(os.environ.get("VDISIM_SEED", "1000"))
    report = CheckRun(client, seed=seed, profile="full",
                      replay_dir=str(tmp_path)).generated(1000)
    failed = {k: r.reason for k, r in report.results.items()
              if r.verdict is Verdict.FAILED}
    assert failed == {}, (seed, failed)
    assert report.extra["cases"] >= 1000
