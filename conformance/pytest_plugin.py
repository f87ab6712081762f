"""The vdisim pytest plugin (entry point ``pytest11``: ``vdisim``), for third parties.

Options:

* ``--vdi-backend NAME`` -- backend for the fixtures and the rule tests (``sim``, ``shim``,
  ``live`` or ``module:factory``; default ``sim``);
* ``--vdi-seed N`` -- seed of every random choice (printed in the header and with failures);
* ``--vdi-profile ci|full``;
* ``--vdi-report PATH`` -- write the JSON report of the rule tests there;
* ``--vdi-conform`` -- add one test per catalogue rule (``vdi-rule[CLOSE-VD_E_OPEN-ABORTS]``),
  judged by one run of the conformance suite on the backend; rules the backend cannot check are
  reported as skipped with the reason;
* ``--vdi-rules GLOB`` -- restrict those rule tests.
* ``--live-required`` -- live-mode tests fail instead of skipping when a piece is missing.

Fixtures: ``vdi_engine`` (a vdisim engine process for the session), ``vdi_connection``,
``vdi_set_name`` (a fresh unique set name), ``vdi_device_set`` (a ``VirtualDeviceSet`` closed
at teardown), ``vdi_backend`` (the opened backend), ``vdi_seed``.

The state machine for your own backend: subclass ``conformance.machine.VDIStateMachine``, set
``backend_factory``, and run ``hypothesis.stateful.run_state_machine_as_test``
(docs/conformance.md).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conformance.backend import Backend
    from conformance.report import Report
    from vdisim.client import VirtualDeviceSet
    from vdisim.engine import Connection, Engine


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("vdisim", "VDI conformance (vdisim)")
    g.addoption("--vdi-backend", default="sim", help="backend: sim, shim, live or module:factory")
    g.addoption("--vdi-seed", type=int, default=None, help="seed of every random choice")
    g.addoption("--vdi-profile", choices=["ci", "full"], default="ci")
    g.addoption("--vdi-report", default=None, metavar="PATH",
                help="write the JSON report of the rule tests")
    g.addoption("--vdi-conform", action="store_true",
                help="add one test per catalogue rule, judged on --vdi-backend")
    g.addoption("--vdi-rules", default=None, metavar="GLOB", help="restrict the rule tests")
    g.addoption("--live-required", action="store_true",
                help="fail, instead of skipping, live-mode tests whose pieces are missing")


def _seed(config: pytest.Config) -> int:
    seed = config.getoption("--vdi-seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(3), "big")
        config.option.vdi_seed = seed
    return int(seed)


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("--vdi-conform") or config.getoption("--vdi-seed") is not None:
        return (f"vdisim: backend {config.getoption('--vdi-backend')}, "
                f"seed {_seed(config)} (rerun with --vdi-seed {_seed(config)})")
    return None


@pytest.fixture(scope="session")
def vdi_seed(pytestconfig: pytest.Config) -> int:
    return _seed(pytestconfig)


@pytest.fixture(scope="session")
def vdi_engine() -> Iterator[Engine]:
    from vdisim.engine import Engine

    eng = Engine.start()
    yield eng
    eng.stop()


@pytest.fixture
def vdi_connection(vdi_engine: Engine) -> Iterator[Connection]:
    conn = vdi_engine.connect()
    yield conn
    conn.close()


@pytest.fixture
def vdi_set_name() -> str:
    return "{" + str(uuid.uuid4()).upper() + "}"


@pytest.fixture
def vdi_device_set() -> Iterator[VirtualDeviceSet]:
    from vdisim.client import VirtualDeviceSet

    vds = VirtualDeviceSet()
    yield vds
    vds.close()  # VD_E_PROTOCOL when the test already closed it: fine


@pytest.fixture(scope="session")
def vdi_backend(pytestconfig: pytest.Config) -> Iterator[Backend]:
    from conformance.backend import open_backend

    backend = open_backend(pytestconfig.getoption("--vdi-backend"))
    backend.open()
    yield backend
    backend.close()


# -- one test per rule -------------------------------------------------------------------------
class _Suite:
    """One run of the suite per session, shared by the rule items."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.report: Report | None = None
        self.error: str | None = None

    def get(self) -> Report:
        if self.report is None and self.error is None:
            from conformance import rules as catalogue
            from conformance.backend import open_backend
            from conformance.suite import run_suite

            selected = [r for r in catalogue.select(pattern=self.config.getoption("--vdi-rules"))
                        if r.area != "client"]
            try:
                with open_backend(self.config.getoption("--vdi-backend")) as backend:
                    self.report = run_suite(backend, rules=selected, seed=_seed(self.config),
                                            profile=self.config.getoption("--vdi-profile"))
            except Exception as exc:
                self.error = f"harness error: {exc!r}"
            path = self.config.getoption("--vdi-report")
            if path and self.report is not None:
                self.report.write_json(path)
        if self.report is None:
            raise RuntimeError(self.error)
        return self.report


class RuleItem(pytest.Item):
    def __init__(self, *, rule_id: str, suite: _Suite, **kw: Any) -> None:
        super().__init__(**kw)
        self.rule_id = rule_id
        self.suite = suite

    def runtest(self) -> None:
        from conformance.report import Verdict

        res = self.suite.get().results[self.rule_id]
        if res.verdict is Verdict.FAILED:
            lines = [f"{self.rule_id} [{res.rule.level.value}] {res.rule.statement}",
                     *(v.message for v in res.violations[:5])]
            if res.witness:
                lines.append(f"replay: vdisim replay {res.witness}")
            raise RuleFailed("\n".join(lines))
        if res.verdict is not Verdict.PASSED:
            pytest.skip(f"{res.verdict.value}: {res.reason}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, RuleFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, int | None, str]:
        return "vdisim-rules", None, f"vdi-rule[{self.rule_id}]"


class RuleFailed(AssertionError):
    pass


class RuleCollector(pytest.Collector):
    def collect(self) -> list[pytest.Item]:
        from conformance import rules as catalogue

        suite = _Suite(self.config)
        return [RuleItem.from_parent(self, name=f"vdi-rule[{r.id}]", rule_id=r.id, suite=suite)
                for r in catalogue.select(pattern=self.config.getoption("--vdi-rules"))
                if r.area != "client"]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    if config.getoption("--vdi-conform"):
        collector = RuleCollector.from_parent(session, name="vdisim-rules")
        items.extend(collector.collect())
