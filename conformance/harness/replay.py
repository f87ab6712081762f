"""``vdisim replay FILE`` for client-harness replay files (kind ``client``).

The payload names the client (``{"python": "mod:fn"} | {"exec": "CMD {context}"}`` with its
capabilities), and either the minimal generated case (``spec``) or a bundled ``scenario``, and
the rules it broke.  Replaying runs that one case again against a fresh engine, judges it and
prints the verdicts and the wire log of what still fails.
"""

from __future__ import annotations

from typing import Any

from conformance.harness import checks
from conformance.harness.plans import CaseSpec
from conformance.harness.runner import PROFILES, ClientUnderTest, Harness
from conformance.report import EXIT_HARNESS_ERROR, EXIT_MUST_FAILED, EXIT_OK

__all__ = ["format_wire", "replay"]


def replay(doc: dict[str, Any]) -> int:
    payload = doc["payload"]
    try:
        client = ClientUnderTest.from_json(payload["client"])
        rules = [str(r) for r in payload.get("rules") or []]
        profile = PROFILES.get(str(payload.get("profile") or "ci"), PROFILES["ci"])
        with Harness(profile) as h:
            if payload.get("scenario"):
                records = h.run_scenario(client, str(payload["scenario"]))
            else:
                records = h.run_case(client, CaseSpec.from_json(payload["spec"]), "replay")
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
        print(f"vdisim replay: cannot run this client case: {exc}")
        return EXIT_HARNESS_ERROR
    still: set[str] = set()
    for rec in records:
        if "skipped" in rec:
            print(f"{rec['case']}: skipped: {rec['skipped']}")
            continue
        violations, _held = checks.judge(rec)
        for v in violations:
            print(f"{v.rule_id}: {v.message}")
            still.add(v.rule_id)
        if violations:
            print(format_wire(rec))
    if rules:
        print(f"recorded: {', '.join(rules)}; now: {', '.join(sorted(still)) or 'none'}")
        return EXIT_MUST_FAILED if still & set(rules) else EXIT_OK
    return EXIT_MUST_FAILED if still else EXIT_OK


def format_wire(rec: dict[str, Any], limit: int = 400) -> str:
    """The wire log of a record as text, one line per entry."""
    from vdisim.protocol.codes import CommandCode, hresult_name
    from vdisim.transport.frames import AbortReason, EventCall

    def cname(code: int) -> str:
        try:
            return CommandCode(int(code)).name
        except ValueError:
            return f"VDC_{code}"

    lines = [f"-- case {rec.get('case')}: statement "
             f"{(rec.get('collected') or {}).get('statement')!r}"]
    col = rec.get("collected") or {}
    ents = ((col.get("wire") or {}).get("entries") or [])
    for e in ents[:limit]:
        t = f"{float(e.get('t', 0)):10.3f} ms  "
        k = e.get("k")
        if k == "cmd":
            lines.append(f"{t}engine -> dev {e['dev']}: {cname(e['code'])} #{e['id']} "
                         f"size={e['size']} pos={e['pos']}")
        elif k == "done":
            gen = " (library)" if e.get("gen") else ""
            lines.append(f"{t}dev {e['dev']} -> engine: completion #{e['id']} "
                         f"{cname(e['code'])} code={e['result']} bytes={e['bytes']} "
                         f"pos={e['pos']}{gen}")
        elif k == "event":
            try:
                call = EventCall(int(e["call"])).name
            except ValueError:
                call = str(e["call"])
            dev = f" dev {e['dev']}" if e.get("dev", -1) >= 0 else ""
            lines.append(f"{t}client {call}{dev} -> {hresult_name(int(e['hr']))} "
                         f"(a={e['a']} b={e['b']} c={e['c']})")
        elif k == "abort":
            try:
                reason = AbortReason(int(e["reason"])).name
            except ValueError:
                reason = str(e["reason"])
            lines.append(f"{t}ABORT ({reason})")
        elif k == "aborted":
            lines.append(f"{t}#{e['id']} {cname(e['code'])} completed by abort (995)")
        else:
            rest = {x: y for x, y in e.items() if x not in ("k", "t")}
            lines.append(f"{t}{k} {rest if rest else ''}".rstrip())
    if len(ents) > limit:
        lines.append(f"... {len(ents) - limit} more entries")
    client = rec.get("client") or {}
    if client.get("stacks"):
        lines.append("-- client thread stacks at the watchdog:")
        lines.append(str(client["stacks"]))
    if client.get("output"):
        lines.append("-- client output (tail):")
        lines.append(str(client["output"])[-2000:])
    return "\n".join(lines)
