#!/usr/bin/env python
"""
What the db role's tuning buys: pgbench on a lab db host (2048 MiB, 2 CPUs, as the
farm's `db`), with Debian's stock postgresql.conf and then with the role's tuned
one (highperf.pg_tune under pillar), same host, same data, same run.

    /opt/hpd-salt/venv/bin/python benchmarks/pg_tuning.py [--scale N] [--seconds S]
        [--clients C] [--keep] [--json]

The data (pgbench scale 30 by default, about 450 MB) is larger than Debian's
default shared_buffers (128MB) and within the host's RAM. For each
configuration: restart PostgreSQL, warm up, then a read-only run (pgbench -S)
and a read-write run (TPC-B-like); TPS and p99 latency from pgbench's
per-transaction log; then the tuned / stock ratios (TPS: higher is better;
p99: lower is better).

Runs on a lab of its own (`hpdpg`, 10.99.0.0/24, one host), taken down
afterwards unless it was up before or `--keep`.
"""

import os
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))

import common  # noqa: E402

import labctl  # noqa: E402

NAME, SUBNET = "hpdpg", "10.99.0.0/24"
HOST = "db"
SPEC = {"hosts": {HOST: {"address": 40, "roles": ["db"], "env": "dev",
                         "memory": 2048, "cpus": 2}}}
TUNED = "/etc/postgresql/15/main/conf.d/hpd.conf"
STOCK = "/root/hpd.conf.benchmark-aside"
SERVICE = "postgresql@15-main"
LOG_DIR = "/var/lib/postgresql/pgbench-log"


def p99_ms(lines):
    """p99 of the latencies (3rd field, microseconds) of pgbench's transaction log."""
    latencies = sorted(int(line.split()[2]) for line in lines if line.strip())
    if not latencies:
        raise SystemExit("pgbench logged no transaction")
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000.0


class Bench:
    def __init__(self, lab, state):
        self.lab, self.state = lab, state

    def run(self, *cmd, postgres=False, timeout=1800):
        if postgres:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        out = self.lab.exec_in(self.state, HOST, ["sh", "-c", 'cd / && exec "$@"', "-", *cmd],
                               check=False, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
        return out.stdout

    def restart(self):
        self.run("systemctl", "restart", SERVICE)
        return self.run("psql", "-XAtc", "SHOW shared_buffers", postgres=True).strip()

    def pgbench(self, seconds, clients, read_only):
        self.run("rm", "-rf", LOG_DIR)
        self.run("install", "-d", "-o", "postgres", LOG_DIR)
        args = ["pgbench", "-n", "-T", str(seconds), "-c", str(clients), "-j", "2",
                "-l", "--log-prefix", f"{LOG_DIR}/tx"]
        if read_only:
            args.append("-S")
        out = self.run(*args, "bench", postgres=True)
        tps = next(float(line.split("=")[1].split()[0]) for line in out.splitlines()
                   if line.startswith("tps ="))
        lines = self.run("sh", "-c", f"cat {LOG_DIR}/tx.*").splitlines()
        return {"tps": round(tps, 1), "p99_ms": round(p99_ms(lines), 2),
                "transactions": len(lines)}

    def measure(self, seconds, clients):
        shared_buffers = self.restart()
        self.pgbench(max(5, seconds // 3), clients, read_only=True)  # warm-up
        return {"shared_buffers": shared_buffers,
                "read_only": self.pgbench(seconds, clients, read_only=True),
                "read_write": self.pgbench(seconds, clients, read_only=False)}


def bench(scale, seconds, clients, keep):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as spec_file:
        yaml.safe_dump({"name": NAME, "subnet": SUBNET, **SPEC}, spec_file)
    try:
        spec = labctl.load_spec(spec_file.name, NAME, SUBNET)
    finally:
        os.unlink(spec_file.name)
    lab = labctl.Lab(NAME)
    with labctl.booted(lab, spec, keep) as state:
        ret = lab.salt_json(HOST, "state.apply", timeout=1800)[HOST]
        if not isinstance(ret, dict) or any(r["result"] is not True for r in ret.values()):
            raise SystemExit(f"the db host's highstate failed: {ret}")
        b = Bench(lab, state)
        b.run("psql", "-XAtqc", "DROP DATABASE IF EXISTS bench", postgres=True)
        b.run("createdb", "bench", postgres=True)
        b.run("pgbench", "-i", "-q", "-s", str(scale), "bench", postgres=True)
        size = b.run("psql", "-XAtc", "SELECT pg_size_pretty(pg_database_size('bench'))",
                     postgres=True).strip()
        b.run("mv", TUNED, STOCK)
        try:
            stock = b.measure(seconds, clients)
        finally:
            b.run("mv", STOCK, TUNED)
        tuned = b.measure(seconds, clients)
        tuning = b.run("cat", TUNED)
        b.run("psql", "-XAtqc", "DROP DATABASE bench", postgres=True)
        b.run("rm", "-rf", LOG_DIR)
    ratios = {kind: {"tps": round(tuned[kind]["tps"] / stock[kind]["tps"], 3),
                     "p99": round(tuned[kind]["p99_ms"] / stock[kind]["p99_ms"], 3)}
              for kind in ("read_only", "read_write")}
    return {"scale": scale, "data": size, "seconds": seconds, "clients": clients,
            "stock": stock, "tuned": tuned, "tuned_over_stock": ratios,
            "tuning": [line for line in tuning.splitlines() if not line.startswith("#")]}


def show(r):
    print(f"pgbench scale {r['scale']} ({r['data']}), {r['clients']} clients, "
          f"{r['seconds']} s per run, db host 2048 MiB / 2 CPUs")
    print(f"{'':22s} {'stock':>18s} {'tuned':>18s} {'tuned/stock':>12s}")
    for kind in ("read_only", "read_write"):
        s, t, q = r["stock"][kind], r["tuned"][kind], r["tuned_over_stock"][kind]
        print(f"{kind + ' TPS':22s} {s['tps']:18.1f} {t['tps']:18.1f} {q['tps']:12.3f}")
        print(f"{kind + ' p99 ms':22s} {s['p99_ms']:18.2f} {t['p99_ms']:18.2f} {q['p99']:12.3f}")
    print(f"shared_buffers: stock {r['stock']['shared_buffers']}, "
          f"tuned {r['tuned']['shared_buffers']}")
    print("tuning: " + "; ".join(r["tuning"]))


def main(argv=None):
    parser = common.parser(__doc__)
    parser.add_argument("--scale", type=int, default=30, help="pgbench scale (15MB each)")
    parser.add_argument("--seconds", type=int, default=30, help="seconds per run")
    parser.add_argument("--clients", type=int, default=8, help="pgbench clients")
    args = parser.parse_args(argv)
    return common.report(
        args, lambda: bench(args.scale, args.seconds, args.clients, args.keep), show)


if __name__ == "__main__":
    sys.exit(main())
