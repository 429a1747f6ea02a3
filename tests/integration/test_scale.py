"""Hosts added to and removed from a running farm (`labctl add`/`remove`): the
master's reactor highstates the new host with its roles, updates its mine and
highstates the lb hosts of its environment; a removed host's key is deleted and
the lb hosts are highstated again without it. No other command."""

import json
import subprocess
from pathlib import Path

import pytest
from conftest import EventBus

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
HOST = "app3"


def labctl(lab, *args):
    return subprocess.run([REPO / "lab" / "labctl", "--name", lab.lab.name,
                           "--subnet", lab.state["subnet"], *args],
                          capture_output=True, text=True, timeout=2400)


def scaled(bus, what):
    return [d for t, d in bus.tagged(f"hpd/scale/{what}/{HOST}")]


def test_an_added_host_is_highstated_and_a_removed_one_leaves(lab, highstate):
    lbs = lab.hosts_with("lb")
    try:
        with EventBus(lab) as bus:
            added = labctl(lab, "add", HOST, "--roles", "app", "--memory", "512", "--cpus", "1")
            assert added.returncode == 0, added.stderr
            joined = bus.wait(lambda _: scaled(bus, "joined"), 60, "the joined event")[0]
        assert joined["result"] is True, joined
        assert joined["env"] == "dev" and joined["highstate"][HOST]["failed"] == []
        assert joined["highstate"][HOST]["changed"] > 0  # its roles' states applied now
        assert sorted(joined["lb"]) == lbs
        # What the highstate gave it: the app role's services, watched by its beacons.
        assert lab.exec(HOST, "systemctl", "is-active", "nutcracker", "rsync").returncode == 0
        beacons = lab.salt(HOST, "beacons.list", "return_yaml=False")[HOST]
        assert beacons["service"][0]["services"].keys() == {"nutcracker", "rsync"}
    finally:
        with EventBus(lab) as bus:
            removed = labctl(lab, "remove", HOST)
            left = bus.wait(lambda _: scaled(bus, "left"), 60, "the left event")[0]
    assert removed.returncode == 0, removed.stderr
    assert left["result"] is True and left["env"] == "dev" and sorted(left["lb"]) == lbs
    assert HOST not in lab.hosts
    keys = json.loads(labctl(lab, "salt-key", "--", "--list-all", "--out=json").stdout)
    assert HOST not in sum(keys.values(), [])
    assert HOST not in lab.salt(lbs[0], "pillar.get", "hpd:peers:app")[lbs[0]]
