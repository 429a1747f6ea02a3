#!/usr/bin/env python
"""
The lab's costs, measured in one run on a lab of its own (`hpdbench` on
10.83.0.0/24 unless `--name`/`--subnet` say otherwise):

- boot: `labctl up` of the default spec until every host's systemd is running
  and every minion answers with its extension modules synced (the master's
  reactor syncs a minion when it starts; base rootfs and package caches built
  beforehand);
- first highstate of every host from nothing;
- second highstate (idempotent: 0 changes), and the ratio second / first.

    /opt/hpd-salt/venv/bin/python benchmarks/lab.py [--spec SPEC] [--keep] [--json]
        [--name LAB --subnet CIDR]

Aims: boot <= 10 s, second highstate <= 25% of the first.
"""

import sys
import time
from pathlib import Path

import bench

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))

import labctl  # noqa: E402

NAME, SUBNET = "hpdbench", "10.83.0.0/24"


def timed(func, *args):
    start = time.monotonic()
    result = func(*args)
    return time.monotonic() - start, result


def highstate(lab):
    """state.apply on every host; {host: (states, changed, failed)}."""
    summary = {}
    for host, ret in lab.salt_json("*", "state.apply", timeout=900).items():
        if not isinstance(ret, dict):
            raise SystemExit(f"{host} did not run its states: {ret}")
        results = ret.values()
        summary[host] = (len(ret), sum(bool(r["changes"]) for r in results),
                         sum(r["result"] is not True for r in results))
    return summary


def bench_lab(spec_path, name, subnet, keep):
    spec = labctl.load_spec(spec_path, name, subnet)
    lab = labctl.Lab(name)
    labctl.build()
    lab.down()
    try:
        boot, _ = timed(lab.up, spec)
        first_s, first = timed(highstate, lab)
        second_s, second = timed(highstate, lab)
    finally:
        if not keep:
            lab.down()
    return {
        "hosts": len(spec["hosts"]),
        "boot_s": round(boot, 2),
        "first_highstate_s": round(first_s, 2),
        "second_highstate_s": round(second_s, 2),
        "second_over_first": round(second_s / first_s, 3),
        "first_changes": sum(c for _, c, _ in first.values()),
        "second_changes": sum(c for _, c, _ in second.values()),
        "failed": sum(f for _, _, f in first.values()) + sum(f for _, _, f in second.values()),
    }


def report(r):
    print(f"lab of {r['hosts']} hosts")
    print(f"  boot (systemd running, minions answering)  {r['boot_s']:7.2f} s   (aim <= 10 s)")
    print(f"  first highstate   {r['first_highstate_s']:7.2f} s  {r['first_changes']} changes")
    print(f"  second highstate  {r['second_highstate_s']:7.2f} s  {r['second_changes']} changes")
    print(f"  second / first    {r['second_over_first']:7.3f}     (aim <= 0.25)")
    print(f"  failed states     {r['failed']}")


def main(argv=None):
    p = bench.parser(__doc__, lab=(NAME, SUBNET), spec=True)
    return bench.main(p, lambda a: bench_lab(a.spec, a.name, a.subnet, a.keep), report, argv)


if __name__ == "__main__":
    sys.exit(main())
