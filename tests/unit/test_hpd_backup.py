"""Unit tests for the pure parts of ``_modules/hpd_backup.py``: dump names,
retention, row-count comparison, anonymization SQL."""

import datetime
import pathlib
import re

import pytest
from conftest import load_source
from salt.exceptions import SaltInvocationError
from test_hpd import REPO, hpd_module, load

MODULE_PATH = pathlib.Path(__file__).resolve().parents[2] / "_modules" / "hpd_backup.py"
UTC = datetime.UTC


@pytest.fixture(scope="module")
def hb():
    return load_source(MODULE_PATH)


def at(days_ago, now=datetime.datetime(2026, 11, 30, 3, 0, tzinfo=UTC)):
    return now - datetime.timedelta(days=days_ago)


def test_dump_name_round_trips_and_foreign_names_are_not_dumps(hb):
    when = datetime.datetime(2026, 11, 30, 3, 4, 5, tzinfo=UTC)
    name = hb.dump_name("hpd", when)
    assert name == "hpd-20261130T030405Z.dump"
    assert hb.dump_time(name, "hpd") == when
    for other in ["hpd_old-20261130T030405Z.dump", "hpd-20261130T030405Z.dump.partial",
                  ".hpd-20261130T030405Z.dump.partial", "hpd-yesterday.dump", "notes.txt"]:
        assert hb.dump_time(other, "hpd") is None, other


def test_expired_selects_only_that_databases_dumps_older_than_the_retention(hb):
    now = at(0)
    names = [hb.dump_name("hpd", at(d)) for d in (0, 1, 13.9, 14.1, 30)]
    names += [hb.dump_name("other", at(30)), "notes.txt", "anonymized"]
    assert hb.expired(names, "hpd", now, 14) == sorted(
        [hb.dump_name("hpd", at(14.1)), hb.dump_name("hpd", at(30))])
    assert hb.expired(names, "hpd", now, 60) == []


def test_latest_is_the_newest_dump_of_the_database(hb):
    names = [hb.dump_name("hpd", at(d)) for d in (3, 0.5, 7)] + [hb.dump_name("other", at(0))]
    assert hb.latest(names, "hpd") == hb.dump_name("hpd", at(0.5))
    assert hb.latest(["notes.txt"], "hpd") is None


def test_parse_counts_reads_psqls_unaligned_output(hb):
    assert hb.parse_counts("public.a\t3\npublic.b\t0\n\n") == {"public.a": 3, "public.b": 0}
    assert hb.parse_counts("") == {}


def test_count_mismatches_names_every_differing_or_missing_table(hb):
    source = {"public.a": 3, "public.b": 5, "public.c": 1}
    assert hb.count_mismatches(source, dict(source)) == []
    restored = {"public.a": 3, "public.b": 4, "public.d": 2}
    assert hb.count_mismatches(source, restored) == [
        "public.b: 5 rows in the source, 4 in the dump",
        "public.c: 1 rows in the source, missing from the dump",
        "public.d: in the dump (2 rows), not in the source",
    ]


def test_anonymize_sql_one_update_per_table_with_each_method(hb):
    sql = hb.anonymize_sql({"auth_user": {"email": "email", "username": "hash",
                                          "last_name": "redact", "phone": "null"},
                            "orders": {"address": "redact"}}, "s4lt")
    assert sql.splitlines() == [
        'UPDATE "auth_user" SET "email" = \'user-\' || md5(\'s4lt\' || "email"::text)'
        ' || \'@example.invalid\', "last_name" = CASE WHEN "last_name" IS NULL THEN NULL'
        ' ELSE \'redacted\' END, "phone" = NULL, "username" = md5(\'s4lt\' || "username"::text);',
        'UPDATE "orders" SET "address" = CASE WHEN "address" IS NULL THEN NULL'
        ' ELSE \'redacted\' END;',
    ]


def test_anonymize_sql_quotes_the_salt_and_refuses_an_unknown_method(hb):
    assert "md5('it''s' ||" in hb.anonymize_sql({"t": {"c": "hash"}}, "it's")
    with pytest.raises(ValueError, match=r"backup:anonymize:t:c: unknown method 'rot13'"):
        hb.anonymize_sql({"t": {"c": "rot13"}}, "s")


# Media snapshots (restic): retention options, snapshot choice, restore paths.

def test_forget_args_follow_the_policy_in_a_fixed_order_leaving_zero_periods_out(hb):
    assert hb.forget_args({"monthly": 12, "daily": 14, "last": 3, "weekly": 0}) == [
        "--keep-last", "3", "--keep-daily", "14", "--keep-monthly", "12"]
    assert hb.forget_args({"yearly": 2, "hourly": 1}) == [
        "--keep-hourly", "1", "--keep-yearly", "2"]


@pytest.mark.parametrize("keep, message", [
    ({"daily": 0, "weekly": 0}, "keeps no snapshot"),
    ({}, "keeps no snapshot"),
    ({"daily": 3, "fortnightly": 1}, "unknown periods ['fortnightly']"),
])
def test_forget_args_refuse_a_policy_that_keeps_nothing_or_names_no_period(hb, keep, message):
    with pytest.raises(ValueError, match=r"backup:media:keep: .*" + re.escape(message)):
        hb.forget_args(keep)


def test_snapshot_time_reads_restic_nanoseconds_and_zones(hb):
    assert hb.snapshot_time("2026-11-30T06:08:04.619114462Z") == datetime.datetime(
        2026, 11, 30, 6, 8, 4, 619114, tzinfo=UTC)
    assert hb.snapshot_time("2026-11-30T07:08:04+01:00") == datetime.datetime(
        2026, 11, 30, 6, 8, 4, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a snapshot time"):
        hb.snapshot_time("yesterday")


SNAPSHOTS = [  # restic's order is not promised: shuffled on purpose
    {"id": "bbbb2222", "time": "2026-11-16T03:00:00.5Z"},
    {"id": "cccc3333", "time": "2026-11-30T03:00:00Z"},
    {"id": "aaaa1111", "time": "2026-11-01T03:00:00.123456789Z"},
    {"id": "aaab4444", "time": "2026-10-01T03:00:00Z"},
]


@pytest.mark.parametrize("spec, chosen", [
    ("latest", "cccc3333"),
    ("before=2026-11-20T00:00:00+00:00", "bbbb2222"),
    ("before=2026-11-16T03:00:00.5+00:00", "aaaa1111"),  # strictly before
    ("before=2026-11-16T04:00:00+01:00", "aaaa1111"),  # zones compared as times
    ("bbbb", "bbbb2222"),
    ("aaaa1111", "aaaa1111"),
])
def test_pick_snapshot_by_latest_time_or_id(hb, spec, chosen):
    assert hb.pick_snapshot(SNAPSHOTS, spec)["id"] == chosen


@pytest.mark.parametrize("snapshots, spec, message", [
    ([], "latest", "no such snapshot"),
    (SNAPSHOTS, "before=2026-09-01T00:00:00+00:00", "no such snapshot"),
    (SNAPSHOTS, "before=2026-11-20", "give the time zone"),
    (SNAPSHOTS, "before=last tuesday", "Invalid isoformat"),
    (SNAPSHOTS, "aaa", "more than one snapshot"),
    (SNAPSHOTS, "dddd", "no such snapshot"),
    (SNAPSHOTS, "", "no such snapshot"),
])
def test_pick_snapshot_says_why_none_is_chosen(hb, snapshots, spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        hb.pick_snapshot(snapshots, spec)


@pytest.mark.parametrize("path, relative", [
    ("up/a.jpg", "up/a.jpg"), ("/up//./a.jpg", "up/a.jpg"), ("up/", "up")])
def test_media_path_normalizes_paths_inside_the_media_directory(hb, path, relative):
    assert hb.media_path(path) == relative


@pytest.mark.parametrize("path", ["", "/", ".", "../etc/passwd", "up/../../etc"])
def test_media_path_refuses_paths_that_leave_it(hb, path):
    with pytest.raises(ValueError, match="not a path inside the media directory"):
        hb.media_path(path)


@pytest.mark.parametrize(("pillar", "key"), [
    ({"media": {"keep": {"daily": "many"}}}, "backup:media:keep:daily"),
    ({"media": {"keep": {"weekly": -1}}}, "backup:media:keep:weekly"),
    ({"media": {"keep": {"fortnightly": 1}}}, "backup:media:keep"),
    ({"media": {"repo": "relative/repo"}}, "backup:media:repo"),
    ({"media": {"schedule": "daily; rm -rf /"}}, "backup:media:schedule"),
    ({"media": {"restic_password": "short"}}, "backup:media:restic_password"),
])
def test_bad_media_values_are_refused_naming_the_key(pillar, key):
    with pytest.raises(SaltInvocationError, match=f"{key}: "):
        hpd_module().check(load(REPO / "pillar" / "backup" / "schema.yaml"), pillar, "backup",
                           "production")


def info(*starts):
    """pgBackRest's ``info --output=json`` for one stanza with backups that
    started at these WAL files (fields a restore does not need left out)."""
    return [{"name": "hpd", "backup": [{"archive": {"start": s, "stop": s}, "type": "full"}
                                       for s in starts]}]


@pytest.mark.parametrize("backups, timeline, current", [
    ((), 1, False),                                                  # a new cluster
    (("000000010000000000000002",), 1, True),
    (("000000010000000000000002",), 3, False),                       # promoted / restored since
    (("000000010000000000000002", "000000030000000000000011"), 3, True),
    (("0000000A0000000000000002",), 10, True),                       # timelines are hex
    (("000000010000000000000002",), 16, False),
])
def test_a_base_is_current_only_with_a_backup_of_the_running_timeline(hb, backups, timeline,
                                                                      current):
    assert hb.has_base_on_timeline(info(*backups), timeline) is current


def test_a_stanza_without_backups_has_no_base(hb):
    assert hb.has_base_on_timeline([{"name": "hpd", "status": {"code": 2}}], 1) is False


@pytest.mark.parametrize("name", ["", "00000001", "00000001000000000000000g",
                                  "000000010000000000000002.partial", None])
def test_a_wal_timeline_needs_a_wal_file_name(hb, name):
    with pytest.raises(hb.CommandExecutionError, match="not a WAL file name"):
        hb.wal_timeline(name)
