#!/usr/bin/env python
"""
Deploys under load, measured in one run on a lab of its own (the farm of
lab/specs/farm.yaml, as `hpdload` on 10.96.0.0/24 unless `--name`/`--subnet`
say otherwise):

- a steady load from this machine to the lb address (benchmarks/loadgen.py:
  open loop at --rate requests/s, a share of them logged in; its thread and
  its session at nice -10, so the client sharing the CPUs with the lab is not
  what is slow; its worst lag behind its schedule is reported)
  for an idle period,
  then across --deploys deploys with orch.deploy of two revisions that differ
  in code but not in dependencies, alternately: requests, failures (non-2xx/3xx
  or no answer), slow requests (over 1 s), p50/p99 during the deploys against
  the idle period's;
- the wall time of such a deploy with the farm's 2 app hosts, then with 4
  (two more added with `lab/labctl add`), and their ratio.

The control run (``--burn DUTY``): the same load, and instead of the deploys
the same number of periods as long as a deploy in which the app and worker
hosts each burn DUTY of a CPU per second at nice 19 and do nothing else; its
p99 against the idle p99 is what CPU work alone on those hosts costs the
requests, on a machine where every lab host shares the same cores.

Goals (the deploy issue): 0 failed and 0 slow requests, deploy p99 <= 1.25 x
idle p99, a 2-host deploy <= 30 s, 4 hosts <= 1.5 x 2 hosts; each reported as
met or missed. The lab is taken down afterwards unless it was up before or
`--keep`.

    /opt/hpd-salt/venv/bin/python benchmarks/deploy_under_load.py [--rate 100]
        [--deploys 4] [--idle 30] [--burn DUTY] [--keep] [--json]
        [--name LAB --subnet CIDR]
"""

import argparse
import asyncio
import concurrent.futures
import os
import sys
import time
import uuid
from pathlib import Path

import bench

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / "benchmarks"))

import loadgen  # noqa: E402
from hpdlab.deploy import deploy  # noqa: E402
from hpdlab.spec import host_entry  # noqa: E402
from hpdlab.web import DOMAIN  # noqa: E402

import labctl  # noqa: E402

NAME, SUBNET = "hpdload", "10.96.0.0/24"
MANAGE = "/usr/local/sbin/example-manage"
USER = "loadtest"
BRANCH = "bench-deploy"
#: Two revisions differing in code only (no new dependencies).
MARKER = "hpdexample/deploy_marker.py"
MIN_REQUESTS = 10_000
#: The control run's CPU work (--burn), in a host: ``duty`` seconds of CPU in each second,
#: at the lowest priority, for ``seconds``.
BURN = """
import os, time
os.setpriority(os.PRIO_PROCESS, 0, 19)
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    start = time.process_time()
    while time.process_time() - start < {duty}:
        pass
    time.sleep(1 - {duty})
"""


def check(lab, host, *cmd):
    out = lab.exec_in(lab.load(), host, list(cmd), check=False, capture_output=True,
                      text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{host}: {' '.join(cmd)} failed: {out.stderr.strip()}")
    return out.stdout


def highstate(lab, target="*"):
    for host, ret in lab.salt_json(target, "state.apply", timeout=1800).items():
        if not isinstance(ret, dict) or any(r["result"] is not True for r in ret.values()):
            raise SystemExit(f"{host}: the highstate failed: {ret}")


def timed_deploy(lab, sha):
    """(seconds orch.deploy of ``sha`` took, {state id: its seconds}); salt-run
    at the normal CPU priority, whatever the calling thread's."""
    start = time.monotonic()
    with loadgen.priority(0):
        rc, states, output = deploy(lab, sha)
    if rc != 0:
        raise SystemExit(f"orch.deploy of {sha} failed:\n{output[-4000:]}")
    return round(time.monotonic() - start, 1), {
        i: round(s.get("duration", 0) / 1000, 1) for i, s in states.items()}


async def under_load(lab, lb_address, work, times, label, rate, idle, password):
    """The load's report and ``[work(i) for i in range(times)]``, the work done
    one after the other after ``idle`` seconds of load, the requests sent
    meanwhile in period ``label``."""
    target = loadgen.Target(f"https://{DOMAIN}/", lb_address)
    cookies = await loadgen.login(target, USER, password)
    load = loadgen.Load(target, rate, cookies, logged_in_share=0.3)
    walls = []

    async def working():
        await asyncio.sleep(idle)
        load.mark(label)
        for i in range(times):
            walls.append(await asyncio.to_thread(work, i))
        load.mark("after")

    load.mark("idle")
    task = asyncio.create_task(working())
    # Load until the work is done and at least MIN_REQUESTS were sent, the
    # client ahead of the lab for the CPUs (the deploys' threads are not, nor
    # salt-run: a session of its own).
    with loadgen.priority(-10), loadgen.session_priority(-10):
        while not task.done() or len(load.outcomes) < MIN_REQUESTS:
            await load.run(5)
        await task
    return load.report(), walls


def burned(lab, hosts, duty, seconds):
    """(seconds, {}) after ``duty`` of a CPU in each second for ``seconds`` on
    each of ``hosts``, in the host's cgroup at nice 19: a deploy's CPU use
    with nothing of a deploy in it (--burn)."""
    script = BURN.format(duty=duty, seconds=seconds)
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(lambda host: check(lab, host, "python3", "-c", script), hosts))
    return seconds, {}


def p99_ratio(report, period):
    busy, idle = report.get(period), report["idle"]
    return round(busy["p99"] / idle["p99"], 2) if busy and idle["p99"] else None


def measure(spec_path, name, subnet, rate, deploys, idle, keep, burn=None):
    spec = labctl.load_spec(spec_path, name, subnet)
    lab = labctl.Lab(spec["name"])
    with labctl.booted(lab, spec, keep) as state:
        highstate(lab)
        hosts = state["hosts"]
        lb = next(n for n in sorted(hosts) if "lb" in hosts[n]["roles"])
        app = sorted(n for n in hosts if "app" in hosts[n]["roles"])
        with lab.locked():
            revisions = [lab.publish_site(changes={MARKER: f"MARK = {i}\n"}, branch=BRANCH)
                         for i in range(2)]
        password = uuid.uuid4().hex
        check(lab, app[0], "env", f"HPD_USER_PASSWORD={password}", MANAGE, "ensure_user", USER)
        # The dependencies of the revisions installed once; a burn lasts as long.
        first, _ = timed_deploy(lab, revisions[1])
        if burn:
            worked = app + sorted(n for n in hosts if "worker" in hosts[n]["roles"])
            report, _ = asyncio.run(under_load(
                lab, hosts[lb]["address"], lambda i: burned(lab, worked, burn, first), deploys,
                "burn", rate, idle, password))
            return {"rate": rate, "load": report, "burn": {
                "duty": burn, "seconds": first, "times": deploys, "hosts": worked,
                "p99_ratio": p99_ratio(report, "burn")}}
        report, walls = asyncio.run(under_load(
            lab, hosts[lb]["address"], lambda i: timed_deploy(lab, revisions[i % 2]), deploys,
            "deploy", rate, idle, password))
        two, steps = min(walls, key=lambda w: w[0])
        slowest = max(walls, key=lambda w: w[0])[1]
        with lab.locked():
            for i in (len(app) + 1, len(app) + 2):
                entry = {"address": 20 + i, "roles": ["app"], "env": "dev", "memory": 1024,
                         "cpus": 1}
                lab.up(spec, {f"app{i}": host_entry(spec["subnet"], f"app{i}", entry)})
        highstate(lab)  # the new app hosts, and haproxy's pool on the lb host
        four = min(timed_deploy(lab, revisions[i % 2])[0] for i in range(2))
    r = {"rate": rate, "deploys": deploys, "load": report,
         "deploy_seconds_2_hosts": [wall for wall, _ in walls], "deploy_seconds_4_hosts": four,
         "steps_of_the_fastest_2_host_deploy": steps,
         "steps_of_the_slowest_2_host_deploy": slowest,
         "load_1min_after": round(os.getloadavg()[0], 2)}
    ratio = p99_ratio(report, "deploy")
    r["goals"] = {
        "0 failed requests": report["all"]["failures"] == 0,
        "0 requests over 1 s": report["all"]["slow"] == 0,
        f"at least {MIN_REQUESTS} requests": report["all"]["requests"] >= MIN_REQUESTS,
        f"deploy p99 <= 1.25 x idle p99 ({ratio})": ratio is not None and ratio <= 1.25,
        f"2-host deploy <= 30 s ({two} s)": two <= 30,
        f"4 hosts <= 1.5 x 2 hosts ({round(four / two, 2)})": four <= 1.5 * two,
    }
    return r


def report(r):
    print(f"load {r['rate']} requests/s (30% logged in) to the lb host"
          + (f"; machine load {r['load_1min_after']} after" if "burn" not in r else ""))
    print(f"{'period':8s} {'requests':>9s} {'failed':>7s} {'over 1 s':>9s} {'p50 ms':>8s} "
          f"{'p99 ms':>8s} {'client late ms':>15s}")
    for period in ("idle", "deploy", "burn", "after", "all"):
        m = r["load"].get(period)
        if m:
            print(f"{period:8s} {m['requests']:9d} {m['failures']:7d} {m['slow']:9d} "
                  f"{m['p50'] * 1000:8.1f} {m['p99'] * 1000:8.1f} {m['max_lag'] * 1000:15.1f}")
    if "burn" in r:
        b = r["burn"]
        print(f"burn: {b['duty']} of a CPU per second at nice 19 on {', '.join(b['hosts'])}, "
              f"{b['times']} x {b['seconds']} s (a deploy's time): p99 {b['p99_ratio']} x idle")
        return
    print(f"deploy wall time, 2 app hosts: {r['deploy_seconds_2_hosts']} s; "
          f"4 app hosts: {r['deploy_seconds_4_hosts']} s")
    for which in ("fastest", "slowest"):
        steps = r[f"steps_of_the_{which}_2_host_deploy"]
        print(f"the {which} 2-host deploy's longest steps: " + ", ".join(
            f"{i} {s} s" for i, s in sorted(steps.items(), key=lambda x: -x[1])[:8]))
    for goal, met in r["goals"].items():
        print(f"{'met   ' if met else 'MISSED'} {goal}")


def duty(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a share of a second between 0 and 1, not {text}")
    return value


def main(argv=None):
    p = bench.parser(__doc__, lab=(NAME, SUBNET), spec=True)
    p.add_argument("--rate", type=float, default=100, help="requests per second")
    p.add_argument("--deploys", type=int, default=4, help="deploys under load")
    p.add_argument("--idle", type=float, default=30, help="seconds of load before them")
    p.add_argument("--burn", type=duty, default=None, metavar="DUTY",
                   help="the control run: instead of the deploys, DUTY (0-1) of a CPU per "
                        "second at nice 19 on the app and worker hosts, as long as a deploy")
    return bench.main(p, lambda a: measure(a.spec, a.name, a.subnet, a.rate, a.deploys, a.idle,
                                           a.keep, a.burn), report, argv,
                      verdict=lambda r, a: 0 if all(r.get("goals", {}).values()) else 1)


if __name__ == "__main__":
    sys.exit(main())
