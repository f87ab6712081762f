"""``vdisim check-client`` and ``vdisim run SCENARIO`` (docs/client-harness.md).

Shared option spellings: ``--client MOD:FN`` / ``--exec 'CMD {context}'`` (each may repeat: one
column per client in the HTML matrix), ``--capabilities JSON-or-path`` (for ``--exec``
clients), ``--rules GLOB``, ``--seed N``, ``--profile ci|full``, ``--junit-xml P``,
``--json P``, ``--html P``.  Exit status: 0 no MUST rule failed, 1 a MUST rule failed,
2 usage error, 3 harness error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import traceback
from xml.etree import ElementTree as ET

from conformance.harness.context import Capabilities, ContextError
from conformance.report import EXIT_HARNESS_ERROR, EXIT_OK, EXIT_USAGE, Report

__all__ = ["register_check_client", "register_run"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--client", action="append", default=[], metavar="MOD:FN",
                   help="a Python client: module:function taking a ClientContext")
    p.add_argument("--exec", action="append", default=[], dest="exec_", metavar="CMD",
                   help="any program, run once per case; {context} is replaced by the path "
                        "of the context JSON file; exit status 0 = success")
    p.add_argument("--capabilities", metavar="JSON|PATH",
                   help="what the --exec client(s) claim (Python clients declare their own)")
    p.add_argument("--rules", metavar="GLOB", help="only rules matching (comma-separated globs)")
    p.add_argument("--seed", type=int, default=None, help="generation seed (printed)")
    p.add_argument("--profile", choices=["ci", "full"], default="ci")
    p.add_argument("--junit-xml", metavar="PATH")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--html", metavar="PATH")
    p.add_argument("--replay-dir", metavar="DIR",
                   help="where replay files go (default $VDISIM_REPLAY_DIR or ./vdisim-replays)")
    p.add_argument("-v", "--verbose", action="store_true", help="every rule, not only failures")


def _clients(args: argparse.Namespace) -> list[object]:
    from conformance.harness.runner import ClientUnderTest

    caps = Capabilities.parse(args.capabilities) if args.capabilities else None
    out: list[object] = []
    for spec in args.client:
        out.append(ClientUnderTest.python_client(spec, caps if args.capabilities else None))
    for cmd in args.exec_:
        out.append(ClientUnderTest.exec_client(cmd, caps))
    return out


def _write_outputs(args: argparse.Namespace, reports: list[Report]) -> None:
    if args.json:
        if len(reports) == 1:
            reports[0].write_json(args.json)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"format": "vdisim-reports", "version": 1,
                           "reports": [r.to_json() for r in reports]}, f, indent=2)
                f.write("\n")
    if args.junit_xml:
        if len(reports) == 1:
            reports[0].write_junit(args.junit_xml)
        else:
            root = ET.Element("testsuites")
            for i, r in enumerate(reports):
                tmp = f"{args.junit_xml}.{i}.tmp"
                r.write_junit(tmp)
                root.append(ET.parse(tmp).getroot())
                os.unlink(tmp)
            ET.ElementTree(root).write(args.junit_xml, encoding="utf-8", xml_declaration=True)
    if args.html:
        from conformance.harness.report_html import write

        write(args.html, reports)


def _run_all(args: argparse.Namespace, what: str, scenario_names: list[str] | None) -> int:
    from conformance.harness.check import CheckRun, client_rules
    from conformance.harness.runner import PROFILES, ClientUnderTest

    if not args.client and not args.exec_:
        print(f"vdisim {what}: give --client MOD:FN or --exec 'CMD {{context}}'",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        clients = _clients(args)
    except (ContextError, ValueError, TypeError, ImportError, AttributeError) as exc:
        print(f"vdisim {what}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rules = client_rules(args.rules)
    if not rules:
        print(f"vdisim {what}: no client rule matches {args.rules!r}", file=sys.stderr)
        return EXIT_USAGE
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    profile = PROFILES[args.profile]
    command = " ".join(["vdisim", *sys.argv[1:]]) if sys.argv else what
    print(f"vdisim {what}: seed {seed}, profile {profile.name}, {len(rules)} rules")
    reports: list[Report] = []
    try:
        for client in clients:
            assert isinstance(client, ClientUnderTest)
            run = CheckRun(client, rules=rules, seed=seed, profile=profile, command=command,
                           replay_dir=args.replay_dir,
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
            report = (run.scenarios(scenario_names) if scenario_names is not None
                      else run.generated(getattr(args, "cases", None)))
            reports.append(report)
            print(f"== {client.name}: {report.extra.get('cases')} cases, "
                  f"{report.extra.get('records')} client runs judged, "
                  f"{report.duration_s:.1f} s ({report.extra.get('cases_per_s')} cases/s)")
            print(report.console(verbose=args.verbose))
    except Exception:
        traceback.print_exc()
        print(f"vdisim {what}: harness error (not a verdict on the client)", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    _write_outputs(args, reports)
    return max((r.exit_code() for r in reports), default=EXIT_OK)


def _check_client(args: argparse.Namespace) -> int:
    names = None
    if args.scenarios:
        import scenarios

        names = (scenarios.scenario_names() if args.scenarios == "all"
                 else [s.strip() for s in args.scenarios.split(",") if s.strip()])
    return _run_all(args, "check-client", names)


def _run(args: argparse.Namespace) -> int:
    import scenarios

    known = scenarios.scenario_names()
    names = known if args.scenario == ["all"] else args.scenario
    bad = [n for n in names if n.removesuffix(".json") not in known]
    if bad:
        print(f"vdisim run: no bundled scenario {bad[0]!r}; known: {', '.join(known)}",
              file=sys.stderr)
        return EXIT_USAGE
    return _run_all(args, "run", [n.removesuffix(".json") for n in names])


def register_check_client(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-client", help="judge a VDI client rule by rule against generated "
                                            "server behaviour")
    _common(p)
    p.add_argument("--cases", type=int, default=None,
                   help="generated cases (default: 12 for ci, 1000 for full)")
    p.add_argument("--scenarios", metavar="all|NAME,...",
                   help="run bundled scenarios instead of generated cases")
    p.set_defaults(func=_check_client)


def register_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run bundled scenario(s) against a client and judge it")
    p.add_argument("scenario", nargs="+", help="scenario name(s) (see scenarios/), or 'all'")
    _common(p)
    p.set_defaults(func=_run)
