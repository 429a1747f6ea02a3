"""pillar/top.sls and the secrets files: a host gets only the secrets of its own roles.

The top file is rendered by Salt's own Jinja renderer, with an inventory of the
test's making in a pillar root before the repository's.
"""

import pytest
import salt.utils.templates
import salt.utils.yaml
from conftest import local_opts
from test_hpd import REPO, SCHEMAS, hpd_module, load

HPD = hpd_module()
SECRETS = {p.parent.name: HPD.secret_paths(load(p)) for p in SCHEMAS}
SECRET_ROLES = sorted(role for role, paths in SECRETS.items() if paths)
#: A role's secrets its readers must not get (x-secret-readers: [] on the property).
OWN = {p.parent.name: HPD.secret_paths(load(p), own=True) for p in SCHEMAS}
OWN_ROLES = sorted(role for role, paths in OWN.items() if paths)
#: Roles whose hosts also get a role's secrets (its schema's x-secret-readers).
READERS = {p.parent.name: load(p).get("x-secret-readers", []) for p in SCHEMAS}


def reads(roles, role):
    """Whether a host with ``roles`` gets ``role``'s pillar."""
    return role in roles or bool(set(READERS.get(role, [])) & set(roles))


def render_top(tmp_path, inventory, minion):
    (tmp_path / "inventory.yaml").write_text(salt.utils.yaml.safe_dump(inventory))
    opts = local_opts(tmp_path, file_roots={"base": [str(tmp_path), str(REPO / "pillar")]})
    out = salt.utils.templates.JINJA(str(REPO / "pillar" / "top.sls"), to_str=True, opts=opts,
                                     saltenv="base", grains={"id": minion}, pillar={}, salt={})
    assert out["result"], out["data"]
    return salt.utils.yaml.safe_load(out["data"])


def blocks(top):
    """(sls names Salt may skip when missing, sls names that must exist) of the top."""
    optional, required = [], []
    for items in top["base"].values():
        names = [i for i in items if isinstance(i, str)]
        (optional if {"ignore_missing": True} in items else required).extend(names)
    return optional, required


def test_some_role_has_secrets():
    assert SECRET_ROLES, "no schema marks a property writeOnly: the tests below test nothing"


@pytest.mark.parametrize("env", ["dev", "staging", "production"])
def test_a_host_gets_the_secrets_files_of_its_own_roles_only(tmp_path, env):
    every_role = sorted({*SECRETS, *(r for readers in READERS.values() for r in readers)})
    inventory = {"all": {"roles": every_role, "env": env},
                 **{f"only-{role}": {"roles": [role], "env": env} for role in every_role},
                 "bare": {"roles": [], "env": env}}
    for minion, entry in inventory.items():
        _, required = blocks(render_top(tmp_path, inventory, minion))
        secrets = [name for name in required if name.startswith("secrets.")]
        roles = {"common", *entry["roles"]}
        assert sorted(secrets) == sorted(
            [f"secrets.{env}.{r}" for r in SECRET_ROLES if reads(roles, r)]
            + [f"secrets.{env}.{r}-own" for r in OWN_ROLES if r in roles]), minion


def test_the_readers_of_a_roles_secrets_do_not_get_its_own_ones(tmp_path):
    # The db hosts create the backup role's database user and encrypt
    # pgBackRest's repository; the restic password of the media snapshots is
    # the backup hosts' alone.
    assert OWN["backup"] == [("media", "restic_password")]
    inventory = {"db": {"roles": ["db"], "env": "dev"},
                 "backup": {"roles": ["backup"], "env": "dev"}}
    _, required = blocks(render_top(tmp_path, inventory, "db"))
    assert "secrets.dev.backup" in required and "secrets.dev.backup-own" not in required
    _, required = blocks(render_top(tmp_path, inventory, "backup"))
    assert {"secrets.dev.backup", "secrets.dev.backup-own"} <= set(required)


def test_the_app_and_worker_hosts_read_the_db_and_site_pillars_and_app_hosts_media_rsync(
        tmp_path):
    # They connect to the database as db:user with db:password and sign with
    # site:secret_key; the app hosts' rsync daemon admits the backup host with
    # media_rsync:password; nothing else (the lb reads the site's domains from
    # the environment's pillar, never its key; it gets its own TLS key only).
    inventory = {"app1": {"roles": ["app"], "env": "dev"},
                 "worker1": {"roles": ["worker"], "env": "dev"},
                 "lb": {"roles": ["lb", "varnish"], "env": "dev"}}
    # The app hosts push static files to the CDN origin with cdn:push:password.
    for minion, expected in [("app1", ["secrets.dev.cdn", "secrets.dev.db",
                                       "secrets.dev.media_rsync", "secrets.dev.site"]),
                             ("worker1", ["secrets.dev.db", "secrets.dev.site"]),
                             ("lb", ["secrets.dev.lb"])]:
        optional, required = blocks(render_top(tmp_path, inventory, minion))
        assert [n for n in required if n.startswith("secrets.")] == expected, minion
        assert ("db" in optional) == (minion != "lb"), minion
        assert "backup" not in optional, minion


def test_only_role_data_may_be_missing(tmp_path):
    # A missing inventory entry, environment or secrets file must fail the pillar
    # with the file named; only a role's own data (pillar/<role>/init.sls) is optional.
    inventory = {"m": {"roles": SECRET_ROLES, "env": "staging"}}
    optional, required = blocks(render_top(tmp_path, inventory, "m"))
    assert optional == ["common", *SECRET_ROLES]
    assert required == ["inventory", "environments.staging",
                        *(f"secrets.staging.{r}" for r in SECRET_ROLES),
                        *(f"secrets.staging.{r}-own" for r in OWN_ROLES)]


def test_a_minion_outside_the_inventory_gets_nothing(tmp_path):
    assert render_top(tmp_path, {"m": {"roles": [], "env": "dev"}}, "stranger") is None


def leaves(data, path=()):
    if not isinstance(data, dict):
        return [path]
    return [leaf for key, sub in data.items() for leaf in leaves(sub, (*path, key))]


@pytest.mark.parametrize("role, own", [*((r, False) for r in SECRET_ROLES),
                                       *((r, True) for r in OWN_ROLES)])
def test_dev_secrets_file_holds_exactly_the_role_secrets(role, own):
    """<role>.sls holds the secrets its readers get too, <role>-own.sls the others."""
    data = load(REPO / "pillar" / "secrets" / "dev" / f"{role}{'-own' if own else ''}.sls")
    assert set(data) == {role}, "a role's secrets file holds that role's pillar only"
    paths = OWN[role] if own else [p for p in SECRETS[role] if p not in OWN[role]]
    assert sorted(leaves(data[role])) == sorted(paths)
    schema = load(REPO / "pillar" / role / "schema.yaml")
    HPD.check(schema, data[role], role, "dev")
    # Each a throw-away value, or null: left unset in dev on purpose (the lb's TLS
    # key: the host makes its own there).
    values = [HPD._lookup(data[role], p) for p in paths]
    assert all(v is None or v.startswith("dev-only") for v in values), values


@pytest.mark.parametrize("path", sorted((REPO / "pillar" / "environments").glob("*.sls")),
                         ids=lambda p: p.stem)
def test_environment_files_hold_no_secret(path):
    data = load(path) or {}
    for role, paths in SECRETS.items():
        for secret in paths:
            assert HPD._lookup(data.get(role), secret) is None, f"{role}:{':'.join(secret)}"

