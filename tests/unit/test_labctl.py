"""labctl's pure parts: specs and the names it derives."""

import contextlib

import pytest
import yaml

import labctl


def write_spec(tmp_path, **spec):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_default_spec_is_the_farm():
    spec = labctl.load_spec()
    assert spec["name"] == "hpd"
    assert set(spec["hosts"]) == {"lb", "app1", "app2", "worker1", "db", "cache1", "cache2", "mon",
                                  "backup", "db2"}
    roles = {role for host in spec["hosts"].values() for role in host["roles"]}
    assert roles == {"lb", "varnish", "cdn", "app", "worker", "cache", "db", "monitoring",
                     "backup", "db_replica"}
    assert spec["hosts"]["db"]["address"] == "10.77.0.40"


def test_aio_spec_puts_every_role_on_one_host():
    spec = labctl.load_spec(labctl.REPO / "lab" / "specs" / "aio.yaml")
    (host,) = spec["hosts"].values()
    assert set(host["roles"]) == {"lb", "varnish", "cdn", "app", "worker", "cache", "db",
                                  "monitoring"}


def test_name_and_subnet_can_be_overridden():
    spec = labctl.load_spec(None, "other", "10.90.0.0/24")
    assert spec["name"] == "other"
    assert spec["hosts"]["lb"]["address"] == "10.90.0.10"


@pytest.mark.parametrize(
    "spec, error",
    [
        ({"subnet": "192.0.2.0/25"}, "overlaps the machine's network"),
        ({"hosts": {"a": {"address": 300}}}, "is not a host number"),
        ({"hosts": {"a": {"address": 1}}}, "is not a host number"),
        ({"hosts": {"a": {"address": 5, "env": "prod"}}}, "env must be dev, staging or production"),
        ({"name": "has-dash"}, "at most 8 letters and digits"),
    ],
)
def test_bad_specs_are_refused(tmp_path, spec, error):
    full = {"name": "t", "subnet": "10.90.0.0/24", "hosts": {"a": {"address": 5}}, **spec}
    with pytest.raises(labctl.LabError, match=error):
        labctl.load_spec(write_spec(tmp_path, **full))


def test_master_config_keeps_pillar_data_and_the_lab_from_minions():
    import re

    lab = labctl.Lab("t")
    conf = lab.master_config({"subnet": "10.90.0.0/24"})
    assert conf["interface"] == "10.90.0.1"
    (ignore,) = conf["file_ignore_regex"]
    repo = str(labctl.REPO)
    for hidden in ("pillar/top.sls", "pillar/environments/production.sls", "lab/labctl.py",
                   f"{repo}/pillar/common/init.sls", ".git/config", "tests/unit/x.py"):
        assert re.search(ignore, hidden), hidden
    for served in ("pillar/common/schema.yaml", "orch/deploy.sls", f"{repo}/salt/top.sls",
                   "common/init.sls", "_modules/hpd.py"):
        assert not re.search(ignore, served), served


def test_the_master_loads_the_trees_runners_from_the_checkout():
    conf = labctl.Lab("t").master_config({"subnet": "10.90.0.0/24"})
    assert conf["runner_dirs"] == [str(labctl.REPO / "_runners")]
    assert (labctl.REPO / "_runners" / "hpd_deploy.py").is_file()


def test_add_boots_the_one_host_into_a_lab_booted_from_another_spec(monkeypatch):
    from hpdlab import cli

    booted = []

    class SmallLab:  # up from a spec of four hosts, not the default farm
        def locked(self):
            return contextlib.nullcontext()

        def load(self):
            return {"subnet": "10.93.0.0/24", "hosts": {"app1": {"address": "10.93.0.21"}}}

        def up(self, spec, extra=None):
            booted.append((sorted(spec["hosts"]), sorted(extra or {}), spec["subnet"]))

    monkeypatch.setattr(cli, "current_lab", lambda args: (SmallLab(), labctl.load_spec()))
    monkeypatch.setattr(cli, "cmd_status", lambda args: None)
    assert cli.main(["add", "app3", "--roles", "app"]) == 0
    assert booted == [([], ["app3"], "10.93.0.0/24")]
