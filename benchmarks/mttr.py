#!/usr/bin/env python
"""
Time to repair the site's uWSGI emperor, on a lab of its own (`hpdbench` on
10.83.0.0/24 unless `--name`/`--subnet` say otherwise: app1, with db and cache1
behind it, highstated first), from the moment the command is sent until
`/health/` on app1's uWSGI port answers 200 again, seen from this machine over
the lab network (what haproxy's check sees):

- systemd path: `kill -9` of the emperor (its main process); systemd restarts
  it (Restart=on-failure, RestartSec from pillar heal), no Salt involved;
- reactor path: `systemctl stop uwsgi-emperor`; the units beacon reports it,
  the master's reactor has the host start it again (hpd_heal.heal).

Several runs of each (`--runs`), median and max. After each run the unit's
start limit (systemd) and the host's restart count (hpd_heal.reset) are reset,
so each run is a first incident and the host is left as it was. The time
includes sending the command into the host (nsenter), so it errs long.

    /opt/hpd-salt/venv/bin/python benchmarks/mttr.py [--runs N] [--keep] [--json]
        [--name LAB --subnet CIDR]

Aims (the self-healing issue): systemd path <= 2 s, reactor path <= 3 s.
"""

import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import bench
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))

import labctl  # noqa: E402

NAME, SUBNET = "hpdbench", "10.83.0.0/24"
HOST, UNIT = "app1", "uwsgi-emperor"
SPEC = {"hosts": {
    HOST: {"address": 21, "roles": ["app"], "env": "dev", "memory": 1024, "cpus": 1},
    "db": {"address": 40, "roles": ["db"], "env": "dev", "memory": 1024, "cpus": 1},
    "cache1": {"address": 50, "roles": ["cache"], "env": "dev", "memory": 512, "cpus": 1},
}}
PATHS = {"systemd": ["sh", "-c", f"kill -9 $(systemctl show -p MainPID --value {UNIT})"],
         "reactor": ["systemctl", "stop", UNIT]}
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url):
    """Whether `url` (/health/) answers 200."""
    try:
        with OPENER.open(url, timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False


def repaired_after(lab, state, command, url, timeout=60):
    """(seconds from sending `command` into the host until /health/ answers
    again, seconds the command itself took: a stop returns once the emperor has
    stopped its vassal gracefully)."""
    t0 = time.monotonic()
    lab.exec_in(state, HOST, command, capture_output=True)
    sent = time.monotonic() - t0
    while not answers(url):
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"/health/ did not answer within {timeout} s of {command}")
        time.sleep(0.02)
    return time.monotonic() - t0, sent


def measure(name, subnet, runs, keep):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump({"name": name, **SPEC}, f)
        f.flush()
        spec = labctl.load_spec(f.name, name, subnet)
    lab = labctl.Lab(name)
    labctl.build()
    with labctl.booted(lab, spec, keep) as state:
        for host, ret in lab.salt_json("-L", ",".join(SPEC["hosts"]), "state.apply",
                                       timeout=900).items():
            failed = [r["__id__"] for r in ret.values() if r["result"] is not True]
            if failed:
                raise SystemExit(f"{host}'s highstate failed: {failed}")
        port = lab.salt_json(HOST, "hpd.settings", "app")[HOST]["port"]
        url = f"http://{state['hosts'][HOST]['address']}:{port}/health/"
        if not answers(url):
            raise SystemExit(f"{url} does not answer 200 before the first run")
        times = {path: [] for path in PATHS}
        commands = {path: [] for path in PATHS}
        for _ in range(runs):
            for path, command in PATHS.items():
                total, sent = repaired_after(lab, state, command, url)
                times[path].append(total)
                commands[path].append(sent)
                time.sleep(5)  # the heal's own check (heal:settle) is over
                lab.exec_in(state, HOST, ["systemctl", "reset-failed", UNIT])
                lab.salt_json(HOST, "hpd_heal.reset", UNIT)
    return {path: {"runs": [round(t, 3) for t in ts], "median_s": round(statistics.median(ts), 3),
                   "max_s": round(max(ts), 3),
                   "command_median_s": round(statistics.median(commands[path]), 3)}
            for path, ts in times.items()}


def report(r):
    aims = {"systemd": 2, "reactor": 3}
    print(f"{UNIT} on {HOST}: from the command to /health/ answering 200 again")
    for path, t in r.items():
        print(f"  {path:8} median {t['median_s']:6.3f} s  max {t['max_s']:6.3f} s  "
              f"(aim <= {aims[path]} s; the command itself: median "
              f"{t['command_median_s']:.3f} s)  runs {t['runs']}")


def main(argv=None):
    p = bench.parser(__doc__)
    p.add_argument("--runs", type=int, default=5, help="runs of each path (default 5)")
    p.add_argument("--name", default=NAME, help=f"lab name (default {NAME})")
    p.add_argument("--subnet", default=SUBNET, help=f"lab subnet (default {SUBNET})")
    return bench.main(p, lambda a: measure(a.name, a.subnet, a.runs, a.keep), report, argv)


if __name__ == "__main__":
    sys.exit(main())
