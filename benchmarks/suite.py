"""The benchmark suite behind ``vdisim bench``: every vdisim number next to the machine's own
limit measured in the same run, and the ratio between them.

Absolute numbers drift on a shared machine; ratios are the result.  Each comparison is run
``repeats`` times with the baseline measured right before the vdisim run it is paired with;
the reported ratio is the median of the per-pair ratios, the reported values are medians.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import os
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from benchmarks import baselines, roundtrip, streams
from vdisim.engine.plan import default_buffer_count

KIB = 1024
MIB = 1024 * 1024
GROUPS = ("stream", "roundtrip", "scaling", "memory", "hooks", "conformance")


@attrs.define
class Result:
    """One measurement; ``ratio`` = value / baseline_value (median of paired ratios)."""

    name: str
    group: str
    value: float | None
    unit: str
    params: dict[str, Any] = attrs.field(factory=dict)
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    samples: list[float] = attrs.field(factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class Config:
    quick: bool = False
    repeats: int = 3
    stream_mib: int = 512  # database behind the stream matrix
    sizes: tuple[int, ...] = (64 * KIB, MIB, 4 * MIB)
    device_counts: tuple[int, ...] = (1, 4)
    roundtrips: int = 5000
    scale_devices: tuple[int, ...] = (1, 4, 16, 64)
    scale_device_mib: int = 1024
    scale_db_mib: tuple[int, ...] = (102, 1024, 4096)
    wide_buffer_count: int | None = None  # 64 x 4 MiB run (None: the default BUFFERCOUNT)
    conformance: bool = True

    @classmethod
    def make(cls, quick: bool) -> Config:
        if not quick:
            return cls()
        return cls(quick=True, repeats=1, stream_mib=24, roundtrips=600,
                   scale_device_mib=24, scale_db_mib=(8, 24, 64), wide_buffer_count=64)


def _median(xs: Iterable[float]) -> float:
    vals = [x for x in xs if x == x]
    return statistics.median(vals) if vals else float("nan")


def _size_name(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"


def _gbps(bps: float) -> float:
    return bps / 1e9


def _reset_peak(pid: int) -> None:
    """Reset VmHWM of ``pid`` (Linux: write 5 to clear_refs), so peaks are per run."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Suite:
    def __init__(self, config: Config, log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.results: list[Result] = []
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.started = time.time()
        self.host: streams.EngineHost | None = None

    # ------------------------------------------------------------------ helpers
    def add(self, r: Result) -> Result:
        self.results.append(r)
        v = "-" if r.value is None else f"{r.value:.4g} {r.unit}"
        ratio = "" if r.ratio is None else f"  ratio {r.ratio:.3g}"
        met = "" if r.met is None else ("  ok" if r.met else "  MISS")
        self.log(f"  {r.name}: {v}{ratio}{met}")
        return r

    def _host(self) -> streams.EngineHost:
        if self.host is None:
            self.host = streams.EngineHost()
        return self.host

    def close(self) -> None:
        if self.host is not None:
            self.host.close()
            self.host = None

    # ------------------------------------------------------------------ streams
    def run_streams(self) -> None:
        c = self.config
        host = self._host()
        db = host.database(c.stream_mib)
        total = c.stream_mib * MIB
        self.log(f"streams: {c.stream_mib} MiB database, {c.repeats} repeat(s)")
        families: dict[int, list[bytearray]] = {}
        for devices in c.device_counts:
            fam: list[bytearray] = []
            streams.backup(host.conn, db, devices, MIB, capture=fam)
            families[devices] = fam
        bcs = sorted({bc for d in c.device_counts
                      for bc in (default_buffer_count(d), streams.large_buffer_count(d))})
        for size in c.sizes:
            ring: dict[int, list[float]] = {bc: [] for bc in bcs}
            pipe: list[float] = []
            unix: list[float] = []
            runs: dict[tuple[str, int, str], list[float]] = {}
            for _rep in range(c.repeats):
                for bc in bcs:
                    ring[bc].append(baselines.ring(size, bc, total))
                pipe.append(baselines.pipe(size, total))
                unix.append(baselines.unix(size, total))
                for devices in c.device_counts:
                    for label, bc in (("default", default_buffer_count(devices)),
                                      ("large", streams.large_buffer_count(devices))):
                        b = streams.backup(host.conn, db, devices, size, bc)
                        runs.setdefault(("backup", devices, label), []).append(b.bytes_per_s)
                        r = streams.restore(host.conn, "benchrestore", families[devices], size,
                                            bc)
                        runs.setdefault(("restore", devices, label), []).append(r.bytes_per_s)
            sname = _size_name(size)
            for bc in bcs:
                self.add(Result(f"baseline ring {sname} x{bc}", "stream", _gbps(_median(ring[bc])),
                                "GB/s", {"size": size, "count": bc, "bytes": total},
                                samples=[_gbps(x) for x in ring[bc]]))
            self.add(Result(f"baseline os.pipe {sname}", "stream", _gbps(_median(pipe)), "GB/s",
                            {"size": size, "bytes": total}, samples=[_gbps(x) for x in pipe]))
            self.add(Result(f"baseline AF_UNIX {sname}", "stream", _gbps(_median(unix)), "GB/s",
                            {"size": size, "bytes": total}, samples=[_gbps(x) for x in unix]))
            for (op, devices, label), vals in runs.items():
                bc = (default_buffer_count(devices) if label == "default"
                      else streams.large_buffer_count(devices))
                ratios = [v / b for v, b in zip(vals, ring[bc], strict=True)]
                target, met = self._stream_target(op, devices, label, size, _median(ratios),
                                                  [v / p for v, p in zip(vals, pipe,
                                                                         strict=True)])
                self.add(Result(
                    f"{op} {sname} {devices} dev BUFFERCOUNT {bc} ({label})", "stream",
                    _gbps(_median(vals)), "GB/s",
                    {"operation": op, "size": size, "devices": devices, "buffer_count": bc,
                     "bytes": total, "vs_pipe": _median([v / p for v, p in
                                                         zip(vals, pipe, strict=True)]),
                     "vs_unix": _median([v / u for v, u in zip(vals, unix, strict=True)])},
                    f"baseline ring {sname} x{bc}", _gbps(_median(ring[bc])), _median(ratios),
                    target, met, [_gbps(x) for x in vals]))

    @staticmethod
    def _stream_target(op: str, devices: int, label: str, size: int, ratio: float,
                       vs_pipe: list[float]) -> tuple[str | None, bool | None]:
        if op != "backup" or devices != 1 or label != "default":
            return None, None
        if size == MIB:
            return ">= 0.6 x ring and >= 2 x os.pipe", ratio >= 0.6 and _median(vs_pipe) >= 2.0
        if size == 64 * KIB:
            return ">= 0.5 x ring", ratio >= 0.5
        return None, None

    # ------------------------------------------------------------------ round trip
    def run_roundtrip(self) -> None:
        n = self.config.roundtrips
        self.log(f"round trip: {n} commands, {self.config.repeats} repeat(s)")
        pp: list[dict[str, float]] = []
        vd: list[dict[str, Any]] = []
        spin: list[dict[str, float]] = []
        pp_cpu: list[float] = []
        wire: list[dict[str, float]] = []
        for _rep in range(self.config.repeats):
            pp.append(baselines.summarize(baselines.pingpong(n)))
            pp_cpu.append(baselines.LAST_CPU_US_PER_RT[0])
            wire.append(baselines.summarize(baselines.wire_pingpong(n)))
            vd.append(roundtrip.vdisim_roundtrip(n))
            spin.append(baselines.summarize(baselines.pingpong(n, spin_us=50.0)))
        med = [v["median_us"] / p["median_us"] for v, p in zip(vd, pp, strict=True)]
        p99 = [v["p99_us"] / p["p99_us"] for v, p in zip(vd, pp, strict=True)]
        self.add(Result("baseline AF_UNIX ping-pong median", "roundtrip",
                        _median(p["median_us"] for p in pp), "us", {"n": n},
                        samples=[p["median_us"] for p in pp]))
        self.add(Result("baseline AF_UNIX ping-pong p99", "roundtrip",
                        _median(p["p99_us"] for p in pp), "us", {"n": n},
                        samples=[p["p99_us"] for p in pp]))
        self.add(Result("baseline spin(50 us)-then-block ping-pong median", "roundtrip",
                        _median(p["median_us"] for p in spin), "us", {"n": n, "spin_us": 50},
                        samples=[p["median_us"] for p in spin]))
        self.add(Result("baseline vdisim-wire ping-pong median (frames + Channel, no threads)",
                        "roundtrip", _median(w["median_us"] for w in wire), "us", {"n": n},
                        "baseline AF_UNIX ping-pong median", _median(p["median_us"] for p in pp),
                        _median(w["median_us"] / p["median_us"]
                                for w, p in zip(wire, pp, strict=True)),
                        samples=[w["median_us"] for w in wire],
                        note="COMMAND there, 2 EVENTs + COMPLETION back, one thread per side"))
        ratio = _median(med)
        self.add(Result("command round trip median", "roundtrip",
                        _median(v["median_us"] for v in vd), "us",
                        {"n": n},
                        "baseline AF_UNIX ping-pong median", _median(p["median_us"] for p in pp),
                        ratio,
                        "<= 1.5 x ping-pong", ratio <= 1.5, [v["median_us"] for v in vd]))
        self.add(Result("command round trip p99", "roundtrip",
                        _median(v["p99_us"] for v in vd), "us", {"n": n},
                        "baseline AF_UNIX ping-pong p99", _median(p["p99_us"] for p in pp),
                        _median(p99), samples=[v["p99_us"] for v in vd]))
        base_cpu = _median(pp_cpu)
        self.add(Result("baseline ping-pong CPU per round trip (one side)", "roundtrip",
                        base_cpu, "us", {"n": n}))
        for side in ("client", "engine"):
            cpu = _median(v[f"{side}_cpu_us_per_rt"] for v in vd)
            self.add(Result(f"{side} CPU per round trip", "roundtrip", cpu, "us",
                            {"user_us": _median(v[f"{side}_user_us_per_rt"] for v in vd)},
                            "baseline ping-pong CPU per round trip (one side)", base_cpu,
                            cpu / base_cpu if base_cpu else None,
                            note="user+system, from os.times (10 ms ticks, averaged)"))
        traced = roundtrip.vdisim_roundtrip(n, trace=True)  # separate run: hops only
        for hop, us in traced.get("hops_median_us", {}).items():
            self.add(Result(f"hop: {hop}", "roundtrip", float(us), "us", {"n": n},
                            note="separate traced run, CLOCK_MONOTONIC in both processes"))
        self.add(Result("low-latency wait mode (spin then block) median", "roundtrip", None,
                        "us", target="< 10 us", met=False,
                        note="not implemented: see benchmarks/README.md (where the time goes)"))

    # ------------------------------------------------------------------ scaling
    def run_scaling(self) -> None:
        c = self.config
        host = self._host()
        self.log("scaling: devices (repeats interleaved)")
        db = host.database(c.scale_device_mib)
        by_dev: dict[int, list[float]] = {d: [] for d in c.scale_devices}
        for _rep in range(c.repeats):
            for d in c.scale_devices:
                by_dev[d].append(streams.backup(host.conn, db, d, MIB).bytes_per_s)
        first_d = c.scale_devices[0]
        for d in c.scale_devices:
            vals = by_dev[d]
            ratios = [v / b for v, b in zip(vals, by_dev[first_d], strict=True)]
            self.add(Result(_dev_name(d), "scaling", _gbps(_median(vals)), "GB/s",
                            {"devices": d, "size": MIB, "database_mib": c.scale_device_mib},
                            _dev_name(first_d), _gbps(_median(by_dev[first_d])),
                            _median(ratios), samples=[_gbps(x) for x in vals]))
        self.log("scaling: 64 devices x 4 MiB")
        self._wide(host, db)
        if c.scale_device_mib not in c.scale_db_mib:
            host.drop(c.scale_device_mib)
        self.log("scaling: database size (repeats interleaved)")
        names = {mib: host.database(mib) for mib in c.scale_db_mib}
        spg: dict[int, list[float]] = {mib: [] for mib in c.scale_db_mib}  # seconds per GiB
        secs: dict[int, list[float]] = {mib: [] for mib in c.scale_db_mib}
        nbytes: dict[int, int] = {}
        for _rep in range(c.repeats):
            for mib in c.scale_db_mib:
                r = streams.backup(host.conn, names[mib], 1, MIB)
                spg[mib].append(r.seconds / (r.bytes / 2**30))
                secs[mib].append(r.seconds)
                nbytes[mib] = r.bytes
        small = c.scale_db_mib[0]
        for mib in c.scale_db_mib:
            # ratio of medians: the smallest database's runs are too short to pair one by one
            ratio = _median(spg[mib]) / _median(spg[small])
            self.add(Result(_db_name(mib), "scaling", _median(spg[mib]), "s/GiB",
                            {"database_mib": mib, "bytes": nbytes[mib],
                             "seconds": _median(secs[mib])},
                            _db_name(small), _median(spg[small]), ratio,
                            "linear in bytes (s/GiB within 1.5 x of the smallest)",
                            ratio <= 1.5, spg[mib]))
        for mib in c.scale_db_mib:
            host.drop(mib)

    def _wide(self, host: streams.EngineHost, db: str) -> None:
        c = self.config
        bc = c.wide_buffer_count or default_buffer_count(64)
        epid = host.engine.pid or 0
        _reset_peak(epid)
        _reset_peak(os.getpid())
        e0, c0 = _hwm(epid), _hwm(os.getpid())
        error = ""
        run: streams.StreamRun | None = None
        try:
            run = streams.backup(host.conn, db, 64, 4 * MIB, bc)
        except streams.BenchError as exc:
            error = str(exc)
        e1, c1 = _hwm(epid), _hwm(os.getpid())
        area = bc * 4 * MIB
        scratch = 64 * 4 * MIB  # this client's per-device scratch buffers
        ok = run is not None and not error
        self.add(Result("64 devices x 4 MiB backup", "memory",
                        _gbps(run.bytes_per_s) if run else None, "GB/s",
                        {"buffer_count": bc, "buffer_area": area, "bytes": run.bytes if run else 0},
                        target="completes without error", met=ok, note=error))
        if e0 and c0:
            bound = area + 256 * MIB
            self.add(Result("64x4MiB: buffer area", "memory", area / MIB, "MiB",
                            {"buffer_count": bc, "transfer": 4 * MIB}))
            self.add(Result("64x4MiB: buffer area + client scratch", "memory",
                            (area + scratch) / MIB, "MiB", {"scratch_mib": scratch / MIB}))
            self.add(Result("64x4MiB: engine peak RSS growth", "memory", (e1 - e0) / MIB, "MiB",
                            {"buffer_area_mib": area / MIB}, "64x4MiB: buffer area", area / MIB,
                            (e1 - e0) / area, "<= buffer area + 256 MiB", e1 - e0 <= bound))
            self.add(Result("64x4MiB: client peak RSS growth", "memory", (c1 - c0) / MIB, "MiB",
                            {"buffer_area_mib": area / MIB, "scratch_mib": scratch / MIB},
                            "64x4MiB: buffer area + client scratch", (area + scratch) / MIB,
                            (c1 - c0) / (area + scratch),
                            "<= buffer area + scratch + 256 MiB", c1 - c0 <= bound + scratch))

    # ------------------------------------------------------------------ hooks
    def run_hooks(self) -> None:
        """Cost of the race-scheduling hook points when off: an upper bound from the number
        of ``hooks.ACTIVE`` checks on the data path and the cost of one check."""
        try:
            hooks = importlib.import_module("vdisim.hooks")
        except ImportError:
            self.add(Result("hook points off: cost per command", "hooks", None, "%",
                            note="vdisim.hooks not available in this build"))
            return
        root = os.path.dirname(os.path.dirname(os.path.abspath(hooks.__file__ or "")))
        files = ["transport/channel.py", "client/core.py", "client/api.py",
                 "engine/server_vds.py", "engine/vdisession.py", "engine/operations.py"]
        points = 0
        for f in files:
            with contextlib.suppress(OSError), open(os.path.join(root, "vdisim", f)) as fh:
                points += fh.read().count("hooks.ACTIVE")
        ns = min(timeit.repeat("if hooks.ACTIVE: pass", globals={"hooks": hooks},
                               number=200_000, repeat=5)) / 200_000 * 1e9
        per_cmd = self._per_command_us()
        pct = points * ns / 1000 / per_cmd * 100 if per_cmd else None
        self.add(Result("hook points off: cost per command (upper bound)", "hooks", pct, "%",
                        {"static_points": points, "check_ns": ns, "command_us": per_cmd},
                        target="< 2 %", met=None if pct is None else pct < 2.0,
                        note="every static point counted once per command"))

    def _per_command_us(self) -> float | None:
        for r in self.results:
            p = r.params
            if (p.get("operation") == "backup" and p.get("size") == 64 * KIB
                    and p.get("devices") == 1 and r.value):
                return 64 * KIB / (r.value * 1e9) * 1e6
        return None

    # ------------------------------------------------------------------ conformance
    def run_conformance(self) -> None:
        try:
            suite = importlib.import_module("conformance.suite")
            backend_mod = importlib.import_module("conformance.backend")
            rules_mod = importlib.import_module("conformance.rules")
            run_suite = suite.run_suite
            rules = list(rules_mod.all_rules())
        except (ImportError, AttributeError) as exc:
            self.add(Result("conformance ci profile", "conformance", None, "s",
                            note=f"not available ({exc})"))
            return
        t0 = time.perf_counter()
        try:
            backend = backend_mod.open_backend("sim")
            self.log("conformance: the ci profile on the sim backend")
            with backend:
                report = run_suite(backend, rules=rules, seed=0, profile="ci")
        except Exception as exc:
            self.add(Result("conformance ci profile", "conformance", None, "s",
                            note=f"failed: {exc!r}"))
            return
        wall = time.perf_counter() - t0
        extra = dict(getattr(report, "extra", {}) or {})
        counts: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            counts = dict(report.counts())
        stages = {k: v for k, v in extra.items() if k.endswith("_s") or k.startswith("explore")}
        self.add(Result("conformance ci profile: wall time", "conformance", wall, "s",
                        {"rules": len(rules), "verdicts": counts, **stages},
                        note="includes a fixed exploration budget" if "explore_s" in extra
                        else ""))
        steps = extra.get("explore_steps") or _steps(report)
        sps = extra.get("steps_per_s") or (steps / wall if steps else None)
        self.add(Result("conformance ci profile: exploration steps per second", "conformance",
                        float(sps) if sps else None, "steps/s", {"steps": steps},
                        note="" if steps else "the report carries no step count"))

    # ------------------------------------------------------------------ output
    def to_json(self) -> dict[str, Any]:
        return {
            "suite": "vdisim bench",
            "quick": self.config.quick,
            "config": attrs.asdict(self.config),
            "started": datetime.datetime.fromtimestamp(self.started, datetime.UTC).isoformat(),
            "wall_s": time.time() - self.started,
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count(), "load": _loadavg()},
            "results": [r.to_json() for r in self.results],
        }

    def markdown(self) -> str:
        lines = [f"vdisim bench ({'quick' if self.config.quick else 'full'}), "
                 f"{datetime.datetime.fromtimestamp(self.started, datetime.UTC):%Y-%m-%d %H:%M} "
                 f"UTC, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
                 f"load {_loadavg()}, repeats {self.config.repeats}", ""]
        for group in GROUPS:
            rows = [r for r in self.results if r.group == group]
            if not rows:
                continue
            lines += [f"### {group}", "",
                      "| measurement | value | baseline | baseline value | ratio | target | met |",
                      "|---|---|---|---|---|---|---|"]
            for r in rows:
                lines.append("| " + " | ".join([
                    r.name, _fmt(r.value, r.unit), r.baseline or "",
                    _fmt(r.baseline_value, r.unit if r.baseline else ""),
                    "" if r.ratio is None else f"{r.ratio:.3g}", r.target or "",
                    {None: "", True: "yes", False: "**no**"}[r.met]]) + " |")
                if r.note:
                    lines[-1] = lines[-1][:-2] + f" ({r.note}) |"
            lines.append("")
        return "\n".join(lines)


def _dev_name(d: int) -> str:
    return f"backup 1 MiB, {d} device{'s' if d > 1 else ''}"


def _db_name(mib: int) -> str:
    return f"backup {mib} MiB database, 1 device, 1 MiB: seconds per GiB"


def _fmt(v: float | None, unit: str) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.3g} {unit}".strip()


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _steps(report: Any) -> int | None:
    for attr in ("steps", "step_count", "total_steps"):
        v = getattr(report, attr, None)
        if isinstance(v, int):
            return v
    try:
        data = report.to_json()
    except Exception:
        return None
    if isinstance(data, dict):
        for key in ("steps", "step_count", "total_steps"):
            v = data.get(key)
            if isinstance(v, int):
                return v
        stats = data.get("stats")
        if isinstance(stats, dict) and isinstance(stats.get("steps"), int):
            return int(stats["steps"])
    return None


SECTIONS: dict[str, Callable[[Suite], None]] = {
    "streams": Suite.run_streams,
    "roundtrip": Suite.run_roundtrip,
    "scaling": Suite.run_scaling,
    "hooks": Suite.run_hooks,
    "conformance": Suite.run_conformance,
}


def run(config: Config, only: Iterable[str] | None = None,
        log: Callable[[str], None] | None = None) -> Suite:
    suite = Suite(config, log)
    names = list(only) if only else list(SECTIONS)
    try:
        for name in names:
            SECTIONS[name](suite)
    finally:
        suite.close()
    return suite


def write(suite: Suite, json_path: str | None, markdown_path: str | None) -> None:
    if json_path:
        with open(json_path, "w") as f:
            json.dump(suite.to_json(), f, indent=2)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(suite.markdown() + "\n")
