"""What operators' commands print on the lab: their output, no Python traceback,
no warning that is not this project's (README, Tests and lint)."""

import subprocess
import sys

import pytest
from conftest import NAME, REPO
from hpdlab.deploy import orchestrate

pytestmark = pytest.mark.lab

NOISE = ("Traceback", "unclosed", "Unclosed", "Warning", "WARNING", "Usage:")


def test_a_command_in_a_host_while_listening_to_the_bus_prints_nothing(lab):
    """The in-process clients of `up`, the demo and the tests listen to the master's
    bus while they run commands in hosts (`exec_in`)."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'lab')!r})\n"
        "import salt.utils.event\n"
        "from hpdlab.lab import Lab\n"
        f"lab = Lab({NAME!r}); state = lab.load(); opts = lab.salt_opts()\n"
        "bus = salt.utils.event.get_master_event(opts, opts['sock_dir'], listen=True)\n"
        "try:\n"
        "    bus.fire_event({}, 'hpd/test/clean')\n"
        "    assert bus.get_event(wait=30, tag='hpd/test/clean'), 'no event'\n"
        f"    lab.exec_in(state, {lab.hosts[0]!r}, ['true'])\n"
        "finally:\n"
        "    bus.destroy()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


@pytest.mark.parametrize("args", [["hpd_deploy.status"], ["test.arg", "1"]])
def test_a_runner_prints_only_its_output(lab, args):
    out = subprocess.run([*lab.lab.salt_cmd("salt-run"), *args], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == ""
    assert not [line for line in out.stdout.splitlines() if any(n in line for n in NOISE)]


@pytest.mark.parametrize("sls, deploy, reason", [
    ("orch.deploy", {"rev": "main", "batch": 0}, "deploy:batch must be a whole number >= 1, not 0"),
    ("orch.deploy", {"rev": " ", "batch": 2},
     "deploy:rev must be a branch, a tag or a commit sha, not ' '"),
    ("orch.rollback", {"batch": "two"}, "deploy:batch must be a whole number >= 1, not 'two'"),
])
def test_a_refused_deploy_says_why_in_one_line(lab, sls, deploy, reason):
    """The reason, once as the one failed state's comment (and Salt's log line of
    a failed state); no traceback, no template, no docstring; no host touched."""
    rc, states, output = orchestrate(lab.lab, sls, {"deploy": deploy}, timeout=300)
    assert rc != 0
    refusal = sls.split(".")[1] + "-refused"
    assert list(states) == [refusal], output
    assert states[refusal]["result"] is False and states[refusal]["comment"] == reason
    assert output.splitlines()[0] == f"[ERROR   ] {reason}", output
    assert not [line for line in output.splitlines() if any(n in line for n in NOISE)], output
    assert sum(line.count(reason.split()[0]) for line in output.splitlines()) == 2, output
