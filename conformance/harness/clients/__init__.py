"""Clients for the client conformance harness (docs/client-harness.md, docs/scenarios.md).

* :mod:`.reference` -- the correct reference client, ``run(context) -> bool``; also a program
  (``python -m conformance.harness.clients.reference CONTEXT.json``, exit 0 = success);
* :mod:`.buggy` -- seeded-bug variants of it, one bug each, and the registry ``BUGS`` mapping a
  bug's name to ``(run function, the rule it should trip)``;
* :mod:`.exec_example` -- a standalone ``--exec`` client written against vdisim's client
  library only.
"""

from __future__ import annotations

__all__ = ["BUGS", "reference_run"]

from conformance.harness.clients.buggy import BUGS
from conformance.harness.clients.reference import run as reference_run
