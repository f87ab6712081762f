"""Replay files of kind ``fuzz`` (``vdisim replay FILE``; docs/fuzz.md).

Payload::

    {"race": "abort-vs-getcommand", "seed": 17, "params": {...}, "choices": ["w0", null, ...],
     "stress": false, "plant": null | "race-...", "failures": [...], "digest": "<sha256>",
     "trace": [[step, thread, point, status, info?], ...], "ops": [...]}

Replaying runs the race with the recorded parameters and schedule (the planted bug switched on
again when there was one) and reports whether it still fails and whether the event trace's hash
matches the recorded one.
"""

from __future__ import annotations

from typing import Any

from conformance import replay as replay_files
from conformance.fuzz.races import Env, Params
from conformance.fuzz.runner import Outcome, planted, run_one

__all__ = ["payload", "replay", "write"]


def payload(out: Outcome, choices: list[str | None], plant: str | None) -> dict[str, Any]:
    return {"race": out.race, "seed": out.seed, "params": out.params.to_json(),
            "choices": choices, "stress": out.stress, "plant": plant,
            "failures": out.failures, "digest": out.digest, "trace": out.events,
            "ops": out.ops}


def write(out: Outcome, choices: list[str | None], plant: str | None,
          directory: str | None = None) -> str:
    cmd = f"vdisim fuzz --race {out.race} --seed {out.seed}" + (
        f" --plant {plant}" if plant else "") + (" --stress" if out.stress else "")
    return replay_files.write("fuzz", payload(out, choices, plant), seed=out.seed,
                              rule=out.race, command=cmd, directory=directory,
                              stem=f"fuzz-{out.race}-{out.seed}" + (f"-{plant}" if plant else ""))


def describe(out: Outcome) -> str:
    lines = [f"race {out.race} seed {out.seed} ({'stress' if out.stress else 'scheduled'}): "
             f"{len(out.failures)} failure(s), {out.steps} steps, digest {out.digest[:16]}"]
    lines += [f"  FAIL {f}" for f in out.failures]
    return "\n".join(lines)


def replay(doc: dict[str, Any]) -> int:
    """Rerun a fuzz replay file: 1 if it still fails, 0 if it passes, 3 on a harness error."""
    p = doc["payload"]
    try:
        params = Params.from_json(p["params"])
        race, seed = str(p["race"]), int(p["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        print(f"vdisim replay: bad fuzz payload: {exc}")
        return 3
    env = Env(stress=bool(p.get("stress")))
    try:
        with planted(p.get("plant"), env):
            out = run_one(env, race, seed, params=params, choices=p.get("choices"),
                          stress=bool(p.get("stress")), keep_trace=True)
    finally:
        env.stop()
    print(describe(out))
    if p.get("digest") and not out.stress:
        same = out.digest == p["digest"]
        print(f"event trace hash {'identical to' if same else 'DIFFERENT from'} the recorded one")
    return 1 if out.failed else 0
