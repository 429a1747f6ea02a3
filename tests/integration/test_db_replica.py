"""The db_replica role and orch.db_failover on the lab's db (primary) and db2
(replica) hosts: db2 streams from db through its slot after the shared first
highstate; the failover drill (writes from app1 through the primary the site
finds in pillar, the primary stopped, orch.db_failover, writes back on db2, the
old primary fenced); then the way back, which leaves the lab as it found it
(db primary, db2 its replica, no db_primary.yaml) for the tests after this one."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import test_db
import yaml
from test_db import PASSWORD, hosts_with, sql

pytestmark = pytest.mark.lab

#: test_db's fixtures: the primary, and psql on app1 (and lb) for the drill.
db, psql_on = test_db.db, test_db.psql_on

REPO = Path(__file__).resolve().parents[2]
REPLICATION = yaml.safe_load((REPO / "pillar/secrets/dev/db_replica.sls").read_text())
REPLICATION_PASSWORD = REPLICATION["db_replica"]["replication_password"]
SERVICE = "postgresql@15-main"
DATA = "/var/lib/postgresql/15/main"
DRILL_LOG = "/tmp/hpd-failover-drill.log"

#: app1's write loop: an INSERT through the primary the site finds (pillar
#: hpd:peers:db, looked up again after each failure, as a reloaded site would),
#: one line per attempt: ok|fail and the time.
WRITE_LOOP = f"""
primary() {{ /opt/hpd-salt/venv/bin/salt-call --out=txt pillar.get hpd:peers:db:0 unmask=True \
    2>/dev/null | sed -n 's/^local: //p'; }}
h=$(primary)
while :; do
  if PGCONNECT_TIMEOUT=2 psql -XAtq -h "$h" -U hpd -d hpd -w \
      -c 'INSERT INTO failover_probe DEFAULT VALUES' >/dev/null 2>&1; then
    echo "ok $(date +%s.%N)"
  else
    echo "fail $(date +%s.%N)"; h=$(primary)
  fi
  sleep 0.2
done >> {DRILL_LOG}
"""


@pytest.fixture(scope="module")
def replica(lab, highstate):
    host = hosts_with(lab, "db_replica")[0]
    failed = [r["__id__"] for r in highstate[host] if r["result"] is not True]
    assert not failed, f"{host}: {failed}"
    return host


def hpd_sql(lab, host, query, check=True):
    """psql as postgres on the site's database; the CompletedProcess."""
    return lab.exec(host, "runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v",
                    "ON_ERROR_STOP=1", "-d", "hpd", "-c", query, check=check)


def wait_for(what, check, timeout=120):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(1)


def streams(lab, primary, replica):
    """Whether ``replica`` streams from ``primary`` through its own slot."""
    address = lab.state["hosts"][replica]["address"]
    slot = sql(lab, primary, "SELECT active FROM pg_replication_slots "
                             f"WHERE slot_name = 'hpd_{replica}'")
    state = sql(lab, primary, "SELECT state FROM pg_stat_replication "
                              f"WHERE client_addr = '{address}'")
    return (slot, state) == ("t", "streaming")


def apply(lab, host):
    """A highstate of ``host``; the ids of the states that changed something."""
    returned = lab.salt(host, "state.apply", timeout=900)[host]
    assert isinstance(returned, dict), returned
    failed = {r["__id__"]: r["comment"] for r in returned.values() if r["result"] is not True}
    assert not failed, failed
    return sorted(r["__id__"] for r in returned.values() if r["changes"])


def failover(lab):
    """orch.db_failover for dev; every step's result."""
    run = subprocess.run([*lab.lab.salt_cmd("salt-run"), "state.orchestrate", "orch.db_failover",
                          'pillar={"env": "dev"}', "--out=json"],
                         capture_output=True, text=True, timeout=900, check=False)
    out = json.loads(run.stdout)
    (steps,) = out["data"].values()
    assert isinstance(steps, dict), steps
    failed = {s["__id__"]: s["comment"] for s in steps.values() if s["result"] is not True}
    assert not failed and out["retcode"] == 0, failed
    return steps


def roles(lab, host):
    return lab.salt(host, "pillar.get", "hpd:roles", "unmask=True")[host]


def test_the_replica_streams_from_the_primary_and_refuses_writes(lab, db, replica):
    assert sql(lab, replica, "SELECT pg_is_in_recovery()") == "t"
    assert streams(lab, db, replica)
    hpd_sql(lab, db, "CREATE TABLE replica_probe AS SELECT 42 AS answer")
    try:
        wait_for("the table on the replica", lambda: hpd_sql(
            lab, replica, "SELECT answer FROM replica_probe", check=False).stdout.strip() == "42")
        refused = hpd_sql(lab, replica, "INSERT INTO replica_probe VALUES (1)", check=False)
        assert "read-only transaction" in refused.stderr
    finally:
        hpd_sql(lab, db, "DROP TABLE replica_probe")


def test_the_replication_password_is_in_no_world_readable_file(lab, db, replica):
    for host in (db, replica):
        found = lab.exec(host, "find", "/etc", "/var/lib/postgresql", "/var/log", "/tmp",
                         "-type", "f", "-perm", "-o+r", "-exec", "grep", "-lsF", "--",
                         REPLICATION_PASSWORD, "{}", "+", check=False)
        assert found.stdout.strip() == "", f"{host}: {found.stdout}"


def test_failover_drill(lab, db, replica, psql_on):
    app = psql_on[0]
    hpd_sql(lab, db, "CREATE TABLE failover_probe (id serial PRIMARY KEY, "
                     "at timestamptz DEFAULT now()); ALTER TABLE failover_probe OWNER TO hpd")
    lab.lab.exec_in(lab.state, app, ["sh", "-c", "umask 077; cat > /root/.pgpass"],
                    input=f"*:5432:hpd:hpd:{PASSWORD}\n", text=True, check=True,
                    capture_output=True, timeout=30)
    lab.exec(app, "rm", "-f", DRILL_LOG)
    lab.exec(app, "systemd-run", "--unit", "hpd-failover-drill", "sh", "-c", WRITE_LOOP)
    try:
        log = lambda: [line.split() for line in  # noqa: E731
                       lab.exec(app, "cat", DRILL_LOG, check=False).stdout.splitlines()]
        wait_for("writes on the primary", lambda: sum(s == "ok" for s, _ in log()) >= 10)
        stopped = time.time()
        lab.exec(db, "systemctl", "stop", SERVICE)
        failover(lab)
        wait_for("writes on the promoted replica",
                 lambda: any(s == "ok" and float(t) > stopped for s, t in log()), timeout=180)
    finally:
        lab.exec(app, "systemctl", "stop", "hpd-failover-drill")
        lab.exec(app, "rm", "-f", "/root/.pgpass")
    attempts = log()
    failed = [float(t) for s, t in attempts if s == "fail"]
    assert failed, "no write failed: the primary was not stopped"
    back = min(float(t) for s, t in attempts if s == "ok" and float(t) > failed[0])
    print(f"\nfailover drill: writes failed for {back - failed[0]:.1f} s "
          f"({len(failed)} failed attempts, {len(attempts) - len(failed)} succeeded)")

    # The replica is the primary: it takes writes and the site finds it in pillar.
    assert sql(lab, replica, "SELECT pg_is_in_recovery()") == "f"
    assert lab.salt(app, "pillar.get", "hpd:peers:db", "unmask=True")[app] == [replica]
    assert roles(lab, replica) == ["db"]
    # Every write the loop saw succeed is there.
    oks = sum(s == "ok" for s, _ in attempts)
    assert int(hpd_sql(lab, replica, "SELECT count(*) FROM failover_probe").stdout) >= oks

    # The old primary stays fenced: it does not start, and it would come up read-only.
    assert lab.exec(db, "systemctl", "start", SERVICE, check=False).returncode != 0
    assert lab.exec(db, "systemctl", "is-active", SERVICE, check=False).stdout.strip() != "active"
    assert lab.exec(db, "test", "-f", f"{DATA}/standby.signal", check=False).returncode == 0
    assert roles(lab, db) == ["db_replica"]


def test_failing_back_rebuilds_each_old_primary_as_a_replica(lab, db, replica):
    # The fenced old primary, highstated, is rebuilt as a replica of the new one.
    apply(lab, db)
    assert sql(lab, db, "SELECT pg_is_in_recovery()") == "t"
    wait_for("db streaming from db2", lambda: streams(lab, replica, db))
    # Back: a planned failover (db2 stopped cleanly first), db2 rebuilt.
    lab.exec(replica, "systemctl", "stop", SERVICE)
    failover(lab)
    apply(lab, replica)
    wait_for("db2 streaming from db", lambda: streams(lab, db, replica))
    # What db2 ran as the primary that a replica must not: pgBackRest's backups.
    timer = lab.exec(replica, "systemctl", "is-enabled", "hpd-pgbackrest-backup.timer",
                     check=False)
    assert timer.stdout.strip() == "disabled", timer.stdout
    hpd_sql(lab, db, "DROP TABLE failover_probe")
    # As before the drill: no db_primary.yaml; a highstate changes nothing.
    (lab.lab.master_dir / "inventory" / "db_primary.yaml").unlink()
    lab.salt("*", "saltutil.refresh_pillar", "wait=True")
    assert (roles(lab, db), roles(lab, replica)) == (["db"], ["db_replica"])
    assert apply(lab, db) == []
    assert apply(lab, replica) == []
