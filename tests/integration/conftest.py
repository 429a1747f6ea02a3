"""The lab for integration tests: booted once per test run, shared, removed at the end.

The tests' lab is the default farm spec under its own name and subnet, so it runs
beside a demo lab without touching it. HPD_TEST_KEEP_LAB=1 leaves it up after the
run (the next run reuses it), which makes iterating on one test fast.
"""

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))

import labctl  # noqa: E402

NAME = os.environ.get("HPD_TEST_LAB_NAME", "hpdtest")
SUBNET = os.environ.get("HPD_TEST_LAB_SUBNET", "10.79.0.0/24")


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

    def exec(self, host, *cmd, check=True):
        """Run a command in a host; its CompletedProcess (text)."""
        return self.lab.exec_in(self.state, host, list(cmd), check=check,
                                capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def lab():
    handle = LabHandle(NAME, SUBNET)
    handle.up()
    yield handle
    if os.environ.get("HPD_TEST_KEEP_LAB") != "1":
        handle.down()


def settled(lab, highstate, role):
    """The first host with `role`, after checking that none of its states failed in
    the shared first highstate."""
    hosts = lab.hosts_with(role)
    assert hosts, f"the lab has no host with the {role} role"
    failed = [r["__id__"] for r in highstate[hosts[0]] if r["result"] is not True]
    assert not failed, f"{hosts[0]}: {failed}"
    return hosts[0]


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
    """The first highstate of every host of the lab, as {host: [state results]}."""
    return state_results(lab.salt("*", "state.apply"), lab.hosts)


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
