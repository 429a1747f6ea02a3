"""_states/hpd_db.py: the site's database user, its password read on the minion and
never in what the state returns or on a command line."""

from pathlib import Path

import pytest
from conftest import load_source
from test_hpd import hpd_module

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "a-real-database-password-0123456789"


@pytest.fixture
def state():
    module = load_source(REPO / "_states" / "hpd_db.py")
    module.__env__ = "base"
    module.__opts__ = {"test": False}
    module.__salt__ = {"hpd.settings": lambda role, saltenv, unmask=False: (
        {"password": PASSWORD if unmask else "**********"})}
    return module


def test_postgresql_stores_a_scram_verifier_and_never_echoes_the_password(state):
    calls = []

    def present(name, **kwargs):
        calls.append((name, kwargs))
        return {"name": name, "result": True, "changes": {name: {"password": True}},
                "comment": f"psql -c ALTER ROLE {name} PASSWORD '{kwargs['password']}'"}

    state.__states__ = {"postgres_user.present": present}
    ret = state.user_present("hpd", secret="db:password")
    assert calls == [("hpd", {"password": PASSWORD, "encrypted": "scram-sha-256",
                              "user": "postgres"})]
    assert PASSWORD not in repr(ret)
    assert ret["result"] is True and "**********" in ret["comment"]


def test_an_unset_secret_fails_naming_it(state):
    state.__salt__["hpd.settings"] = lambda role, saltenv, unmask=False: {"password": None}
    ret = state.user_present("hpd", secret="db:password")
    assert ret["result"] is False and ret["comment"] == "pillar db:password is not set"


def test_mysql_sends_the_password_on_stdin_only(state):
    runs = []

    def run_all(cmd, stdin=None, **kwargs):
        runs.append((cmd, stdin))
        if "SELECT Host FROM mysql.user" in stdin:  # users of that name: a stale host
            return {"retcode": 0, "stdout": "10.0.0.9\n", "stderr": ""}
        if "information_schema" in stdin:  # what is missing: everything
            return {"retcode": 0, "stdout": "database\npassword@10.0.0.21\n", "stderr": ""}
        return {"retcode": 0, "stdout": "", "stderr": ""}

    state.__salt__["cmd.run_all"] = run_all
    ret = state.user_present("hpd", secret="db:password", engine="mysql",
                             hosts=["10.0.0.21"], database="hpd")
    assert ret["result"] is True
    assert ret["changes"] == {"missing": ["database", "password@10.0.0.21"],
                              "drop": ["10.0.0.9"]}
    assert all(PASSWORD not in " ".join(cmd) for cmd, _ in runs)
    applied = runs[-1][1]
    assert f"ALTER USER 'hpd'@'10.0.0.21' IDENTIFIED BY '{PASSWORD}';" in applied
    assert "DROP USER 'hpd'@'10.0.0.9';" in applied
    assert PASSWORD not in repr(ret)


def test_mysql_with_nothing_missing_changes_nothing(state):
    state.__salt__["cmd.run_all"] = lambda cmd, stdin=None, **kw: {
        "retcode": 0, "stdout": "10.0.0.21\n" if "SELECT Host" in stdin else "", "stderr": ""}
    ret = state.user_present("hpd", secret="db:password", engine="mysql",
                             hosts=["10.0.0.21"], database="hpd")
    assert ret["result"] is True and ret["changes"] == {}


@pytest.fixture
def psql(state):
    """The primary's slots as a fake psql sees them; every SQL statement run."""
    slots, statements = {"hpd_db2": "t", "hpd_gone": "f", "hpd_old": "t", "barman": "f"}, []

    def run_all(cmd, runas=None, **kwargs):
        assert runas == "postgres" and cmd[:2] == ["psql", "-XAtq"]
        statements.append(cmd[-1])
        rows = "\n".join(f"{s}|{a}" for s, a in slots.items())
        return {"retcode": 0, "stdout": rows if "FROM pg_replication_slots" in cmd[-1] else "",
                "stderr": ""}

    state.__salt__.update({"cmd.run_all": run_all,
                           "hpd.pg_slot_changes": hpd_module().pg_slot_changes})
    return statements


def test_slots_made_for_new_replicas_and_dropped_for_gone_ones(state, psql):
    ret = state.slots_managed("slots", replicas=["db2", "db3"])
    assert ret["result"] is True
    assert ret["changes"] == {"create": ["hpd_db3"], "drop": ["hpd_gone"]}
    assert psql[1:] == ["SELECT pg_create_physical_replication_slot('hpd_db3')",
                        "SELECT pg_drop_replication_slot('hpd_gone')"]
    assert "in use, left: hpd_old" in ret["comment"]


def test_slots_in_test_mode_change_nothing(state, psql):
    state.__opts__["test"] = True
    ret = state.slots_managed("slots", replicas=["db2"])
    assert ret["result"] is None and ret["changes"] == {"drop": ["hpd_gone"]}
    assert len(psql) == 1  # the listing only


def test_slots_fail_with_psqls_error(state):
    state.__salt__["cmd.run_all"] = lambda cmd, **kwargs: {
        "retcode": 2, "stdout": "", "stderr": "could not connect to server"}
    ret = state.slots_managed("slots", replicas=["db2"])
    assert ret["result"] is False and "could not connect" in ret["comment"]
