"""The worker role on real hosts: Celery units run the site's jobs, come back
when they die, and a graceful stop lets the running job finish."""

import json
import time
import uuid

import pytest
from conftest import REPO, settled
from hpdlab import site as site_repository

pytestmark = pytest.mark.lab

# A job that takes a while, added to the site's tasks in a revision of the test's
# own (published on a branch of its own: the farm's main stays put).
SLOW_JOB = '''

@shared_task
def slow_job(token, seconds):
    """Sleep, then record the job like record_job (test_worker's revision only)."""
    import time

    time.sleep(seconds)
    return record_job(token)
'''


@pytest.fixture(scope="module")
def worker(lab, highstate):
    return settled(lab, highstate, "worker")


@pytest.fixture(scope="module")
def site(lab, worker):
    return lab.salt(worker, "hpd.settings", "site")[worker]


def manage(lab, host, site, *args):
    return lab.exec(host, f"/usr/local/sbin/{site['name']}-manage", *args)


def units(lab, host, site):
    out = lab.exec(host, "systemctl", "list-units", "--plain", "--no-legend", "--state=active",
                   f"{site['name']}-worker@*").stdout
    return sorted(line.split()[0] for line in out.splitlines())


def main_pid(lab, host, unit):
    return lab.exec(host, "systemctl", "show", "-P", "MainPID", unit).stdout.strip()


def apply(lab, host, sls, deploy):
    ret = lab.salt(host, "state.sls", sls, f"pillar={json.dumps({'deploy': deploy})}")[host]
    assert isinstance(ret, dict) and all(r["result"] for r in ret.values()), ret


def test_a_worker_processes_a_job(lab, highstate, worker, site):
    app = settled(lab, highstate, "app")
    token = uuid.uuid4().hex
    out = manage(lab, app, site, "enqueue_job", "--token", token, "--wait", "60").stdout
    assert out.splitlines()[0] == token
    done = out.splitlines()[1]
    assert done.startswith(f"done on {worker} by release "), out


def test_a_worker_that_dies_is_started_again(lab, worker, site):
    """systemd starts it again; it is active once the new worker consumes tasks
    (Type=notify: READY=1 on Celery's worker_ready)."""
    unit = units(lab, worker, site)[0]
    before = main_pid(lab, worker, unit)
    lab.exec(worker, "systemctl", "kill", "--signal=SIGKILL", unit)
    deadline = time.monotonic() + 120
    while unit not in units(lab, worker, site) or main_pid(lab, worker, unit) in ("0", before):
        assert time.monotonic() < deadline, f"{unit} was not started again"
        time.sleep(1)


def test_a_running_job_finishes_on_a_graceful_stop(lab, worker, site):
    """A revision with a slow job goes out through the release steps; while a worker
    runs the job, its units stop: the stop waits, the job completes."""
    tasks = (REPO / "example" / "hpdexample" / "tasks.py").read_text() + SLOW_JOB
    sha = lab.publish_site(changes={"hpdexample/tasks.py": tasks}, branch="test-worker-stop")
    old = lab.exec(worker, "readlink", "/srv/hpd/current").stdout.strip().rsplit("/", 1)[-1]
    try:
        for sls in ("site.checkout", "site.venv", "site.switch", "worker.restart"):
            apply(lab, worker, sls, {"sha": sha})
        running = units(lab, worker, site)
        assert running, "no worker unit runs"
        token, seconds = uuid.uuid4().hex, 8
        since = lab.exec(worker, "date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
        manage(lab, worker, site, "shell", "-c",
               f"from hpdexample.tasks import slow_job; slow_job.delay({token!r}, {seconds})")
        deadline = time.monotonic() + 60
        while "slow_job[" not in lab.exec(worker, "journalctl", "--since", since, "-u",
                                         f"{site['name']}-worker@*").stdout:
            assert time.monotonic() < deadline, "no worker received the job"
            time.sleep(0.5)
        started = time.monotonic()
        lab.exec(worker, "systemctl", "stop", *running)
        waited = time.monotonic() - started
        log = lab.exec(worker, "journalctl", "--since", since, "-u",
                       f"{site['name']}-worker@*").stdout
        assert "Warm shutdown" in log
        assert "slow_job" in log and "succeeded" in log, log[-3000:]
        found = manage(lab, worker, site, "shell", "-c",
                       f"from hpdexample.models import JobRun; "
                       f"print(JobRun.objects.filter(token={token!r}).count())").stdout
        assert found.split()[-1] == "1", "the job did not finish"
        assert waited > 1, f"the stop did not wait for the job ({waited:.1f} s)"
    finally:
        apply(lab, worker, "site.switch", {"release": old})
        apply(lab, worker, "worker.restart", {"release": old})
        lab.exec(worker, "rm", "-rf", f"/srv/hpd/releases/{sha[:12]}")
        site_repository.git(lab.lab.site_repo, "update-ref", "-d", "refs/heads/test-worker-stop")
