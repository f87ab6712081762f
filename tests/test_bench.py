"""Smoke test of the benchmark suite: ``vdisim bench --quick --json`` runs end to end and writes
the documented JSON (no timing assertions: numbers depend on the machine).  The conformance
section is skipped to keep this under a minute; ``vdisim bench --quick --only conformance``
runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import suite


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("bench")
    path, md = out / "bench.json", out / "bench.md"
    r = subprocess.run([sys.executable, "-m", "vdisim", "bench", "--quick", "--json", str(path),
                        "--markdown", str(md), "--skip", "conformance"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads(path.read_text())
    data["_markdown"] = md.read_text()
    return data


def _results(report: dict[str, object]) -> list[dict[str, object]]:
    results = report["results"]
    assert isinstance(results, list)
    return results


def test_json_structure(report: dict[str, object]) -> None:
    assert report["suite"] == "vdisim bench" and report["quick"] is True
    for key in ("config", "started", "wall_s", "machine", "results"):
        assert key in report
    fields = {f.name for f in suite.Result.__attrs_attrs__}
    groups = set()
    for r in _results(report):
        assert set(r) == fields
        groups.add(r["group"])
    # conformance is skipped here (its ci profile alone runs ~30 s; docs: --skip)
    assert {"stream", "roundtrip", "scaling", "memory", "hooks"} <= groups


def test_every_baseline_is_a_row_of_the_same_run(report: dict[str, object]) -> None:
    names = {r["name"] for r in _results(report)}
    for r in _results(report):
        assert r["baseline"] is None or r["baseline"] in names, r["baseline"]


def test_stream_ratios_against_same_run_baselines(report: dict[str, object]) -> None:
    rows = [r for r in _results(report) if r["group"] == "stream"
            and isinstance(r["params"], dict) and "operation" in r["params"]]
    # backup and restore x 3 sizes x 2 device counts x 2 buffer counts
    assert len(rows) == 24
    names = {r["name"] for r in _results(report)}
    for r in rows:
        assert isinstance(r["value"], float) and r["value"] > 0
        assert r["baseline"] in names  # the baseline is a row of the same run
        assert isinstance(r["ratio"], float) and r["ratio"] > 0
        params = r["params"]
        assert isinstance(params, dict)
        assert params["vs_pipe"] > 0 and params["vs_unix"] > 0
    targets = [r for r in rows if r["target"]]
    assert len(targets) == 2 and all(isinstance(r["met"], bool) for r in targets)


def test_roundtrip_has_ratio_and_hops(report: dict[str, object]) -> None:
    rows = {r["name"]: r for r in _results(report) if r["group"] == "roundtrip"}
    rt = rows["command round trip median"]
    assert isinstance(rt["ratio"], float) and rt["ratio"] > 0
    assert rt["baseline"] == "baseline AF_UNIX ping-pong median"
    assert sum(1 for n in rows if n.startswith("hop: ")) == 4


def test_wide_set_completes(report: dict[str, object]) -> None:
    rows = {r["name"]: r for r in _results(report) if r["group"] == "memory"}
    wide = rows["64 devices x 4 MiB backup"]
    assert wide["met"] is True, wide["note"]


def test_markdown_table(report: dict[str, object]) -> None:
    md = report["_markdown"]
    assert isinstance(md, str)
    assert "| measurement | value | baseline | baseline value | ratio | target | met |" in md
    assert "command round trip median" in md
