"""The app role on real hosts: the site under a uWSGI emperor answers on each app
host's private address with the release `current` points to, renders from the
database and the cache, passes Django's deployment check, keeps its secrets in
one file only the app user reads, refuses bad pillar values at render time, and
serves a new release after a `current` switch and a chain reload."""

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml
from conftest import REPO, settled

pytestmark = pytest.mark.lab

DOMAIN = "www.hpd.test"


def dev_secret(role, key):
    """A secret's value in the dev environment (pillar/secrets/dev/<role>.sls)."""
    return yaml.safe_load((REPO / "pillar" / "secrets" / "dev" / f"{role}.sls").read_text())[
        role][key]


SECRETS = {"site:secret_key": dev_secret("site", "secret_key"),
           "db:password": dev_secret("db", "password")}


def get(url, host=DOMAIN, timeout=10):
    """(status, headers, body) of a GET from the machine, straight to the lab (no
    proxy), as the load balancer sends it (https ended there)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Host": host, "X-Forwarded-Proto": "https"})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


@pytest.fixture(scope="module")
def site(lab, highstate):
    """The site's settings on the first app host (hpd.settings: secrets masked)."""
    app = settled(lab, highstate, "app")
    return lab.salt(app, "hpd.settings", "site")[app]


@pytest.fixture(scope="module")
def apps(lab, highstate):
    hosts = lab.hosts_with("app")
    for host in hosts:
        failed = [r["__id__"] for r in highstate[host] if r["result"] is not True]
        assert not failed, f"{host}: {failed}"
    port = lab.salt(hosts[0], "hpd.settings", "app")[hosts[0]]["port"]
    return {host: f"http://{lab.address(host)}:{port}" for host in hosts}


def manage(lab, host, site, *args, check=True):
    return lab.exec(host, f"/usr/local/sbin/{site['name']}-manage", *args, check=check)


def current_release(lab, host):
    return lab.exec(host, "readlink", "/srv/hpd/current").stdout.strip().rsplit("/", 1)[-1]


def health(base):
    status, _, body = get(f"{base}/health/")
    return status, json.loads(body)


def test_health_answers_from_each_app_host_directly_with_the_release_id(lab, apps):
    releases = set()
    for host, base in apps.items():
        status, body = health(base)
        assert status == 200, (host, body)
        assert body == {"release": current_release(lab, host), "database": "ok", "cache": "ok"}
        releases.add(body["release"])
    assert len(releases) == 1, f"the app hosts run different releases: {releases}"


def test_the_anonymous_page_renders_from_the_database_and_the_cache(lab, apps, site):
    host, base = next(iter(apps.items()))
    title = f"Posted by test_app {uuid.uuid4().hex[:8]}"
    key = f"{site['name']}:1:index:posts"  # Django's KEY_PREFIX:VERSION:key
    memcached = ("import socket, sys; s = socket.create_connection(('127.0.0.1', 22121)); "
                 "s.sendall(sys.argv[1].encode() + b'\\r\\n'); print(s.recv(65536)[:40])")
    manage(lab, host, site, "shell", "-c",
           f"from hpdexample.models import Post; Post.objects.create(title={title!r}, body='x')")
    try:
        lab.exec(host, "python3", "-c", memcached, f"delete {key}")
        status, headers, body = get(f"{base}/")
        assert status == 200, body
        assert title in body, "the page does not show the post just written to the database"
        assert headers["Cache-Control"] == f"public, max-age={site['anonymous_max_age']}"
        assert "Set-Cookie" not in headers
        cached = lab.exec(host, "python3", "-c", memcached, f"get {key}").stdout
        assert cached.startswith("b'VALUE "), f"the page did not fill the cache: {cached}"
    finally:
        manage(lab, host, site, "shell", "-c",
               f"from hpdexample.models import Post; Post.objects.filter(title={title!r}).delete()")
        lab.exec(host, "python3", "-c", memcached, f"delete {key}")


def test_the_deployment_check_passes_on_the_app_hosts(lab, apps, site):
    for host in apps:
        out = manage(lab, host, site, "check", "--deploy", "--fail-level", "WARNING", check=False)
        assert out.returncode == 0, f"{host}: {out.stdout}{out.stderr}"
        assert "no issues" in out.stdout


def test_the_settings_file_is_for_the_app_user_only_and_holds_the_only_copy_of_secrets(
        lab, apps, site):
    config = f"/etc/hpd/{site['name']}.json"
    for host in [*apps, *lab.hosts_with("worker")]:
        mode = lab.exec(host, "stat", "-c", "%U:%G %a", config).stdout.split()
        assert mode == ["root:hpd", "640"], host
        denied = lab.exec(host, "runuser", "-u", "nobody", "--", "cat", config, check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        values = json.loads(lab.exec(host, "runuser", "-u", "hpd", "--", "cat", config).stdout)
        assert values["SECRET_KEY"] == SECRETS["site:secret_key"]
        assert values["DATABASES"]["default"]["PASSWORD"] == SECRETS["db:password"]
        for name, value in SECRETS.items():
            found = lab.exec(host, "grep", "-rlsF", value, "/etc", "/srv/hpd", "/usr/local",
                             check=False).stdout.split()
            assert found == [config], f"{host}: {name} in {found}"


def test_hosts_without_the_app_or_worker_role_get_neither_secret_key_nor_db_password(
        lab, site):
    """The lb hosts (and every other host but the db and db_replica ones, which hold the
    db password: a replica must be able to become the primary)."""
    roles = {h: set(lab.state["hosts"][h]["roles"]) for h in lab.hosts}
    others = [h for h in lab.hosts if not {"app", "worker"} & roles[h]]
    assert others, "every host has the app or worker role"
    seen = lab.salt("-L", ",".join(others), "pillar.items")
    for host in others:
        assert "secret_key" not in (seen[host].get("site") or {}), host
        if not {"db", "db_replica"} & roles[host]:
            assert "password" not in (seen[host].get("db") or {}), host
        config = f"/etc/hpd/{site['name']}.json"
        assert lab.exec(host, "test", "-e", config, check=False).returncode != 0, host


@pytest.mark.parametrize(("role", "pillar", "key"), [
    ("app", {"app": {"port": "eighty"}}, "app:port"),
    ("app", {"app": {"uwsgi": {"processes": "many"}}}, "app:uwsgi:processes"),
    ("app", {"site": {"conn_max_age": "long"}}, "site:conn_max_age"),
    ("worker", {"worker": {"count": "two"}}, "worker:count"),
    ("worker", {"site": {"session_engine": "file"}}, "site:session_engine"),
])
def test_a_wrong_type_in_the_pillar_is_refused_at_render_naming_the_key(
        lab, highstate, role, pillar, key):
    host = settled(lab, highstate, role)
    ret = lab.salt(host, "state.apply", "test=True", f"pillar={json.dumps(pillar)}")[host]
    assert isinstance(ret, list), f"{host} rendered the states: {ret}"
    assert any(f"{key}:" in line for line in ret), ret


@contextlib.contextmanager
def clients(base, count=2):
    """`count` clients asking `base`'s /health/ one request after another while
    the block runs; yields the list of their answers, (status, release) or
    (the error, None)."""
    answers, stop = [], threading.Event()

    def ask():
        while not stop.is_set():
            try:
                status, body = health(base)
                answers.append((status, body["release"]))
            except OSError as exc:
                answers.append((repr(exc), None))

    askers = [threading.Thread(target=ask) for _ in range(count)]
    for asker in askers:
        asker.start()
    try:
        yield answers
    finally:
        stop.set()
        for asker in askers:
            asker.join()


def assert_none_failed(answers):
    failed = [a for a in answers if a[0] != 200]
    assert failed == [], f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"


def chain_reload(lab, host):
    """Touch the site's chain-reload trigger on `host` and wait for uWSGI's
    master to log the chain's end (every worker replaced and accepting)."""
    since = lab.exec(host, "date", "+@%s.%N").stdout.strip()
    lab.exec(host, "touch", "/srv/hpd/run/example.reload")
    deadline = time.monotonic() + 90
    while not lab.exec(host, "journalctl", "-q", "-u", "uwsgi-emperor", "--since", since,
                       "-g", "chain reloading complete", check=False).stdout.strip():
        assert time.monotonic() < deadline, f"{host}: the chain reload did not end"
        time.sleep(0.5)


def test_a_chain_reload_after_switching_current_serves_the_new_release(lab, apps):
    """A copy of the running release under a new name stands for a new release:
    after site.switch and app.reload the host serves its id, with no failed
    request on the way (two clients asking /health/ all along); then back."""
    host, base = next(iter(apps.items()))
    old = current_release(lab, host)
    new = f"{old}-chain-{uuid.uuid4().hex[:6]}"
    lab.exec(host, "cp", "-a", f"/srv/hpd/releases/{old}", f"/srv/hpd/releases/{new}")

    def switch_and_wait(release, answers):
        deploy = json.dumps({"deploy": {"release": release}})
        for sls in ("site.switch", "app.reload"):
            ret = lab.salt(host, "state.sls", sls, f"pillar={deploy}")[host]
            assert all(r["result"] for r in ret.values()), ret
        deadline = time.monotonic() + 90
        # Every worker replaced: the last 20 answers all come from the release.
        while len(answers) < 20 or {a[1] for a in answers[-20:]} != {release}:
            assert time.monotonic() < deadline, f"{host} still serves {answers[-5:]}"
            time.sleep(0.5)

    try:
        with clients(base) as answers:
            switch_and_wait(new, answers)
            switch_and_wait(old, answers)
    finally:
        lab.exec(host, "rm", "-rf", f"/srv/hpd/releases/{new}")
    assert_none_failed(answers)
    assert {release for _, release in answers} == {old, new}


@pytest.mark.drill
def test_fifteen_chain_reloads_under_two_clients_fail_no_request(lab, apps):
    """No request fails while chain reloads replace the workers. (Workers of
    two threads failed the requests in a worker that hung as it stopped: 4 to
    5 reloads in 30 here, with two clients.) A drill: 15 reloads of the app
    host's workers took 211 s."""
    host, base = next(iter(apps.items()))
    with clients(base) as answers:
        for _ in range(15):
            chain_reload(lab, host)
    assert_none_failed(answers)
    assert len(answers) > 100, answers


def test_a_second_highstate_of_the_app_and_worker_hosts_makes_no_changes(lab, highstate):
    hosts = lab.hosts_with("app") + lab.hosts_with("worker")
    returned = lab.salt("-L", ",".join(hosts), "state.apply")
    for host in hosts:
        assert isinstance(returned[host], dict), f"{host}: {returned[host]}"
        failed = [r["__id__"] for r in returned[host].values() if r["result"] is not True]
        changed = {r["__id__"]: r["changes"] for r in returned[host].values() if r["changes"]}
        assert not failed, f"{host}: {failed}"
        assert not changed, f"{host}: {changed}"


def test_a_first_release_that_cannot_install_says_so_to_the_varnish_hosts(lab, apps):
    """The first release's steps (site.release) of a revision whose lock names a
    version the wheelhouse lacks: site.venv fails with pip's error, nothing
    switches, and the host publishes False as its error page (the varnish hosts'
    first highstate stops waiting for it); its next mine update publishes its
    page again."""
    host, lb = lab.hosts_with("app")[-1], lab.hosts_with("varnish")[0]
    lock = (REPO / "example/requirements.txt").read_text()
    assert "redis==8.1.0" in lock
    sha = lab.publish_site(changes={"requirements.txt": lock.replace("redis==8.1.0",
                                                                     "redis==8.2.0")},
                           branch="broken-lock")
    release, before = sha[:12], current_release(lab, host)
    pillar = json.dumps({"deploy": {"sha": sha}})
    try:
        ret = lab.salt(host, "state.sls", "site.package,site.config,site.release",
                       f"pillar={pillar}")[host]
        states = {r["__id__"]: r for r in ret.values()}
        venv = states["site-release-venv-linked"]
        assert venv["result"] is False and "redis==8.2.0" in venv["comment"], venv
        assert states["site-release-failed-published"]["result"] is True
        assert lab.salt(lb, "mine.get", host, "hpd_error_page")[lb] == {host: False}
        assert current_release(lab, host) == before
    finally:
        lab.salt(host, "mine.update")
        lab.exec(host, "rm", "-rf", f"/srv/hpd/releases/{release}")
    assert "<" in lab.salt(lb, "mine.get", host, "hpd_error_page")[lb][host]
