"""The lab for integration tests: booted once per test run, shared, removed at the end.

The tests' lab is the default farm spec under its own name and subnet, so it runs
beside a demo lab without touching it. HPD_TEST_KEEP_LAB=1 leaves it up after the
run (the next run reuses it), which makes iterating on one test fast.
"""

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))

from hpdlab.web import DOMAIN  # noqa: E402

import labctl  # noqa: E402

NAME = os.environ.get("HPD_TEST_LAB_NAME", "hpdtest")
SUBNET = os.environ.get("HPD_TEST_LAB_SUBNET", "10.79.0.0/24")
# A smaller spec than the farm, to iterate on one role's tests.
SPEC = os.environ.get("HPD_TEST_LAB_SPEC")


class LabHandle:
    """What tests need of a running lab: its hosts, the salt CLIs, a shell in a host."""

    def __init__(self, name, subnet, spec=None):
        self.spec = labctl.load_spec(spec, name, subnet)
        self.lab = labctl.Lab(self.spec["name"])

    def up(self):
        with self.lab.locked():
            self.lab.up(self.spec)

    def down(self):
        with self.lab.locked():
            self.lab.down()

    @property
    def state(self):
        return self.lab.load()

    @property
    def hosts(self):
        return sorted(self.state["hosts"])

    def hosts_with(self, role):
        """The hosts the lab's inventory gives `role`, sorted."""
        return sorted(n for n, h in self.state["hosts"].items() if role in h["roles"])

    def address(self, host):
        return self.state["hosts"][host]["address"]

    def salt(self, *args, program="salt", timeout=600):
        """Run the salt CLI against the lab's master; the parsed JSON it prints."""
        return self.lab.salt_json(*args, program=program, timeout=timeout)

    def salt_run(self, *args, timeout=900):
        return self.salt(*args, program="salt-run", timeout=timeout)

    def publish_site(self, tree=labctl.SITE_SOURCE, changes=None, branch="main"):
        """Publish a revision of the example site on `branch` of the repository the
        hosts clone (file:///srv/git/example.git): the files of `tree` (a directory,
        default example/) with `changes` ({path: new text, or None to remove it}).
        Returns its commit's sha (the branch head's when nothing differs)."""
        with self.lab.locked():
            return self.lab.publish_site(tree, changes, branch)

    def orchestrate(self, name, pillar=None, *args, timeout=900):
        """salt-run state.orchestrate orch.<name> [pillar=<json>] [args]: the
        CompletedProcess (text); what it printed for the caller to judge."""
        cmd = [*self.lab.salt_cmd("salt-run"), "state.orchestrate", f"orch.{name}"]
        if pillar is not None:
            cmd.append("pillar=" + json.dumps(pillar))
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                              check=False)

    def exec(self, host, *cmd, check=True):
        """Run a command in a host; its CompletedProcess (text)."""
        return self.lab.exec_in(self.state, host, list(cmd), check=check,
                                capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def lab():
    handle = LabHandle(NAME, SUBNET, SPEC)
    handle.up()
    yield handle
    if os.environ.get("HPD_TEST_KEEP_LAB") != "1":
        handle.down()


def settled(lab, highstate, role):
    """The first host with `role`, after checking that none of its states failed in
    the shared first highstate."""
    hosts = lab.hosts_with(role)
    assert hosts, f"the lab has no host with the {role} role"
    failed = failures(highstate[hosts[0]])
    assert not failed, f"{hosts[0]}: {failed}"
    return hosts[0]


def failures(results):
    """{state id: comment} of the states in `results` that did not succeed."""
    return {r["__id__"]: r["comment"] for r in results if r["result"] is not True}


def state_results(returned, hosts):
    """{host: [state result dict, ...]}; fails on a host that returned errors or nothing."""
    assert sorted(returned) == sorted(hosts), f"no return from {set(hosts) - set(returned)}"
    results = {}
    for host, ret in returned.items():
        assert isinstance(ret, dict), f"{host} did not run states: {ret}"
        results[host] = list(ret.values())
    return results


@pytest.fixture(scope="session")
def highstate(lab):
    """The first highstate of every host of the lab, as {host: [state results]}.
    Its time: the farm's first release builds, and the lb host may wait (up to
    varnish:error_page_wait, 600 s) for it before its own states run."""
    return state_results(lab.salt("*", "state.apply", timeout=1800), lab.hosts)


def haproxy_app(lab, host):
    """{server: its stats row} of haproxy's backend app on lb host `host`, the
    backend itself as BACKEND (the runtime API's `show stat`)."""
    rows = lab.exec(host, "/usr/local/sbin/hpd-haproxy", "show", "stat").stdout.lstrip(
        "# ").splitlines()
    fields = rows[0].split(",")
    stats = [dict(zip(fields, r.split(","), strict=False)) for r in rows[1:] if r]
    return {s["svname"]: s for s in stats if s["pxname"] == "app"}


def through_the_pool(lab, lb, n):
    """`n` requests for /health/ to haproxy's app pool listener on lb host `lb`
    (backend app, behind Varnish: nothing cached)."""
    port = lab.salt(lb, "hpd.settings", "lb")[lb]["ports"]["pool"]
    lab.exec(lb, "sh", "-c", f"for i in $(seq {n}); do curl -s -o /dev/null -H 'Host: {DOMAIN}' "
             f"http://127.0.0.1:{port}/health/; done")


@contextlib.contextmanager
def claimed_address(lab, host, address):
    """`host` claims `address` as its own for the block: its fqdn_ip4 grain (what
    hpd.service_address and the master's grain cache read), as a compromised
    host could; put back after."""
    lab.salt(host, "grains.setval", "fqdn_ip4", json.dumps([address]))
    lab.salt(host, "saltutil.refresh_grains")
    assert lab.salt(host, "grains.get", "fqdn_ip4")[host] == [address]
    try:
        yield
    finally:
        lab.salt(host, "grains.delkey", "fqdn_ip4", "force=True")
        lab.salt(host, "saltutil.refresh_grains")


class EventBus:
    """The lab master's event bus, listened to from the start of the block: the
    events (tag, data) seen so far, and waits for those a test expects."""

    def __init__(self, lab):
        import salt.utils.event  # slow to import: only where needed

        opts = lab.lab.salt_opts()
        self.bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        self.seen = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bus.destroy()

    def _read(self):
        event = self.bus.get_event(wait=1, full=True)
        if event:
            self.seen.append((event["tag"], event["data"]))

    def wait(self, found, timeout, what):
        """Read events until `found(self.seen)` is true; its value. Fails after
        `timeout` s naming `what` and the tags seen."""
        deadline = time.monotonic() + timeout
        while not (result := found(self.seen)):
            if time.monotonic() > deadline:
                tags = sorted({t for t, _ in self.seen if not t.startswith("salt/job/")})
                pytest.fail(f"no {what} within {timeout}s; saw {tags}")
            self._read()
        return result

    def drain(self, seconds):
        """Read every event of the next `seconds` s."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._read()

    def tagged(self, prefix):
        return [(t, d) for t, d in self.seen if t.startswith(prefix)]

    def returns(self, fun, host):
        """The returns of `fun` jobs from `host` seen so far."""
        return [d["return"] for t, d in self.seen
                if t.startswith("salt/job/") and t.endswith(f"/ret/{host}") and d.get("fun") == fun]
