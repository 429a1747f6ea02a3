"""Unit tests for the pure parts of ``_modules/hpd_backup.py``: dump names,
retention, row-count comparison, anonymization SQL."""

import datetime
import importlib.util
import pathlib

import pytest

MODULE_PATH = pathlib.Path(__file__).resolve().parents[2] / "_modules" / "hpd_backup.py"
UTC = datetime.UTC


@pytest.fixture(scope="module")
def hb():
    spec = importlib.util.spec_from_file_location("hpd_backup_under_test", MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
