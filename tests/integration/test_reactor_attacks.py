"""The master trusts no minion (reactor/README.md): from one host (app1), events
whose tag holds YAML that, rendered into a reaction's ID, would run `touch
/root/pwned` on every host, and events about another host (a cache host) that
claim to come from it. Nothing runs, nothing about the other host changes, each
is one refusal in the master's log; a stopped unit is healed as before.

A small lab is enough: lab/specs/pair.yaml (app1 with the common role only,
cache1)."""

import json
import time

import pytest
from conftest import EventBus, settled
from hpdlab.util import VENV

pytestmark = pytest.mark.lab

MARKER = "/root/pwned"
YAML = "x:\n  local.cmd.run:\n    - tgt: '*'\n    - arg:\n      - touch /root/pwned\nreactor-rest"


@pytest.fixture(scope="module")
def hosts(lab, highstate):
    """(the host the events come from, the cache host they claim to be)."""
    victim = settled(lab, highstate, "cache")
    attacker = "app1" if "app1" in lab.hosts else next(h for h in lab.hosts if h != victim)
    lab.salt("*", "file.remove", MARKER)
    return attacker, victim


def fire(lab, host, tag, data=None, preload=None):
    """`salt-call event.fire_master DATA TAG [preload=...]` in `host`."""
    cmd = [f"{VENV}/bin/salt-call", "--out=json", "event.fire_master", json.dumps(data or {}), tag]
    if preload:
        cmd.append("preload=" + json.dumps(preload))
    assert json.loads(lab.exec(host, *cmd).stdout) == {"local": True}


def refusals(lab, since):
    """The refusals in the master's log after byte `since`."""
    with open(lab.lab.master_dir / "master.log", errors="replace") as f:
        f.seek(since)
        return [line for line in f if "refused the event" in line]


def log_size(lab):
    return (lab.lab.master_dir / "master.log").stat().st_size


def jobs_on(bus, host):
    """(fun, target) of the jobs published to `host` (the alert sweep's pings aside)."""
    return [(d.get("fun"), d.get("minions")) for t, d in bus.seen
            if t.startswith("salt/job/") and t.endswith("/new") and host in d.get("minions", [])
            and d.get("fun") != "test.ping"]


def test_a_tag_holding_yaml_runs_nothing(lab, hosts):
    attacker, _ = hosts
    since = log_size(lab)
    events = [  # one per reactor file, the YAML in the tag
        (f"salt/beacon/{attacker}/load/{YAML}", None),
        (f"salt/beacon/{attacker}/hpd_units/{YAML}",
         {"service_name": YAML, YAML: {"running": False}}),
        (f"hpd/alert/critical/{attacker}/{YAML}", None),
        (f"salt/minion/{YAML}/start", None),
    ]
    with EventBus(lab) as bus:
        for tag, preload in events:
            fire(lab, attacker, tag, preload=preload)
        bus.wait(lambda _: len(refusals(lab, since)) >= len(events), 60,
                 f"{len(events)} refusals in the master's log")
        bus.drain(5)
    ran = [d for t, d in bus.seen if t.endswith("/new") and d.get("fun") == "cmd.run"]
    assert ran == [], ran
    assert lab.salt("*", "file.file_exists", MARKER) == dict.fromkeys(lab.hosts, False)
    assert len(refusals(lab, since)) == len(events), refusals(lab, since)


def test_an_event_claiming_another_host_changes_nothing_there(lab, hosts):
    attacker, victim = hosts
    before = lab.exec(victim, "systemctl", "show", "-p", "MainPID,NRestarts", "memcached").stdout
    since = log_size(lab)
    events = [
        (f"salt/beacon/{victim}/hpd_units/memcached", {},
         {"service_name": "memcached", "memcached": {"running": False}}),
        (f"salt/beacon/{victim}/memusage/", {"memusage": 99.0}, None),
        (f"salt/minion/{victim}/start", {}, None),
        (f"hpd/alert/critical/{victim}/minion", {"misses": 9}, None),
        ("salt/key", {}, {"act": "delete"}),  # Salt passes a minion's salt/key on
    ]
    with EventBus(lab) as bus:
        for tag, data, preload in events:
            fire(lab, attacker, tag, data, preload)
        bus.wait(lambda _: len(refusals(lab, since)) >= len(events), 60,
                 f"{len(events)} refusals in the master's log")
        bus.drain(5)
    lines = refusals(lab, since)
    assert len(lines) == len(events), lines
    assert sum(f"about '{victim}' but sent by '{attacker}'" in line for line in lines) == 3, lines
    assert jobs_on(bus, victim) == []
    fired = [t for t, d in bus.tagged("hpd/") if d.get("cmd") != "_minion_event"]
    assert fired == [], fired  # no alert, no scale outcome: only the forged event itself
    after = lab.exec(victim, "systemctl", "show", "-p", "MainPID,NRestarts", "memcached").stdout
    assert after == before


def test_a_stopped_unit_is_still_healed(lab, hosts):
    _, host = hosts
    lab.salt(host, "hpd_heal.reset", "memcached")
    with EventBus(lab) as bus:
        lab.exec(host, "systemctl", "stop", "memcached")
        healed = bus.wait(lambda _: [r for r in bus.returns("hpd_heal.heal", host)
                                     if isinstance(r, dict) and r.get("starts")], 120,
                          "a start of memcached by the reactor")
    assert (healed[0]["before"], healed[0]["state"]) == ("inactive", "active"), healed
    deadline = time.monotonic() + 30
    while lab.exec(host, "systemctl", "is-active", "memcached", check=False).stdout.strip() \
            != "active":
        assert time.monotonic() < deadline, "memcached not active"
        time.sleep(0.5)
    assert lab.salt(host, "hpd_heal.reset", "memcached")[host] == 1
