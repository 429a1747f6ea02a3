#!/usr/bin/env python
"""make demo: the farm in the lab, highstated, with what runs where and its vitals.

Boots the default spec (lab `hpd`), applies the highstate to every host, then
prints the hosts (roles, addresses), each host's vitals (highperf.vitals) and the
URL of a vitals graph on the monitoring host, saved as a PNG.
"""

import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import labctl  # noqa: E402

GRAPH_PORT = 8080  # pillar monitoring:web:port (its default)


def highstate(lab):
    failed = 0
    for host, ret in sorted(lab.salt_json("*", "state.apply", timeout=900).items()):
        if not isinstance(ret, dict):
            print(f"  {host}: {ret}")
            failed += 1
            continue
        bad = [r["__id__"] for r in ret.values() if r["result"] is not True]
        changed = sum(bool(r["changes"]) for r in ret.values())
        print(f"  {host:8} {len(ret):3} states, {changed:3} changed, {len(bad)} failed {bad or ''}")
        failed += bool(bad)
    return failed


def vitals(lab):
    print(f"\n{'HOST':8} {'LOAD1':>6} {'CPU%':>6} {'MEM%':>6} {'DISK/%':>7} {'NET rx/s':>10}")
    for host, v in sorted(lab.salt_json("*", "highperf.vitals").items()):
        if not isinstance(v, dict):
            print(f"{host:8} {v}")
            continue
        rx = sum(i.get("rx_bytes_per_s", 0) for i in v["network"].values())
        print(f"{host:8} {v['load']['1min']:6.2f} {v['cpu']['percent']['busy']:6.1f} "
              f"{v['memory']['used_percent']:6.1f} {v['disk']['root']['used_percent']:7.1f} "
              f"{rx:10.0f}")


def graph(lab, state, points=12):
    """Wait until the graph has `points` pushes to show, then save it as a PNG."""
    monitors = [n for n, h in state["hosts"].items() if "monitoring" in h["roles"]]
    if not monitors:
        return
    address = state["hosts"][monitors[0]]["address"]
    app = sorted(state["hosts"])[0]
    params = {"target": [f"servers.{app}.load.1min", f"servers.{app}.cpu.percent.busy",
                         f"servers.{app}.memory.used_percent"],
              "from": "-5min", "title": f"{app} vitals"}
    base = f"http://{address}:{GRAPH_PORT}/render?"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(base + urllib.parse.urlencode(
                    {**params, "format": "json"}, doseq=True), timeout=10) as response:
                series = json.load(response)
            shown = min((sum(v is not None for v, _ in s["datapoints"]) for s in series),
                        default=0)
        except OSError:
            shown = 0
        if shown >= points or time.monotonic() > deadline:
            break
        time.sleep(3)
    url = base + urllib.parse.urlencode(
        {**params, "width": 800, "height": 400, "format": "png"}, doseq=True)
    png = lab.dir / "vitals.png"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            png.write_bytes(response.read())
    except OSError as exc:
        print(f"\nno graph from {url}: {exc}")
        return
    print(f"\nvitals graph: {url}\nsaved as:     {png}")


def main():
    spec = labctl.load_spec()
    lab = labctl.Lab(spec["name"])
    with lab.locked():
        state, _ = lab.up(spec)
    lab.salt_json("*", "saltutil.sync_all")  # highstates do not sync extension modules
    print("highstate:")
    failed = highstate(lab)
    print()
    labctl.main(["status"])
    vitals(lab)
    graph(lab, state)
    print("\n(lab/labctl salt -- ARGS to drive it; make down to remove it)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
