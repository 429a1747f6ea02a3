#!/usr/bin/env python
"""make demo: the farm in the lab, highstated, with what runs where and its vitals.

Boots the default spec (lab `hpd`), applies the highstate to every host, deploys
the site's main branch with orch.deploy (printing the release id it serves), then
prints the hosts (roles, addresses), each host's vitals (highperf.vitals), the
URL of a vitals graph on the monitoring host, saved as a PNG, and last the
site's URL with the page the lb host serves there.
"""

import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hpdlab.deploy import deploy  # noqa: E402
from hpdlab.web import DOMAIN, fetch  # noqa: E402

import labctl  # noqa: E402

GRAPH_PORT = 8080  # pillar monitoring:web:port (its default)
# Lab addresses are reached directly, never through a proxy named in the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def deploy_main(lab, state):
    """orch.deploy of the site's main branch; the release id it serves, None when
    the deploy failed."""
    print("\norch.deploy of main:")
    rc, states, output = deploy(lab, "main")
    if rc != 0:
        print(output[-3000:])
        return None
    app = next(n for n, h in sorted(state["hosts"].items()) if "app" in h["roles"])
    release = lab.exec_in(state, app, ["readlink", "/srv/hpd/current"], capture_output=True,
                          text=True).stdout.strip().rsplit("/", 1)[-1]
    print(f"  {len(states)} steps, all succeeded; the app hosts serve release {release}")
    return release


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
            with DIRECT.open(base + urllib.parse.urlencode(
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
        with DIRECT.open(url, timeout=10) as response:
            png.write_bytes(response.read())
    except OSError as exc:
        print(f"\nno graph from {url}: {exc}")
        return
    print(f"\nvitals graph: {url}\nsaved as:     {png}")


def site(state):
    """The site's URL and what the lb host answers there (through haproxy, Varnish
    and an app host's uWSGI); False when it does not serve the page."""
    lbs = [n for n, h in sorted(state["hosts"].items()) if "lb" in h["roles"]]
    if not lbs:
        return True
    address = state["hosts"][lbs[0]]["address"]
    try:
        status, headers, page = fetch(address)
    except OSError as exc:
        status, headers, page = None, {}, str(exc)
    release = re.search(r'class="release">([^<]*)<', page)
    print(f"\nsite: https://{DOMAIN}/ on {lbs[0]} ({address}); from this machine:\n"
          f"  curl -k --resolve {DOMAIN}:443:{address} https://{DOMAIN}/")
    print(f"  {status} {headers.get('content-type', '')}, release "
          f"{release.group(1) if release else '?'}, cache {headers.get('x-cache', '?')}")
    return status == 200 and release is not None


def main():
    # The lab labctl's own variables name (`make down` and `labctl status` agree).
    spec = labctl.load_spec(*(os.environ.get(f"HPD_LAB_{v}") for v in ("SPEC", "NAME", "SUBNET")))
    lab = labctl.Lab(spec["name"])
    with lab.locked():
        state, _ = lab.up(spec)
    print("highstate:")
    failed = highstate(lab)
    release = deploy_main(lab, state)
    print()
    labctl.main(["status"])
    vitals(lab)
    graph(lab, state)
    served = site(state)
    print("\n(lab/labctl salt -- ARGS to drive it; make down to remove it)")
    return 1 if failed or not served or release is None else 0


if __name__ == "__main__":
    sys.exit(main())
