"""``vdisim list-rules`` and ``vdisim conform``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from typing import Any

from conformance import rules as catalogue
from conformance.report import EXIT_HARNESS_ERROR, EXIT_USAGE


def _list_rules(args: argparse.Namespace) -> int:
    if args.area is not None and args.area not in catalogue.AREAS:
        print(f"vdisim list-rules: unknown area {args.area!r}; areas: "
              f"{', '.join(catalogue.AREAS)}", file=sys.stderr)
        return EXIT_USAGE
    if args.level is not None and args.level.upper() not in {lv.value for lv in catalogue.Level}:
        print(f"vdisim list-rules: unknown level {args.level!r} (MUST, SHOULD, MAY)",
              file=sys.stderr)
        return EXIT_USAGE
    selected = catalogue.select(pattern=args.rules, area=args.area, level=args.level,
                                binds=args.binds)
    if args.format == "json":
        json.dump([r.to_json() for r in selected], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.format == "markdown":
        print("| rule | level | binds | section | source | statement |")
        print("|---|---|---|---|---|---|")
        for r in selected:
            print(f"| `{r.id}` | {r.level.value} | {r.binds.value} | {r.section} | "
                  f"[{r.source}] | {r.statement} |")
        return 0
    width = max((len(r.id) for r in selected), default=10)
    for r in selected:
        print(f"{r.id:<{width}}  {r.level.value:<6}  {r.binds.value:<7}  "
              f"{r.section:<6} [{r.source}]  {r.statement}")
    by_level: dict[str, int] = {}
    for r in selected:
        by_level[r.level.value] = by_level.get(r.level.value, 0) + 1
    print(f"{len(selected)} rules ("
          + ", ".join(f"{n} {lv}" for lv, n in sorted(by_level.items())) + ")")
    return 0


def register_list_rules(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list-rules", help="print the rule catalogue")
    p.add_argument("--area", help=f"only this area ({', '.join(catalogue.AREAS)})")
    p.add_argument("--level", help="only MUST, SHOULD or MAY")
    p.add_argument("--binds", choices=[p.value for p in catalogue.Party],
                   help="only rules binding this party")
    p.add_argument("--rules", metavar="GLOB", help="only IDs matching (comma-separated globs)")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    p.set_defaults(func=_list_rules)


def _backend_options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--backend-option wants KEY=VALUE, not {pair!r}")
        out[key.replace("-", "_")] = value
    return out


def _conform(args: argparse.Namespace) -> int:
    from conformance.backend import BackendUnavailable, open_backend
    from conformance.suite import run_suite

    try:
        options = _backend_options(args.backend_option or [])
        backend = open_backend(args.backend, **options)
    except (ValueError, ImportError, TypeError) as exc:
        print(f"vdisim conform: cannot use backend {args.backend!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    selected = catalogue.select(pattern=args.rules)
    selected = [r for r in selected if r.area != "client"]  # those are check-client's
    if not selected:
        print(f"vdisim conform: no rule matches {args.rules!r}", file=sys.stderr)
        return EXIT_USAGE
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    print(f"vdisim conform: backend {args.backend}, {len(selected)} rules, seed {seed}, "
          f"profile {args.profile}", flush=True)

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    try:
        backend.open()
    except BackendUnavailable as exc:
        print(f"vdisim conform: backend {args.backend!r} is unavailable: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    try:
        with contextlib.closing(backend):
            report = run_suite(backend, rules=selected, seed=seed, profile=args.profile,
                               replay_dir=args.replay_dir, on_progress=progress)
    except Exception as exc:  # a harness error, never a verdict
        traceback.print_exc()
        print(f"vdisim conform: harness error (seed {seed}): {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    print(report.console(verbose=args.verbose))
    if args.junit_xml:
        report.write_junit(args.junit_xml)
    if args.json:
        report.write_json(args.json)
    code = report.exit_code()
    if code:
        print(f"MUST rules failed; rerun with --seed {seed}")
    return code


def register_conform(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("conform", help="check a VDI implementation against the rule catalogue")
    p.add_argument("--backend", default="sim",
                   help="sim (vdisim), shim (vdisim's libsqlvdi.so), live (SQL Server), or "
                        "module:factory")
    p.add_argument("--backend-option", action="append", metavar="KEY=VALUE",
                   help="passed to the backend factory (repeatable)")
    p.add_argument("--rules", metavar="GLOB", help="only rules whose ID matches")
    p.add_argument("--seed", type=int, help="seed of the random exploration (printed)")
    p.add_argument("--profile", choices=["quick", "ci", "full"], default="ci",
                   help="quick: directed sequences and statement runs only; ci: + ~20 s of "
                        "random exploration; full: + 10 minutes")
    p.add_argument("--junit-xml", metavar="PATH")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--replay-dir", metavar="DIR", help="where replay files go "
                   "(default $VDISIM_REPLAY_DIR or ./vdisim-replays)")
    p.add_argument("--verbose", "-v", action="store_true", help="a row for every rule")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.set_defaults(func=_conform)
