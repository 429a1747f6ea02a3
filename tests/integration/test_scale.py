"""Hosts added to and removed from a running farm (`labctl add`/`remove`): the
master's reactor highstates the new host with its roles, updates its mine and
highstates the hosts of its environment that list its role's hosts (lb, db...):
haproxy then sends it requests, which it answers from the database; a removed
host's key is deleted and those hosts are highstated again without it. No
other command."""

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import EventBus, haproxy_app, through_the_pool

pytestmark = [pytest.mark.lab, pytest.mark.drill]

REPO = Path(__file__).resolve().parents[2]
HOST = "app3"


def labctl_cmd(lab, *args):
    return [REPO / "lab" / "labctl", "--name", lab.lab.name, "--subnet", lab.state["subnet"],
            *args]


def labctl(lab, *args):
    return subprocess.run(labctl_cmd(lab, *args), capture_output=True, text=True, timeout=2400)


def scaled(bus, what):
    return [d for t, d in bus.tagged(f"hpd/scale/{what}/{HOST}")]


def labctl_reading(lab, bus, what, *args):
    """labctl `args`, which waits for the master's reactor, while the test reads
    the master's bus (a subscriber that stops reading for minutes is dropped by
    the master's publisher); the hpd/scale/<what> event about HOST."""
    with subprocess.Popen(labctl_cmd(lab, *args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as run:
        bus.wait(lambda _: scaled(bus, what) or run.poll() is not None, 2400, f"the {what} event")
        _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    return bus.wait(lambda _: scaled(bus, what), 60, f"the {what} event")[0]


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
        with EventBus(lab) as bus:
            joined = labctl_reading(lab, bus, "joined", "add", HOST, "--roles", "app",
                                    "--memory", "512", "--cpus", "1")
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
        assert beacons["hpd_units"][0]["units"] == units
    finally:
        with EventBus(lab) as bus:
            left = labctl_reading(lab, bus, "left", "remove", HOST)
    assert left["result"] is True and left["env"] == "dev"
    assert sorted(left["followers"]) == followers
    assert HOST not in lab.hosts
    keys = json.loads(labctl(lab, "salt-key", "--", "--list-all", "--out=json").stdout)
    assert HOST not in sum(keys.values(), [])
    assert HOST not in lab.salt(lbs[0], "pillar.get", "hpd:peers:app")[lbs[0]]
    assert [lb for lb in lbs if HOST in haproxy_app(lab, lb)] == []
