"""The db role on the lab's db host: PostgreSQL tuned by highperf.pg_tune, reloaded
or restarted by what changed, the site's user reachable from the app and worker
hosts only. Builds on the shared first highstate."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import failures, settled

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
PASSWORD = yaml.safe_load((REPO / "pillar/secrets/dev/db.sls").read_text())["db"]["password"]


@pytest.fixture(scope="module")
def db(lab, highstate):
    return settled(lab, highstate, "db")


def sql(lab, host, query):
    """One value, from psql as postgres over the local socket."""
    return lab.exec(host, "runuser", "-u", "postgres", "--", "psql", "-XAtqc", query).stdout.strip()


def apply_db(lab, host, settings=None):
    """state.apply db (with db:postgresql:settings overridden); the changed state ids."""
    args = [host, "state.apply", "db"]
    if settings:
        args.append("pillar=" + json.dumps({"db": {"postgresql": {"settings": settings}}}))
    returned = lab.salt(*args)[host]
    assert isinstance(returned, dict), returned
    failed = failures(returned.values())
    assert not failed, failed
    return sorted(r["__id__"] for r in returned.values() if r["changes"])


def test_settings_in_force_are_pg_tunes_for_the_host(lab, db):
    db_size = lab.salt(db, "highperf.pg_db_size")[db]
    assert db_size == "less_ram"  # a new cluster: a few MB against 2GB
    tuned = lab.salt(db, "highperf.pg_tune", f"db_size={db_size}")[db]
    assert tuned["shared_buffers"] != "128MB"  # not Debian's stock value
    for name, value in tuned.items():
        assert sql(lab, db, f"SHOW {name}") == str(value), name
    address = lab.state["hosts"][db]["address"]
    assert sql(lab, db, "SHOW listen_addresses") == f"localhost,{address}"
    assert sql(lab, db, "SHOW password_encryption") == "scram-sha-256"


def test_reload_only_change_reloads_and_a_restart_only_one_restarts(lab, db):
    started = sql(lab, db, "SELECT pg_postmaster_start_time()")
    try:
        changed = apply_db(lab, db, {"work_mem": "7MB"})
        assert "db-postgresql-service-restarted" not in changed
        assert sql(lab, db, "SHOW work_mem") == "7MB"
        assert sql(lab, db, "SELECT pg_postmaster_start_time()") == started

        changed = apply_db(lab, db, {"shared_buffers": "200MB"})
        assert "db-postgresql-service-restarted" in changed
        assert sql(lab, db, "SHOW shared_buffers") == "200MB"
        assert sql(lab, db, "SELECT pg_postmaster_start_time()") != started
        assert sql(lab, db, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"
    finally:
        apply_db(lab, db)
    # Back to the tuning, and settled: nothing left to do.
    tuned = lab.salt(db, "highperf.pg_tune", "db_size=less_ram")[db]
    assert sql(lab, db, "SHOW shared_buffers") == tuned["shared_buffers"]
    assert apply_db(lab, db) == []


def test_a_bad_value_is_refused_at_render_naming_the_key(lab, db):
    before = lab.exec(db, "md5sum", "/etc/postgresql/15/main/conf.d/hpd.conf").stdout
    for pillar, key in [({"db": {"max_connections": 5000}}, "db:max_connections"),
                        ({"db": {"postgresql": {"settings": {"shared_buffers": "lots"}}}},
                         "db:postgresql:settings:shared_buffers")]:
        returned = lab.salt(db, "state.apply", "db", "pillar=" + json.dumps(pillar))[db]
        assert isinstance(returned, list), f"{key}: states ran: {returned}"
        assert any(key in line for line in returned), returned
    assert lab.exec(db, "md5sum", "/etc/postgresql/15/main/conf.d/hpd.conf").stdout == before


@pytest.fixture(scope="module")
def psql_on(lab, db):
    """Debian's psql installed (from the lab's local apt cache) on app1 and lb for
    these tests only; what it brought is purged afterwards."""
    hosts = [lab.hosts_with("app")[0], lab.hosts_with("lb")[0]]
    listed = ["dpkg-query", "-W", "-f", "${Package}\\n"]
    before = {h: set(lab.exec(h, *listed).stdout.split()) for h in hosts}
    for host in hosts:
        lab.exec(host, "apt-get", "install", "-y", "-q", "postgresql-client")
    yield hosts
    for host in hosts:
        added = sorted(set(lab.exec(host, *listed).stdout.split()) - before[host])
        if added:
            lab.exec(host, "apt-get", "purge", "-y", "-q", *added)


def connect(lab, host, db):
    """psql from ``host`` to the site's database as the site's user, the password
    in a 0600 pgpass file (never on a command line); (exit code, stderr)."""
    pgpass = f"{db}:5432:hpd:hpd:{PASSWORD}\n"
    lab.lab.exec_in(lab.state, host, ["sh", "-c", "umask 077; cat > /root/.pgpass"],
                    input=pgpass, text=True, check=True, capture_output=True, timeout=30)
    try:
        out = lab.exec(host, "psql", "-XAtq", "-h", db, "-U", "hpd", "-d", "hpd",
                       "-w", "-c", "SELECT current_user", check=False)
    finally:
        lab.exec(host, "rm", "-f", "/root/.pgpass")
    return out.returncode, out.stdout.strip(), out.stderr


def test_the_site_user_connects_from_app1_and_is_refused_from_lb(lab, db, psql_on):
    app, lb = psql_on
    code, out, err = connect(lab, app, db)
    assert (code, out) == (0, "hpd"), err
    method = sql(lab, db, "SELECT substr(rolpassword, 1, 13) FROM pg_authid WHERE rolname='hpd'")
    assert method == "SCRAM-SHA-256"
    code, out, err = connect(lab, lb, db)
    assert code != 0
    assert "no pg_hba.conf entry" in err, err


def test_the_password_is_in_no_world_readable_file_on_the_db_host(lab, db):
    found = lab.exec(db, "grep", "-rlsF", "--", PASSWORD, "/etc", "/var/lib/postgresql",
                     "/var/log", "/tmp", check=False)
    assert found.returncode == 1 and found.stdout.strip() == "", found.stdout
