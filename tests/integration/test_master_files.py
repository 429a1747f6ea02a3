"""What the master serves (README, "Using the tree with your own master"): the
states and served/, an allow list. A minion asking for the rest of the checkout
(its README, setup.cfg, the lab, the tests, pillar data and secrets, the site,
the locks, the master's runners) gets nothing; the highstate, which reads each
role's schema from salt://pillar/<role>/schema.yaml, works.

A small lab is enough: lab/specs/pair.yaml."""

import re

import pytest
from conftest import REPO, failures

pytestmark = pytest.mark.lab

ROLES = "|".join(p.name for p in (REPO / "salt").iterdir() if p.is_dir())
# pillar/hosts.jinja: the inventory's roles, imported by orch.db_failover and
# orch.pitr_restore; logic only, no pillar data.
ALLOWED = re.compile(rf"^(top\.sls$|({ROLES}|orch|reactor|_modules|_states|_beacons)/"
                     r"|pillar/\w+/schema\.yaml$|pillar/hosts\.jinja$)")
HIDDEN = ["README.md", "setup.cfg", "Makefile", "lab/labctl.py", "lab/specs/pair.yaml",
          "tests/conftest.py", "pillar/top.sls",
          "pillar/inventory.yaml.example", "pillar/environments/dev.sls",
          "pillar/secrets/dev/db.sls", "pillar/common/pillar.example",
          "example/requirements.txt", "lock/venv.txt", "_runners/hpd_deploy.py"]


def test_a_minion_gets_only_what_it_needs_from_the_master(lab, highstate):
    for host in lab.hosts:
        assert not failures(highstate[host]), f"{host}: {failures(highstate[host])}"
    host = lab.hosts[0]
    listed = lab.salt(host, "cp.list_master")[host]
    assert "pillar/ssh/schema.yaml" in listed and "orch/deploy.sls" in listed
    assert not [p for p in listed if not ALLOWED.match(p)]
    for path in HIDDEN:
        assert lab.salt(host, "cp.get_file_str", f"salt://{path}")[host] is False, path
