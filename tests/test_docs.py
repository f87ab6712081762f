"""The documentation's examples run as written.

Every fenced ```python block of ``docs/*.md`` and ``README.md`` is one test: it runs in a fresh
interpreter (``python -c``) in an empty temporary directory and must exit with status 0 within
60 s.  A block whose first line is ``# not run`` is skipped (fragments, pseudo-code).  The blocks
assert their own results (exact HRESULTs, SQL error numbers, bytes), so a wrong page fails here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60.0
SKIP_MARK = "# not run"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
#: Pages this test owns the examples of: each must carry at least one runnable block.
PAGES_WITH_EXAMPLES = ("wire.md", "plan.md", "snapshot.md", "client.md", "engine.md",
                       "client-harness.md", "tds.md", "fuzz.md", "conformance.md")


def doc_files() -> list[Path]:
    files = sorted((ROOT / "docs").glob("*.md"))
    readme = ROOT / "README.md"
    if readme.exists():
        files.append(readme)
    return files


def extract(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of every runnable python block."""
    out = []
    for m in FENCE.finditer(text):
        code = textwrap.dedent(m.group("body"))
        lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
        if lines and lines[0] == SKIP_MARK:
            continue
        out.append((text.count("\n", 0, m.start()) + 1, code))
    return out


def collect() -> list[Any]:
    params: list[Any] = []
    for path in doc_files():
        for line, code in extract(path.read_text(encoding="utf-8")):
            params.append(pytest.param(code, id=f"{path.relative_to(ROOT)}:{line}"))
    return params


def test_extractor_reads_fences_and_skip_marks() -> None:
    text = ("intro\n```python\nprint(1)\n```\n```python\n# not run\nboom(\n```\n"
            "```sh\nls\n```\n  ```python\n  x = 2\n  ```\n")
    assert extract(text) == [(2, "print(1)\n"), (12, "x = 2\n")]


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES)
def test_page_has_runnable_examples(page: str) -> None:
    path = ROOT / "docs" / page
    assert path.exists(), f"docs/{page} is missing"
    assert extract(path.read_text(encoding="utf-8")), f"docs/{page} has no runnable example"


@pytest.mark.parametrize("code", collect())
def test_example_runs(code: str, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the example and any engine it started
        out, err = proc.communicate()
        pytest.fail(f"example did not finish within {TIMEOUT_S} s\nstdout:\n{out.decode()}\n"
                    f"stderr:\n{err.decode()}")
    assert proc.returncode == 0, (f"exit status {proc.returncode}\nstdout:\n{out.decode()}\n"
                                  f"stderr:\n{err.decode()}")
