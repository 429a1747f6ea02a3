"""A lab of its own: up, add a host, a host lying about itself, what the hosts'
cgroups hold, down from another cgroup (twice)."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hpdlab import cgroups, util

import labctl

pytestmark = [pytest.mark.lab, pytest.mark.drill]

REPO = Path(__file__).resolve().parents[2]
NAME, SUBNET = "hpdlc", "10.80.0.0/24"
SPEC = None


def labctl_args(*args):
    return [REPO / "lab" / "labctl", "--spec", SPEC, "--name", NAME, "--subnet", SUBNET, *args]


def labctl_cli(*args, check=True):
    return subprocess.run(labctl_args(*args), capture_output=True, text=True, check=check,
                          timeout=900)


def salt_json(*args, timeout=300):
    out = labctl_cli("salt", "--", "-t", str(timeout), *args, "--out=json", "--static",
                     check=False)
    return json.loads(out.stdout or "{}")


def links():
    """The machine's links named after this lab (its bridge, its hosts' veths): other
    labs may come and go on the machine meanwhile."""
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout) if NAME in link["ifname"]}


def leftovers(state, links_before):
    """Everything the lab's state recorded that is still on the machine after `down`."""
    parts = [*state["hosts"].values(), state["master"]]
    groups = state["cgroups"] + [g for p in parts for g in p.get("cgroups", [])]
    found = list(util.lab_mounts(util.LAB_ROOT / NAME))
    found += [g for g in groups if Path(g).exists()]
    found += sorted(links() - links_before)
    found += [f"pid {p['pid']}" for p in parts if util.is_alive(p["pid"])]
    if (util.LAB_ROOT / NAME).exists():
        found.append(str(util.LAB_ROOT / NAME))
    return found


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
    status = labctl_cli("status")
    assert "web1" in status.stdout and "liar" in status.stdout
    assert status.stdout.count("answering") == 2, status.stdout
    assert "[ERROR" not in status.stderr, status.stderr


def test_a_host_that_fails_to_boot_is_reported_from_its_log_and_removed(small_lab):
    """A host nspawn refuses (a machine name it rejects stands in for any boot
    failure): `add` says why from the host's own log, and stops what it started."""
    out = labctl_cli("add", "bad_name", check=False)
    assert out.returncode == 2, out
    assert "host bad_name failed to boot: exited (Invalid machine name: hpdlc-bad_name)" in (
        out.stderr), out.stderr
    state = labctl.Lab(NAME).load()
    assert sorted(state["hosts"]) == ["liar", "web1"]
    assert not (util.LAB_ROOT / NAME / "hosts" / "bad_name").exists()
    assert util.lab_mounts(util.LAB_ROOT / NAME / "hosts" / "bad_name") == []
    assert labctl_cli("status").stdout.count("answering") == 2
    inventory = util.LAB_ROOT / NAME / "master" / "inventory" / "inventory.yaml"
    assert sorted(yaml.safe_load(inventory.read_text())) == ["liar", "web1"]


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
    addresses = {n: h["address"] for n, h in labctl.Lab(NAME).load()["hosts"].items()}
    assert pillar["liar"]["hpd"] == {"env": "dev", "roles": [], "peers": {"app": ["web1"]},
                                     "addresses": addresses}
    assert pillar["liar"]["highperf"] == pillar["web1"]["highperf"]  # dev's, not production's
    top = salt_json("liar", "state.show_top")["liar"]
    assert top == {"base": ["common", "heal"]}


def hierarchy_of(group):
    """The /proc/<pid>/cgroup key ("memory", "name=systemd", "" for cgroup2) of a group
    directory, and the group's path in its hierarchy."""
    rel = Path(group).relative_to(cgroups.CGROUP_ROOT)
    if (cgroups.CGROUP_ROOT / "cgroup.controllers").exists():  # pure v2
        return "", "/" + str(rel)
    first, rest = rel.parts[0], "/" + "/".join(rel.parts[1:])
    return {"systemd": "name=systemd", "unified": ""}.get(first, first), rest


def test_every_process_of_a_host_is_inside_its_cgroups(small_lab):
    """Seen from the machine: every process in a host's PID namespace, its own and a
    command run by `labctl exec`, sits in (or below) each cgroup recorded for the host."""
    lab = labctl.Lab(NAME)
    state = lab.load()
    if state["cgroup_mode"] == "systemd":
        pytest.skip("systemd mode: scopes (unit-tested: the scope command and its name)")
    visitor = subprocess.Popen([REPO / "lab" / "labctl", "--spec", SPEC, "--name", NAME,
                                "--subnet", SUBNET, "exec", "web1", "--", "sleep", "120"])
    try:
        time.sleep(2)
        for name, host in state["hosts"].items():
            members = host_processes(lab.host_init_pid(state, name))
            commands = [Path(f"/proc/{pid}/comm").read_text().strip() for pid in members]
            assert len(members) >= 4, f"{name}: {commands}"  # systemd, journald, minion...
            if name == "web1":
                assert "sleep" in commands
            for pid, text in members.items():
                where = {}
                for line in text.splitlines():
                    _, controllers, path = line.split(":", 2)
                    for c in controllers.split(",") if controllers else [""]:
                        where[c] = path
                for group in host["cgroups"]:
                    key, path = hierarchy_of(group)
                    assert where[key] == path or where[key].startswith(path + "/"), (
                        f"{name}: pid {pid} is in {key}:{where[key]}, not below {path}")
    finally:
        visitor.kill()
        visitor.wait()


def host_processes(init):
    """{pid: /proc/<pid>/cgroup} of the processes in the PID namespace of `init`."""
    namespace = os.readlink(f"/proc/{init}/ns/pid")
    members = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "ns/pid") == namespace:
                members[int(proc.name)] = (proc / "cgroup").read_text()
        except OSError:
            continue  # gone meanwhile
    return members


def test_the_memory_limit_holds_inside_the_host(small_lab):
    """web1 is 512 MiB. A service of the host's own systemd sees that limit in its
    cgroup, and is killed when it touches 700 MiB (100 MiB is fine)."""

    def service(*cmd):
        return labctl_cli("exec", "web1", "--", "systemd-run", "--wait", "--pipe", "-q", *cmd,
                          check=False)

    limit = service("sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                    "/sys/fs/cgroup/memory.max 2>/dev/null")
    assert int(limit.stdout.split()[0]) == 512 * 2**20, limit
    touch = "b = b'x' * ({} << 20); print('touched', len(b) >> 20)"
    small = service("python3", "-c", touch.format(100))
    assert small.returncode == 0 and "touched 100" in small.stdout, small
    big = service("python3", "-c", touch.format(700))
    assert big.returncode != 0 and "touched" not in big.stdout, big
    # A command run by `labctl exec` counts against the host as well.
    big = labctl_cli("exec", "web1", "--", "python3", "-c", touch.format(700), check=False)
    assert big.returncode != 0 and "touched" not in big.stdout, big


def run_in_another_cgroup(tmp_cgroup, *args):
    """labctl in a cgroup of its own in every hierarchy the lab uses: `down` must not
    look for the lab's groups relative to its caller's."""
    state = labctl.Lab(NAME).load()
    tops = cgroups.lab_cgroup_tops("x", state["cgroup_mode"]).values()
    groups = [top.parent / tmp_cgroup for top in tops]
    for g in groups:
        g.mkdir()
    try:
        return subprocess.run(cgroups.in_cgroups(groups, labctl_args(*args)), capture_output=True,
                              text=True, check=True, timeout=900)
    finally:
        for g in groups:
            util.wait_for(lambda g=g: not cgroups.cgroup_pids(g), 10, f"{g} to empty")
            g.rmdir()


def test_down_from_another_cgroup_leaves_nothing_and_can_run_twice(small_lab):
    state = labctl.Lab(NAME).load()
    assert util.is_process(state["master"]["pid"], "salt-master")
    run_in_another_cgroup("hpdlc-caller", "down")
    assert leftovers(state, small_lab) == []
    assert not util.is_alive(state["master"]["pid"])
    labctl_cli("down")
    assert leftovers(state, small_lab) == []
