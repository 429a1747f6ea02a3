"""Hosts added to and removed from a running farm (`labctl add`/`remove`): the
master's reactor highstates the new host with its roles, updates its mine and
highstates the hosts of its environment that list its role's hosts (lb, db...):
haproxy then sends it requests, which it answers from the database; a removed
host's key is deleted and those hosts are highstated again without it. No
other command. The scale-out runs as a job of its own: heal events fired
meanwhile, more than the reactor has threads, are all handled before it ends."""

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import EventBus, haproxy_app, through_the_pool

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
HOST = "app3"
#: Heal events fired while the new host's scale-out runs: more than the
#: reactor's threads (reactor_worker_threads: 10).
HEAL_EVENTS = 20


def labctl(lab, *args):
    return subprocess.run([REPO / "lab" / "labctl", "--name", lab.lab.name,
                           "--subnet", lab.state["subnet"], *args],
                          capture_output=True, text=True, timeout=2400)


def scaled(bus, what):
    return [d for t, d in bus.tagged(f"hpd/scale/{what}/{HOST}")]


def runs(seen, fun, phase):
    """The data of the runner jobs of ``fun`` that started (``new``) or
    returned (``ret``), as the master's bus carried them."""
    return [d for t, d in seen if t.startswith("salt/run/") and t.endswith(f"/{phase}")
            and d.get("fun") == f"runner.{fun}"]


def heal_events(lab, count):
    """``count`` service beacon events, each from the host it is about, saying
    one of its running units stopped (the heal then finds it active), no two
    about the same unit; the (host, unit) of each."""
    pairs = [(host, unit) for host in lab.hosts if host != HOST
             for unit in lab.salt(host, "hpd_heal.units")[host]]
    assert len(pairs) >= count, f"the lab's hosts have only {len(pairs)} units: {pairs}"
    events = pairs[:count]

    def fire(event):
        host, unit = event
        # preload: the fields at the top of the event's data, as a beacon's are.
        out = lab.salt(host, "event.fire_master", "{}", f"salt/beacon/{host}/service/{unit}",
                       "preload=" + json.dumps({"service_name": unit,
                                                unit: {"running": False}}))
        assert out == {host: True}, out

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fire, events))
    return set(events)


def heals_of(seen, events):
    """The returns of the heal jobs of ``events`` (host, unit)."""
    return [d for d in runs(seen, "hpd_heal.service", "ret")
            if isinstance(d.get("fun_args"), list) and d["fun_args"]
            and isinstance(d["fun_args"][-1], dict)
            and (d["fun_args"][-1].get("minion"), d["fun_args"][-1].get("name")) in events]


def up_in_pool(lab, lb, timeout=120):
    """Waits until haproxy on `lb` has HOST up in backend app (its health checks
    passed); its stats row."""
    deadline = time.monotonic() + timeout
    while (row := haproxy_app(lab, lb).get(HOST, {})).get("status") != "UP":
        assert time.monotonic() < deadline, f"{HOST} not up in {lb}'s pool within {timeout}s: {row}"
        time.sleep(1)
    return row


def test_an_added_host_is_highstated_and_a_removed_one_leaves(lab, highstate):
    lbs = lab.hosts_with("lb")
    # Whose configuration lists the app hosts (hpd_scale.FOLLOWERS).
    followers = sorted({h for role in ("lb", "db", "db_replica", "cdn", "backup")
                        for h in lab.hosts_with(role)})
    try:
        with EventBus(lab) as bus, ThreadPoolExecutor(1) as pool:
            adding = pool.submit(labctl, lab, "add", HOST, "--roles", "app", "--memory", "512",
                                 "--cpus", "1")
            # The reaction to the new host's start hands its scale-out off as a
            # job and returns: the reactor's threads stay free meanwhile.
            bus.wait(lambda seen: runs(seen, "hpd_scale.joined", "new"), 1800,
                     "the scale-out's job")
            bus.wait(lambda seen: [d for d in runs(seen, "hpd_scale.react", "ret")
                                   if isinstance(d["return"], dict) and "jid" in d["return"]],
                     30, "the start's reaction returning the scale-out's job")
            events = heal_events(lab, HEAL_EVENTS)
            healed = bus.wait(lambda seen: (found := heals_of(seen, events))
                              and len(found) >= len(events) and found, 120,
                              f"{len(events)} heal reactions")
            assert not scaled(bus, "joined"), "the scale-out ended before the heals: no test"
            assert all(d["success"] and d["return"]["state"] == "active" for d in healed), healed
            added = adding.result()
            assert added.returncode == 0, added.stderr
            joined = bus.wait(lambda _: scaled(bus, "joined"), 60, "the joined event")[0]
        assert joined["result"] is True, joined
        assert joined["env"] == "dev" and joined["highstate"][HOST]["failed"] == []
        assert joined["highstate"][HOST]["changed"] > 0  # its roles' states applied now
        assert sorted(joined["followers"]) == followers
        # haproxy on every lb host sends it requests (round robin over the app hosts).
        for lb in lbs:
            before = up_in_pool(lab, lb)
            through_the_pool(lab, lb, 4 * len(lab.hosts_with("app")))
            after = haproxy_app(lab, lb)[HOST]
            assert int(after["hrsp_2xx"]) > int(before["hrsp_2xx"]), (before, after)
        # What the highstate gave it: the app role's services, watched by its beacons.
        units = lab.salt(HOST, "hpd_heal.units")[HOST]
        assert "uwsgi-emperor" in units
        assert lab.exec(HOST, "systemctl", "is-active", *units).returncode == 0
        beacons = lab.salt(HOST, "beacons.list", "return_yaml=False")[HOST]
        assert beacons["service"][0]["services"].keys() == set(units)
    finally:
        with EventBus(lab) as bus:
            removed = labctl(lab, "remove", HOST)
            left = bus.wait(lambda _: scaled(bus, "left"), 60, "the left event")[0]
    assert removed.returncode == 0, removed.stderr
    assert left["result"] is True and left["env"] == "dev"
    assert sorted(left["followers"]) == followers
    assert HOST not in lab.hosts
    keys = json.loads(labctl(lab, "salt-key", "--", "--list-all", "--out=json").stdout)
    assert HOST not in sum(keys.values(), [])
    assert HOST not in lab.salt(lbs[0], "pillar.get", "hpd:peers:app")[lbs[0]]
    assert [lb for lb in lbs if HOST in haproxy_app(lab, lb)] == []
