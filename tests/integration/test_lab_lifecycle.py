"""A lab of its own: up, add a host, a host lying about itself, down (twice)."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import labctl

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
NAME, SUBNET = "hpdlc", "10.80.0.0/24"


def labctl_cli(*args, check=True):
    return subprocess.run([REPO / "lab" / "labctl", "--spec", SPEC, "--name", NAME,
                           "--subnet", SUBNET, *args], capture_output=True, text=True,
                          check=check, timeout=600)


def salt_json(*args, timeout=300):
    out = labctl_cli("salt", "--", "-t", str(timeout), *args, "--out=json", "--static",
                     check=False)
    return json.loads(out.stdout or "{}")


def links():
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def leftovers(state, links_before):
    """Everything of the lab still on the machine after `down`."""
    tops = labctl.lab_cgroup_tops(NAME, state["cgroup_mode"]).values()
    found = list(labctl.lab_mounts(labctl.LAB_ROOT / NAME))
    found += [str(top) for top in tops if top.exists()]
    found += sorted(links() - links_before)
    pids = [h["pid"] for h in state["hosts"].values()]
    found += [f"pid {p}" for p in pids if labctl.is_alive(p)]
    found += [f"pid {p}" for top in tops for p in labctl.cgroup_pids(top)]
    if (labctl.LAB_ROOT / NAME).exists():
        found.append(str(labctl.LAB_ROOT / NAME))
    return found


SPEC = None


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    global SPEC
    SPEC = tmp_path_factory.mktemp("spec") / "small.yaml"
    SPEC.write_text(yaml.safe_dump({"name": NAME, "hosts": {
        "web1": {"address": 10, "roles": ["app"], "env": "dev", "memory": 512, "cpus": 1}}}))
    before = links()
    labctl_cli("up")
    yield before
    labctl_cli("down", check=False)


def test_up_and_add(small_lab):
    labctl_cli("add", "liar", "--roles", "", "--memory", "512", "--cpus", "1")
    status = labctl_cli("status").stdout
    assert "web1" in status and "liar" in status
    assert status.count("answering") == 2, status


def test_a_host_cannot_claim_another_environment_or_role(small_lab):
    claim = {"grains": {"env": "production", "roles": ["db", "monitoring"]}}
    labctl_cli("exec", "liar", "--", "sh", "-c",
               f"echo '{json.dumps(claim)}' > /etc/salt/minion.d/zz-claim.conf && "
               "systemctl restart salt-minion")
    deadline = time.monotonic() + 120
    while salt_json("liar", "grains.get", "env", timeout=5).get("liar") != "production":
        assert time.monotonic() < deadline, "the minion did not come back with its claim"
        time.sleep(2)
    pillar = salt_json("liar,web1", "-L", "pillar.items", "unmask=True")
    assert pillar["liar"]["hpd"] == {"env": "dev", "roles": [], "peers": {"app": ["web1"]}}
    assert pillar["liar"]["highperf"] == pillar["web1"]["highperf"]  # dev's, not production's
    top = salt_json("liar", "state.show_top")["liar"]
    assert top == {"base": ["common"]}


def test_down_leaves_nothing_and_can_run_twice(small_lab):
    state = labctl.Lab(NAME).load()
    labctl_cli("down")
    assert leftovers(state, small_lab) == []
    labctl_cli("down")
    assert leftovers(state, small_lab) == []
