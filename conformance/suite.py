"""``run_suite``: the conformance suite on one backend -- directed sequences, statement runs,
then random exploration with the state machine -- judged into a :class:`Report`.

1. For every selected rule: if the backend lacks a capability the rule needs
   (``conformance.directed.REQUIRES``) the rule is *not checkable* with that reason; otherwise its
   directed sequence runs on a fresh set and every observation is judged (a sequence judges
   many rules besides its own).
2. Statement runs (capability STATEMENTS): a BACKUP and a RESTORE through T-SQL with the client
   driven step by step, judged with an opaque server -- this judges the rules that bind the
   server's own choices (transfer sizes, configuration, VDC_Complete).
3. Random exploration: :class:`~conformance.machine.VDIStateMachine` for a budget set by the
   profile, seeded from ``seed`` (chunks of examples, each chunk seeded ``seed + k``).
4. Every failure is shrunk (Hypothesis shrinks the machine's; a directed or statement case is
   shrunk by dropping steps while the same rule still breaks), written as a replay file
   (``vdisim replay FILE`` reruns it), and attached to the rule as its witness.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hseed
from hypothesis.errors import Flaky
from hypothesis.stateful import get_state_machine_test as _get_state_machine_test

from conformance import replay as replay_files
from conformance.backend import BACKENDS, Backend, Capability
from conformance.executor import Executor, HarnessError
from conformance.machine import JudgeLike, VDIStateMachine, run_steps, shrink_budget
from conformance.report import Report, Verdict, Violation
from conformance.rules import Rule
from conformance.trace import Step

__all__ = ["PROFILES", "Profile", "backend_spec", "run_suite", "shrink_steps",
           "statement_steps"]


@attrs.frozen
class Profile:
    explore_s: float  # wall-time budget of the random exploration
    examples: int  # examples per exploration chunk
    steps: int  # steps per example (stateful_step_count)
    shrink_runs: int  # reruns allowed when shrinking a directed case
    shrink_s: float = 20.0  # time Hypothesis may spend shrinking a machine failure
    statement_runs: bool = True


PROFILES: dict[str, Profile] = {
    "quick": Profile(explore_s=2.0, examples=5, steps=20, shrink_runs=10, shrink_s=5.0),
    "ci": Profile(explore_s=20.0, examples=10, steps=40, shrink_runs=30),
    "full": Profile(explore_s=600.0, examples=50, steps=80, shrink_runs=200, shrink_s=300.0),
}


# Typed in newer Hypothesis releases, untyped in older ones: call it through Any so that
# ``mypy --strict`` is clean with both.
_state_machine_test: Any = _get_state_machine_test


def _judge() -> JudgeLike:
    from conformance.judge import Judge

    j: JudgeLike = Judge()
    return j


def _opaque_judge() -> JudgeLike:
    from conformance.judge import Judge

    j: JudgeLike = Judge(opaque_server=True)
    return j


def backend_spec(backend: Backend) -> str:
    """How a replay file names ``backend``: its BACKENDS name when its class is the registered
    one, else ``module:Class``."""
    spec = f"{type(backend).__module__}:{type(backend).__qualname__}"
    if BACKENDS.get(backend.name) == spec:
        return backend.name
    return spec


# Steps the shrinker never drops: without a completion agent the server never learns of any
# completion (§3 makes running it the server's duty), and the model does not judge a server
# that neglects it -- dropping it would turn a witness into one that fails on a correct
# implementation too.
_KEEP_WHEN_SHRINKING = frozenset({("server", "start_agent")})


def shrink_steps(backend: Backend, steps: list[Step], rule_id: str,
                 judge_factory: Callable[[], JudgeLike], max_runs: int) -> list[Step]:
    """Drop steps (last first) while ``rule_id`` still breaks; at most ``max_runs`` reruns."""
    cur = list(steps)
    runs = 0
    i = len(cur) - 1
    while i >= 0 and runs < max_runs:
        if (cur[i].actor, cur[i].call) in _KEEP_WHEN_SHRINKING:
            i -= 1
            continue
        trial = cur[:i] + cur[i + 1:]
        runs += 1
        try:
            _trace, violations, _held = run_steps(backend, trial, judge_factory(),
                                                  stop_at_violation=True)
        except HarnessError:
            violations = []
        if any(v.rule_id == rule_id for _i, v in violations):
            cur = trial
        i -= 1
    return cur


STATEMENT_RUNS = ("backup", "backup-complete", "restore")


def statement_steps(direction: str, database: str) -> list[Step]:
    """The fixed prefix of a statement run (the rest is driven by what the client gets):
    ``backup`` (pipe-like), ``backup-complete`` (VDF_RequestComplete) or ``restore``."""
    if direction.startswith("backup"):
        sql = (f"BACKUP DATABASE {database} TO VIRTUAL_DEVICE='{{set}}' "
               "WITH BLOCKSIZE=4096, MAXTRANSFERSIZE=131072, BUFFERCOUNT=4")
        features = 0x2000 if direction == "backup-complete" else 0  # VDF_RequestComplete
    else:
        sql = (f"RESTORE DATABASE {database} FROM VIRTUAL_DEVICE='{{set}}' "
               "WITH BLOCKSIZE=4096, MAXTRANSFERSIZE=131072, REPLACE")
        features = 0
    return [Step("client", "create", {"name": "{set}",
                                      "config": {"device_count": 1, "features": features}}),
            Step("harness", "start_statement", {"sql": sql}),
            Step("client", "get_configuration", {"timeout_ms": 10_000}),
            Step("client", "open_device", {"name": "{set}"})]


class _Run:
    """One suite run: the report, the replay directory, progress."""

    def __init__(self, backend: Backend, rules: list[Rule], seed: int, profile: str,
                 replay_dir: str | None, on_progress: Callable[[str], None] | None) -> None:
        self.backend = backend
        self.rules = rules
        self.ids = {r.id for r in rules}
        self.seed = seed
        self.profile_name = profile
        self.profile = PROFILES[profile]
        self.replay_dir = replay_dir
        self.progress = on_progress or (lambda _m: None)
        self.report = Report.for_rules(backend.name, "conform", seed, rules)
        self.held_counts: collections.Counter[str] = collections.Counter()
        self.stats: dict[str, Any] = {}

    def command(self) -> str:
        return (f"vdisim conform --backend {self.backend.name} --seed {self.seed} "
                f"--profile {self.profile_name}")

    def witness(self, rule_id: str, steps: list[Step], note: str) -> str:
        path = replay_files.write(
            "conform", {"backend": backend_spec(self.backend),
                        "steps": [s.to_json() for s in steps], "found_by": note},
            seed=self.seed, rule=rule_id, command=self.command(), directory=self.replay_dir,
            stem=f"conform-{rule_id}-{self.seed}")
        self.progress(f"{rule_id}: FAILED -- replay with `vdisim replay {path}`")
        return path

    def judged(self, held: list[str], violations: list[tuple[int, Violation]],
               steps: list[Step], found_by: str,
               judge_factory: Callable[[], JudgeLike]) -> None:
        for h in held:
            self.report.held(h)
        seen: set[str] = set()
        for _i, v in violations:
            if v.rule_id in seen:
                continue
            seen.add(v.rule_id)
            res = self.report.results.get(v.rule_id)
            witness = None
            if res is not None and res.witness is None:
                small = shrink_steps(self.backend, steps, v.rule_id, judge_factory,
                                     self.profile.shrink_runs)
                witness = self.witness(v.rule_id, small, found_by)
            self.report.broke(v, witness)

    # -- 1. directed sequences ------------------------------------------------------------
    def directed(self) -> None:
        from conformance import directed

        n = 0
        for rule in self.rules:
            need = directed.REQUIRES.get(rule.id)
            if need is None:
                self.report.not_checkable(rule.id, "no directed sequence reaches this rule")
                continue
            missing = sorted(c.value for c in need if not self.backend.has(c))
            if missing:
                self.report.not_checkable(rule.id, f"backend lacks {', '.join(missing)}")
                continue
            steps = directed.DIRECTED.get(rule.id)
            if steps is None:
                continue  # judged by statement runs
            _trace, violations, held = run_steps(self.backend, steps, _judge())
            self.judged(held, violations, steps, f"directed sequence of {rule.id}", _judge)
            n += 1
        self.stats["directed_sequences"] = n
        self.progress(f"directed: {n} sequences")

    # -- 2. statement runs -------------------------------------------------------------------
    def statements(self) -> None:
        if not (self.backend.has(Capability.STATEMENTS) and self.profile.statement_runs):
            return
        try:
            database = self.backend.server.scratch_database()
        except Exception as exc:  # the server cannot give us a database: a harness problem
            raise HarnessError(f"scratch database: {exc}") from exc
        for direction in STATEMENT_RUNS:
            steps, violations, held = drive_statement(self.backend, direction, database)
            self.judged(held, violations, steps, f"{direction} statement run", _opaque_judge)
        self.stats["statement_runs"] = len(STATEMENT_RUNS)
        self.progress(f"statements: {', '.join(STATEMENT_RUNS)} runs")

    # -- 3. random exploration ---------------------------------------------------------------
    def explore(self) -> None:
        p = self.profile
        run = self

        class Machine(VDIStateMachine):
            _backend = self.backend
            judge_factory = staticmethod(_judge)
            held_counts = run.held_counts

        Machine.__name__ = Machine.__qualname__ = "VDIStateMachine"
        deadline = time.monotonic() + p.explore_s
        chunk = 0
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            s = settings(max_examples=p.examples, stateful_step_count=p.steps, deadline=None,
                         database=None, derandomize=False, print_blob=False,
                         report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
                         phases=(Phase.generate, Phase.shrink))
            test = _state_machine_test(Machine, settings=s)
            hseed(self.seed + chunk)(test)
            chunk += 1
            Machine.last_failure = None
            try:
                with shrink_budget(p.shrink_s):
                    test()
            except (AssertionError, Flaky) as exc:
                failure = Machine.last_failure
                if failure is None:
                    raise HarnessError(f"state machine failed without a verdict: {exc}") from exc
                # already shrunk by Hypothesis, within the machine's own preconditions
                steps = [Step.from_json(d) for d in failure.steps]
                path = self.witness(failure.rule_id, steps,
                                    f"state machine, seed {self.seed + chunk - 1}")
                self.report.broke(Violation(failure.rule_id, failure.message), path)
                break
        for rule_id, n in run.held_counts.items():
            res = self.report.results.get(rule_id)
            if res is not None:
                for _ in range(n):
                    self.report.held(rule_id)
        dt = time.monotonic() - t0
        self.stats.update(explore_chunks=chunk, explore_examples=Machine.examples_run,
                          explore_steps=Machine.steps_run, explore_s=round(dt, 2),
                          steps_per_s=round(Machine.steps_run / dt, 1) if dt else 0.0)
        self.progress(f"exploration: {Machine.examples_run} examples, {Machine.steps_run} "
                      f"steps in {dt:.1f} s")


def drive_statement(backend: Backend, direction: str, database: str) -> tuple[
        list[Step], list[tuple[int, Violation]], list[str]]:
    """A T-SQL BACKUP / RESTORE with the client answering every command step by step until
    VD_E_CLOSE / VD_E_ABORT; judged with an opaque server.  Returns (steps, violations,
    held)."""
    judge = _opaque_judge()
    ex = Executor(backend)
    held: list[str] = []
    violations: list[tuple[int, Violation]] = []

    def do(step: Step) -> Any:
        obs = ex.perform(step)
        if obs.out.get("hang"):
            violations.append((len(ex.trace) - 1, Violation("TIMEOUT-CALL-RETURNS",
                                                            f"{step} never returned")))
            raise HarnessError("hang")
        j = judge.observe(obs)
        held.extend(getattr(j, "held", None) or [])
        for v in getattr(j, "violations", None) or []:
            violations.append((len(ex.trace) - 1, v))
        return obs

    try:
        for step in statement_steps(direction, database):
            do(step)
        dev = 0
        ncmd = 0
        for _ in range(10_000):
            obs = do(Step("client", "get_command", {"device": dev, "timeout_ms": 10_000}))
            if obs.hr != 0:
                break
            code, size = obs.out.get("code"), int(obs.out.get("size") or 0)
            completion, nbytes = 0, 0
            if code in (1, 2):
                nbytes = size
                if code == 1:  # RESTORE reads what BACKUP wrote: a real media stream is not
                    completion, nbytes = 38, 0  # kept here, so end of data (ERROR_HANDLE_EOF)
            do(Step("client", "complete_command", {"device": dev, "command": ncmd,
                                                   "code": completion, "bytes": nbytes,
                                                   "position": 0}))
            ncmd += 1
        do(Step("client", "close", {}))
        do(Step("harness", "wait_statement", {"timeout_ms": 30_000}))
    except HarnessError:
        pass
    finally:
        ex.cleanup()
        if ex.wedged is None:
            obs = ex.perform(Step("harness", "leak_check", {}))
            j = judge.observe(obs)
            held.extend(getattr(j, "held", None) or [])
            for v in getattr(j, "violations", None) or []:
                violations.append((len(ex.trace) - 1, v))
        ex.close()
    return [o.step for o in ex.trace if o.step.call != "leak_check"], violations, held


def run_suite(backend: Backend, *, rules: list[Rule], seed: int, profile: str = "ci",
              replay_dir: str | None = None,
              on_progress: Callable[[str], None] | None = None) -> Report:
    """Run the conformance suite on an opened ``backend`` (see the module docstring)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    t0 = time.monotonic()
    run = _Run(backend, list(rules), seed, profile, replay_dir, on_progress)
    stages = [run.directed, run.statements]
    if backend.has(Capability.SCRIPTED_SERVER):  # the machine drives scripted server steps
        stages.append(run.explore)
    for stage in stages:
        t = time.monotonic()
        stage()
        run.stats[f"{stage.__name__}_s"] = round(time.monotonic() - t, 2)
    report = run.report
    report.duration_s = time.monotonic() - t0
    report.extra.update(profile=profile, backend=dict(backend.describe()),
                        capabilities=sorted(c.value for c in backend.capabilities), **run.stats)
    not_exercised = [r.rule.id for r in report.results.values()
                     if r.verdict is Verdict.NOT_EXERCISED]
    report.extra["not_exercised"] = not_exercised
    return report
