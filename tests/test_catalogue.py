"""The rule catalogue of the VDI library and server (conformance/catalogue/library.py).

Checks the catalogue as data (>= 80 rules, unique IDs, only [D]/[H] rules are MUST, every
section exists in the spec digest, the required areas are covered, every cell of the amended
client table in docs/states.md has a CT-* rule, server transitions have ST-* rules) and, for
every rule, its two examples against the judge:

* the negative example (conformance/negative.py) is flagged under that rule and no other;
* the directed sequence (conformance/directed.py), answered as the model expects, makes the
  judge judge that rule and flags nothing.

Pure judge tests: no engine, no processes (the directed sequences run against the simulator in
the conformance suite).
"""

from __future__ import annotations

import pathlib
import re

import pytest

from conformance import model as m
from conformance.backend import Capability
from conformance.catalogue.library import RULES
from conformance.directed import DIRECTED, NO_SEQUENCE, REQUIRES, covers
from conformance.judge import Judge, Judgement, expected_trace, judge
from conformance.negative import NEGATIVE, expected_for, negative
from conformance.report import Violation
from conformance.rules import AREAS, Level, Party, Rule, all_rules
from conformance.trace import Obs, Step

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = pathlib.Path("/work/shared/spec/vdi-spec.md")
BY_ID = {r.id: r for r in RULES}

#: Section numbers of the spec digest (transcribed; checked against the digest when present).
SPEC_SECTIONS = {
    "1", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8", "1.9", "1.10",
    "2", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "2.9", "2.10", "2.11",
    "3", "4", "4.1", "4.2", "5", "5.1", "6", "6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7",
    "7", "8", "8.1", "8.2", "8.3", "8.4", "8.5", "9", "10", "11", "11.1", "12", "13",
}


# -- the catalogue as data ------------------------------------------------------------------


def test_at_least_80_rules_with_unique_ids() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) >= 80
    assert len(set(ids)) == len(ids)
    everything = [r.id for r in all_rules()]
    assert len(set(everything)) == len(everything)
    assert set(ids) <= set(everything)


def test_only_documented_rules_are_must() -> None:
    for r in RULES:
        if r.level is Level.MUST:
            assert r.source in ("D", "H"), r.id
    with pytest.raises(ValueError, match="at most SHOULD"):
        Rule(id="X-Y", area="close", level=Level.MUST, binds=Party.LIBRARY, section="§2.7",
             source="I", page="p", statement="s", check="model")
    with pytest.raises(ValueError):
        Rule(id="lower-case", area="close", level=Level.SHOULD, binds=Party.LIBRARY,
             section="§2.7", source="D", page="p", statement="s", check="model")


def test_every_rule_is_described() -> None:
    for r in RULES:
        assert r.area in AREAS and r.page and r.check == "model", r.id
        assert r.statement.endswith(".") and len(r.statement) > 20, r.id
        assert r.negative == r.id


def test_spec_sections_exist() -> None:
    if SPEC.exists():
        found = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", SPEC.read_text("utf-8"),
                               flags=re.M))
        assert SPEC_SECTIONS <= found | {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10",
                                         "11", "12", "13"}
    for r in RULES:
        assert r.section.startswith("§") and r.section[1:] in SPEC_SECTIONS, (r.id, r.section)


def test_required_areas_are_covered() -> None:
    areas = {r.area for r in RULES}
    for area in ("close", "client-table", "server", "abort", "io-error", "complete", "timeout",
                 "transfer", "completion-codes", "configuration", "get-command",
                 "complete-command", "signal-abort", "open-device"):
        assert area in areas, area
    ids = set(BY_ID)
    # The Close page, rule by rule (§2.7).
    for rid in ("CT-NT-CLOSE", "CT-ABORT-CLOSE", "CT-DNE-CLOSE", "CT-ACTIVE-CLOSE-DEVICES_OPEN",
                "CLOSE-VD_E_OPEN-ABORTS", "CLOSE-VD_E_OPEN-RELEASES", "CLOSE-DEVICES-INVALID",
                "CLOSE-CREATE-AGAIN", "CLOSE-WAIT-FOR-VD_E_CLOSE",
                "ABORT-CLOSE-WITHOUT-VD_E_CLOSE", "CLOSE-RELEASES-RESOURCES"):
        assert rid in ids, rid
    # Return codes of every §2 method, and of the server's SendCommand / CloseDevice.
    for call in m.CLIENT_CALLS:
        assert any(i.startswith("CT-") and f"-{call}" in i for i in ids), call
    for rid in ("ST-ACTIVE-SEND_COMMAND", "ST-ACTIVE-SEND_COMMAND-IO_ERROR",
                "ST-ACTIVE-CLOSE_DEVICE-DEVICE_CLOSED", "TIMEOUT-SERVER-ABORTS",
                "TRANSFER-BLOCK-MULTIPLE", "COMPLETE-DELIVERED", "IOERR-CLEARERROR-HELD",
                "CODES-SEND-FAILURE-CALLBACK"):
        assert rid in ids, rid
    assert BY_ID["CLOSE-WAIT-FOR-VD_E_CLOSE"].binds is Party.CLIENT


def _states_md_client_cells() -> tuple[set[tuple[str, str]], set[tuple[str, str, str]]]:
    """(state, call) of every cell of the client table in docs/states.md, and
    (state, call, condition) of every amended cell."""
    from vdisim.protocol.states import ClientCall, ClientState, Cond

    text = (ROOT / "docs" / "states.md").read_text("utf-8")
    section = text.split("## Client set", 1)[1].split("## Server set", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln]
    header = [c.strip() for c in rows[0].strip("|").split("|")][1:]
    states = {s.value: s.name for s in ClientState}
    calls = {c.value: c.name for c in ClientCall}
    cells = set()
    for row in rows[1:]:
        cols = [c.strip() for c in row.strip("|").split("|")]
        for state_text, _cell in zip(header, cols[1:], strict=True):
            cells.add((states[state_text], calls[cols[0]]))
    amended = set()
    conds = {c.value: c.name for c in Cond}
    for line in section.splitlines():
        mt = re.match(r"- \*\*(.+) in (.+)\*\* \((.+)\) →", line)
        if mt:
            amended.add((states[mt.group(2)], calls[mt.group(1)], conds[mt.group(3)]))
    return cells, amended


def test_every_client_table_cell_has_a_rule() -> None:
    cells, amended = _states_md_client_cells()
    assert len(cells) == len(m.CLIENT_STATES) * len(m.CLIENT_CALLS) == 60
    missing = sorted(m.ct_rule(s, c) for s, c in cells if m.ct_rule(s, c) not in BY_ID)
    assert missing == []
    assert len(amended) == 5
    for state, call, cond in amended:
        rid = m.ct_rule(state, call, cond)
        assert rid in BY_ID, (state, call, cond)
        if cond != "OK":
            assert rid.endswith(cond), rid  # each amended condition has a rule of its own


def test_server_transitions_have_rules() -> None:
    st = [r for r in RULES if r.id.startswith("ST-")]
    assert len(st) >= 40
    for state in ("DNE", "CONNECTED", "CONFIGURABLE", "INITIALIZING", "ACTIVE", "NT", "ABORT"):
        assert any(r.id.startswith(f"ST-{state}-") for r in st), state
    documented = [r for r in st if r.source == "D"]
    assert len(documented) >= 30 and all(r.level is Level.MUST for r in documented)


# -- directed sequences and negative examples -----------------------------------------------


def test_every_rule_has_a_sequence_or_a_reason() -> None:
    for r in RULES:
        assert (r.id in DIRECTED) != (r.id in NO_SEQUENCE), r.id
        assert r.id in REQUIRES and all(isinstance(c, Capability) for c in REQUIRES[r.id])
    assert set(DIRECTED) <= set(BY_ID) and set(NO_SEQUENCE) <= set(BY_ID)
    assert covers("CT-ACTIVE-CLOSE-DEVICES_OPEN") == DIRECTED["CT-ACTIVE-CLOSE-DEVICES_OPEN"]
    assert Capability.SECONDARY_PROCESS in REQUIRES["CT-DNE-OPEN_IN_SECONDARY"]
    assert Capability.KILL_SERVER in REQUIRES["ABORT-SERVER-DEATH"]
    assert Capability.SAFE_AFTER_CLOSE in REQUIRES["CLOSE-DEVICES-INVALID"]
    assert Capability.STATEMENTS in REQUIRES["TRANSFER-BLOCK-MULTIPLE"]


def test_negative_examples_exist_for_every_rule() -> None:
    assert set(NEGATIVE) == set(BY_ID)
    assert len(NEGATIVE) == len(RULES)


@pytest.mark.parametrize("rule_id", sorted(BY_ID))
def test_negative_example_breaks_exactly_its_rule(rule_id: str) -> None:
    trace = negative(rule_id)
    assert trace and all(isinstance(o, Obs) for o in trace)
    result = judge(trace)
    flagged = {v.rule_id for v in result.violations}
    assert flagged == {rule_id}, [v.message for v in result.violations]
    v = next(v for v in result.violations if v.rule_id == rule_id)
    assert "expected" in v.message or "did not return" in v.message
    assert v.step == len(trace) - 1


@pytest.mark.parametrize("rule_id", sorted(DIRECTED))
def test_directed_sequence_judges_its_rule(rule_id: str) -> None:
    trace = expected_for(rule_id)
    result = judge(trace, opaque_server=False)
    assert result.violations == []
    assert rule_id in result.held


# -- the judge's behaviour (a few spot checks beyond the generated examples) -----------------

C = "client"


def _obs(actor: str, call: str, hr: int | None, out: dict[str, object] | None = None,
         **args: object) -> Obs:
    return Obs(Step(actor, call, dict(args)), hr, dict(out or {}))


def _active_prefix() -> list[Obs]:
    steps = DIRECTED["CT-ACTIVE-GET_COMMAND-TIMEOUT"][:-3]  # up to the client's OpenDevice
    return expected_trace(steps)


def test_events_in_flight_allow_either_answer_to_a_poll() -> None:
    """A GetCommand(0) right after the server's SendCommand may or may not see it; a wait of
    a second or more must."""
    prefix = _active_prefix() + expected_trace([])
    j = Judge()
    for o in prefix:
        assert j.observe(o).violations == []
    send = [Step("server", "allocate_buffer", {"size": 4096, "alignment": 0}),
            Step("server", "send_command", {"device": 0, "code": 2, "size": 4096,
                                            "position": 0, "buffer": 0})]
    j.observe(Obs(send[0], 0, {"buffer": 0}))
    j.observe(Obs(send[1], 0, {"command": 0}))
    poll = Step(C, "get_command", {"device": 0, "timeout_ms": 0})
    assert j.expect(poll) == frozenset({m.NOERROR, m.VD_E_TIMEOUT})
    wait = Step(C, "get_command", {"device": 0, "timeout_ms": 5000})
    assert j.expect(wait) == frozenset({m.NOERROR})
    r = j.observe(Obs(wait, m.VD_E_TIMEOUT, {"command": None}))
    assert [v.rule_id for v in r.violations] == ["CT-ACTIVE-GET_COMMAND"]
    assert "VD_E_TIMEOUT" in r.violations[0].message and "NOERROR" in r.violations[0].message


def test_after_server_abort_a_long_wait_must_return_abort() -> None:
    j = Judge()
    for o in _active_prefix():
        j.observe(o)
    j.observe(_obs("server", "signal_abort", 0))
    wait = Step(C, "get_command", {"device": 0, "timeout_ms": 5000})
    assert j.expect(wait) == frozenset({m.VD_E_ABORT})
    ok = Judge()
    for o in _active_prefix():
        ok.observe(o)
    ok.observe(_obs("server", "signal_abort", 0))
    assert ok.observe(Obs(wait, m.VD_E_ABORT, {})).held == [
        "TIMEOUT-CALL-RETURNS", "CT-ACTIVE-GET_COMMAND-ABORTED"]
    r = j.observe(Obs(wait, m.VD_E_TIMEOUT, {}))
    assert [v.rule_id for v in r.violations] == ["CT-ACTIVE-GET_COMMAND-ABORTED"]


def test_state_and_summary() -> None:
    j = Judge()
    for o in _active_prefix():
        j.observe(o)
    s = j.state()
    assert s["client"]["state"] == "ACTIVE" and s["server"]["state"] == "ACTIVE"
    assert s["client"]["devices"][0]["opened_by"] == "client"
    assert isinstance(Judgement().held, list)


def test_judge_aggregates_and_reports_violations() -> None:
    trace = negative("CT-ACTIVE-CLOSE-DEVICES_OPEN")
    result = judge(trace)
    assert isinstance(result.violations[0], Violation)
    assert "CT-ACTIVE-CLOSE-DEVICES_OPEN" not in result.held
    assert "CT-DNE-CREATE" in result.held


def test_unknown_steps_are_not_judged() -> None:
    j = Judge()
    r = j.observe(_obs("client", "read_buffer", None, {"data": ""}, command=0))
    assert r.violations == [] and r.held == []
    assert j.expect(Step("client", "read_buffer", {"command": 0})) is None
