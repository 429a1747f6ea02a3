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


#: A state's comment when it did not run because a state it requires failed.
REQUISITE_FAILED = "One or more requisite failed"


def failures(ret):
    """[(state id, state function, comment)] of the states in a host's highstate
    return that failed for a reason of their own (not a requisite's), in the
    order they ran; a return that is not states (a render error) as one entry."""
    if not isinstance(ret, dict):
        lines = ret if isinstance(ret, list) else [ret]
        return [("highstate", "render", "\n".join(str(line) for line in lines))]
    failed = sorted((r for r in ret.values() if r["result"] is not True),
                    key=lambda r: r.get("__run_num__", 0))
    own = [r for r in failed if not str(r["comment"]).startswith(REQUISITE_FAILED)]
    return [(r["__id__"], r.get("__sls__", "?"), str(r["comment"]).strip())
            for r in own or failed]


def highstate(lab):
    """The highstate on every host, a line per host as its return comes in. Stops
    at the first host that failed, printing its failed states: (host, its
    failures), or None when every host succeeded."""
    for host, ret in lab.salt_iter("*", "state.apply", timeout=900):
        failed = failures(ret) if not isinstance(ret, dict) or any(
            r["result"] is not True for r in ret.values()) else []
        if isinstance(ret, dict):
            changed = sum(bool(r["changes"]) for r in ret.values())
            bad = sum(r["result"] is not True for r in ret.values())
            print(f"  {host:8} {len(ret):3} states, {changed:3} changed, {bad} failed")
        if failed:
            print(f"\nhighstate failed on {host}:")
            for sid, sls, comment in failed:
                print(f"  {sid} (sls {sls}):\n    " + comment.replace("\n", "\n    "))
            return host, failed
    return None


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
    and an app host's uWSGI), asked twice: the second answer comes from Varnish's
    cache. False when it does not serve the page."""
    lbs = [n for n, h in sorted(state["hosts"].items()) if "lb" in h["roles"]]
    if not lbs:
        return True
    address = state["hosts"][lbs[0]]["address"]
    try:
        fetch(address)
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
    if failed:
        host, states = failed
        print(f"\ndemo failed: the highstate of {host} failed at {states[0][0]} ({states[0][1]});"
              f" the other hosts' go on.\nlook: lab/labctl salt -- {host} state.apply (again),"
              f" lab/labctl exec {host} journalctl -u salt-minion; make down removes the lab")
        return 1
    release = deploy_main(lab, state)
    print()
    labctl.main(["status"])
    vitals(lab)
    graph(lab, state)
    served = site(state)
    print("\n(lab/labctl salt -- ARGS to drive it; make down to remove it)")
    if release is None or not served:
        print("\ndemo failed: " + ("orch.deploy of main failed (its output is above)"
                                   if release is None else "the lb host does not serve the site"))
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except labctl.LabError as exc:  # the lab's own errors say what failed: no traceback
        print(f"\ndemo failed: {exc}\n(lab/labctl status shows what is left of the lab; "
              "make down removes it)", file=sys.stderr)
        sys.exit(2)
