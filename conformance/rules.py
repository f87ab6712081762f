"""The rule catalogue: every documented VDI rule as data.

A :class:`Rule` names one requirement of the VDI documentation (or of the headers, a sample, a
field report or our inference, with the level that source allows), who it binds, and how it is
judged.  Rules are declared in catalogue modules (``CATALOGUE_MODULES``) and collected by
:func:`all_rules`; nothing else in vdisim may invent a rule ID.

ID conventions (stable; they appear in JUnit names, reports and replay files):

* ``AREA-WHAT[-QUALIFIER]`` in upper case, words joined by ``-``, HRESULT names kept as spelled in
  the header (``CLOSE-VD_E_OPEN-ABORTS``).
* Cells of the amended client table: ``CT-<STATE>-<CALL>[-<COND>]``
  (``CT-ACTIVE-CLOSE-DEVICES_OPEN``).
* Server transitions: ``ST-<STATE>-<CALL>[-<COND>]``.
* Rules binding a VDI *client* (issue 4): ``CLIENT-...``.

Levels: only rules sourced from documentation ``[D]`` or headers ``[H]`` (spec tags) may be
``MUST``; ``[S]`` samples, ``[O]`` field reports and ``[I]`` inferences are at most ``SHOULD``.
"""

from __future__ import annotations

import enum
import fnmatch
import importlib
import re
from collections.abc import Iterable

import attrs

__all__ = [
    "AREAS",
    "CATALOGUE_MODULES",
    "Level",
    "Party",
    "Rule",
    "all_rules",
    "get",
    "select",
]


class Level(enum.Enum):
    MUST = "MUST"
    SHOULD = "SHOULD"
    MAY = "MAY"


class Party(enum.Enum):
    """Who a rule binds."""

    LIBRARY = "library"  # the client-side VDI library (sqlvdi.dll / libsqlvdi.so / vdisim.client)
    SERVER = "server"  # the engine side (SQL Server / vdisim engine)
    CLIENT = "client"  # the backup tool that uses the library


SOURCES = ("D", "H", "S", "O", "I")
MUST_SOURCES = ("D", "H")

# Areas group rules for ``vdisim list-rules --area``; a rule's area must be one of these.
AREAS: dict[str, str] = {
    "create": "Create / CreateEx (§2.1)",
    "configuration": "GetConfiguration and the configuration a server chooses (§2.2, §4)",
    "open-device": "OpenDevice (§2.3)",
    "get-command": "GetCommand (§2.4)",
    "complete-command": "CompleteCommand (§2.5)",
    "signal-abort": "SignalAbort (§2.6)",
    "close": "Close (§2.7)",
    "secondary": "OpenInSecondary / secondary clients (§1.9, §2.8)",
    "buffer-handle": "GetBufferHandle / MapBufferHandle (§2.9)",
    "client-table": "cells of the amended client state table (§2.11, docs/states.md)",
    "server": "server-side transitions (§3)",
    "abort": "the abort model (§8)",
    "io-error": "IO-ERROR state and ClearError (§6.6)",
    "complete": "VDC_Complete (§5, §6.4)",
    "timeout": "serverTimeOut and waits (§4, §8.4)",
    "transfer": "transfer sizes, alignment, buffers (§1.10)",
    "completion-codes": "completion codes per command (§6.4, §6.5)",
    "client": "obligations of a VDI client (backup tool) judged by the client harness",
}

# Catalogue modules, each exporting ``RULES: tuple[Rule, ...]``.  Missing modules are an error.
CATALOGUE_MODULES: tuple[str, ...] = (
    "conformance.catalogue.library",
    "conformance.catalogue.client",
)

_ID = re.compile(r"^[A-Z][A-Z0-9_]*(-[A-Z0-9_]+)+$")


def _check_id(_inst: object, _attr: object, value: str) -> None:
    if not _ID.match(value):
        raise ValueError(f"rule id {value!r} does not follow the AREA-WHAT convention")


@attrs.frozen(slots=True)
class Rule:
    """One rule.

    ``check`` names the checker that judges the rule (a key the judging code understands, e.g.
    ``"model"`` for a return code the independent model predicts, or a function name in the
    checks module); ``negative`` names the negative example that must make that checker flag
    exactly this rule.  ``page`` is the Microsoft page (path under
    ``docs/relational-databases/backup-restore/vdi-reference/`` or a full URL) or header.
    """

    id: str = attrs.field(validator=_check_id)
    area: str
    level: Level
    binds: Party
    section: str  # spec section, e.g. "§2.7"
    source: str  # spec tag: D, H, S, O or I
    page: str
    statement: str
    check: str
    negative: str = ""

    def __attrs_post_init__(self) -> None:
        if self.area not in AREAS:
            raise ValueError(f"{self.id}: unknown area {self.area!r}")
        if self.source not in SOURCES:
            raise ValueError(f"{self.id}: unknown source tag {self.source!r}")
        if self.level is Level.MUST and self.source not in MUST_SOURCES:
            raise ValueError(f"{self.id}: a [{self.source}] rule can be at most SHOULD")
        if not self.section.startswith("§"):
            raise ValueError(f"{self.id}: section must be a spec section like '§2.7'")

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "area": self.area, "level": self.level.value,
                "binds": self.binds.value, "section": self.section, "source": self.source,
                "page": self.page, "statement": self.statement, "check": self.check,
                "negative": self.negative}


_cache: tuple[Rule, ...] | None = None


def all_rules() -> tuple[Rule, ...]:
    """Every rule of every catalogue module, in declaration order; IDs are unique."""
    global _cache
    if _cache is None:
        rules: list[Rule] = []
        for name in CATALOGUE_MODULES:
            try:
                mod = importlib.import_module(name)
            except ModuleNotFoundError as exc:  # a catalogue not written yet
                if exc.name == name:
                    continue
                raise
            rules.extend(mod.RULES)
        seen: set[str] = set()
        for r in rules:
            if r.id in seen:
                raise ValueError(f"duplicate rule id {r.id}")
            seen.add(r.id)
        _cache = tuple(rules)
    return _cache


def get(rule_id: str) -> Rule:
    for r in all_rules():
        if r.id == rule_id:
            return r
    raise KeyError(f"no rule {rule_id!r} in the catalogue")


def select(rules: Iterable[Rule] | None = None, *, pattern: str | None = None,
           area: str | None = None, level: str | None = None,
           binds: str | None = None) -> list[Rule]:
    """Filter rules: ``pattern`` is a glob on the ID (``CLOSE-*``); comma-separated globs OR."""
    out = []
    globs = [g.strip() for g in pattern.split(",")] if pattern else []
    for r in all_rules() if rules is None else rules:
        if globs and not any(fnmatch.fnmatchcase(r.id, g) for g in globs):
            continue
        if area is not None and r.area != area:
            continue
        if level is not None and r.level.value != level.upper():
            continue
        if binds is not None and r.binds.value != binds:
            continue
        out.append(r)
    return out
