"""``vdisim fuzz``: abort/close race fuzzing (docs/fuzz.md)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from conformance.fuzz import replay as fuzz_replay
from conformance.fuzz.races import RACES, Env
from conformance.fuzz.runner import PLANTED, Outcome, planted, run_one
from conformance.fuzz.shrink import shrink
from conformance.report import EXIT_MUST_FAILED, EXIT_OK

__all__ = ["Session", "register"]


class Session:
    """A fuzzing loop: races in rotation, seeds counting up from ``seed``."""

    def __init__(self, env: Env, races: list[str], seed: int, *, stress: bool = False,
                 plant: str | None = None, do_shrink: bool = True,
                 replay_dir: str | None = None, max_failures: int = 5,
                 out: object = sys.stdout) -> None:
        self.env = env
        self.races = races
        self.seed = seed
        self.stress = stress
        self.plant = plant
        self.do_shrink = do_shrink
        self.replay_dir = replay_dir
        self.max_failures = max_failures
        self.out = out
        self.runs = 0
        self.per_race: Counter[str] = Counter()
        self.failed: list[tuple[Outcome, str]] = []  # (outcome, replay file)
        self.elapsed = 0.0
        self.clean_streak = 0
        self.longest_clean = 0
        self.warnings: Counter[str] = Counter()
        self.flaky = 0  # failures whose seed did not reproduce them

    def _print(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.out, flush=True)  # type: ignore[call-overload]

    def run(self, *, seconds: float | None, runs: int | None, progress: bool = True) -> None:
        t0 = time.monotonic()
        last = 0.0
        n = 0
        while True:
            now = time.monotonic()
            if seconds is not None and now - t0 >= seconds:
                break
            if runs is not None and self.runs >= runs:
                break
            if len(self.failed) >= self.max_failures:
                break
            race = self.races[n % len(self.races)]
            seed = self.seed + n // len(self.races)
            n += 1
            if (RACES[race].name == "engine-death" and len(self.races) > 1
                    and not self.env.spare_ready()):
                continue  # do not wait for an engine to start: come back to it later
            out = run_one(self.env, race, seed, stress=self.stress)
            self.runs += 1
            self.per_race[race] += 1
            self.warnings.update(out.warnings)
            if out.failed:
                self.clean_streak = 0
                self._failure(out)
            else:
                self.clean_streak += 1
                self.longest_clean = max(self.longest_clean, self.clean_streak)
            if progress and time.monotonic() - last > 1.0:
                last = time.monotonic()
                rate = self.runs / max(1e-9, last - t0)
                self._print(f"\r{self.runs} runs, {rate:.1f}/s, {len(self.failed)} failed; "
                            f"{race} seed {seed}   ", end="")
        self.elapsed = time.monotonic() - t0
        if progress:
            self._print("")

    def _failure(self, out: Outcome) -> None:
        self._print(f"\nFAIL {out.race} seed {out.seed}: {out.failures[0].splitlines()[0]}")
        choices: list[str | None] = list(out.chosen)
        final = out
        if not out.stress:
            again = run_one(self.env, out.race, out.seed)
            if again.digest != out.digest or not again.failed:
                self.flaky += 1
                self._print("  NOT REPRODUCIBLE: a rerun of the seed gave a different trace "
                            "(something outside the scheduler's control; docs/fuzz.md)")
        if self.do_shrink and not out.stress:
            choices, final = shrink(self.env, out)
            self._print(f"  shrunk to {sum(c is not None for c in choices)} forced choice(s) "
                        f"of {len(out.chosen)}")
        path = fuzz_replay.write(final, choices, self.plant, self.replay_dir)
        self._print(f"  replay: vdisim replay {path}")
        self.failed.append((final, path))

    def summary(self) -> str:
        rate = self.runs / max(1e-9, self.elapsed)
        lines = [f"{self.runs} runs in {self.elapsed:.1f}s ({rate:.1f} runs/s), "
                 f"{len(self.failed)} failed ({self.flaky} not reproducible), "
                 f"longest run of passes {self.longest_clean}"]
        lines.append("  " + ", ".join(f"{r} {n}" for r, n in sorted(self.per_race.items())))
        lines += [f"  warning ({n}x): {w}" for w, n in self.warnings.items()]
        return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    if args.list:
        for r in RACES.values():
            print(f"{r.name:<28} {r.kind:<7} {r.section:<16} {r.doc}")
        for name, (race, doc) in PLANTED.items():
            print(f"plant {name:<30} (found by {race}): {doc}")
        return EXIT_OK
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    races = args.race or list(RACES)
    for r in races:
        if r not in RACES:
            print(f"vdisim fuzz: unknown race {r!r}; known: {', '.join(RACES)}")
            return 2
    seconds = args.seconds if args.seconds is not None or args.runs else 30.0
    print(f"vdisim fuzz: seed {seed}, {'stress (free-running)' if args.stress else 'scheduled'}"
          f", races: {', '.join(races)}" + (f", planted bug {args.plant}" if args.plant else ""))
    env = Env(stress=args.stress)
    session = Session(env, races, seed, stress=args.stress, plant=args.plant,
                      do_shrink=not args.no_shrink, replay_dir=args.replay_dir)
    try:
        with planted(args.plant, env):
            session.run(seconds=seconds, runs=args.runs, progress=not args.quiet)
    finally:
        env.stop()
    print(session.summary())
    return EXIT_MUST_FAILED if session.failed else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fuzz", help="fuzz abort/close races across threads and processes "
                                    "(docs/fuzz.md)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (default 30 unless --runs)")
    p.add_argument("--runs", type=int, default=None, help="stop after this many runs")
    p.add_argument("--seed", type=int, default=None, help="first seed (default: from the clock,"
                                                          " printed)")
    p.add_argument("--race", action="append", help="only this race (repeatable); --list")
    p.add_argument("--stress", action="store_true",
                   help="free-running: no scheduler, real threads and real time")
    p.add_argument("--plant", choices=sorted(PLANTED), default=None,
                   help="switch a planted race bug on (to see the fuzzer find it)")
    p.add_argument("--no-shrink", action="store_true", help="write failures unshrunk")
    p.add_argument("--replay-dir", default=None,
                   help="where replay files go (default $VDISIM_REPLAY_DIR or ./vdisim-replays)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--list", action="store_true", help="list the races and planted bugs")
    p.set_defaults(func=_cmd)
