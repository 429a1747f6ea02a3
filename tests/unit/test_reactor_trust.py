"""The master trusts no minion: a minion chooses the tags and data of the events
it sends, so every reactor file renders them only as JSON arguments under a
fixed ID (Salt's renderer, hostile text), and the runners the reactions call
refuse, with one log line and nothing done, an event about a host that did not
send it, a host that is no accepted minion of the inventory, a bad unit or
check name (_runners/hpd_trust.py, hpd_heal.py, hpd_alert.py, hpd_scale.py)."""

import logging
import re

import pytest
import salt.config
import yaml
from conftest import load_source
from test_hpd import REPO, hpd_module, load
from test_hpd_alert import react

ALERTS = hpd_module().defaults(load(REPO / "pillar/alerts/schema.yaml"))

#: Text a minion may put in a tag or a field: YAML that, rendered into a state
#: ID or a bare scalar, would be a reaction of its own (cmd.run on every host),
#: quotes, Jinja, YAML's indicators, line and paragraph separators.
HOSTILE = [
    "x:\n  local.cmd.run:\n    - tgt: '*'\n    - arg:\n      - touch /root/pwned\nreactor-rest",
    "a\" b' c\\\" d\\' `e`",
    "{{ salt['cmd.run']('touch /root/pwned') }} {% if 1 %}x{% endif %} {# c #} {%- raw %}",
    "&a *a !!python/object/apply:os.system ['touch /root/pwned'] # : - ? | > @ %",
    "- [a, list]\n- {b: map}\n---\n...",
    "tab\tcr\r\x00\x1b snow\u2603 snake\U0001f40d",
]

#: Reactor file -> (its one fixed state ID, the runner function it calls).
REACTIONS = {"heal.sls": ("reactor-heal", "runner.hpd_heal.beacon"),
             "alert_observe.sls": ("reactor-alert-observe", "runner.hpd_alert.observe"),
             "alert_record.sls": ("reactor-alert-record", "runner.hpd_alert.record"),
             "scale.sls": ("reactor-scale", "runner.hpd_scale.react")}


def hostile_events(text):
    """(tag, data) of events a minion could send, ``text`` in the tag and in
    every field a reactor file once rendered."""
    return [
        (f"salt/beacon/app1/hpd_units/{text}",
         {"id": "app1", "service_name": text, text: {"running": False}, "_stamp": text}),
        (f"salt/beacon/{text}/hpd_units/memcached",
         {"id": text, "service_name": "memcached", "memcached": {"running": False}}),
        (f"salt/beacon/app1/load/{text}", {"id": "app1", "_stamp": text, "1m": 9.0}),
        (f"hpd/alert/critical/{text}/minion", {"host": text, "check": "minion", "_stamp": text}),
        ("salt/key", {"act": "accepted", "id": text, "_stamp": text}),
        ("salt/key", {"act": "delete", "id": text}),
        (f"salt/minion/{text}/start", {"id": text, "_stamp": text}),
    ]


@pytest.mark.parametrize("sls", sorted(REACTIONS))
@pytest.mark.parametrize("text", HOSTILE)
def test_a_reactor_file_renders_event_text_only_as_json_arguments(sls, text):
    sid, fun = REACTIONS[sls]
    for tag, data in hostile_events(text):
        assert react(sls, tag, data) == {sid: {fun: [{"args": [{"tag": tag}, {"data": data}]}]}}


@pytest.mark.parametrize("sls", sorted(REACTIONS))
def test_text_yaml_folds_or_refuses_stays_inside_the_arguments(sls):
    # Salt's json filter leaves these as they are. YAML reads the first three as
    # line breaks (folded inside a quoted string; in a mapping's key, an error)
    # and refuses DEL: the text changes or the file does not render (Salt's
    # reactor then logs it and does nothing), but it never leaves the arguments.
    sid, fun = REACTIONS[sls]
    rendered = 0
    for char in ("\x85", "\u2028", "\u2029", "\x7f"):
        for tag, data in hostile_events(f"x{char}{HOSTILE[0]}"):
            try:
                reactions = react(sls, tag, data)
            except yaml.YAMLError:
                continue
            assert list(reactions) == [sid] and list(reactions[sid]) == [fun]
            assert [list(arg) for arg in reactions[sid][fun][0]["args"]] == [["tag"], ["data"]]
            rendered += 1
    assert rendered


@pytest.mark.parametrize("sls", sorted(REACTIONS))
def test_no_reactor_file_writes_event_text_outside_a_json_filter(sls):
    body = (REPO / "reactor" / sls).read_text()
    assert body.count("{{") == body.count("| json }}") == 2, body


# ---------------------------------------------------------------- the runners' checks


@pytest.fixture
def trust(tmp_path):
    """hpd_trust on a master with keys accepted for app1, cache1 and stray (not
    in the inventory); the inventory has app1, cache1 and pending (no key)."""
    runner = load_source("_runners/hpd_trust.py")
    opts = salt.config.master_config(None)
    opts.update(pki_dir=str(tmp_path / "pki"), cachedir=str(tmp_path / "cache"),
                sock_dir=str(tmp_path / "sock"), pillar_roots={"base": [str(tmp_path / "p")]})
    runner.__opts__ = opts
    (tmp_path / "pki" / "minions").mkdir(parents=True)
    for host in ("app1", "cache1", "stray"):
        (tmp_path / "pki" / "minions" / host).write_text("key")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "inventory.yaml").write_text(yaml.safe_dump(
        {h: {"roles": r, "env": "dev"} for h, r in (("app1", []), ("cache1", ["cache"]),
                                                    ("pending", ["app"]))}))
    return runner


def runner_with_trust(path, trust, **salt):
    runner = load_source(path)
    runner.__salt__ = {f"hpd_trust.{name}": getattr(trust, name)
                       for name in ("sender", "known", "accepted", "minion_id", "from_master",
                                    "refused")} | salt
    return runner


def refusals(caplog):
    """The refusals logged, each checked to be one line."""
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert all("\n" not in line and "\r" not in line for line in lines), lines
    return lines


@pytest.mark.parametrize("tag, data, why", [
    ("salt/beacon/cache1/hpd_units/memcached", {"id": "app1"}, "about 'cache1' but sent by 'app1'"),
    ("salt/beacon/cache1/hpd_units/memcached", {}, "about 'cache1' but sent by None"),
    ("salt/beacon/cache1/hpd_units/memcached", ["cache1"], "but sent by None"),
    ("salt/beacon/x\ny: z/hpd_units/m", {"id": "x\ny: z"}, "'x\\ny: z' is not a minion id"),
    ("salt/beacon/../hpd_units/m", {"id": ".."}, "'..' is not a minion id"),
    ("salt/beacon/app1", {"id": "app1"}, "not a salt/beacon/<host>/... event"),
    ("hpd/beacon/app1/hpd_units/m", {"id": "app1"}, "not a salt/beacon/<host>/... event"),
    (None, {"id": "app1"}, "not a salt/beacon/<host>/... event"),
])
def test_an_event_about_a_host_must_come_from_it(trust, tag, data, why):
    with pytest.raises(trust.SaltInvocationError, match=re.escape(why)):
        trust._sender(tag, data, "beacon")


def test_the_host_must_be_an_accepted_minion_of_the_inventory(trust):
    assert trust.sender("salt/beacon/app1/hpd_units/m", {"id": "app1"}) == (
        "app1", ["hpd_units", "m"])
    assert trust.sender("salt/minion/cache1/start", {"id": "cache1"}, "minion") == (
        "cache1", ["start"])
    with pytest.raises(trust.SaltInvocationError, match="'stray' is not in the inventory"):
        trust.sender("salt/beacon/stray/load/", {"id": "stray"})
    with pytest.raises(trust.SaltInvocationError, match="'pending' is not an accepted minion"):
        trust.known("pending")
    assert trust.accepted("stray") and not trust.accepted("pending")


def test_an_event_only_the_master_fires_is_refused_from_a_minion(trust):
    # What `salt-call event.fire_master '{}' salt/key preload='{"act": "delete"}'`
    # on app1 puts on the master's bus: the minion's request, its id checked.
    forged = {"id": "app1", "cmd": "_minion_event", "tag": "salt/key", "data": {},
              "act": "delete"}
    with pytest.raises(trust.SaltInvocationError, match="sent by minion 'app1', not by the master"):
        trust.from_master(forged)
    with pytest.raises(trust.SaltInvocationError, match="its data is not a mapping"):
        trust.from_master("x")
    assert trust.from_master({"act": "accepted", "id": "app3", "result": True})


def test_a_refusal_is_one_line_naming_the_event(trust, caplog):
    with caplog.at_level(logging.WARNING):
        assert trust.refused("hpd_heal", HOSTILE[0], "why") == {"refused": "why"}
    assert refusals(caplog) == [f"hpd_heal: refused the event {HOSTILE[0]!r}: why"]


# heal


@pytest.fixture
def heal(trust, monkeypatch):
    runner = runner_with_trust("_runners/hpd_heal.py", trust)
    runner.asked = []
    monkeypatch.setattr(runner, "service", lambda *args: runner.asked.append(args) or "healed")
    return runner


def service_event(host, unit, sender=None, running=False):
    return (f"salt/beacon/{host}/hpd_units/{unit}",
            {"id": sender or host, "service_name": unit, unit: {"running": running},
             "_stamp": "2026-11-30T08:00:14.454885+00:00"})


@pytest.mark.parametrize("unit, running", [("memcached", False), ("example-worker@2", True),
                                           ("postgresql@15-main", False),
                                           ("hpd-backup-dump.timer", False)])
def test_a_service_beacon_event_of_its_host_asks_the_host_to_heal(heal, unit, running):
    assert heal.beacon(*service_event("cache1", unit, running=running)) == "healed"
    assert heal.asked == [("cache1", unit, running)]


@pytest.mark.parametrize("event, why", [
    (service_event("cache1", "memcached", sender="app1"), "about 'cache1' but sent by 'app1'"),
    (service_event("stray", "memcached"), "'stray' is not in the inventory"),
    (service_event("pending", "memcached"), "'pending' is not an accepted minion"),
    (service_event("cache1", "memcached\n- x"),
     "service_name 'memcached\\n- x' is not a unit name"),
    (service_event("cache1", "-x"), "service_name '-x' is not a unit name"),
    (service_event("cache1", "a b"), "service_name 'a b' is not a unit name"),
    (("salt/beacon/cache1/hpd_units/nginx",
      {"id": "cache1", "service_name": "memcached", "memcached": {"running": False}}),
     "not the tag salt/beacon/cache1/hpd_units/memcached"),
    (("salt/beacon/cache1/hpd_units/memcached",
      {"id": "cache1", "service_name": "memcached", "memcached": "stopped"}),
     "no state of memcached in the event"),
])
def test_a_service_beacon_event_is_refused_with_one_line_and_nothing_done(heal, caplog, event,
                                                                           why):
    with caplog.at_level(logging.WARNING):
        assert heal.beacon(*event) == {"refused": why}
    assert refusals(caplog) == [f"hpd_heal: refused the event {event[0]!r}: {why}"]
    assert heal.asked == []


def test_the_unit_pattern_is_the_heal_schemas():
    schema = load(REPO / "pillar/heal/schema.yaml")
    pattern = schema["$defs"]["units"]["items"]["pattern"]
    assert f"^{load_source('_runners/hpd_heal.py').UNIT.pattern}$" == pattern


# alerts


@pytest.fixture
def alert(trust, tmp_path, monkeypatch):
    runner = runner_with_trust("_runners/hpd_alert.py", trust)
    runner.__opts__ = {"cachedir": str(tmp_path / "master"),
                       "log_file": str(tmp_path / "master.log")}
    runner.fired = []
    runner.__salt__["event.send"] = lambda tag, data: runner.fired.append((tag, data))
    roles = {"app1": [], "cache1": ["cache"]}
    monkeypatch.setattr(runner, "settings", lambda minion, role: ALERTS)
    monkeypatch.setattr(runner, "_pillar", lambda minion: {"hpd": {"roles": roles[minion]}})
    return runner


@pytest.mark.parametrize("rest, data, roles, found", [
    (["load", ""], {}, [], ("load", "load")),
    (["memusage", ""], {}, [], ("memusage", "memory")),
    (["diskusage", ""], {"mount": "/"}, [], ("diskusage", "disk-root")),
    (["diskusage", ""], {"mount": "/srv/data"}, [], ("diskusage", "disk-srv-data")),
    (["hpd_port", "memcached"], {}, ["cache"], ("hpd_port", "port-memcached")),
    (["hpd_errors", "app"], {}, ["lb"], ("hpd_errors", "errors-app")),
])
def test_a_threshold_event_names_a_check_of_its_host(alert, rest, data, roles, found):
    assert alert._observed(rest, data, ALERTS, roles) == found


@pytest.mark.parametrize("rest, data, roles, why", [
    (["service", "x"], {}, [], "'service' is not a threshold beacon"),
    (["load", "x:\n  local.cmd.run: []"], {}, [], "the load beacon's tag ends at load/"),
    (["diskusage", ""], {"mount": "/home"}, [], "the host watches no mount '/home'"),
    (["diskusage", ""], {}, [], "the host watches no mount None"),
    (["hpd_port", "memcached"], {}, ["app"], "the host's roles have no port 'memcached'"),
    (["hpd_port", "x\ny"], {}, ["cache"], "the host's roles have no port 'x\\ny'"),
    (["hpd_errors", "app"], {}, ["app"], "the host watches no backend 'app'"),
    (["hpd_errors", "db"], {}, ["lb"], "the host watches no backend 'db'"),
])
def test_a_threshold_event_naming_a_check_its_host_lacks_is_refused(alert, rest, data, roles,
                                                                    why):
    with pytest.raises(alert.SaltInvocationError, match=re.escape(why)):
        alert._observed(rest, data, ALERTS, roles)
    off = {**ALERTS, "load": {**ALERTS["load"], "enabled": False}}
    with pytest.raises(alert.SaltInvocationError, match="the host's load check is off"):
        alert._observed(["load", ""], {}, off, [])


def test_a_threshold_event_of_its_host_opens_an_incident(alert):
    assert alert.observe("salt/beacon/cache1/hpd_port/memcached", {"id": "cache1"}) == \
        "port-memcached"
    assert [t for t, _ in alert.fired] == ["hpd/alert/critical/cache1/port-memcached"]


@pytest.mark.parametrize("tag, data, why", [
    # What `salt-call event.fire_master '{"percent": 99}' salt/beacon/cache1/memusage/`
    # on app1 sends: the old reaction raised a memory alert of cache1.
    ("salt/beacon/cache1/memusage/", {"id": "app1", "cmd": "_minion_event", "data": {}},
     "about 'cache1' but sent by 'app1'"),
    ("salt/beacon/stray/load/", {"id": "stray"}, "'stray' is not in the inventory"),
    ("salt/beacon/app1/hpd_port/memcached", {"id": "app1"},
     "the host's roles have no port 'memcached'"),
])
def test_a_threshold_event_is_refused_with_one_line_and_nothing_done(alert, caplog, tmp_path,
                                                                     tag, data, why):
    with caplog.at_level(logging.WARNING):
        assert alert.observe(tag, data) == {"refused": why}
    assert refusals(caplog) == [f"hpd_alert: refused the event {tag!r}: {why}"]
    assert alert.fired == [] and not (tmp_path / "master").exists()


def test_an_alerts_tag_names_a_kind_a_host_and_a_check():
    runner = load_source("_runners/hpd_alert.py")
    assert runner._recorded("hpd/alert/warning/app1/disk-root") == ("warning", "app1", "disk-root")
    assert runner._recorded("hpd/alert/resolved/db/restart-postgresql-15-main")[2] == \
        "restart-postgresql-15-main"
    severities = load(REPO / "pillar/alerts/schema.yaml")["$defs"]["severity"]["enum"]
    assert [*severities, "resolved"] == list(runner.KINDS)


@pytest.mark.parametrize("tag, data, why", [
    ("hpd/alert/critical/cache1/minion", {"id": "app1", "cmd": "_minion_event", "data": {}},
     "sent by minion 'app1', not by the master"),
    ("hpd/alert/critical/stray/minion", {}, "'stray' is not in the inventory"),
    ("hpd/alert/page/app1/minion", {}, "not an hpd/alert/<severity or resolved>/<host>/<check>"),
    ("hpd/alert/critical/app1/disk/root", {}, "not an hpd/alert/<severity or resolved>/"),
    ("hpd/alert/critical/app1/Disk root", {}, "'Disk root' is not a check's name"),
    ("hpd/alert/critical/app1/x\ny", {}, "'x\\ny' is not a check's name"),
    ("hpd/alert/critical/x\ny/minion", {}, "'x\\ny' is not a minion id"),
])
def test_an_alert_event_is_refused_with_one_line_and_nothing_done(alert, caplog, tmp_path, tag,
                                                                  data, why):
    with caplog.at_level(logging.WARNING):
        assert alert.record(tag, data)["refused"].startswith(why)
    assert len(refusals(caplog)) == 1
    assert not (tmp_path / "master").exists() and not (tmp_path / "hpd-alerts.log").exists()


# scale


@pytest.fixture
def scale(trust, monkeypatch):
    runner = runner_with_trust("_runners/hpd_scale.py", trust)
    runner.steps = []
    for step in ("accepted", "joined", "left"):
        monkeypatch.setattr(runner, step,
                            lambda minion, step=step: runner.steps.append((step, minion)) or step)
    return runner


@pytest.mark.parametrize("tag, data, step", [
    ("salt/key", {"act": "accepted", "id": "cache1", "result": True}, ("accepted", "cache1")),
    ("salt/key", {"act": "delete", "id": "pending", "result": True}, ("left", "pending")),
    ("salt/minion/app1/start", {"id": "app1", "cmd": "_minion_event", "data": "started"},
     ("joined", "app1")),
])
def test_a_key_or_start_event_asks_its_step(scale, tag, data, step):
    assert scale.react(tag, data) == step[0]
    assert scale.steps == [step]


def test_other_key_events_do_nothing(scale, caplog):
    assert scale.react("salt/key", {"act": "reject", "id": "app1", "result": True}) is None
    assert scale.steps == [] and refusals(caplog) == []


@pytest.mark.parametrize("tag, data, why", [
    # What `salt-call event.fire_master '{}' salt/key preload='{"act": "delete"}'` on
    # app1 sends: the old reaction dropped app1's cache and highstated its followers.
    ("salt/key", {"id": "app1", "cmd": "_minion_event", "act": "delete", "data": {}},
     "sent by minion 'app1', not by the master"),
    ("salt/key", {"act": "accepted", "id": "stray"}, "'stray' is not in the inventory"),
    ("salt/key", {"act": "delete", "id": "app1"}, "'app1''s key is still accepted"),
    ("salt/key", {"act": "delete", "id": "a/../b"}, "'a/../b' is not a minion id"),
    ("salt/minion/cache1/start", {"id": "app1", "cmd": "_minion_event"},
     "about 'cache1' but sent by 'app1'"),
    ("salt/minion/app1/stop", {"id": "app1"}, "not the tag salt/minion/app1/start"),
])
def test_a_key_or_start_event_is_refused_with_one_line_and_nothing_done(scale, caplog, tag, data,
                                                                        why):
    with caplog.at_level(logging.WARNING):
        assert scale.react(tag, data) == {"refused": why}
    assert refusals(caplog) == [f"hpd_scale: refused the event {tag!r}: {why}"]
    assert scale.steps == []
