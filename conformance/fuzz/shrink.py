"""Shrinking a failing run to a minimal interleaving (docs/fuzz.md).

A schedule is the list of choices the scheduler made (a thread name or ``"tick"`` per
decision); ``None`` means the default policy (keep running the thread that ran last, else the
first eligible one).  A schedule of only ``None`` is the run with the fewest context switches.
Shrinking tries, in order: all defaults; the shortest prefix of the recorded choices (the rest
default); then setting each remaining choice to the default, last first.  A candidate is kept
when the run still fails with the same kind of failure.  The number of runs is bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from conformance.fuzz.races import Env
from conformance.fuzz.runner import Outcome, run_one

__all__ = ["failure_kind", "shrink"]


def failure_kind(failures: Sequence[str]) -> str:
    """What a failure is, without the numbers that vary between schedules."""
    if not failures:
        return ""
    first = failures[0].splitlines()[0]
    return re.sub(r"\d+", "#", first)[:80]


def shrink(env: Env, failing: Outcome, *, max_runs: int = 60,
           max_seconds: float = 60.0) -> tuple[list[str | None], Outcome]:
    """The smallest schedule found that still fails like ``failing``, and its outcome."""
    kind = failure_kind(failing.failures)
    race, seed, params = failing.race, failing.seed, failing.params
    best: list[str | None] = list(failing.chosen)
    best_out = failing
    runs = 0
    t0 = time.monotonic()

    def fails(cand: list[str | None]) -> Outcome | None:
        nonlocal runs
        runs += 1
        out = run_one(env, race, seed, params=params, choices=cand)
        return out if out.failed and failure_kind(out.failures) == kind else None

    def budget() -> bool:
        return runs < max_runs and time.monotonic() - t0 < max_seconds

    out = fails([])
    if out is not None:
        return [], out
    # Shortest failing prefix (binary search; failure is not monotone, so keep the best seen).
    lo, hi = 0, len(best)
    while lo < hi and budget():
        mid = (lo + hi) // 2
        out = fails(best[:mid])
        if out is not None:
            best, best_out, hi = best[:mid], out, mid
        else:
            lo = mid + 1
    # Default each remaining choice, from the end.
    i = len(best) - 1
    while i >= 0 and budget():
        if best[i] is not None:
            cand = [*best[:i], None, *best[i + 1:]]
            out = fails(cand)
            if out is not None:
                best, best_out = cand, out
        i -= 1
    while best and best[-1] is None:
        best.pop()
    return best, best_out


def preemptions(choices: Sequence[str | None]) -> int:
    """How many choices differ from the default policy (an upper bound: a recorded name can
    coincide with what the default would have picked)."""
    return sum(c is not None for c in choices)

