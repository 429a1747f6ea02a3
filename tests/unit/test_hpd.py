"""hpd: role settings from pillar, with schema defaults and checks."""

from pathlib import Path

import jsonschema
import pytest
import salt.utils.yaml
from conftest import FILE_ROOTS, load_source, local_opts
from salt.exceptions import CommandExecutionError, SaltInvocationError
from saltfactories.utils.functional import Loaders

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = sorted((REPO / "pillar").glob("*/schema.yaml"))


def load(path):
    return salt.utils.yaml.safe_load(path.read_text())


@pytest.fixture
def hpd(minion_opts):
    return Loaders(minion_opts).modules.hpd


@pytest.fixture
def minion_opts(tmp_path):
    return local_opts(tmp_path, file_roots=FILE_ROOTS, pillar={})


SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "default": "hpd"},
        "user": {
            "type": "object",
            "default": {},
            "properties": {
                "uid": {"type": "integer", "minimum": 1000, "default": 1500},
                "shell": {"type": "string", "default": "/bin/false"},
            },
        },
    },
}


def test_defaults_fill_nested_objects():
    assert hpd_module().defaults(SCHEMA) == {"name": "hpd",
                                             "user": {"uid": 1500, "shell": "/bin/false"}}


def test_given_values_win_over_defaults_and_input_is_not_changed():
    data = {"user": {"uid": 2000}}
    filled = hpd_module().with_defaults(SCHEMA, data)
    assert filled == {"name": "hpd", "user": {"uid": 2000, "shell": "/bin/false"}}
    assert data == {"user": {"uid": 2000}}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"user": {"uid": 0}}, "role:user:uid: 0 is less than the minimum of 1000"),
        ({"user": {"uid": "abc"}}, "role:user:uid: 'abc' is not of type 'integer'"),
        ({"nmae": "x"}, "role: Additional properties are not allowed ('nmae' was unexpected)"),
    ],
)
def test_check_names_the_bad_key(data, message):
    with pytest.raises(SaltInvocationError) as err:
        hpd_module().check(SCHEMA, data, "role")
    assert message in str(err.value)


def test_check_reports_every_bad_key():
    with pytest.raises(SaltInvocationError) as err:
        hpd_module().check(SCHEMA, {"name": 3, "user": {"uid": 1}}, "role")
    assert "role:name:" in str(err.value) and "role:user:uid:" in str(err.value)


@pytest.mark.parametrize("schema_path", SCHEMAS, ids=lambda p: p.parent.name)
def test_pillar_example_shows_exactly_the_schema_defaults(schema_path):
    role = schema_path.parent.name
    schema = load(schema_path)
    example = load(schema_path.parent / "pillar.example")
    assert example == {role: hpd_module().defaults(schema)}
    hpd_module().check(schema, example[role], role)


@pytest.mark.parametrize("schema_path", SCHEMAS, ids=lambda p: p.parent.name)
def test_schema_is_valid_and_closed(schema_path):
    schema = load(schema_path)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("additionalProperties") is False, "a typo in a key must not pass"


def test_settings_through_the_loader(hpd, minion_opts):
    minion_opts["pillar"] = {"common": {"timezone": "Europe/Paris"}}
    common = Loaders(minion_opts).modules.hpd.settings("common")
    assert common["timezone"] == "Europe/Paris"
    assert common["app_user"]["uid"] == 1500


def test_settings_refuses_a_bad_value_through_the_loader(minion_opts):
    minion_opts["pillar"] = {"common": {"app_user": {"uid": -1}}}
    with pytest.raises(SaltInvocationError, match="common:app_user:uid"):
        Loaders(minion_opts).modules.hpd.settings("common")


def test_settings_of_a_role_without_schema_is_an_error():
    module = hpd_module()
    # What the fileserver says of a file it does not have.
    module.__salt__ = {"cp.get_file_str": lambda url, saltenv: False}
    module.__opts__ = {"saltenv": None}
    module.__pillar__ = {}
    module.__context__ = {}
    with pytest.raises(CommandExecutionError, match="no schema for role nosuchrole"):
        module.settings("nosuchrole")


def hpd_module():
    """The module's pure functions, imported without the loader."""
    return load_source(REPO / "_modules" / "hpd.py")


def test_a_bad_secret_is_named_but_never_shown():
    schema = {"type": "object", "properties": {
        "web": {"type": "object", "properties": {
            "secret_key": {"type": "string", "minLength": 32, "writeOnly": True}}}}}
    with pytest.raises(SaltInvocationError) as err:
        hpd_module().check(schema, {"web": {"secret_key": "hunter2"}}, "monitoring")
    assert "monitoring:web:secret_key" in str(err.value)
    assert "hunter2" not in str(err.value)


MONITORING_KEY = "a-real-graphite-web-key-0123456789abcdef"


def test_settings_mask_every_secret(minion_opts):
    minion_opts["pillar"] = {"hpd": {"env": "production"},
                             "monitoring": {"web": {"secret_key": MONITORING_KEY},
                                            "alerts": {"webhook_token": "a-webhook-token-42"}}}
    module = Loaders(minion_opts).modules.hpd
    schema = module.schema("monitoring")
    shown = module.settings("monitoring")
    assert MONITORING_KEY not in repr(shown) and "a-webhook-token-42" not in repr(shown)
    for path in hpd_module().secret_paths(schema):
        assert hpd_module()._lookup(shown, path) == "**********", path
    assert shown["web"]["port"] == 8080  # the rest is plain
    assert module.settings("monitoring", unmask=True)["web"]["secret_key"] == MONITORING_KEY


def test_an_unset_secret_stays_none_when_masked():
    schema = {"type": "object", "properties": {
        "key": {"type": ["string", "null"], "writeOnly": True, "default": None}}}
    assert hpd_module().masked(schema, {"key": None}) == {"key": None}


@pytest.mark.parametrize("env", ["staging", "production", None])
def test_a_dev_only_secret_is_refused_outside_dev(env):
    schema = {"type": "object", "properties": {
        "web": {"type": "object", "properties": {
            "secret_key": {"type": "string", "writeOnly": True}}}}}
    value = "dev-only-key-in-the-repository-0123456789"
    assert hpd_module().check(schema, {"web": {"secret_key": value}}, "monitoring", "dev")
    with pytest.raises(SaltInvocationError) as err:
        hpd_module().check(schema, {"web": {"secret_key": value}}, "monitoring", env)
    assert "monitoring:web:secret_key: a dev-only secret outside the dev environment" in str(
        err.value)
    assert value not in str(err.value)


def test_addresses_resolve_each_name_once_sorted(monkeypatch):
    table = {"app2": "10.0.0.22", "app1": "10.0.0.21", "worker1": "10.0.0.9"}
    monkeypatch.setattr(hpd_module().socket, "getaddrinfo",
                        lambda name, *a: [(2, 1, 6, "", (table[name], 0))])
    module = hpd_module()
    assert module.addresses(["app2", "worker1", "app1", "app1"]) == [
        "10.0.0.9", "10.0.0.21", "10.0.0.22"]
    assert module.addresses([]) == []


def test_resolve_maps_each_name_to_its_address(monkeypatch):
    table = {"cache2": "10.0.0.51", "cache1": "10.0.0.50"}
    monkeypatch.setattr(hpd_module().socket, "getaddrinfo",
                        lambda name, *a: [(2, 1, 6, "", (table[name], 0))])
    assert hpd_module().resolve(["cache2", "cache1"]) == table
    assert hpd_module().resolve(None) == {}


@pytest.mark.parametrize("function", ["resolve", "addresses"])
def test_a_name_that_does_not_resolve_is_refused_naming_the_key(monkeypatch, function):
    def fail(name, *args):
        raise hpd_module().socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(hpd_module().socket, "getaddrinfo", fail)
    with pytest.raises(CommandExecutionError, match="hpd:peers:app: host 'ghost' does not"):
        getattr(hpd_module(), function)(["ghost"], key="hpd:peers:app")


@pytest.mark.parametrize("minion, slot", [("db2", "hpd_db2"),
                                          ("DB-2.example.com", "hpd_db_2_example_com"),
                                          ("x" * 80, "hpd_" + "x" * 59)])
def test_pg_slot_name_is_a_valid_slot_name_per_host(minion, slot):
    assert hpd_module().pg_slot_name(minion) == slot


@pytest.mark.parametrize("existing, replicas, plan", [
    ({}, ["db2"], {"create": ["hpd_db2"], "drop": [], "busy": []}),
    ({"hpd_db2": True}, ["db2"], {"create": [], "drop": [], "busy": []}),
    # A replica that left: its idle slot dropped; one still streaming left.
    ({"hpd_db2": True, "hpd_gone": False, "hpd_old": True}, ["db2"],
     {"create": [], "drop": ["hpd_gone"], "busy": ["hpd_old"]}),
    # No replicas any more: every slot of ours goes; other tools' slots stay.
    ({"hpd_db2": False, "barman": False}, [], {"create": [], "drop": ["hpd_db2"], "busy": []}),
    ({"barman": False}, ["DB-3.example.com"],
     {"create": ["hpd_db_3_example_com"], "drop": [], "busy": []}),
])
def test_pg_slot_changes_keep_one_slot_per_replica_and_no_other_of_ours(existing, replicas,
                                                                       plan):
    assert hpd_module().pg_slot_changes(existing, replicas) == plan


def test_pg_standby_settings_raise_what_a_standby_needs_to_postgresqls_defaults():
    tuned = {"max_worker_processes": 1, "max_wal_senders": 20, "work_mem": "4MB"}
    standby = hpd_module().pg_standby_settings(tuned)
    assert standby == {"max_worker_processes": 8, "max_wal_senders": 20, "work_mem": "4MB",
                       "max_locks_per_transaction": 64}
    assert tuned["max_worker_processes"] == 1  # input unchanged


def service_address(preferred=None, fqdn_ip4=("10.77.0.40",), listed=None):
    hpd = load_source("_modules/hpd.py")
    hpd.__grains__ = {"id": "db", "fqdn": "db", "fqdn_ip4": list(fqdn_ip4)}
    hpd.__pillar__ = {"hpd": {"addresses": {"db": listed, "app1": "10.77.0.21"}}} if listed \
        else {}
    return hpd.service_address(preferred, "db:listen_address")


def test_the_inventorys_address_wins_over_the_hosts_own_and_pillar_over_both():
    """Where the other hosts reach it (the inventory's address), not where its
    own name resolves; the role's listen_address pillar when set."""
    assert service_address() == "10.77.0.40"
    assert service_address(fqdn_ip4=["127.0.1.1", "10.77.0.43"]) == "10.77.0.43"
    assert service_address(listed="10.77.0.41") == "10.77.0.41"
    assert service_address("10.77.0.42", listed="10.77.0.41") == "10.77.0.42"
    with pytest.raises(CommandExecutionError, match=r"set its address in the inventory or pillar "
                                                    r"db:listen_address"):
        service_address(fqdn_ip4=["127.0.1.1"])
