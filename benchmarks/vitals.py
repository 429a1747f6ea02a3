#!/usr/bin/env python
"""
Cost per call of ``highperf.vitals`` against the composite of Salt's own
``status.loadavg``, ``status.cpustats``, ``status.meminfo``,
``status.diskusage`` and ``status.netdev``, both called in-process through
Salt's loader (``salt.loader.minion_mods``), so process start-up is not
counted. A plain psutil read of the same facts is timed too, for reference.

    /opt/hpd-salt/venv/bin/python benchmarks/vitals.py [--number N] [--repeat R]
        [--rounds N] [--no-lab] [--keep] [--max-ratio X] [--json]

Then, in the same run, on the lab (root; the benchmarks' own lab `hpdbench`,
taken down afterwards unless it was up before or `--keep`): the round trip of
`salt '*' highperf.vitals` against `salt '*' test.ping` across every host, aim
<= 1.5x.

The issue's aim: ratio (vitals / composite) <= 1.0 while returning rates and
more, and never a fixed sleep inside the call. ``--max-ratio`` turns the aim
into an exit status (1 when exceeded, or when any timed call looks like it
slept).
"""

import logging
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import timeit

import bench

REPO = pathlib.Path(__file__).resolve().parents[1]
STATUS_FUNCTIONS = (
    "status.loadavg",
    "status.cpustats",
    "status.meminfo",
    "status.diskusage",
    "status.netdev",
)


def load_modules(cachedir):
    """Salt's execution modules with the repo's _modules, as a minion loads them."""
    import salt.config
    import salt.loader

    opts = salt.config.minion_config(None)
    opts.update(
        {
            "file_client": "local",
            "cachedir": cachedir,
            "extension_modules": os.path.join(cachedir, "extmods"),
            "module_dirs": [str(REPO / "_modules")],
        }
    )
    opts["grains"] = salt.loader.grains(opts)
    utils = salt.loader.utils(opts)
    return salt.loader.minion_mods(opts, utils=utils)


def psutil_reference():
    """The same facts read straight from psutil, no rates, no loader."""
    import psutil

    def read():
        os.getloadavg()
        psutil.cpu_times()
        psutil.virtual_memory()
        psutil.swap_memory()
        for part in psutil.disk_partitions(all=False):
            os.statvfs(part.mountpoint)
        psutil.net_io_counters(pernic=True)

    return read


def per_call_ms(func, number, repeat):
    """Per-call milliseconds of each of ``repeat`` runs of ``number`` calls."""
    return [t / number * 1000.0 for t in timeit.repeat(func, number=number, repeat=repeat)]


def slowest_call_ms(func, number):
    slowest = 0.0
    for _ in range(number):
        start = time.perf_counter()
        func()
        slowest = max(slowest, time.perf_counter() - start)
    return slowest * 1000.0


def in_process(number, repeat):
    """Per-call cost of vitals, the status composite and plain psutil, in-process."""
    cachedir = tempfile.mkdtemp(prefix="hpd-vitals-bench-")
    try:
        start = time.perf_counter()
        mods = load_modules(cachedir)
        load_s = time.perf_counter() - start

        status_funcs = [mods[name] for name in STATUS_FUNCTIONS]
        vitals = mods["highperf.vitals"]

        def composite():
            for func in status_funcs:
                func()

        # The first vitals call on a boot takes its one short sample; time it
        # apart, then warm everything up.
        start = time.perf_counter()
        vitals()
        first_ms = (time.perf_counter() - start) * 1000.0
        for _ in range(50):
            composite()
            vitals()

        candidates = {
            "highperf.vitals": vitals,
            "status composite": composite,
            "psutil reference": psutil_reference(),
        }
        runs = {name: [] for name in candidates}
        # Interleave the candidates so drift on the machine hits them alike.
        for _ in range(repeat):
            for name, func in candidates.items():
                runs[name].extend(per_call_ms(func, number, 1))
        slowest = {name: slowest_call_ms(func, number) for name, func in candidates.items()}
        leaves = sum(1 for _ in _leaves(vitals()))
    finally:
        shutil.rmtree(cachedir, ignore_errors=True)

    best = {name: min(values) for name, values in runs.items()}
    median = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "loader_seconds": round(load_s, 3),
        "number": number,
        "repeat": repeat,
        "best_ms": {k: round(v, 4) for k, v in best.items()},
        "median_ms": {k: round(v, 4) for k, v in median.items()},
        "slowest_call_ms": {k: round(v, 3) for k, v in slowest.items()},
        "vitals_first_call_ms": round(first_ms, 1),
        "vitals_leaves": leaves,
        "ratio": round(best["highperf.vitals"] / best["status composite"], 3),
        "ratio_median": round(median["highperf.vitals"] / median["status composite"], 3),
    }


def on_the_lab(rounds, keep):
    """Round trips of `salt '*' highperf.vitals` and `salt '*' test.ping` across a lab.

    Uses the benchmarks' lab (`hpdbench`), booted if it is not up and taken down
    afterwards unless it was up before or `keep`; Salt's LocalClient in-process,
    so the salt CLI's start-up is not counted.
    """
    sys.path.insert(0, str(REPO / "lab"))
    import salt.client

    import labctl

    spec = labctl.load_spec(None, "hpdbench", "10.83.0.0/24")
    lab = labctl.Lab(spec["name"])
    with labctl.booted(lab, spec, keep) as state:
        hosts = sorted(state["hosts"])
        client = salt.client.LocalClient(mopts=lab.salt_opts())

        def round_trip(fun):
            start = time.perf_counter()
            ret = client.cmd("*", fun, timeout=60)
            elapsed = time.perf_counter() - start
            if sorted(ret) != hosts or not all(ret.values()):
                raise SystemExit(f"{fun}: not every host answered: {sorted(ret)}")
            return elapsed * 1000.0

        try:
            client.cmd("*", "saltutil.sync_modules", timeout=120)
            round_trip("highperf.vitals")  # each host's first call takes its one short sample
            times = {"test.ping": [], "highperf.vitals": []}
            for _ in range(rounds):
                for fun in times:
                    times[fun].append(round_trip(fun))
        finally:
            client.destroy()
    median = {fun: statistics.median(values) for fun, values in times.items()}
    return {
        "hosts": len(hosts),
        "rounds": rounds,
        "median_ms": {k: round(v, 1) for k, v in median.items()},
        "ratio": round(median["highperf.vitals"] / median["test.ping"], 3),
    }


def report(result):
    r = result["in_process"]
    print(f"in-process through Salt's loader, {r['repeat']} x {r['number']} calls each")
    print(f"{'':20s} {'best ms/call':>13s} {'median':>9s} {'slowest':>9s}")
    for name in r["best_ms"]:
        print(f"{name:20s} {r['best_ms'][name]:13.4f} {r['median_ms'][name]:9.4f} "
              f"{r['slowest_call_ms'][name]:9.3f}")
    print(f"ratio vitals / composite: {r['ratio']:.3f} (median {r['ratio_median']:.3f})"
          "   (aim <= 1.0)")
    print(
        f"vitals returns {r['vitals_leaves']} numbers incl. rates; first call on this boot "
        f"(one short sample): {r['vitals_first_call_ms']:.1f} ms"
    )
    if "lab" in result:
        lab = result["lab"]
        print(f"\non the lab, {lab['hosts']} hosts, median of {lab['rounds']} round trips:")
        for fun, ms in lab["median_ms"].items():
            print(f"  salt '*' {fun:16s} {ms:8.1f} ms")
        print(f"ratio vitals / test.ping: {lab['ratio']:.3f}   (aim <= 1.5)")


def verdict(result, args):
    """1 when --max-ratio is exceeded or a vitals call looks like it slept."""
    r, failed = result["in_process"], False
    if args.max_ratio is not None and r["ratio"] > args.max_ratio:
        print(f"FAIL: ratio {r['ratio']:.3f} > {args.max_ratio}", file=sys.stderr)
        failed = True
    if args.max_ratio is not None and r["slowest_call_ms"]["highperf.vitals"] > 100.0:
        print("FAIL: a vitals call took over 100 ms: does it sleep?", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def measure(args):
    logging.basicConfig(level=logging.ERROR)
    result = {"in_process": in_process(args.number, args.repeat)}
    if not args.no_lab:
        result["lab"] = on_the_lab(args.rounds, args.keep)
    return result


def main(argv=None):
    p = bench.parser(__doc__)
    p.add_argument("--number", type=int, default=500, help="calls per timing run")
    p.add_argument("--repeat", type=int, default=7, help="timing runs per candidate")
    p.add_argument("--rounds", type=int, default=15, help="round trips per function (lab)")
    p.add_argument("--no-lab", action="store_true", help="skip the lab part")
    p.add_argument("--max-ratio", type=float, default=None, help="fail above this ratio")
    return bench.main(p, measure, report, argv, needs_lab=lambda a: not a.no_lab,
                      verdict=verdict)


def _leaves(tree):
    for value in tree.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        else:
            yield value


if __name__ == "__main__":
    sys.exit(main())
