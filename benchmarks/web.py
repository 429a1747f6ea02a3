#!/usr/bin/env python
"""
What the edge buys, measured side by side in one run with wrk from the machine
(the farm of lab/specs/farm.yaml, on a lab of its own: `hpdweb` on 10.98.0.0/24
unless `--name`/`--subnet` say otherwise):

- the anonymous page through the lb host (https, haproxy + Varnish: cache hits);
- the same page straight from one app host's uWSGI (no cache: Django, the
  database and the cache for each request), as haproxy sends it;
- a logged-in page through the lb host (passed to Django: https, haproxy,
  Varnish, haproxy's pool, uWSGI);
- that app host's uWSGI again with uWSGI's own defaults (1 process, 1 thread:
  pillar app:uwsgi) instead of highperf.uwsgi_tune's, then put back.

Requests/s, p50 and p99 for each, and the ratios. Every response must be a 2xx:
a run with any other answer or a socket error is reported as failed.

    /opt/hpd-salt/venv/bin/python benchmarks/web.py [--seconds S] [--connections C]
        [--keep] [--json] [--name LAB --subnet CIDR]

Needs wrk (Debian's package; `make setup` installs it). The lab is taken down
afterwards unless it was up before or `--keep`.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import bench

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))

from hpdlab.web import DOMAIN, fetch, login  # noqa: E402

import labctl  # noqa: E402

NAME, SUBNET = "hpdweb", "10.98.0.0/24"
MANAGE = "/usr/local/sbin/example-manage"  # the site's manage.py (salt/site)
USER = "benchmark"
# uWSGI's stats socket of the site's vassal (salt/app), read on the app host.
READ_STATS = ("import socket; s = socket.socket(socket.AF_UNIX); "
              "s.connect('/srv/hpd/run/example-stats.sock'); "
              "print(b''.join(iter(lambda: s.recv(65536), b'')).decode())")
# wrk's summary as one JSON line: requests, errors of every kind (a non-2xx/3xx
# status included), latency percentiles in microseconds.
REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url, headers, seconds, connections, script):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
           "-s", script, url]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    return {"requests": summary["requests"], "errors": summary["errors"],
            "rps": round(summary["requests"] / summary["seconds"], 1),
            "p50_ms": round(summary["p50_us"] / 1000, 2),
            "p99_ms": round(summary["p99_us"] / 1000, 2)}


class Farm:
    def __init__(self, lab, state):
        self.lab, self.state = lab, state
        hosts = state["hosts"]
        self.lb = next(n for n in sorted(hosts) if "lb" in hosts[n]["roles"])
        self.app = next(n for n in sorted(hosts) if "app" in hosts[n]["roles"])
        self.lb_address = hosts[self.lb]["address"]
        self.app_address = hosts[self.app]["address"]

    def run(self, host, *cmd):
        out = self.lab.exec_in(self.state, host, list(cmd), check=False, capture_output=True,
                               text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"{host}: {' '.join(cmd)} failed: {out.stderr.strip()}")
        return out.stdout

    def apply_app(self, pillar=None):
        args = [self.app, "state.apply", "app"]
        if pillar:
            args.append("pillar=" + json.dumps(pillar))
        ret = self.lab.salt_json(*args, timeout=900)[self.app]
        if not isinstance(ret, dict) or any(r["result"] is not True for r in ret.values()):
            raise SystemExit(f"{self.app}: state.apply app failed: {ret}")

    def uwsgi_serving(self, processes, threads):
        """Wait until the app host's vassal runs `processes` workers of `threads`
        threads (its stats socket says) and the site answers."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            out = self.lab.exec_in(self.state, self.app, ["python3", "-c", READ_STATS],
                                   check=False, capture_output=True, text=True, timeout=30)
            try:
                workers = json.loads(out.stdout)["workers"]
            except (ValueError, KeyError):
                workers = []
            shape = [len(w["cores"]) for w in workers if w.get("status") in ("idle", "busy")]
            if shape == [threads] * processes and self.direct("/health/")[0] == 200:
                return
            time.sleep(2)
        raise SystemExit(f"{self.app}'s uWSGI did not come up with {processes}x{threads}")

    def direct(self, path):
        return fetch(self.app_address, path, tls=False, port=8000,
                     headers={"X-Forwarded-Proto": "https"})


def measure(farm, seconds, connections, script):
    lb_url = f"https://{farm.lb_address}/"
    direct_url = f"http://{farm.app_address}:8000/"
    host = {"Host": DOMAIN}
    # As haproxy hands a request to uWSGI (Django trusts it for the scheme).
    direct = {**host, "X-Forwarded-Proto": "https"}
    password = uuid.uuid4().hex
    farm.run(farm.app, "env", f"HPD_USER_PASSWORD={password}", MANAGE, "ensure_user", USER)
    try:
        session = login(farm.lb_address, USER, password)
        logged_in = {**host, "Cookie": f"sessionid={session}"}
        tune = farm.lab.salt_json(farm.app, "highperf.uwsgi_tune")[farm.app]
        farm.uwsgi_serving(tune["processes"], tune["threads"])
        for url, headers in ((lb_url, host), (direct_url, direct)):  # warm-up
            wrk(url, headers, 3, connections, script)
        r = {
            "varnish_hits": wrk(lb_url, host, seconds, connections, script),
            "uwsgi_direct": wrk(direct_url, direct, seconds, connections, script),
            "logged_in": wrk(lb_url + "account/", logged_in, seconds, connections, script),
            "tuning": {"processes": tune["processes"], "threads": tune["threads"]},
        }
        farm.apply_app({"app": {"uwsgi": {"processes": 1, "threads": 1}}})
        try:
            farm.uwsgi_serving(1, 1)
            wrk(direct_url, direct, 3, connections, script)
            r["uwsgi_defaults"] = wrk(direct_url, direct, seconds, connections, script)
        finally:
            farm.apply_app()
            farm.uwsgi_serving(tune["processes"], tune["threads"])
    finally:
        farm.run(farm.app, MANAGE, "shell", "-c",
                 "from django.contrib.auth import get_user_model; "
                 f"get_user_model().objects.filter(username='{USER}').delete()")
    return r


def ratio(a, b):
    return round(a / b, 2) if b else None


def run(spec_path, name, subnet, seconds, connections, keep):
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk, or make setup)")
    spec = labctl.load_spec(spec_path, name, subnet)
    lab = labctl.Lab(spec["name"])
    with labctl.booted(lab, spec, keep) as state, \
            tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(REPORT)
        script.flush()
        for host, ret in lab.salt_json("*", "state.apply", timeout=1800).items():
            if not isinstance(ret, dict) or any(r["result"] is not True for r in ret.values()):
                raise SystemExit(f"{host}: the highstate failed: {ret}")
        r = measure(Farm(lab, state), seconds, connections, script.name)
    failed = {k: v["errors"] for k, v in r.items() if isinstance(v, dict) and v.get("errors")}
    if failed:
        raise SystemExit(f"requests failed (errors by run): {failed}\n{json.dumps(r, indent=2)}")
    hits, direct, logged, defaults = (r[k] for k in ("varnish_hits", "uwsgi_direct",
                                                      "logged_in", "uwsgi_defaults"))
    r["ratios"] = {
        "varnish_hits_over_uwsgi_direct_rps": ratio(hits["rps"], direct["rps"]),
        "varnish_hits_over_logged_in_rps": ratio(hits["rps"], logged["rps"]),
        "uwsgi_direct_over_varnish_hits_p99": ratio(direct["p99_ms"], hits["p99_ms"]),
        "tuned_over_defaults_rps": ratio(direct["rps"], defaults["rps"]),
        "defaults_over_tuned_p99": ratio(defaults["p99_ms"], direct["p99_ms"]),
    }
    r.update({"seconds": seconds, "connections": connections,
              "load_1min_after": round(os.getloadavg()[0], 2)})
    return r


def report(r):
    print(f"wrk, {r['connections']} connections, {r['seconds']} s per run; app host uWSGI "
          f"tuned: {r['tuning']['processes']} processes x {r['tuning']['threads']} threads; "
          f"machine load {r['load_1min_after']} after")
    print(f"{'':34s} {'requests/s':>11s} {'p50 ms':>8s} {'p99 ms':>8s} {'requests':>9s}")
    for key, label in (("varnish_hits", "anonymous page via lb (hits)"),
                       ("uwsgi_direct", "anonymous page, app uWSGI direct"),
                       ("logged_in", "logged-in page via lb"),
                       ("uwsgi_defaults", "app uWSGI direct, uWSGI defaults")):
        m = r[key]
        print(f"{label:34s} {m['rps']:11.1f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} "
              f"{m['requests']:9d}")
    for key, value in r["ratios"].items():
        print(f"{key}: {value}")


def main(argv=None):
    p = bench.parser(__doc__, lab=(NAME, SUBNET), spec=True)
    p.add_argument("--seconds", type=int, default=15, help="seconds per run")
    p.add_argument("--connections", type=int, default=16, help="wrk's connections")
    return bench.main(
        p, lambda a: run(a.spec, a.name, a.subnet, a.seconds, a.connections, a.keep), report, argv)


if __name__ == "__main__":
    sys.exit(main())
