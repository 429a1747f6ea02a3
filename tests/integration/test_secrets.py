"""Secrets on real hosts: only hosts with a role get its secrets, no CLI call or job
cache file on the master shows them, and a missing secrets file stops the highstate
with the file named.

Every secret is every writeOnly property of every role's schema; the lab is the dev
environment, whose values are pillar/secrets/dev/<role>.sls.
"""

import concurrent.futures
import functools
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
MASK = "**********"


def hpd_module():
    spec = importlib.util.spec_from_file_location("hpd_pure", REPO / "_modules" / "hpd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HPD = hpd_module()


def at(data, path):
    """The value at a path (a tuple of keys) in nested dicts, or None."""
    return functools.reduce(lambda d, key: (d or {}).get(key), path, data)


def load(path):
    return yaml.safe_load(path.read_text())


def role_secrets():
    """{role: {path: dev value}} for every role whose schema has writeOnly properties
    (in secrets/dev/<role>.sls, or <role>-own.sls for those its readers must not get),
    but those the dev environment leaves unset (null: the lb's TLS key)."""
    found = {}
    for schema in sorted((REPO / "pillar").glob("*/schema.yaml")):
        role = schema.parent.name
        paths = HPD.secret_paths(load(schema))
        if paths:
            dev = REPO / "pillar" / "secrets" / "dev"
            files = [dev / f"{role}{end}.sls" for end in ("", "-own")]
            values = [load(f)[role] for f in files if f.exists()]
            set_in_dev = {path: next(filter(None, (at(v, path) for v in values)), None)
                          for path in paths}
            set_in_dev = {path: value for path, value in set_in_dev.items() if value}
            if set_in_dev:
                found[role] = set_in_dev
    assert found, "no schema marks a property writeOnly"
    return found


SECRETS = role_secrets()
#: {role: paths of the secrets its readers do not get (x-secret-readers: [])}.
OWN = {s.parent.name: HPD.secret_paths(load(s), own=True)
       for s in (REPO / "pillar").glob("*/schema.yaml")}


def hosts_with(lab, role):
    """Hosts that get the role's pillar: its own, and those of the roles its schema
    names in x-secret-readers (the app and worker hosts read db's password)."""
    readers = {role, *load(REPO / "pillar" / role / "schema.yaml").get("x-secret-readers", [])}
    return sorted(n for n, h in lab.state["hosts"].items()
                  if readers & {"common", *h["roles"]})


def held(lab, host, role, path):
    """What a host that reads the role's pillar holds at the secret's path:
    masked, unless only the role's own hosts get that one."""
    own = role in {"common", *lab.state["hosts"][host]["roles"]}
    return MASK if own or path not in OWN[role] else None


def master_config(lab):
    """The lab master's config (root_dir, pillar_roots), as the salt CLI reads it."""
    return load(Path(lab.state.get("master_dir") or lab.lab.master_dir) / "master")


@pytest.mark.parametrize("role", sorted(SECRETS))
def test_only_hosts_with_the_role_get_its_secrets(lab, highstate, role):
    having = hosts_with(lab, role)
    others = sorted(set(lab.hosts) - set(having))
    assert others, f"every lab host has the role {role}: nothing to compare"
    # pillar.items: compiled afresh by the master, not the minion's copy in memory;
    # masked, since these hosts may hold other roles' secrets (the job cache keeps
    # what a call returns).
    seen = lab.salt("-L", ",".join(others), "pillar.items")
    for host in others:
        # A role's data may reach every host of the environment (the site's domains
        # are in environments/<env>.sls for the lb hosts); its secrets may not.
        for path in SECRETS[role]:
            assert at(seen[host].get(role), path) is None, f"{host} got {role}:{path}"
    # Masked: each secret is there, its value stays on the host.
    seen = lab.salt("-L", ",".join(having), "pillar.items") if having else {}
    for host in having:
        for path in SECRETS[role]:
            assert at(seen[host][role], path) == held(lab, host, role, path), \
                f"{host}: {role}:{path}"


def test_no_secret_in_cli_output_or_the_master_job_cache(lab, highstate):
    calls = {"pillar.items": ["*", "pillar.items"],
             "state.show_highstate": ["*", "state.show_highstate"]}
    for role in SECRETS:
        having = ",".join(hosts_with(lab, role))
        for call in (["hpd.settings", role], ["state.show_sls", role],
                     ["pillar.item", role], ["pillar.get", role]):
            calls[" ".join(call)] = ["-L", having, *call]
    # Side by side: each call mostly waits for its minions.
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        returned = pool.map(lambda args: lab.salt(*args), calls.values())
        outputs = dict(zip(calls, returned, strict=True))
    outputs["state.apply (the first highstate)"] = highstate
    values = {f"{role}:{':'.join(path)}": value
              for role, paths in SECRETS.items() for path, value in paths.items()}
    for name, value in values.items():
        assert value and len(value) >= 16, f"{name}: the dev value is too short to look for"
        for call, out in outputs.items():
            assert value not in json.dumps(out), f"{name} shown by {call}"
    # Masked, not missing: hpd.settings still says each secret is set.
    for role, paths in SECRETS.items():
        settings = outputs[f"hpd.settings {role}"]
        for host in hosts_with(lab, role):
            assert all(at(settings[host], p) == held(lab, host, role, p) for p in paths), host
    assert job_cache_files(lab), "no job cache"
    assert secrets_in_job_cache(lab) == []


def job_cache_files(lab, since=0):
    """The master's job cache files last written at or after ``since`` (unix time)."""
    jobs = Path(master_config(lab)["root_dir"]) / "var/cache/salt/master/jobs"
    return [f for f in jobs.rglob("*") if f.is_file() and f.stat().st_mtime >= since]


def secrets_in_job_cache(lab, since=0):
    """[(secret, job cache file)] for each dev secret value found in a job cache
    file written since ``since``: none may be (the orchestrations too)."""
    values = {f"{role}:{':'.join(path)}": value
              for role, paths in SECRETS.items() for path, value in paths.items()}
    return [(name, str(f)) for f in job_cache_files(lab, since)
            for name, value in values.items() if value.encode() in f.read_bytes()]


def test_the_monitoring_host_writes_the_real_key(lab, highstate):
    mon = hosts_with(lab, "monitoring")[0]
    key = SECRETS["monitoring"][("web", "secret_key")]
    found = lab.exec(mon, "stat", "-c", "%U:%G %a", "/etc/graphite/local_settings.py").stdout
    assert found.split() == ["root:_graphite", "640"]
    settings = lab.exec(mon, "cat", "/etc/graphite/local_settings.py").stdout
    assert f"SECRET_KEY = {json.dumps(key)}" in settings.splitlines()
    state = lab.exec(mon, "systemctl", "is-active", "graphite-web", check=False).stdout.strip()
    assert state == "active"


@pytest.fixture
def staging_monitoring_host(lab, highstate):
    """The monitoring host, moved to staging in the master's inventory (no staging
    secrets exist in the lab) for the test, then put back."""
    roots = master_config(lab)["pillar_roots"]["base"]
    inventory = next(Path(root) / "inventory.yaml" for root in roots
                     if (Path(root) / "inventory.yaml").exists())
    original = inventory.read_text()
    host = hosts_with(lab, "monitoring")[0]
    entries = yaml.safe_load(original)
    entries[host]["env"] = "staging"
    inventory.write_text(yaml.safe_dump(entries))
    try:
        yield host
    finally:
        inventory.write_text(original)
        lab.salt(host, "saltutil.refresh_pillar", "wait=True")
        assert lab.salt(host, "pillar.get", "hpd:env", "unmask=True") == {host: "dev"}


def test_a_missing_secrets_file_stops_the_highstate_naming_it(lab, staging_monitoring_host):
    host = staging_monitoring_host
    # A good change rides along: it must not be applied either.
    pillar = {"common": {"timezone": "Europe/Paris"}}
    returned = lab.salt(host, "state.apply", f"pillar={json.dumps(pillar)}")[host]
    assert isinstance(returned, list), f"{host} ran states without its secrets file: {returned}"
    assert any("'secrets.staging.monitoring'" in line and "not available" in line
               for line in returned), returned
    zone = lab.exec(host, "readlink", "/etc/localtime").stdout.strip()
    assert zone.endswith("Etc/UTC"), f"{host} changed its time zone to {zone}"
