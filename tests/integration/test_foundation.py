"""The lab and the common role, on real systemd hosts with a real salt-master."""

import json
from pathlib import Path

import pytest
from conftest import failures, state_results
from hpdlab.util import wait_for

pytestmark = pytest.mark.lab


def test_every_host_boots_systemd(lab):
    assert len(lab.hosts) >= 3
    for host in lab.hosts:
        state = lab.exec(host, "systemctl", "is-system-running", check=False).stdout.strip()
        assert state in ("running", "degraded"), f"{host}: {state}"


def test_every_minion_answers(lab):
    assert lab.salt("*", "test.ping") == {host: True for host in lab.hosts}


def test_hosts_are_limited_to_their_declared_size(lab):
    grains = lab.salt("*", "grains.item", "mem_total", "num_cpus")
    mode = lab.state["cgroup_mode"]
    for host, entry in lab.state["hosts"].items():
        assert grains[host] == {"mem_total": entry["memory"], "num_cpus": entry["cpus"]}
        if mode == "systemd":
            continue  # the scope's MemoryMax/CPUQuota, set by systemd-run
        limits = {}
        for group in map(Path, entry["cgroups"]):
            for name in ("memory.limit_in_bytes", "memory.max", "cpu.cfs_quota_us", "cpu.max"):
                if (group / name).exists():
                    limits[name] = (group / name).read_text().split()[0]
        memory = limits.get("memory.limit_in_bytes") or limits.get("memory.max")
        quota = limits.get("cpu.cfs_quota_us") or limits.get("cpu.max")
        assert int(memory) == entry["memory"] * 2**20, host
        assert int(quota) == entry["cpus"] * 100000, host


def test_pillar_comes_from_the_inventory(lab):
    pillar = lab.salt("*", "pillar.item", "hpd", "unmask=True")
    for host, entry in lab.state["hosts"].items():
        assert pillar[host]["hpd"]["env"] == entry["env"]
        assert pillar[host]["hpd"]["roles"] == entry["roles"]
        peers = {n for n, h in lab.state["hosts"].items() if h["env"] == entry["env"]}
        for role, ids in pillar[host]["hpd"]["peers"].items():
            assert set(ids) <= peers
            assert all(role in lab.state["hosts"][i]["roles"] for i in ids)
        assert pillar[host]["hpd"]["addresses"] == {n: lab.address(n) for n in peers}


def test_highstate_applies_common_everywhere(lab, highstate):
    assert sorted(highstate) == lab.hosts
    for host, results in highstate.items():
        failed = failures(results)
        assert not failed, f"{host}: {failed}"
        assert any(r["__id__"] == "common-app-user-present" for r in results)


def test_app_user_exists_and_owns_srv(lab, highstate):
    for host in lab.hosts:
        entry = lab.exec(host, "getent", "passwd", "hpd").stdout.strip()
        _, _, uid, gid, _, home, shell = entry.split(":")
        assert int(uid) == 1500 and int(gid) == 1500, host
        assert home == "/srv/hpd" and shell == "/usr/sbin/nologin", host
        owners = lab.exec(host, "stat", "-c", "%n %U %G %a", "/srv/hpd", "/srv/hpd/releases",
                          "/srv/hpd/log").stdout.splitlines()
        assert owners == ["/srv/hpd hpd hpd 755", "/srv/hpd/releases hpd hpd 750",
                          "/srv/hpd/log hpd hpd 750"], host
        zone = lab.exec(host, "readlink", "/etc/localtime").stdout.strip()
        assert zone.endswith("Etc/UTC"), host


def test_salts_own_work_runs_at_a_lower_cpu_priority_than_the_services(lab, highstate):
    # A job's process (the shell cmd.run starts) inherits the minion's nice
    # value, set by the first highstate without a restart; a service does not.
    niced = lab.salt("*", "cmd.run", "ps -o ni= -p $$")
    assert {host: str(out).strip() for host, out in niced.items()} == dict.fromkeys(
        lab.hosts, "10")
    for host in lab.hosts:
        journald = lab.exec(host, "ps", "-o", "ni=", "-C", "systemd-journald").stdout.split()
        assert journald == ["0"], host


def test_second_highstate_changes_nothing(lab, highstate):
    again = state_results(lab.salt("*", "state.apply"), lab.hosts)
    for host, results in again.items():
        changed = [r["__id__"] for r in results if r["changes"]]
        assert not changed, f"{host} changed on the second run: {changed}"
        failed = failures(results)
        assert not failed, f"{host}: {failed}"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"app_user": {"uid": 0}}, "common:app_user:uid: 0 is less than the minimum of 1000"),
        ({"app_user": {"uid": "abc"}}, "common:app_user:uid: 'abc' is not of type 'integer'"),
        ({"timezonne": "Etc/UTC"}, "'timezonne' was unexpected"),
    ],
)
def test_bad_pillar_fails_the_render_and_changes_nothing(lab, highstate, bad, message):
    # A good change rides along with the bad value: it must not be applied either.
    # Two hosts of different roles (every host validates common alike).
    hosts = sorted({lab.hosts_with("lb")[0], lab.hosts_with("db")[0]})
    pillar = {"common": {"timezone": "Europe/Paris", **bad}}
    returned = lab.salt("-L", ",".join(hosts), "state.apply", f"pillar={json.dumps(pillar)}")
    for host in hosts:
        errors = returned[host]
        assert isinstance(errors, list), f"{host} ran states despite a bad pillar: {errors}"
        assert any(message in e for e in errors), f"{host}: {errors}"
        zone = lab.exec(host, "readlink", "/etc/localtime").stdout.strip()
        assert zone.endswith("Etc/UTC"), f"{host} changed its time zone to {zone}"


def test_modules_sync_when_a_minion_starts_not_in_each_highstate(lab, highstate):
    # Mark the host's synced copy of hpd.py: a sync replaces it with the master's.
    host, synced = lab.hosts[0], "/var/cache/salt/minion/extmods/modules/hpd.py"
    marker = "# a copy no sync has replaced"
    lab.exec(host, "sh", "-c", f"echo '{marker}' >> {synced}")
    results = state_results(lab.salt(host, "state.apply"), [host])[host]
    assert all(r["result"] is True for r in results), results
    assert marker in lab.exec(host, "cat", synced).stdout, "the highstate synced modules"
    # A (re)started minion gets the master's modules (the reactor on its start event).
    lab.exec(host, "systemctl", "restart", "salt-minion")
    wait_for(lambda: marker not in lab.exec(host, "cat", synced).stdout, 120,
             f"the reactor to sync {host}'s modules")
    wait_for(lambda: lab.salt(host, "test.ping").get(host) is True, 60,
             f"{host}'s minion to answer again")
