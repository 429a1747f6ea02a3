"""The backup role on the lab's backup host: the timer's dump pulled from the db
host as a read-only user, kept backup:keep_days; the restore test
(orch.restore_test) passing on a good dump and failing after the source
changed; the anonymized snapshot free of the original values. Builds on the
shared first highstate."""

import datetime
import time

import pytest
from conftest import settled
from test_secrets import secrets_in_job_cache

pytestmark = pytest.mark.lab

DIR = "/var/backups/hpd"


@pytest.fixture(scope="module")
def db(lab, highstate):
    return settled(lab, highstate, "db")


@pytest.fixture(scope="module")
def backup(lab, highstate):
    return settled(lab, highstate, "backup")


def sql(lab, host, query):
    """psql as postgres on the site's database over the local socket."""
    return lab.exec(host, "runuser", "-u", "postgres", "--", "psql", "-XAtq",
                    "-v", "ON_ERROR_STOP=1", "-d", "hpd", "-c", query).stdout.strip()


def dumps(lab, backup):
    return set(lab.exec(backup, "ls", DIR).stdout.split())


def written(lab, backup):
    """{(dump, modification time)}: a dump named like an earlier one of the same
    second (names have second resolution) still shows as written again."""
    out = lab.exec(backup, "find", DIR, "-maxdepth", "1", "-name", "*.dump",
                   "-printf", r"%f %T@\n").stdout
    return {tuple(line.split()) for line in out.splitlines()}


def run_dump(lab, backup):
    """The timer's service, run now; the dump it wrote."""
    before = written(lab, backup)
    lab.exec(backup, "systemctl", "start", "hpd-backup-dump.service")
    ((added, _),) = written(lab, backup) - before
    return added


@pytest.fixture
def table(lab, db):
    """A table of 50 rows in the site's database, dropped afterwards."""
    sql(lab, db, "CREATE TABLE backup_probe AS SELECT generate_series(1, 50) AS id")
    yield "backup_probe"
    sql(lab, db, "DROP TABLE backup_probe")


def test_the_timer_pulls_a_dump_and_older_ones_expire(lab, db, backup, table):
    assert lab.exec(backup, "systemctl", "is-active", "hpd-backup-dump.timer").stdout.strip() \
        == "active"
    now = datetime.datetime.now(datetime.UTC)
    old, kept = (f"hpd-{(now - datetime.timedelta(days=d)):%Y%m%dT%H%M%SZ}.dump"
                 for d in (15, 13))
    lab.exec(backup, "touch", f"{DIR}/{old}", f"{DIR}/{kept}")
    try:
        added = run_dump(lab, backup)
        listed = lab.exec(backup, "pg_restore", "--list", f"{DIR}/{added}").stdout
        assert "TABLE DATA public backup_probe" in listed
        names = dumps(lab, backup)
        assert old not in names and kept in names
    finally:
        lab.exec(backup, "rm", "-f", f"{DIR}/{old}", f"{DIR}/{kept}")
    # The dumping user reads and cannot write.
    passfile = ["env", "PGPASSFILE=/etc/hpd/backup.pgpass", "psql", "-XAtqw", "-h", db,
                "-U", "hpd_backup", "-d", "hpd", "-c"]
    assert lab.exec(backup, *passfile, f"SELECT count(*) FROM {table}").stdout.strip() == "50"
    refused = lab.exec(backup, *passfile, f"DELETE FROM {table}", check=False)
    assert refused.returncode != 0 and "permission denied" in refused.stderr


def restore_test(lab):
    """salt-run state.orchestrate orch.restore_test: (exit code, output)."""
    out = lab.orchestrate("restore_test", timeout=300)
    return out.returncode, out.stdout


def test_the_restore_test_passes_on_a_good_dump_and_fails_when_rows_differ(lab, db, backup,
                                                                            table):
    run_dump(lab, backup)
    code, out = restore_test(lab)
    assert code == 0 and "Result: True" in out, out
    sql(lab, db, f"INSERT INTO {table} VALUES (51)")
    code, out = restore_test(lab)
    assert code != 0 and "Result: False" in out, out
    assert f"public.{table}: 51 rows in the source, 50 in the dump" in out


PII = [("alice-7f3e", "alice.7f3e@corp.test", "Alicia7f3e", "Zyxw7f3e"),
       ("bob-91ac", "bob.91ac@corp.test", "Roberto91ac", "Qwert91ac")]


def test_the_anonymized_snapshot_holds_none_of_the_original_values(lab, db, backup):
    """pillar backup:anonymize's default rules, on Django's auth_user."""
    existed = sql(lab, db, "SELECT to_regclass('auth_user') IS NOT NULL") == "t"
    sql(lab, db, "CREATE TABLE IF NOT EXISTS auth_user (id serial PRIMARY KEY, password "
        "varchar(128) NOT NULL, last_login timestamptz, is_superuser boolean NOT NULL, "
        "username varchar(150) UNIQUE NOT NULL, first_name varchar(150) NOT NULL, "
        "last_name varchar(150) NOT NULL, email varchar(254) NOT NULL, is_staff boolean "
        "NOT NULL, is_active boolean NOT NULL, date_joined timestamptz NOT NULL)")
    values = ", ".join(f"('pbkdf2_sha256$600000${u}salt', false, '{u}', '{f}', '{la}', "
                       f"'{e}', false, true, now())" for u, e, f, la in PII)
    sql(lab, db, "INSERT INTO auth_user (password, is_superuser, username, first_name, "
        f"last_name, email, is_staff, is_active, date_joined) VALUES {values}")
    try:
        run_dump(lab, backup)
        snapshot = lab.salt(backup, "hpd_backup.anonymized_snapshot")[backup]["snapshot"]
        text = lab.exec(backup, "pg_restore", "--data-only", "-f", "-", snapshot).stdout
    finally:
        sql(lab, db, "DROP TABLE auth_user" if not existed else
            "DELETE FROM auth_user WHERE username IN ("
            + ", ".join(f"'{u}'" for u, *_ in PII) + ")")
        lab.exec(backup, "rm", "-rf", f"{DIR}/anonymized")
    assert text.count("@example.invalid") >= len(PII)  # the rows are there
    for value in [v for row in PII for v in row]:
        assert value not in text


@pytest.mark.drill
def test_a_point_in_time_restore_brings_deleted_rows_back(lab, db, backup):
    assert "cipher: aes-256-cbc" in lab.exec(
        db, "runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=hpd", "info").stdout
    sql(lab, db, "CREATE TABLE pitr_probe AS SELECT generate_series(1, 30) AS id")
    try:
        before = sql(lab, db, "SELECT clock_timestamp()")
        time.sleep(1)
        sql(lab, db, "DELETE FROM pitr_probe")
        started = time.time()
        run = lab.orchestrate("pitr_restore", {"env": "dev", "target": before})
        assert run.returncode == 0, run.stdout + run.stderr
        assert secrets_in_job_cache(lab, since=started) == []
        assert sql(lab, db, "SELECT count(*) FROM pitr_probe") == "30"
        assert sql(lab, db, "SELECT pg_is_in_recovery()") == "f"
    finally:
        sql(lab, db, "DROP TABLE IF EXISTS pitr_probe")
    # Whole again: the new timeline has its base backup, the db role has
    # nothing left to do, and every replica was rebuilt and streams through
    # its slot.
    assert lab.salt(db, "hpd_backup.pitr_base_current")[db] is True
    returned = lab.salt(db, "state.apply", "db")[db]
    assert [r["__id__"] for r in returned.values() if r["changes"] or not r["result"]] == []
    replicas = lab.hosts_with("db_replica")
    streaming = sql(lab, db, "SELECT count(*) FROM pg_replication_slots s JOIN "
                    "pg_stat_replication r ON r.pid = s.active_pid WHERE r.state = 'streaming'")
    assert streaming == str(len(replicas))
