"""The db_replica role and orch.db_failover on the lab's db (primary) and db2
(replica) hosts: db2 streams from db through its slot after the shared first
highstate; the failover drill (the site under a light load through the lb,
logins that write, and database writes from app1; the primary stopped,
orch.db_failover, writes back on db2, the old primary fenced); then the way
back. Whatever a test leaves, the module puts the lab back as the inventory
has it (db primary with a backup of its timeline, db2 its replica, no
db_primary.yaml) for the tests after it (`fail_back`)."""

import asyncio
import datetime
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_db
import yaml
from conftest import settled
from hpdlab.util import VENV
from hpdlab.web import DOMAIN
from test_db import PASSWORD, sql
from test_edge import MANAGE
from test_secrets import secrets_in_job_cache

pytestmark = pytest.mark.lab

#: test_db's fixtures: the primary, and psql on app1 (and lb) for the drill.
db, psql_on = test_db.db, test_db.psql_on

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import loadgen  # noqa: E402

REPLICATION = yaml.safe_load((REPO / "pillar/secrets/dev/db_replica.sls").read_text())
REPLICATION_PASSWORD = REPLICATION["db_replica"]["replication_password"]
SERVICE = "postgresql@15-main"
DATA = "/var/lib/postgresql/15/main"
DRILL_LOG = "/tmp/hpd-failover-drill-{}.log"
DRILL_UNIT = "hpd-failover-drill-{}"


@dataclass(frozen=True)
class Writes:
    """One kind of write the drill's load makes, as shell: `setup` once, then
    `write` (exits 0 when the write succeeded) every interval, and
    `after_failure` after each failed one."""
    name: str
    setup: str
    write: str
    after_failure: str = ":"


def from_peers(expression):
    """Shell printing ``expression`` (Python, of ``p``: pillar hpd:peers on the
    app host, read by the Salt the lab binds into every host at the machine's
    venv path, HPD_VENV)."""
    return (f"{VENV}/bin/salt-call --out=json pillar.get hpd:peers unmask=True 2>/dev/null "
            "| python3 -c 'import json, sys; p = json.load(sys.stdin)[\"local\"]; "
            f"print({expression})'")


#: The primary the site finds (hpd:peers:db).
LOOKUP = from_peers('p["db"][0]')
#: Every database host of the environment, the primary first.
PEERS = from_peers('",".join(p["db"] + p.get("db_replica", []))')
INSERT = "-c 'INSERT INTO failover_probe DEFAULT VALUES'"

#: Writes through the site's database credentials (user hpd, its password in
#: root's 0600 pgpass on the app host) beside the site's load, the two ways a
#: client can find the primary, side by side in one drill:
#: - `repointed`: the host pillar names, looked up again after a failure, as
#:   a site with only the primary in DATABASES that orch.db_failover repoints
#:   (the site itself is repointed later still: by the app hosts' highstate);
#: - `multi-host`: every database host of the environment in one libpq
#:   connection string with target_session_attrs=read-write, as the site's
#:   DATABASES (hpd_site.django_settings): each connection finds the primary
#:   by itself (the fenced old primary never takes writes).
DB_WRITES = (
    Writes("repointed", setup=f"primary() {{ {LOOKUP}; }}; h=$(primary)",
           write=f"PGCONNECT_TIMEOUT=2 psql -XAtq -h \"$h\" -U hpd -d hpd -w {INSERT}",
           after_failure="h=$(primary)"),
    Writes("multi-host", setup=f"hosts=$({PEERS})",
           write="psql -XAtq -w \"host=$hosts dbname=hpd user=hpd connect_timeout=2 "
                 f"target_session_attrs=read-write\" {INSERT}"),
)


class WriteLoad:
    """A light write load from `host`: `writes`, one every `interval` s, in a
    transient unit; one line per attempt in its log (ok|fail and the time)."""

    def __init__(self, lab, host, writes, interval=0.2):
        self.lab, self.host, self.name = lab, host, writes.name
        self.log, self.unit = DRILL_LOG.format(writes.name), DRILL_UNIT.format(writes.name)
        self.script = (f"{writes.setup}\nwhile :; do\n"
                       f"  if {writes.write} >/dev/null 2>&1; then echo \"ok $(date +%s.%N)\"\n"
                       f"  else echo \"fail $(date +%s.%N)\"; {writes.after_failure}\n  fi\n"
                       f"  sleep {interval}\ndone >> {self.log}\n")

    def start(self):
        self.lab.exec(self.host, "rm", "-f", self.log)
        self.lab.exec(self.host, "systemd-run", "--unit", self.unit, "sh", "-c", self.script)

    def stop(self):
        self.lab.exec(self.host, "systemctl", "stop", self.unit, check=False)

    def attempts(self):
        """[(succeeded, unix time)] in order."""
        out = self.lab.exec(self.host, "cat", self.log, check=False).stdout
        return [(s == "ok", float(t)) for s, t in (line.split() for line in out.splitlines())]


class SiteLoad:
    """A light load on the site through the lb, from this machine
    (benchmarks/loadgen.py in a thread of its own): ``rate`` requests/s, a share
    ``login_share`` of them logins as ``user`` (each writes a session and the
    user's last_login), the rest the anonymous page. :meth:`attempts` as
    WriteLoad's, per kind, in seconds since the epoch."""

    LIMIT = 900  # s: the load stops by itself at the latest

    def __init__(self, address, user, password, rate=2, login_share=0.5):
        target = loadgen.Target(f"https://{DOMAIN}/", address)
        form = asyncio.run(loadgen.login_form(target, user, password))
        self.load = loadgen.Load(target, rate, form=form, login_share=login_share)
        self.thread = threading.Thread(target=asyncio.run, args=(self.load.run(self.LIMIT),))

    def start(self):
        self.started = time.time()
        self.thread.start()

    def stop(self):
        self.load.stop()
        self.thread.join(timeout=60)

    def attempts(self, kind):
        return [(not o.failed, self.started + o.sent)
                for o in list(self.load.outcomes) if o.kind == kind and not o.pending]

    def failures(self, kind):
        """{cause: count} of ``kind``'s failed requests."""
        causes = {}
        for o in list(self.load.outcomes):
            if o.kind == kind and o.failed:
                cause = o.error or f"HTTP {o.status}"
                causes[cause] = causes.get(cause, 0) + 1
        return causes


@pytest.fixture
def site_user(lab):
    """A user of the site for the drill's logins; its name and password.
    Deleted afterwards."""
    app, name, password = lab.hosts_with("app")[0], "failover-drill", uuid.uuid4().hex
    lab.exec(app, "env", f"HPD_USER_PASSWORD={password}", MANAGE, "ensure_user", name)
    yield name, password
    lab.exec(app, MANAGE, "shell", "-c", "from django.contrib.auth.models import User; "
             f"User.objects.filter(username='{name}').delete()", check=False)


def failed_windows(attempts):
    """[(first failed attempt, first success after it)] of each run of failures
    that ended; a run still failing at the end is left out."""
    windows, first = [], None
    for ok, at in attempts:
        if not ok and first is None:
            first = at
        elif ok and first is not None:
            windows.append((first, at))
            first = None
    return windows


@pytest.fixture(scope="module")
def replica(lab, highstate):
    return settled(lab, highstate, "db_replica")


@pytest.fixture(scope="module")
def farm(lab, db, replica):
    """The primary and its replica; put back as the inventory has them after
    the module, wherever a test left them."""
    yield db, replica
    fail_back(lab, db, replica)


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
    slot = sql(lab, primary, "SELECT active FROM pg_replication_slots "
                             f"WHERE slot_name = 'hpd_{replica}'")
    state = sql(lab, primary, "SELECT state FROM pg_stat_replication "
                              f"WHERE client_addr = '{lab.address(replica)}'")
    return (slot, state) == ("t", "streaming")


def in_recovery(lab, host):
    out = lab.exec(host, "runuser", "-u", "postgres", "--", "psql", "-XAtqc",
                   "SELECT pg_is_in_recovery()", check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def apply(lab, host):
    """A highstate of ``host``; the ids of the states that changed something."""
    returned = lab.salt(host, "state.apply", timeout=900)[host]
    assert isinstance(returned, dict), returned
    failed = {r["__id__"]: r["comment"] for r in returned.values() if r["result"] is not True}
    assert not failed, failed
    return sorted(r["__id__"] for r in returned.values() if r["changes"])


def failover(lab):
    """orch.db_failover for dev; every step's result."""
    run = lab.orchestrate("db_failover", {"env": "dev"}, "--out=json")
    out = json.loads(run.stdout)
    (steps,) = out["data"].values()
    assert isinstance(steps, dict), steps
    failed = {s["__id__"]: s["comment"] for s in steps.values() if s["result"] is not True}
    assert not failed and out["retcode"] == 0, failed
    return steps


def step_ends(steps, promoted):
    """[(step, unix time it ended)] of orch.db_failover's promotion, pillar
    refresh, repointing and last step (Salt gives each step's local start time
    and its duration in ms)."""
    ends = {}
    for step in steps.values():
        start = datetime.datetime.combine(datetime.date.today(),
                                          datetime.time.fromisoformat(step["start_time"]))
        ends[step["__id__"]] = start.timestamp() + step["duration"] / 1000
    return [("promoted", ends[f"db-failover-{promoted}-promoted"]),
            ("pillar refreshed", ends["db-failover-pillar-refreshed"]),
            ("app and worker hosts highstated", ends["db-failover-clients-repointed"]),
            ("orchestration done", max(ends.values()))]


def roles(lab, host):
    return lab.salt(host, "pillar.get", "hpd:roles", "unmask=True")[host]


def primary_file(lab):
    return lab.lab.master_dir / "inventory" / "db_primary.yaml"


def named_primary(lab):
    """The dev primary db_primary.yaml names, or None."""
    path = primary_file(lab)
    return (yaml.safe_load(path.read_text()) or {}).get("dev") if path.exists() else None


def fail_back(lab, db, replica):
    """Put the lab back as the inventory has it, from wherever the drill left
    it: after a failover, the fenced db rebuilt as db2's replica by a
    highstate, then a planned failover back (db2 stopped first); without one,
    db unfenced. Then no db_primary.yaml, and db2 rebuilt as db's replica."""
    if named_primary(lab) == replica:
        apply(lab, db)
        wait_for("db streaming from db2", lambda: streams(lab, replica, db))
        lab.exec(replica, "systemctl", "mask", "--now", SERVICE)  # not healed back
        failover(lab)
    elif in_recovery(lab, db) != "f":
        # Stopped or fenced, and nothing promoted: db is still the primary
        # (db2, if a test promoted it by hand, is rebuilt below).
        lab.exec(db, "systemctl", "unmask", SERVICE)
        lab.exec(db, "rm", "-f", f"{DATA}/standby.signal", f"{DATA}/hpd-rebuild")
        lab.exec(db, "systemctl", "start", SERVICE)
    if primary_file(lab).exists():
        primary_file(lab).unlink()
        lab.salt("*", "saltutil.refresh_pillar", "wait=True")
    if not streams(lab, db, replica):
        if in_recovery(lab, replica) != "t":
            lab.exec(replica, "touch", f"{DATA}/hpd-rebuild")
        apply(lab, replica)
        wait_for("db2 streaming from db", lambda: streams(lab, db, replica))


def test_the_replica_streams_from_the_primary_and_refuses_writes(lab, farm):
    db, replica = farm
    assert in_recovery(lab, replica) == "t"
    assert streams(lab, db, replica)
    hpd_sql(lab, db, "CREATE TABLE replica_probe AS SELECT 42 AS answer")
    try:
        wait_for("the table on the replica", lambda: hpd_sql(
            lab, replica, "SELECT answer FROM replica_probe", check=False).stdout.strip() == "42")
        refused = hpd_sql(lab, replica, "INSERT INTO replica_probe VALUES (1)", check=False)
        assert "read-only transaction" in refused.stderr
    finally:
        hpd_sql(lab, db, "DROP TABLE replica_probe")


def test_the_replication_password_is_in_no_world_readable_file(lab, farm):
    for host in farm:
        found = lab.exec(host, "find", "/etc", "/var/lib/postgresql", "/var/log", "/tmp",
                         "-type", "f", "-perm", "-o+r", "-exec", "grep", "-lsF", "--",
                         REPLICATION_PASSWORD, "{}", "+", check=False)
        assert found.stdout.strip() == "", f"{host}: {found.stdout}"


def test_the_primary_drops_the_slots_no_replica_uses(lab, farm):
    db, replica = farm
    slots = "SELECT string_agg(slot_name, ' ' ORDER BY slot_name) FROM pg_replication_slots"
    # A replica that left the inventory, and a slot that is not the farm's.
    sql(lab, db, "SELECT pg_create_physical_replication_slot('hpd_gone')")
    sql(lab, db, "SELECT pg_create_physical_replication_slot('other_tool')")
    try:
        returned = lab.salt(db, "state.apply", "db")[db]
        changed = {r["__id__"]: r["changes"] for r in returned.values() if r["changes"]}
        assert changed == {"db-replication-slots-managed": {"drop": ["hpd_gone"]}}
        assert sql(lab, db, slots) == f"hpd_{replica} other_tool"
        assert streams(lab, db, replica)
    finally:
        sql(lab, db, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name IN ('hpd_gone', 'other_tool')")


@pytest.mark.drill
def test_no_replica_is_promoted_while_the_primary_cannot_be_fenced(lab, farm):
    db, replica = farm
    # The old primary's minion does not answer: the fence cannot be applied.
    lab.exec(db, "systemctl", "stop", "salt-minion")
    try:
        run = lab.orchestrate("db_failover", {"env": "dev"}, "--out=json")
    finally:
        lab.exec(db, "systemctl", "start", "salt-minion")
    out = json.loads(run.stdout)
    (steps,) = out["data"].values()
    results = {s["__id__"]: s["result"] for s in steps.values()}
    assert out["retcode"] != 0 and results[f"db-failover-{db}-fenced"] is False, results
    assert results[f"db-failover-{replica}-promoted"] is False, results
    assert "One or more requisite failed" in steps[next(
        k for k in steps if f"{replica}-promoted" in k)]["comment"]
    assert in_recovery(lab, replica) == "t"
    assert named_primary(lab) is None
    deadline = time.monotonic() + 120
    while lab.salt(db, "test.ping", timeout=10).get(db) is not True:
        assert time.monotonic() < deadline, f"{db}'s minion did not come back"
        time.sleep(2)


def test_failover_drill(lab, farm, psql_on, site_user):
    db, replica = farm
    app = psql_on[0]
    hpd_sql(lab, db, "CREATE TABLE failover_probe (id serial PRIMARY KEY, "
                     "at timestamptz DEFAULT now()); ALTER TABLE failover_probe OWNER TO hpd")
    lab.lab.exec_in(lab.state, app, ["sh", "-c", "umask 077; cat > /root/.pgpass"],
                    input=f"*:5432:hpd:hpd:{PASSWORD}\n", text=True, check=True,
                    capture_output=True, timeout=30)
    # The loads' own lookups answer before the drill relies on them.
    assert lab.exec(app, "sh", "-c", LOOKUP).stdout.strip() == db
    assert lab.exec(app, "sh", "-c", PEERS).stdout.strip() == f"{db},{replica}"
    loads = [WriteLoad(lab, app, writes) for writes in DB_WRITES]
    site = SiteLoad(lab.address(lab.hosts_with("lb")[0]), *site_user)
    for load in [*loads, site]:
        load.start()
    try:
        wait_for("writes on the primary", lambda: all(
            sum(ok for ok, _ in attempts) >= 10
            for attempts in [*(load.attempts() for load in loads), site.attempts("login")]))
        stopped = time.time()
        # Down for good, as a dead host: the heal reactor starts a merely stopped
        # one again (it did, 2 s later, and took a write the replica never saw).
        lab.exec(db, "systemctl", "mask", "--now", SERVICE)
        steps = failover(lab)
        done = time.time()
        wait_for("writes on the promoted replica", lambda: all(
            any(ok and at > stopped for ok, at in attempts)
            for attempts in [*(load.attempts() for load in loads), site.attempts("login")]),
            timeout=180)
        time.sleep(5)  # writes keep succeeding after the orchestration's last step
    finally:
        for load in [*loads, site]:
            load.stop()
        lab.exec(app, "rm", "-f", "/root/.pgpass")
    print("\nfailover drill, seconds after the primary stopped: " + ", ".join(
        f"{name} {at - stopped:.1f}" for name, at in step_ends(steps, replica)))
    measured = [(f"database writes from {app}, {load.name}", load.attempts(), None)
                for load in loads]
    measured += [(f"site {name} through the lb", site.attempts(kind), site.failures(kind))
                 for kind, name in (("login", "logins"), ("anonymous", "anonymous pages"))]
    for name, attempts, causes in measured:
        windows = failed_windows(attempts)
        failed = sum(not ok for ok, _ in attempts)
        print(f"  {name}: failed for {sum(b - a for a, b in windows):.1f} s in "
              f"{len(windows)} window(s) ("
              + ", ".join(f"{a - stopped:.1f}-{b - stopped:.1f}" for a, b in windows)
              + f"), {failed} of {len(attempts)} failed"
              + (f": {causes}" if causes else ""))
        # Writes succeed again after the orchestration, to the end.
        assert any(ok for ok, at in attempts if at > done), f"{name}: none after the failover"
        assert attempts[-1][0], f"{name}: the last one failed"
    for name, attempts, _ in measured[:-1]:  # the anonymous page may come from Varnish
        assert failed_windows(attempts), f"{name}: no write failed: the primary was not stopped"

    # The orchestration put no secret in the master's job cache.
    assert secrets_in_job_cache(lab, since=stopped) == []
    # The replica is the primary: it takes writes and the site finds it in pillar.
    assert in_recovery(lab, replica) == "f"
    # Its highstate as the primary changed no setting that waits for a restart.
    assert sql(lab, replica, "SELECT string_agg(name, ' ') FROM pg_settings "
                             "WHERE pending_restart") == ""
    assert lab.salt(app, "pillar.get", "hpd:peers:db", "unmask=True")[app] == [replica]
    assert roles(lab, replica) == ["db"]
    # Every write the loads saw succeed is there, and the site's last login.
    oks = sum(ok for load in loads for ok, _ in load.attempts())
    assert int(hpd_sql(lab, replica, "SELECT count(*) FROM failover_probe").stdout) >= oks
    last_login = hpd_sql(lab, replica, "SELECT extract(epoch FROM last_login) FROM auth_user "
                                       f"WHERE username = '{site_user[0]}'").stdout
    assert float(last_login) > done
    # Its own repository holds a backup of its timeline: restores reach the
    # writes it takes from now on.
    assert lab.salt(replica, "hpd_backup.pitr_base_current")[replica] is True

    # The old primary stays fenced: it does not start, and it would come up read-only.
    assert lab.exec(db, "systemctl", "start", SERVICE, check=False).returncode != 0
    assert lab.exec(db, "systemctl", "is-active", SERVICE, check=False).stdout.strip() != "active"
    assert lab.exec(db, "test", "-f", f"{DATA}/standby.signal", check=False).returncode == 0
    assert roles(lab, db) == ["db_replica"]


def test_failing_back_rebuilds_each_old_primary_as_a_replica(lab, farm):
    db, replica = farm
    assert named_primary(lab) == replica, "needs test_failover_drill's failover"
    fail_back(lab, db, replica)
    # What db2 ran as the primary that a replica must not: pgBackRest's backups.
    timer = lab.exec(replica, "systemctl", "is-enabled", "hpd-pgbackrest-backup.timer",
                     check=False)
    assert timer.stdout.strip() == "disabled", timer.stdout
    hpd_sql(lab, db, "DROP TABLE failover_probe")
    # As before the drill: db's repository holds a backup of its new timeline
    # (the WAL db2 wrote as the primary is not in it), no slot but db2's, and a
    # highstate changes nothing.
    assert lab.salt(db, "hpd_backup.pitr_base_current")[db] is True
    assert sql(lab, db, "SELECT string_agg(slot_name, ' ') FROM pg_replication_slots") \
        == f"hpd_{replica}"
    assert (roles(lab, db), roles(lab, replica)) == (["db"], ["db_replica"])
    assert apply(lab, db) == []
    assert apply(lab, replica) == []
