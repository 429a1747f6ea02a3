"""pillar/inventory.sls: a host's roles and its environment's peers, from the
inventory, with the primary db host of an environment named by db_primary.yaml
when orch.db_failover has written one. Rendered by Salt's own Jinja renderer."""

import pytest
import salt.utils.templates
import salt.utils.yaml
from conftest import local_opts
from test_hpd import REPO

INVENTORY = {"db": {"roles": ["db"], "env": "dev"},
             "db2": {"roles": ["db_replica"], "env": "dev"},
             "app1": {"roles": ["app"], "env": "dev", "address": "10.0.0.21"},
             "pdb": {"roles": ["db", "cache"], "env": "production", "address": "10.1.0.40"},
             "pdb2": {"roles": ["db_replica"], "env": "production"}}


def render(tmp_path, minion, primaries=None):
    (tmp_path / "inventory.yaml").write_text(salt.utils.yaml.safe_dump(INVENTORY))
    if primaries is not None:
        (tmp_path / "db_primary.yaml").write_text(salt.utils.yaml.safe_dump(primaries))
    opts = local_opts(tmp_path, file_roots={"base": [str(tmp_path), str(REPO / "pillar")]})
    out = salt.utils.templates.JINJA(str(REPO / "pillar" / "inventory.sls"), to_str=True,
                                     opts=opts, saltenv="base", grains={"id": minion},
                                     pillar={}, salt={})
    assert out["result"], out["data"]
    return salt.utils.yaml.safe_load(out["data"])["hpd"]


def test_without_db_primary_yaml_the_inventory_decides(tmp_path):
    hpd = render(tmp_path, "app1")
    assert hpd["peers"]["db"] == ["db"] and hpd["peers"]["db_replica"] == ["db2"]
    assert render(tmp_path, "db2")["roles"] == ["db_replica"]


@pytest.mark.parametrize("minion, roles", [("db", ["db_replica"]), ("db2", ["db"]),
                                           ("app1", ["app"]),
                                           ("pdb", ["db", "cache"])])
def test_the_named_primary_gets_db_and_the_old_one_db_replica(tmp_path, minion, roles):
    hpd = render(tmp_path, minion, {"dev": "db2"})
    assert sorted(hpd["roles"]) == sorted(roles)
    assert hpd["peers"]["db"] == (["db2"] if hpd["env"] == "dev" else ["pdb"])


def test_each_environment_has_its_own_primary(tmp_path):
    hpd = render(tmp_path, "pdb", {"dev": "db", "production": "pdb2"})
    assert sorted(hpd["roles"]) == ["cache", "db_replica"]
    assert hpd["peers"]["db"] == ["pdb2"] and hpd["peers"]["cache"] == ["pdb"]


def test_the_addresses_are_the_inventorys_of_the_hosts_environment(tmp_path):
    assert render(tmp_path, "db")["addresses"] == {"app1": "10.0.0.21"}
    assert render(tmp_path, "pdb2")["addresses"] == {"pdb": "10.1.0.40"}
