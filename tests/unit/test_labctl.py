"""labctl's pure parts: specs and the names it derives."""

import contextlib
import os
import re

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


def served_files(roots):
    """Every path a master with file roots `roots` serves (salt://...), as Salt's
    roots backend walks them (following links)."""
    paths = set()
    for root in roots:
        for directory, _, files in os.walk(root, followlinks=True):
            paths.update(os.path.relpath(os.path.join(directory, f), root) for f in files)
    return paths


def test_the_master_serves_an_allow_list_not_the_checkout():
    conf = labctl.Lab("t").master_config({"subnet": "10.90.0.0/24"})
    assert conf["interface"] == "10.90.0.1"
    assert "file_ignore_regex" not in conf
    roots = conf["file_roots"]["base"]
    assert roots == [str(labctl.REPO / "salt"), str(labctl.REPO / "served")]
    # served/ holds only links to what minions and the master fetch from
    # salt://, beside the states: each role's schema (hpd.schema), the
    # orchestrations, the reactions, the extension modules.
    # salt://pillar/hosts.jinja: the inventory's roles, which the orchestrations
    # import (orch/db_hosts.jinja); logic only, no pillar data.
    allowed = re.compile(r"^((orch|reactor|_modules|_states|_beacons)/|pillar/\w+/schema\.yaml$"
                         r"|pillar/hosts\.jinja$)")
    assert not [p for p in served_files(roots[1:]) if not allowed.match(p)]
    served = served_files(roots)
    schemas = {str(p.relative_to(labctl.REPO)) for p in labctl.REPO.glob("pillar/*/schema.yaml")}
    assert schemas <= served
    assert {"top.sls", "common/init.sls", "ssh/init.sls", "orch/deploy.sls",
            "orch/release.jinja", "reactor/heal.sls", "_modules/hpd.py", "_states/hpd_site.py",
            "_beacons/hpd_port.py"} <= served
    # Nothing else of the checkout: not its top-level files, pillar data, the lab,
    # the tests, the site, the locks, the master's runners.
    for hidden in ("README.md", "setup.cfg", "Makefile", "pillar/top.sls",
                   "pillar/common/pillar.example", "lab/labctl.py", "tests/conftest.py",
                   "example/requirements.txt", "lock/venv.txt", "_runners/hpd_deploy.py"):
        assert hidden not in served, hidden
    assert not [p for p in served if p.startswith(("pillar/secrets", "pillar/environments",
                                                   "lab/", "tests/", "example/", ".git"))]


def test_every_template_the_tree_imports_is_served():
    """A template's `from "x" import` / `import "x"` and a literal salt:// path
    are fetched from the file roots: each must be there (orch.db_failover and
    orch.pitr_restore import pillar/hosts.jinja)."""
    roots = labctl.Lab("t").master_config({"subnet": "10.90.0.0/24"})["file_roots"]["base"]
    served = served_files(roots)
    wanted = set()
    for sls in [*labctl.REPO.glob("salt/**/*.sls"), *labctl.REPO.glob("salt/**/*.jinja"),
                *labctl.REPO.glob("orch/*"), *labctl.REPO.glob("reactor/*.sls")]:
        text = sls.read_text()
        wanted.update(re.findall(r"""(?:from|import|include)\s+["']([^"'{}]+)["']""", text))
        wanted.update(re.findall(r"salt://([\w./-]+\.\w+)\b", text))
    assert wanted and not sorted(wanted - served)


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
