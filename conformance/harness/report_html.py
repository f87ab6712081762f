"""The HTML report of the client harness: a matrix of clients x rules; every failing cell
links to the wire log of the case that broke the rule (no JavaScript: the log sections are
shown with CSS ``:target``), followed by the rule texts."""

from __future__ import annotations

import html
from collections.abc import Sequence

from conformance.report import Report, Verdict

__all__ = ["render", "write"]

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table.matrix { border-collapse: collapse; }
.matrix th, .matrix td { border: 1px solid #bbb; padding: 4px 8px; text-align: center; }
.matrix th.rule { text-align: left; font-family: monospace; white-space: nowrap; }
td.passed { background: #d8f5d8; } td.failed { background: #f8c8c8; }
td.skipped, td.not-checkable { background: #eee; color: #666; }
td.not-exercised { background: #fff8dc; color: #666; }
section.wire { display: none; border: 2px solid #c33; padding: 0.5em 1em; margin: 1em 0; }
section.wire:target { display: block; }
pre { white-space: pre-wrap; font-size: 12px; background: #f7f7f7; padding: 0.5em; }
dl.rules dt { font-family: monospace; font-weight: bold; margin-top: 0.6em; }
"""


def _cls(v: Verdict) -> str:
    return v.value.replace(" ", "-")


def render(reports: Sequence[Report], title: str = "vdisim client conformance") -> str:
    """One page for ``reports`` (one per client, as returned by a check-client run)."""
    from conformance.harness.replay import format_wire

    e = html.escape
    rule_ids: list[str] = []
    rules = {}
    for rep in reports:
        for rid, rres in rep.results.items():
            if rid not in rules:
                rule_ids.append(rid)
                rules[rid] = rres.rule
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{e(title)}</h1>"]
    out.append("<table class='matrix' id='matrix'><thead><tr><th>rule</th><th>level</th>")
    for i, rep in enumerate(reports):
        c = rep.counts()
        out.append(f"<th id='client-{i}'>{e(rep.subject)}<br><small>{c['passed']} passed, "
                   f"{c['failed']} failed; {rep.extra.get('cases', 0)} cases</small></th>")
    out.append("</tr></thead><tbody>")
    sections = []
    for rid in rule_ids:
        rule = rules[rid]
        out.append(f"<tr><th class='rule'><a href='#rule-{e(rid)}'>{e(rid)}</a></th>"
                   f"<td>{e(rule.level.value)}</td>")
        for i, rep in enumerate(reports):
            res = rep.results.get(rid)
            if res is None:
                out.append("<td class='not-exercised'>-</td>")
                continue
            label = e(res.verdict.value)
            title_attr = e(res.reason[:300])
            if res.verdict is Verdict.FAILED:
                anchor = f"wire-{i}-{rid}"
                out.append(f"<td class='failed' title='{title_attr}'>"
                           f"<a class='wire-link' href='#{e(anchor)}'>{label} "
                           f"({res.failed})</a></td>")
                rec = (rep.extra.get("failing_records") or {}).get(rid)
                body = format_wire(rec) if rec else "(no wire log recorded)"
                msgs = "\n".join(v.message for v in res.violations[:10])
                witness = (f"<p>replay: <code>vdisim replay {e(res.witness)}</code></p>"
                           if res.witness else "")
                minimal = (rep.extra.get("minimal") or {}).get(rid)
                mini = (f"<p>minimal failing case:</p><pre>{e(str(minimal['spec']))}</pre>"
                        if minimal else "")
                sections.append(
                    f"<section class='wire' id='{e(anchor)}'><h2>{e(rep.subject)}: "
                    f"{e(rid)}</h2><pre class='violations'>{e(msgs)}</pre>{witness}{mini}"
                    f"<h3>wire log</h3><pre class='wire-log'>{e(body)}</pre>"
                    "<p><a href='#matrix'>back to the matrix</a></p></section>")
            else:
                out.append(f"<td class='{_cls(res.verdict)}' title='{title_attr}'>{label}"
                           f"{f' ({res.passed})' if res.passed else ''}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    out.extend(sections)
    out.append("<h2>Rules</h2><dl class='rules'>")
    for rid in rule_ids:
        r = rules[rid]
        out.append(f"<dt id='rule-{e(rid)}'>{e(rid)} [{e(r.level.value)}] {e(r.section)} "
                   f"[{e(r.source)}]</dt><dd>{e(r.statement)}</dd>")
    out.append("</dl></body></html>")
    return "\n".join(out)


def write(path: str, reports: Sequence[Report], title: str = "vdisim client conformance"
          ) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(reports, title))
    return path
