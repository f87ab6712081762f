"""Verdicts per rule, and the report writers shared by ``vdisim conform``, ``vdisim
check-client`` and ``vdisim fuzz``: a console table, JUnit XML (rule ID in every test name) and
JSON.  (The client harness adds HTML on top of the same :class:`Report`.)

Exit codes (shared by every command that judges something):

* 0 -- no MUST rule failed;
* 1 -- at least one MUST rule failed (SHOULD failures are reported, not fatal);
* 2 -- usage error (argparse);
* 3 -- harness error: vdisim itself could not run the check (distinct from a verdict).
"""

from __future__ import annotations

import enum
import json
import platform
import sys
import time
from collections.abc import Iterable
from typing import Any
from xml.etree import ElementTree as ET

import attrs

from conformance.rules import Level, Rule

EXIT_OK = 0
EXIT_MUST_FAILED = 1
EXIT_USAGE = 2
EXIT_HARNESS_ERROR = 3


class Verdict(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_EXERCISED = "not exercised"  # reachable on the backend but no step judged it
    NOT_CHECKABLE = "not checkable"  # the backend lacks a capability the rule needs
    SKIPPED = "skipped"  # the client under test does not claim the capability


@attrs.frozen(slots=True)
class Violation:
    """One observed breach of one rule."""

    rule_id: str
    message: str
    step: int | None = None  # index of the step in the trace, when there is one
    details: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(slots=True)
class RuleResult:
    rule: Rule
    verdict: Verdict = Verdict.NOT_EXERCISED
    passed: int = 0  # judgements that held
    failed: int = 0  # judgements that did not
    reason: str = ""  # why not checkable / skipped, or the first failure's message
    witness: str | None = None  # replay file of the minimal failing case
    violations: list[Violation] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule.id, "level": self.rule.level.value,
                "area": self.rule.area, "binds": self.rule.binds.value,
                "verdict": self.verdict.value, "passed": self.passed, "failed": self.failed,
                "reason": self.reason, "witness": self.witness,
                "violations": [attrs.asdict(v) for v in self.violations[:20]]}


@attrs.define(slots=True)
class Report:
    """Verdicts of one run over a set of rules.  ``subject`` names what was judged
    (``sim`` backend, a client command line, ...)."""

    subject: str
    kind: str  # "conform", "client", "fuzz"
    seed: int | None
    results: dict[str, RuleResult]
    started: float = attrs.field(factory=time.time)
    duration_s: float = 0.0
    extra: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def for_rules(cls, subject: str, kind: str, seed: int | None,
                  rules: Iterable[Rule]) -> Report:
        return cls(subject, kind, seed, {r.id: RuleResult(r) for r in rules})

    # -- recording ----------------------------------------------------------------------
    def held(self, rule_id: str) -> None:
        res = self.results.get(rule_id)
        if res is not None:
            res.passed += 1
            if res.verdict is Verdict.NOT_EXERCISED:
                res.verdict = Verdict.PASSED

    def broke(self, violation: Violation, witness: str | None = None) -> None:
        res = self.results.get(violation.rule_id)
        if res is None:
            return
        res.failed += 1
        res.verdict = Verdict.FAILED
        res.violations.append(violation)
        if not res.reason:
            res.reason = violation.message
        if witness is not None and res.witness is None:
            res.witness = witness

    def not_checkable(self, rule_id: str, reason: str) -> None:
        res = self.results.get(rule_id)
        if res is not None and res.verdict is Verdict.NOT_EXERCISED:
            res.verdict = Verdict.NOT_CHECKABLE
            res.reason = reason

    def skipped(self, rule_id: str, reason: str) -> None:
        res = self.results.get(rule_id)
        if res is not None and res.verdict is Verdict.NOT_EXERCISED:
            res.verdict = Verdict.SKIPPED
            res.reason = reason

    # -- summaries ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for res in self.results.values():
            out[res.verdict.value] += 1
        return out

    def must_failures(self) -> list[RuleResult]:
        return [r for r in self.results.values()
                if r.verdict is Verdict.FAILED and r.rule.level is Level.MUST]

    def exit_code(self) -> int:
        return EXIT_MUST_FAILED if self.must_failures() else EXIT_OK

    # -- writers --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": "vdisim-report", "version": 1, "kind": self.kind,
                "subject": self.subject, "seed": self.seed, "started": self.started,
                "duration_s": round(self.duration_s, 3), "counts": self.counts(),
                "platform": {"python": sys.version.split()[0], "system": platform.system()},
                "extra": self.extra,
                "rules": [r.to_json() for r in self.results.values()]}

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")

    def write_junit(self, path: str) -> None:
        """One ``<testcase>`` per rule, named by its ID; failed -> ``<failure>``, not
        exercised / not checkable / skipped -> ``<skipped>`` with the reason."""
        counts = self.counts()
        suite = ET.Element("testsuite", name=f"vdisim-{self.kind}:{self.subject}",
                           tests=str(len(self.results)),
                           failures=str(counts[Verdict.FAILED.value]),
                           skipped=str(len(self.results) - counts[Verdict.PASSED.value]
                                       - counts[Verdict.FAILED.value]),
                           time=f"{self.duration_s:.3f}")
        for res in self.results.values():
            case = ET.SubElement(suite, "testcase", classname=f"vdisim.{self.kind}.{res.rule.area}",
                                 name=f"{res.rule.id} [{res.rule.level.value}]")
            if res.verdict is Verdict.FAILED:
                fail = ET.SubElement(case, "failure", message=res.reason[:500])
                lines = [f"{v.rule_id}: {v.message}" for v in res.violations[:20]]
                if res.witness:
                    lines.append(f"replay: vdisim replay {res.witness}")
                fail.text = "\n".join(lines)
            elif res.verdict is not Verdict.PASSED:
                ET.SubElement(case, "skipped", message=f"{res.verdict.value}: {res.reason}")
        ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)

    def console(self, *, verbose: bool = False) -> str:
        """A table: one row per rule that failed (always), and per other rule with
        ``verbose``; then the counts."""
        rows = []
        for res in self.results.values():
            if res.verdict is Verdict.FAILED or verbose:
                rows.append((res.rule.id, res.rule.level.value, res.verdict.value,
                             f"{res.passed}/{res.failed}", res.reason[:70]))
        out = []
        if rows:
            w0 = max(len(r[0]) for r in rows)
            out.append(f"{'rule':<{w0}}  level   verdict        ok/fail  note")
            for r in rows:
                out.append(f"{r[0]:<{w0}}  {r[1]:<6}  {r[2]:<13}  {r[3]:>7}  {r[4]}")
        c = self.counts()
        out.append(", ".join(f"{n} {k}" for k, n in c.items() if n or k in ("passed", "failed")))
        for res in self.results.values():
            if res.witness and res.verdict is Verdict.FAILED:
                out.append(f"{res.rule.id}: replay with `vdisim replay {res.witness}`")
        return "\n".join(out)
