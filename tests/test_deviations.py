"""Proof that the conformance suite can fail: each planted deviation (vdisim/deviations.py),
switched on alone in a fresh `vdisim conform` run, is reported under the rule it breaks, with a
witness written as a replay file that `vdisim replay` reruns.  The unmodified simulator passing
every rule is tests/test_conform_sim.py's job.

Each run uses the `quick` profile (directed sequences, statement runs, 2 s of exploration) and
only the rule the deviation breaks; the 14 runs go in parallel (they mostly wait), so they fit
the CI budget.  Runs over the whole catalogue with every deviation are quoted in the closing
note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from vdisim import deviations

# deviation -> the rule that must fail
CASES: dict[str, str] = {
    "close-noerror-with-open-devices": "CT-ACTIVE-CLOSE-DEVICES_OPEN",
    "close-open-without-abort": "CLOSE-VD_E_OPEN-SIGNALS-ABORT",  # SHOULD: vdisim's reason code
    "create-twice": "CT-CONFIGURABLE-CREATE",
    "getcommand-after-abort": "CT-ABORT-GET_COMMAND",
    "complete-twice": "CT-ACTIVE-COMPLETE_COMMAND-NOT_OUTSTANDING",
    "clearerror-before-completions": "IOERR-CLEARERROR-HELD",
    "complete-unrequested": "COMPLETE-ONLY-IF-ENABLED",  # judged by the statement runs
    "signal-abort-dne-noerror": "CT-DNE-SIGNAL_ABORT",
    "getconfiguration-dne-timeout": "CT-DNE-GET_CONFIGURATION",
    "opendevice-invalid-name-protocol": "CT-INITIALIZING-OPEN_DEVICE-BAD_NAME",
    "abort-completion-not-995": "SIGNAL_ABORT-COMPLETES-995",
    "server-close-device-no-close": "CT-ACTIVE-GET_COMMAND-DEVICE_CLOSED",
    "map-handle-any": "CT-ACTIVE-MAP_BUFFER_HANDLE-INVALID_ARG",
    "getcommand-protocol-as-abort": "CT-DNE-GET_COMMAND",  # a device used after Close
}

Outcome = dict[str, Any]


def _run(name: str, base: Path) -> Outcome:
    rule = CASES[name]
    out = base / f"{name}.json"
    replays = base / f"replays-{name}"
    env = {**os.environ, "VDISIM_DEVIATION": name}
    clean_env = {k: v for k, v in os.environ.items() if k != "VDISIM_DEVIATION"}
    res: Outcome = {"name": name}
    r = subprocess.run([sys.executable, "-m", "vdisim", "conform", "--backend", "sim",
                        "--rules", rule, "--profile", "quick", "--seed", "1", "--quiet",
                        "--json", str(out), "--replay-dir", str(replays)],
                       env=env, capture_output=True, text=True, timeout=600)
    res["conform"] = (r.returncode, r.stdout + r.stderr)
    if not out.exists():
        return res
    res["report"] = json.loads(out.read_text())
    failed = {x["rule"]: x for x in res["report"]["rules"] if x["verdict"] == "failed"}
    witness = failed.get(rule, {}).get("witness")
    res["witness"] = witness
    if witness:
        on = subprocess.run([sys.executable, "-m", "vdisim", "replay", witness], env=env,
                            capture_output=True, text=True, timeout=300)
        off = subprocess.run([sys.executable, "-m", "vdisim", "replay", witness,
                              "--attempts", "3"], env=clean_env, capture_output=True,
                             text=True, timeout=300)
        res["replay_on"] = (on.returncode, on.stdout + on.stderr)
        res["replay_off"] = (off.returncode, off.stdout + off.stderr)
    return res


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("deviations")
    with ThreadPoolExecutor(max_workers=7) as pool:
        return {o["name"]: o for o in pool.map(lambda n: _run(n, base), sorted(CASES))}


def test_every_deviation_has_a_case() -> None:
    assert set(CASES) == set(deviations.KNOWN)


def test_unknown_deviation_is_refused() -> None:
    r = subprocess.run([sys.executable, "-c", "import vdisim.deviations"],
                       env={**os.environ, "VDISIM_DEVIATION": "no-such-thing"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "unknown deviation" in r.stderr


def test_replay_refuses_zero_attempts(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "vdisim", "replay", str(tmp_path / "x.json"),
                        "--attempts", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--attempts must be 1 or more" in r.stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_deviation_is_caught(name: str, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[name]
    rule = CASES[name]
    code, text = o["conform"]
    assert "report" in o, f"no report (exit {code}):\n{text}"
    res = next(x for x in o["report"]["rules"] if x["rule"] == rule)
    assert res["verdict"] == "failed", f"{rule} not flagged under {name}:\n{text}"
    # a MUST failure fails the command; a SHOULD failure is reported, exit 0
    assert code == (1 if res["level"] == "MUST" else 0), text
    assert o["witness"] and Path(o["witness"]).is_file()
    doc = json.loads(Path(o["witness"]).read_text())
    assert doc["kind"] == "conform" and doc["rule"] == rule and doc["payload"]["steps"]
    # the shrunk witness reproduces with the deviation on (within the replay's attempts: a
    # witness may race with a frame in flight), and passes every attempt without it
    assert o["replay_on"][0] == 1, o["replay_on"][1]
    assert o["replay_off"][0] == 0, o["replay_off"][1]
