"""The conformance suite (issue 3) against vdisim itself, ci profile.

* the whole ci profile passes on ``sim`` with no rule failing, and every rule sim can reach
  (its REQUIRES satisfied by sim's capabilities) is judged -- PASSED, never NOT_EXERCISED;
* a deliberately broken backend (vdisim with one wrong return code) fails exactly the rule it
  breaks, with a shrunk replay file, and ``conformance.replay.run(path)`` reruns it: 1 while the
  bug is there, 0 on the real sim;
* the state machine finds the same bug on its own and names the rule;
* a backend without a capability gets the rules that need it *not checkable*, with the reason.

Heavier: ``VDISIM_CONFORM_PROFILE=full`` runs the full profile instead of ci.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hseed
from hypothesis.stateful import get_state_machine_test

from conformance import replay
from conformance.backend import Capability, ClientSide
from conformance.backends.sim import SimBackend, SimClient
from conformance.directed import DIRECTED, REQUIRES
from conformance.judge import Judge
from conformance.machine import VDIStateMachine, judge_steps, shrink_budget
from conformance.report import Report, Verdict
from conformance.rules import Rule, select
from conformance.suite import PROFILES, backend_spec, run_suite

PROFILE = os.environ.get("VDISIM_CONFORM_PROFILE", "ci")
SEED = int(os.environ.get("VDISIM_CONFORM_SEED", "20261125"))
VD_E_INVALID = 0x80770006
BROKEN_RULE = "CT-ACTIVE-COMPLETE_COMMAND-NOT_OUTSTANDING"


def library_rules() -> list[Rule]:
    return [r for r in select() if r.area != "client"]


@pytest.fixture(scope="module")
def ci_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    replays = tmp_path_factory.mktemp("replays")
    lines: list[str] = []
    with SimBackend() as backend:
        report = run_suite(backend, rules=library_rules(), seed=SEED, profile=PROFILE,
                           replay_dir=str(replays), on_progress=lines.append)
    print("\n".join(lines))
    print(f"conformance {PROFILE} profile on sim: {report.duration_s:.1f} s, {report.extra}")
    yield report


def test_ci_profile_passes_on_sim(ci_report: Report) -> None:
    failed = {r.rule.id: (r.reason, r.witness) for r in ci_report.results.values()
              if r.verdict is Verdict.FAILED}
    assert failed == {}
    assert ci_report.exit_code() == 0
    assert ci_report.extra["directed_sequences"] == len(DIRECTED)
    assert ci_report.extra["explore_steps"] > 100


def test_every_rule_reachable_on_sim_is_exercised(ci_report: Report) -> None:
    caps = SimBackend.capabilities
    reachable = [rid for rid, need in REQUIRES.items() if need <= caps
                 and rid in ci_report.results]
    assert len(reachable) == len(ci_report.results)  # sim has every capability a rule needs
    verdicts = {rid: ci_report.results[rid].verdict for rid in reachable}
    assert {rid: v for rid, v in verdicts.items() if v is not Verdict.PASSED} == {}


def test_report_writers(ci_report: Report, tmp_path: Any) -> None:
    ci_report.write_json(str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["counts"]["failed"] == 0 and doc["subject"] == "sim"
    assert doc["counts"]["passed"] == len(library_rules())


# ---------------------------------------------------------------------------------------------
# A broken backend: vdisim with one wrong answer (a second CompleteCommand of the same command
# returns NOERROR instead of VD_E_INVALID, §2.5).


class _LenientClient(SimClient):
    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        r = super()._call(op, **args)
        if op == "complete_command" and r["hr"] == VD_E_INVALID:
            return {**r, "hr": 0}
        return r


class BrokenSim(SimBackend):
    name = "broken-sim"

    def new_client(self) -> ClientSide:
        c = _LenientClient(self._remember)
        self._clients.append(c)
        return c


@pytest.fixture(scope="module")
def broken() -> Iterator[BrokenSim]:
    b = BrokenSim()
    b.open()
    yield b
    b.close()


def test_broken_backend_fails_the_rule_with_a_replay_file(broken: BrokenSim,
                                                         tmp_path: Any) -> None:
    rules = select(pattern=f"{BROKEN_RULE},CT-DNE-CREATE")
    report = run_suite(broken, rules=rules, seed=7, profile="quick", replay_dir=str(tmp_path))
    res = report.results[BROKEN_RULE]
    assert res.verdict is Verdict.FAILED
    assert report.results["CT-DNE-CREATE"].verdict is Verdict.PASSED
    assert report.exit_code() == 1
    assert res.witness is not None and os.path.exists(res.witness)
    doc = replay.load(res.witness)
    assert doc["kind"] == "conform" and doc["rule"] == BROKEN_RULE and doc["seed"] == 7
    assert doc["payload"]["backend"] == backend_spec(broken) == f"{__name__}:BrokenSim"
    steps = doc["payload"]["steps"]
    # shrunk: shorter than the directed sequence it came from, still ending in the breach
    assert len(steps) < len(DIRECTED[BROKEN_RULE])
    assert steps[-1]["call"] == "complete_command"
    assert f"vdisim replay {res.witness}" in report.console()
    # rerun from the file: the bug reproduces (exit 1) ...
    assert replay.run(res.witness) == 1
    # ... and the same steps on the real sim pass (exit 0)
    doc["payload"]["backend"] = "sim"
    fixed = tmp_path / "on-sim.json"
    fixed.write_text(json.dumps(doc))
    assert replay.run(str(fixed), attempts=2) == 0


def test_state_machine_finds_and_shrinks_the_bug(broken: BrokenSim) -> None:
    class Machine(VDIStateMachine):
        _backend = broken
        judge_factory = staticmethod(Judge)

    s = settings(max_examples=200, stateful_step_count=30, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                 phases=(Phase.generate, Phase.shrink), print_blob=False)
    test = get_state_machine_test(Machine, settings=s)  # type: ignore[no-untyped-call]
    hseed(3)(test)
    with pytest.raises(AssertionError) as info, shrink_budget(10):
        test()
    failure = Machine.last_failure
    assert failure is not None
    assert str(info.value).startswith(failure.rule_id + ":")
    assert failure.rule_id.startswith("CT-") or failure.rule_id == "COMPLETE-COMMAND-AT-MOST-ONCE"
    # minimal: a handful of steps, the last a CompleteCommand that should have been refused
    assert failure.steps[-1]["call"] == "complete_command"
    assert len(failure.steps) <= 30
    from conformance.trace import Step

    steps = [Step.from_json(d) for d in failure.steps]
    assert any(v.rule_id == failure.rule_id for v in judge_steps(broken, steps))
    with SimBackend() as sim:
        assert judge_steps(sim, steps) == []


# ---------------------------------------------------------------------------------------------
# Capability exclusion


class NoSecondaries(SimBackend):
    name = "sim-no-secondaries"
    capabilities = SimBackend.capabilities - {Capability.SECONDARY_PROCESS}


def test_missing_capability_makes_rules_not_checkable(tmp_path: Any) -> None:
    need = sorted(rid for rid, caps in REQUIRES.items()
                  if Capability.SECONDARY_PROCESS in caps)
    assert need, "some rule needs a secondary process"
    rules = select(pattern=",".join([*need, "CT-DNE-CREATE", "CT-ACTIVE-GET_COMMAND"]))
    b = NoSecondaries()
    b.open()
    try:
        report = run_suite(b, rules=rules, seed=11, profile="quick",
                           replay_dir=str(tmp_path))
        assert b._agents == []  # no secondary process was ever started
    finally:
        b.close()
    for rid in need:
        res = report.results[rid]
        assert res.verdict is Verdict.NOT_CHECKABLE, rid
        assert res.reason == "backend lacks secondary_process"
    assert report.results["CT-DNE-CREATE"].verdict is Verdict.PASSED
    assert report.results["CT-ACTIVE-GET_COMMAND"].verdict is Verdict.PASSED
    assert report.exit_code() == 0


def test_profiles_are_bounded() -> None:
    assert PROFILES["ci"].explore_s <= 30
    assert PROFILES["full"].explore_s > PROFILES["ci"].explore_s
