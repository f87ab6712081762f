"""``vdisim bench``: run the benchmark suite (benchmarks/README.md)."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from benchmarks import suite


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks against the machine's own limits",
                       description="Measure vdisim's streams, command round trip, scaling and "
                                   "conformance speed next to raw baselines measured in the "
                                   "same run (benchmarks/README.md).")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one repeat (a smoke run; well under 2 minutes)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the markdown table")
    p.add_argument("--only", action="append", choices=sorted(suite.SECTIONS),
                   help="run only this section (repeatable)")
    p.add_argument("--skip", action="append", choices=sorted(suite.SECTIONS), default=[],
                   help="leave this section out (repeatable)")
    p.add_argument("--repeats", type=int, help="override the number of repeats")
    p.add_argument("--stream-mib", type=int, help="override the stream database size (MiB)")
    p.set_defaults(func=main)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: argparse.Namespace) -> int:
    # A TERM (or an INT in a background job, where it is ignored) must still stop the engine
    # and close the sets: turn TERM into KeyboardInterrupt so every finally block runs.
    signal.signal(signal.SIGTERM, _interrupt)
    config = suite.Config.make(args.quick)
    if args.repeats:
        config.repeats = args.repeats
    if args.stream_mib:
        config.stream_mib = args.stream_mib
    only = [n for n in (args.only or list(suite.SECTIONS)) if n not in args.skip]
    result = suite.run(config, only)
    suite.write(result, args.json, args.markdown)
    print(result.markdown())
    return 0
