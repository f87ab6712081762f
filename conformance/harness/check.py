"""A check-client run: cases (generated, or bundled scenarios) -> rule-by-rule verdicts in a
:class:`conformance.report.Report`, the wire log of every failing case, the minimal failing
plan and a replay file per broken rule."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from conformance import replay as replay_files
from conformance.harness import checks
from conformance.harness.plans import CaseSpec, explore
from conformance.harness.runner import PROFILES, ClientUnderTest, Harness, Profile
from conformance.report import Report, Verdict
from conformance.rules import Rule, select

__all__ = ["CheckRun", "client_rules"]


def client_rules(pattern: str | None = None) -> list[Rule]:
    return select(pattern=pattern, area="client")


class CheckRun:
    """Judge one client over many cases."""

    def __init__(self, client: ClientUnderTest, *, rules: list[Rule] | None = None,
                 seed: int = 0, profile: Profile | str = "ci", command: str = "",
                 replay_dir: str | None = None, harness: Harness | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.rules = rules if rules is not None else client_rules()
        self.rule_ids = [r.id for r in self.rules]
        self.seed = seed
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.command = command
        self.replay_dir = replay_dir
        self.report = Report.for_rules(client.name, "client", seed, self.rules)
        self.report.extra.update(client=client.to_json(), profile=self.profile.name,
                                 cases=0, skipped_cases=0, minimal={})
        self.failing: dict[str, dict[str, Any]] = {}  # rule -> first failing record
        self.records = 0
        self.skips: list[str] = []
        self._harness = harness
        self.progress = progress
        self._failing_specs: dict[str, list[dict[str, Any]]] = {}  # spec key -> its records
        self._started = time.monotonic()

    # -- feeding ------------------------------------------------------------------------------
    def add(self, rec: dict[str, Any]) -> frozenset[str]:
        """Judge one record; returns the IDs of the rules it broke."""
        if "skipped" in rec:
            self.report.extra["skipped_cases"] += 1
            self.skips.append(str(rec["skipped"]))
            return frozenset()
        self.records += 1
        violations, held = checks.judge(rec, self.rule_ids)
        for rid in held:
            self.report.held(rid)
        broken = set()
        for v in violations:
            self.report.broke(v)
            broken.add(v.rule_id)
            self.failing.setdefault(v.rule_id, rec)
        return frozenset(broken)

    def run_spec(self, h: Harness, spec: CaseSpec, case: str) -> frozenset[str]:
        self.report.extra["cases"] += 1
        broken: frozenset[str] = frozenset()
        records = h.run_case(self.client, spec, case)
        for rec in records:
            broken |= self.add(rec)
        if broken:
            self._failing_specs[spec.key()] = records
        n = self.report.extra["cases"]
        if self.progress is not None and n % 50 == 0:
            failed = sorted(k for k, r in self.report.results.items() if r.failed)
            self.progress(f"... {n} cases in {time.monotonic() - self._started:.0f} s; "
                          f"failed: {', '.join(failed) or 'none'}")
        return broken

    # -- whole runs ------------------------------------------------------------------------------
    def generated(self, n: int | None = None) -> Report:
        """``n`` generated cases (default: the profile's), shrinking each new failure."""
        n = self.profile.cases if n is None else n
        with self._harness_ctx() as h:
            counter = iter(range(1, 10**9))

            def run(spec: CaseSpec) -> frozenset[str]:
                return self.run_spec(h, spec, f"gen-{self.seed}-{next(counter)}")

            def minimal(spec: CaseSpec, rules: frozenset[str]) -> None:
                self._witness(h, spec, rules)

            explore(run, self.client.capabilities, n=n, seed_value=self.seed,
                    profile=self.profile.name, shrink_budget_s=self.profile.shrink_s,
                    on_minimal=minimal)
        return self.finish()

    def scenarios(self, names: Iterable[str]) -> Report:
        with self._harness_ctx() as h:
            for name in names:
                self.report.extra["cases"] += 1
                broken: frozenset[str] = frozenset()
                for rec in h.run_scenario(self.client, name):
                    broken |= self.add(rec)
                for rid in sorted(broken):
                    path = replay_files.write(
                        "client", {"client": self.client.to_json(), "scenario": name,
                                   "rules": [rid], "record": _trim(self.failing[rid])},
                        seed=self.seed, rule=rid, command=self.command,
                        directory=self.replay_dir, stem=f"client-{rid}-{name}")
                    res = self.report.results.get(rid)
                    if res is not None and res.witness is None:
                        res.witness = path
        return self.finish()

    def specs(self, specs: Iterable[CaseSpec]) -> Report:
        """Fixed specs (tests, replay)."""
        with self._harness_ctx() as h:
            for i, spec in enumerate(specs):
                self.run_spec(h, spec, f"spec-{i}")
        return self.finish()

    def _witness(self, h: Harness, spec: CaseSpec, rules: frozenset[str]) -> None:
        rules = frozenset(r for r in rules if r in self.rule_ids)
        records = [r for r in self._failing_specs.get(spec.key(), []) if "skipped" not in r]
        rec = records[-1] if records else None
        placeholders = tuple("{SET}" if i == 0 else f"{{SET}}{i}" for i in range(spec.devices))
        plan = spec.plan(placeholders).to_json()  # the minimal plan, docs/plan.md format
        for rid in sorted(rules):
            path = replay_files.write(
                "client", {"client": self.client.to_json(), "spec": spec.to_json(),
                           "rules": sorted(rules), "record": _trim(rec) if rec else None,
                           "profile": self.profile.name},
                seed=self.seed, rule=rid, command=self.command, directory=self.replay_dir)
            res = self.report.results.get(rid)
            if res is not None:
                res.witness = path
            self.report.extra["minimal"][rid] = {"spec": spec.to_json(), "plan": plan,
                                                 "statement": spec.statement(placeholders)}
            for r in records:  # the wire log shown for the rule: the minimal case's
                if any(v.rule_id == rid for v in checks.judge(r, [rid])[0]):
                    self.failing[rid] = r
                    break

    def _harness_ctx(self) -> contextlib.AbstractContextManager[Harness]:
        if self._harness is not None:
            return contextlib.nullcontext(self._harness)
        return Harness(self.profile)

    def finish(self) -> Report:
        self.report.duration_s = time.monotonic() - self._started
        if self.skips:
            reason = (f"{len(self.skips)} case(s) skipped: "
                      f"{'; '.join(sorted(set(self.skips))[:3])}")
            for rid in self.rule_ids:
                if self.records == 0:  # every case was out of the client's claims
                    self.report.skipped(rid, reason)
                else:
                    res = self.report.results[rid]
                    if res.verdict is Verdict.NOT_EXERCISED and not res.reason:
                        res.reason = reason
        self.report.extra["records"] = self.records
        self.report.extra["failing_records"] = {k: _trim(v) for k, v in self.failing.items()}
        cases = self.report.extra["cases"]
        self.report.extra["cases_per_s"] = round(cases / max(self.report.duration_s, 1e-6), 3)
        return self.report


def _trim(rec: dict[str, Any]) -> dict[str, Any]:
    """A record small enough for reports: the wire log capped at 3000 entries."""
    out = dict(rec)
    col = out.get("collected")
    if isinstance(col, dict) and isinstance(col.get("wire"), dict):
        wire = dict(col["wire"])
        ents = wire.get("entries") or []
        if len(ents) > 3000:
            gap = {"k": "note", "msg": f"... {len(ents) - 3000} entries left out ...", "t": 0}
            wire["entries"] = [*ents[:1500], gap, *ents[-1500:]]
        out["collected"] = {**col, "wire": wire}
    return out
