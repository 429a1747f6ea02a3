"""The db role with db:engine mysql (Debian's MariaDB 10.11), in a one-host lab of
its own (`hpdm`): the host is both db and app, so the site's user is granted at
its own private address. Only common and db are applied: the example site runs on
PostgreSQL only (its wheelhouse has no MySQL driver; the app role refuses
db:engine mysql). Taken down at the end unless HPD_TEST_KEEP_LAB=1."""

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import LabHandle, failures

pytestmark = [pytest.mark.lab, pytest.mark.drill]

REPO = Path(__file__).resolve().parents[2]
NAME, SUBNET, HOST = "hpdm", "10.98.0.0/24", "dbm"
PILLAR = "pillar=" + json.dumps({"db": {"engine": "mysql"}})
PASSWORD = yaml.safe_load((REPO / "pillar/secrets/dev/db.sls").read_text())["db"]["password"]


@pytest.fixture(scope="module")
def mysql_lab(tmp_path_factory):
    spec = tmp_path_factory.mktemp("spec") / "mysql.yaml"
    spec.write_text(yaml.safe_dump({"name": NAME, "subnet": SUBNET, "hosts": {
        HOST: {"address": 40, "roles": ["db", "app"], "env": "dev", "memory": 768,
               "cpus": 1}}}))
    handle = LabHandle(NAME, SUBNET, str(spec))
    handle.up()
    yield handle
    if os.environ.get("HPD_TEST_KEEP_LAB") != "1":
        handle.down()


def apply(lab):
    returned = lab.salt(HOST, "state.apply", "common,db", PILLAR)[HOST]
    assert isinstance(returned, dict), returned
    failed = failures(returned.values())
    assert not failed, failed
    return sorted(r["__id__"] for r in returned.values() if r["changes"])


def query(lab, sql, *client):
    return lab.exec(HOST, "mariadb", *client, "-NBe", sql).stdout.strip()


def test_mariadb_tuned_and_the_site_user_connects(mysql_lab):
    lab = mysql_lab
    assert "db-mysql-service-running" in apply(lab)
    pool = lab.salt(HOST, "highperf.mysql_tune")[HOST]["innodb_buffer_pool_size"]
    assert pool.endswith("M")
    assert query(lab, "SELECT @@innodb_buffer_pool_size") == str(int(pool[:-1]) * 2**20)
    address = lab.state["hosts"][HOST]["address"]
    assert query(lab, "SELECT @@bind_address") == address
    assert lab.exec(HOST, "systemctl", "is-active", "postgresql", check=False).stdout.strip() != (
        "active")
    # The site's user over TCP from the app host's address (this host), its
    # password in a 0600 option file, never on a command line.
    lab.lab.exec_in(lab.state, HOST, ["sh", "-c", "umask 077; cat > /root/hpd-test.cnf"],
                    input=f"[client]\npassword={PASSWORD}\n", text=True, check=True,
                    capture_output=True, timeout=30)
    try:
        user = query(lab, "SELECT CURRENT_USER()", "--defaults-extra-file=/root/hpd-test.cnf",
                     "-h", address, "-u", "hpd", "hpd")
    finally:
        lab.exec(HOST, "rm", "-f", "/root/hpd-test.cnf")
    assert user == f"hpd@{address}"
    assert apply(lab) == []  # a second run: nothing to do
