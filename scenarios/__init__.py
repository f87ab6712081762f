"""Declarative server-behaviour plans shipped with vdisim (JSON, docs/plan.md)."""

from __future__ import annotations

import os


def path(name: str) -> str:
    """The file of a bundled scenario, e.g. ``path("backup-abort-midstream.json")``."""
    return os.path.join(os.path.dirname(__file__), name)


def names() -> list[str]:
    return sorted(f for f in os.listdir(os.path.dirname(__file__)) if f.endswith(".json"))


def load(name: str, set_name: str) -> object:
    """The bundled plan ``name`` with its ``{SET}`` device-name placeholder replaced by
    ``set_name`` (returns a :class:`vdisim.engine.plan.Plan`)."""
    from vdisim.engine.plan import Plan

    with open(path(name), encoding="utf-8") as f:
        return Plan.loads(f.read().replace("{SET}", set_name))
