"""orch.deploy and orch.rollback on the lab: revision A then B deployed (the
migration once, the static files at the CDN origin with their compressed
variants, the workers on B), rolled back to A; a deploy with no revision
given (the environment's site:rev); and the bad cases: a failing migration, a
failing health check in the first or the last batch (rolled back, the pool
never empty), a rollback after a failed deploy, a revision that does not
exist, two deploys at once, a deploy while an app host is out of the pool.
The revisions are published on a branch of their own; at the end the farm
serves the release it served before (main's tree)."""

import json
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO, EventBus, haproxy_app, settled
from hpdlab.deploy import deploy, orchestrate

pytestmark = pytest.mark.lab

SITE, ENV = "example", "dev"
BRANCH = "deploy-test"
MIGRATIONS = "hpdexample/migrations"
VIEWS = "hpdexample/views.py"
CELERY = "hpdexample/celery.py"


def migration(name, sql="SELECT 1"):
    return (f'from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n'
            f'    dependencies = [("hpdexample", "{name}")]\n'
            f'    operations = [migrations.RunSQL("{sql}", migrations.RunSQL.noop)]\n')


def serving(lab, hosts):
    """{host: the release `current` points to}."""
    return {h: lab.exec(h, "readlink", "/srv/hpd/current").stdout.strip().rsplit("/", 1)[-1]
            for h in hosts}


def health_release(lab, host):
    url = f"http://{lab.address(host)}:8000/health/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return json.loads(resp.read())["release"]


def psql(lab, db, sql):
    """psql as postgres on the site's database (pillar db:name) over the local socket."""
    name = lab.salt(db, "hpd.settings", "db")[db]["name"]
    return lab.exec(db, "runuser", "-u", "postgres", "--", "psql", "-XtA", "-d", name, "-c",
                    sql).stdout.strip()


@pytest.fixture(scope="module")
def farm(lab, highstate):
    """The hosts, and the release the farm serves when the tests start. At the end
    the farm serves main's tree again (deployed: keep-N may have removed the
    release it started on), without the test migrations' rows."""
    hosts = {"app": lab.hosts_with("app"), "worker": lab.hosts_with("worker"),
             "db": settled(lab, highstate, "db"), "cdn": settled(lab, highstate, "cdn")}
    before = serving(lab, hosts["app"] + hosts["worker"])
    assert len(set(before.values())) == 1, before
    hosts["before"] = next(iter(before.values()))
    yield hosts
    rc, _, output = deploy(lab.lab, lab.publish_site())
    assert rc == 0, output
    psql(lab, hosts["db"], "DELETE FROM django_migrations WHERE name LIKE '%_deploy_test_%'")


@pytest.fixture(scope="module")
def revisions(lab):
    """Revisions of the site, one after another on BRANCH (deployed by sha): A (a
    migration more than main), B (A, a migration and a static file more), one
    whose migration fails, one whose /health/ fails, one whose /health/ fails
    on the last app host only, one whose workers cannot start; {name: sha}."""
    a = {f"{MIGRATIONS}/0003_deploy_test_a.py": migration("0002_first_posts")}
    b = {**a, f"{MIGRATIONS}/0004_deploy_test_b.py": migration("0003_deploy_test_a"),
         "static/hpdexample/deploy-test-b.css": "body { color: #0b0b0b; }\n" * 40}
    bad_migration = {**a, f"{MIGRATIONS}/0004_deploy_test_bad.py": migration(
        "0003_deploy_test_a", "SELECT no_such_column FROM no_such_table")}
    views = (REPO / "example" / VIEWS).read_text()
    sick = views.replace('status=200 if body["database"] == "ok" else 503', "status=503")
    assert sick != views
    sick_on_last = views.replace(
        'status=200 if body["database"] == "ok" else 503',
        f'status=503 if socket.gethostname() == "{lab.hosts_with("app")[-1]}" else '
        '200 if body["database"] == "ok" else 503')
    celery = (REPO / "example" / CELERY).read_text()
    # A celery worker's command line names `worker`; uWSGI's and manage.py's do not.
    no_worker = celery.replace(
        "import os\n", "import os\nimport sys\n\nif 'worker' in sys.argv[1:]:\n"
        "    raise ImportError('deploy test: no worker')\n", 1)
    assert no_worker != celery
    return {name: lab.publish_site(changes=changes, branch=BRANCH)
            for name, changes in (("a", a), ("b", b), ("bad_migration", bad_migration),
                                  ("bad_health", {**a, VIEWS: sick}),
                                  ("bad_health_last", {**a, VIEWS: sick_on_last}),
                                  ("bad_worker", {**a, CELERY: no_worker}))}


def lock_status(lab):
    out = subprocess.run([*lab.lab.salt_cmd("salt-run"), "--out=json", "hpd_deploy.status"],
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout).get(f"{SITE}/{ENV}")


def releases(lab, host):
    return sorted(lab.exec(host, "ls", "/srv/hpd/releases").stdout.split())


def assert_serving(lab, farm, release):
    hosts = farm["app"] + farm["worker"]
    assert serving(lab, hosts) == dict.fromkeys(hosts, release)
    assert {h: health_release(lab, h) for h in farm["app"]} == dict.fromkeys(farm["app"],
                                                                             release)


def test_a_revision_that_does_not_exist_is_refused_before_any_host_changes(lab, farm):
    before = {h: releases(lab, h) for h in farm["app"] + farm["worker"]}
    rc, states, output = deploy(lab.lab, "no-such-revision")
    assert rc != 0
    assert list(states) == ["deploy-refused"], output
    assert states["deploy-refused"]["comment"].startswith(
        "revision 'no-such-revision' not resolved on ")
    assert {h: releases(lab, h) for h in before} == before
    assert_serving(lab, farm, farm["before"])


def test_a_deploy_is_refused_while_an_app_host_is_out_of_the_pool(lab, farm, revisions):
    """As a deploy that died between drain and ready leaves it: the next one
    names the host and how to repair, and changes nothing."""
    lb, host = lab.hosts_with("lb")[0], farm["app"][-1]
    assert lab.salt(lb, "hpd_haproxy.drain", "app", host)[lb]["drained"] is True
    try:
        before = {h: releases(lab, h) for h in farm["app"] + farm["worker"]}
        rc, states, output = deploy(lab.lab, revisions["a"])
        assert rc != 0
        assert list(states) == ["deploy-refused"], output
        assert states["deploy-refused"]["comment"].startswith(
            f"app hosts out of the pool ({host} is DRAIN on {lb}), "), output
        assert {h: releases(lab, h) for h in before} == before
    finally:
        assert lab.salt(lb, "hpd_haproxy.ready", "app", host)[lb]["status"].startswith("UP")
    assert_serving(lab, farm, farm["before"])


def test_deploy_a_then_b_then_roll_back_to_a(lab, farm, revisions):
    rc, states, output = deploy(lab.lab, revisions["a"])
    assert rc == 0, output
    release_a = serving(lab, farm["app"][:1])[farm["app"][0]]
    assert release_a.endswith("-" + revisions["a"][:12])
    assert_serving(lab, farm, release_a)

    rc, states, output = deploy(lab.lab, revisions["b"])
    assert rc == 0, output
    release_b = serving(lab, farm["app"][:1])[farm["app"][0]]
    assert release_b.endswith("-" + revisions["b"][:12])
    assert_serving(lab, farm, release_b)
    # The migrations ran once each; B's static files are at the origin, compressed too.
    rows = psql(lab, farm["db"], "SELECT name, count(*) FROM django_migrations WHERE name "
                                 "LIKE '%_deploy_test_%' GROUP BY name ORDER BY name")
    assert rows.split() == ["0003_deploy_test_a|1", "0004_deploy_test_b|1"]
    found = lab.exec(farm["cdn"], "sh", "-c", "ls /srv/cdn/example/static/hpdexample/ | "
                                              "grep '^deploy-test-b\\.'").stdout.split()
    assert {name.rsplit(".", 1)[-1] for name in found} >= {"css", "gz", "br"}, found
    # The workers run B: each worker process started from B's release.
    for host in farm["worker"]:
        cwds = lab.exec(host, "sh", "-c", "for u in $(systemctl list-units --plain --no-legend "
                                          "'example-worker*' | cut -d' ' -f1); do readlink "
                                          "/proc/$(systemctl show -P MainPID $u)/cwd; done"
                        ).stdout.split()
        assert cwds and {c.rsplit("/", 1)[-1] for c in cwds} == {release_b}, cwds
    # Audit: a release log line on each host; the lock is free.
    last = lab.exec(farm["app"][0], "tail", "-1", "/srv/hpd/log/releases.log").stdout
    assert f" {SITE} deploy release={release_b} sha={revisions['b']}" in last
    assert lock_status(lab) is None
    assert "step: migrate" in output and "finish" in output  # the progress lines

    rc, states, output = orchestrate(lab.lab, "orch.rollback", {})
    assert rc == 0, output
    assert_serving(lab, farm, release_a)


def test_a_failing_migration_switches_nothing_and_frees_the_lock(lab, farm, revisions):
    was = serving(lab, farm["app"] + farm["worker"])
    rc, states, output = deploy(lab.lab, revisions["bad_migration"])
    assert rc != 0
    assert states["deploy-migrate"]["result"] is False
    assert not [i for i in states if i.startswith("deploy-batch-")]
    assert serving(lab, farm["app"] + farm["worker"]) == was
    assert_serving(lab, farm, was[farm["app"][0]])
    status = lock_status(lab)
    assert status is None or status["alive"] is False


def test_a_failing_health_check_rolls_the_switched_hosts_back(lab, farm, revisions):
    was = serving(lab, farm["app"] + farm["worker"])
    first = farm["app"][0]
    rc, states, output = deploy(lab.lab, revisions["bad_health"], health_timeout=20)
    assert rc != 0
    assert states["deploy-batch-1-health"]["result"] is False
    why = states["deploy-batch-1-health"]["changes"]["return"]["failed"]
    assert list(why) == [first] and "HTTP 503" in why[first]
    failed = states["deploy-batch-1-failed"]
    assert failed["result"] is False and f"failed on {first}" in failed["comment"]
    assert states[f"deploy-batch-1-rollback-{first}-health"]["result"] is True
    assert "deploy-batch-2-switch" not in states  # stopped: the other hosts never switched
    assert_serving(lab, farm, was[first])
    lb = lab.hosts_with("lb")[0]
    for host in farm["app"]:
        assert lab.salt(lb, "hpd_haproxy.state", "app", host)[lb]["status"] != "DRAIN"


def test_workers_that_cannot_start_roll_every_host_back(lab, farm, revisions):
    was = serving(lab, farm["app"] + farm["worker"])
    rc, states, output = deploy(lab.lab, revisions["bad_worker"], batch=len(farm["app"]))
    assert rc != 0
    assert states["deploy-workers"]["result"] is False, output
    assert "deploy-workers-failed" in states and "deploy-pruned" not in states, output
    rolled = [sid for sid, r in states.items() if sid.startswith("deploy-workers-rollback-")]
    assert rolled and all(states[sid]["result"] is True for sid in rolled), output
    assert_serving(lab, farm, was[farm["app"][0]])
    for host in farm["worker"]:
        units = lab.exec(host, "systemctl", "list-units", "--state=failed", "--plain",
                         "--no-legend", "example-worker@*").stdout
        assert units.strip() == "", units


def test_a_deploy_without_a_rev_deploys_the_environments_site_rev_and_says_so(lab, farm):
    main = lab.publish_site()  # the farm's site:rev is main (pillar/site's default)
    with EventBus(lab) as bus, ThreadPoolExecutor(1) as pool:
        running = pool.submit(orchestrate, lab.lab, "orch.deploy", {})
        bus.wait(lambda seen: running.done(), 1800, "the end of the deploy")
        bus.drain(2)
    rc, states, output = running.result()
    assert rc == 0, output
    event, = [d for t, d in bus.seen if t == f"hpd/deploy/{SITE}/start"]
    assert (event["rev"], event["rev_from"], event["sha"]) == ("main", "site:rev", main)
    assert f"start: rev main (site:rev, {main}) to " in output  # its progress line
    release = serving(lab, farm["app"][:1])[farm["app"][0]]
    assert release.endswith("-" + main[:12]) and release == event["release"]
    assert_serving(lab, farm, release)


class PoolWatch:
    """Samples haproxy's app backend on lb host `lb` while the block runs: the
    samples ({server: status}) in which no server was UP."""

    def __init__(self, lab, lb):
        self.lab, self.lb, self.empty, self.samples = lab, lb, [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self):
        while not self.stop.wait(0.2):
            states = {s: row["status"] for s, row in haproxy_app(self.lab, self.lb).items()
                      if s != "BACKEND"}
            self.samples += 1
            if not any(status.startswith("UP") for status in states.values()):
                self.empty.append(states)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)


def test_a_failure_in_a_later_batch_rolls_it_back_first_and_the_pool_never_empties(
        lab, farm, revisions):
    was = serving(lab, farm["app"] + farm["worker"])
    first, last = farm["app"][0], farm["app"][-1]
    with PoolWatch(lab, lab.hosts_with("lb")[0]) as watch:
        rc, states, output = deploy(lab.lab, revisions["bad_health_last"], health_timeout=20)
    assert rc != 0
    assert states["deploy-batch-1-health"]["result"] is True, output
    assert list(states["deploy-batch-2-health"]["changes"]["return"]["failed"]) == [last]
    run = {i: s["__run_num__"] for i, s in states.items()}
    # The failed batch's host went back (and into the pool) before the first was drained.
    assert (run[f"deploy-batch-2-rollback-{last}-ready-{last}"]
            < run[f"deploy-batch-2-rollback-{first}-drain-{first}"]), output
    for host in (first, last):
        assert states[f"deploy-batch-2-rollback-{host}-health"]["result"] is True, output
    assert watch.samples > 10 and watch.empty == [], watch.empty
    assert_serving(lab, farm, was[first])


@pytest.mark.drill
def test_a_rollback_after_a_failed_deploy_goes_to_the_release_that_served(lab, farm,
                                                                          revisions):
    rc, _, output = deploy(lab.lab, revisions["a"])
    assert rc == 0, output
    served = serving(lab, farm["app"][:1])[farm["app"][0]]
    rc, states, output = deploy(lab.lab, revisions["bad_health"], health_timeout=20)
    assert rc != 0 and states["deploy-batch-1-health"]["result"] is False, output
    rc, _, output = deploy(lab.lab, revisions["b"])
    assert rc == 0, output
    # Back to A's release, which served before B: not to the failed one, made before B.
    rc, states, output = orchestrate(lab.lab, "orch.rollback", {"deploy": {"health_timeout": 30}})
    assert rc == 0, output
    assert_serving(lab, farm, served)


def test_a_second_deploy_is_refused_while_one_runs(lab, farm, revisions):
    first = subprocess.Popen([*lab.lab.salt_cmd("salt-run"), "--out=json", "state.orchestrate",
                              "orch.deploy",
                              f"pillar={json.dumps({'deploy': {'rev': revisions['a']}})}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ((status := lock_status(lab)) and status["alive"]):
            assert first.poll() is None and time.monotonic() < deadline, "no lock taken"
            time.sleep(1)
        rc, states, output = deploy(lab.lab, revisions["a"])
        assert rc != 0
        assert list(states) == ["deploy-refused"], output
        assert states["deploy-refused"]["comment"].startswith(
            "deploy of example to dev refused: "), output
    finally:
        out, err = first.communicate(timeout=1500)
    assert first.returncode == 0, (err + out)[-6000:]
