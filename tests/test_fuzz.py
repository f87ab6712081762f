"""Race fuzzing (issue 5, docs/fuzz.md): the scheduler is deterministic, the planted race bugs
are found within a bounded number of seeds and replay identically, the unmodified simulator
passes a bounded fuzz of every race (scheduled and free-running), and the CLI works.

Budget: about two minutes on the CI machine.  ``VDISIM_FUZZ_SECONDS`` lengthens the bounded
fuzz (the full profile: ``VDISIM_FUZZ_SECONDS=3000``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import replay as replay_files
from conformance.fuzz import replay as fuzz_replay
from conformance.fuzz.cli import Session
from conformance.fuzz.races import RACES, Env
from conformance.fuzz.runner import PLANTED, planted, run_one
from conformance.fuzz.shrink import failure_kind, shrink
from vdisim import hooks

PLANT_SEEDS = 60  # each planted bug must be found within this many seeds of its race
FUZZ_SECONDS = float(os.environ.get("VDISIM_FUZZ_SECONDS", "28"))
PROCESS_RACES = ("engine-death", "primary-death", "secondary-death")  # a process each run


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.stop()


def test_hooks_cost_nothing_when_off() -> None:
    """With no scheduler installed the hook flag is off and the clock is the real one, so a
    call site costs one global lookup."""
    assert hooks.ACTIVE is False
    assert hooks.monotonic is time.monotonic


def test_trace_hash_identical_over_20_replays(env: Env) -> None:
    """The same seed reproduces the same sequence of events (threads, hook points, return
    codes) 20 times over; a different seed gives a different trace."""
    race, seed = "abort-vs-getcommand", 1  # two devices, the abort after 16 turns
    first = run_one(env, race, seed)
    assert not first.failed, first.failures
    assert first.steps > 30
    digests = {run_one(env, race, seed).digest for _ in range(19)}
    assert digests == {first.digest}
    assert run_one(env, race, seed + 1).digest != first.digest


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_race_bug_is_found_and_replays(env: Env, bug: str, tmp_path: Path) -> None:
    """Each planted race bug is found within PLANT_SEEDS seeds of the race meant to find it;
    the failing seed replays with the identical event trace and failure."""
    race = PLANTED[bug][0]
    doc = None
    with planted(bug, env):
        found = None
        for seed in range(PLANT_SEEDS):
            out = run_one(env, race, seed)
            if out.failed:
                found = out
                break
        assert found is not None, f"{bug} not found in {PLANT_SEEDS} seeds of {race}"
        again = run_one(env, race, found.seed)
        assert again.digest == found.digest
        assert ([f.splitlines()[0] for f in again.failures]
                == [f.splitlines()[0] for f in found.failures])  # (stacks may differ)
        if bug == "race-complete-after-abort":
            assert "completed 2 times" in found.failures[0]
        elif bug == "race-closedevice-drops-queued":
            assert "never completed" in found.failures[0]
        else:
            assert found.failures[0].startswith("Deadlock")
        if bug == "race-closedevice-drops-queued":  # shrink + replay file, once
            choices, small = shrink(env, found, max_runs=12, max_seconds=20.0)
            assert failure_kind(small.failures) == failure_kind(found.failures)
            assert len(choices) <= len(found.chosen)
            path = fuzz_replay.write(small, choices, bug, str(tmp_path))
            doc = replay_files.load(path)
            assert doc["kind"] == "fuzz" and doc["payload"]["plant"] == bug
            assert fuzz_replay.replay(doc) == 1
    if doc is not None:  # without the planted bug the same case passes (exit code 0)
        doc["payload"]["plant"] = None
        assert fuzz_replay.replay(doc) == 0


def test_bounded_fuzz_of_every_race(env: Env, tmp_path: Path) -> None:
    """The unmodified simulator survives a bounded scheduled fuzz of every race."""
    races = [r for r in RACES if r not in PROCESS_RACES]
    session = Session(env, races, seed=int(os.environ.get("VDISIM_FUZZ_SEED", "500")),
                      do_shrink=False, replay_dir=str(tmp_path), out=open(os.devnull, "w"))
    session.run(seconds=FUZZ_SECONDS, runs=None, progress=False)
    assert session.runs >= len(races), session.summary()
    assert not session.failed, [f"{o.race} {o.seed}: {o.failures[0][:300]}"
                                for o, _ in session.failed]
    # A process killed mid-protocol (a fresh engine / a client process each run: slower).
    for race, seed in (("engine-death", 3), ("engine-death", 4), ("primary-death", 5),
                       ("primary-death", 6), ("secondary-death", 13), ("secondary-death", 17)):
        out = run_one(env, race, seed)
        assert not out.failed, (race, seed, out.failures)


def test_secondary_death_does_not_abort_the_set(env: Env) -> None:
    """§1.9 / §8.1 / §8.4, race ``secondary-death`` seed 3: the secondary is SIGKILLed while it
    holds a command; the engine's set is still ACTIVE afterwards and the primary's worker keeps
    getting and completing commands; the primary's SignalAbort then completes the held command
    with 995 and the primary's blocked GetCommand returns VD_E_ABORT.  The seed replays."""
    out = run_one(env, "secondary-death", 3, keep_trace=True)
    assert not out.failed, out.failures
    ops = out.ops
    kill = next(o for o in ops if o[1] == "kill_secondary")
    abort = next(o for o in ops if (o[0], o[1]) == ("aborter", "signal_abort"))
    assert kill[4] < abort[3] and abort[5] == 0
    sec = [o for o in ops if o[0] == "secondary"]
    assert [o[1] for o in sec[:2]] == ["open_in_secondary", "open_device"]
    held = sec[-1]
    assert (held[1], held[5]) == ("get_command", 0)  # it died holding this command
    state = next(o for o in ops if o[1] == "state")
    assert kill[4] < state[3] < abort[3] and state[6]["state"] == "ACTIVE"
    assert any(o[0] == "w0" and o[1] == "complete_command" and o[5] == 0 for o in ops)
    assert any(o[1] == "wait_completion" and o[6] == {"done": True, "code": 995} for o in ops)
    last_get = [o for o in ops if o[0] == "w0" and o[1] == "get_command"][-1]
    assert last_get[5] == 0x80770004 and last_get[4] > abort[3]  # VD_E_ABORT
    assert run_one(env, "secondary-death", 3).digest == out.digest


def test_stress_mode_runs_free(tmp_path: Path) -> None:
    """Free-running stress (no scheduler, real time) runs each race and checks it."""
    env = Env(stress=True)
    try:
        for race in RACES:
            if race in ("engine-death", "primary-death"):  # (secondary-death runs)
                continue
            out = run_one(env, race, 7, stress=True)
            assert not out.failed, (race, out.failures)
            assert out.digest == ""
    finally:
        env.stop()


def test_cli(tmp_path: Path) -> None:
    """``vdisim fuzz --list`` names every race and planted bug; a short run exits 0 and
    reports its rate."""
    listing = subprocess.run([sys.executable, "-m", "vdisim", "fuzz", "--list"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    for name in [*RACES, *PLANTED]:
        assert name in listing
    run = subprocess.run([sys.executable, "-m", "vdisim", "fuzz", "--runs", "4", "--seed", "9",
                          "--race", "abort-vs-getcommand", "--quiet",
                          "--replay-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 runs in" in run.stdout and "runs/s" in run.stdout
    assert not list(tmp_path.iterdir())


def test_replay_payload_is_json(env: Env, tmp_path: Path) -> None:
    """A replay file is plain JSON with the race, seed, parameters and schedule."""
    out = run_one(env, "server-abort-vs-completions", 2, keep_trace=True)
    path = fuzz_replay.write(out, list(out.chosen), None, str(tmp_path))
    doc = json.loads(Path(path).read_text())
    p = doc["payload"]
    assert (p["race"], p["seed"], p["digest"]) == ("server-abort-vs-completions", 2, out.digest)
    assert p["choices"] == out.chosen
    assert fuzz_replay.replay(replay_files.load(path)) == 0
