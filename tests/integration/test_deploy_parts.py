"""The deploy's parts on the lab, before orch.deploy glues them together: the
lock held by a real orchestration (refused while it runs, taken over once its
process is gone), its events on the master's bus, a revision resolved on an app
host, the health gate against a host, haproxy's runtime API on a real haproxy,
the CDN origin (push from an app host, served compressed, write-only), the
deploy datapoint in carbon and the release log. Builds on the shared first
highstate; each test removes what it adds."""

import base64
import gzip
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile

import pytest
import salt.config
import salt.utils.event
from conftest import claimed_address, settled

import labctl

pytestmark = pytest.mark.lab

SITE, ENV = "example", "dev"
REPOSITORY = "file:///srv/git/example.git"


@pytest.fixture(scope="module")
def app(lab, highstate):
    return lab.hosts_with("app")[0]


@pytest.fixture(scope="module")
def cdn(lab, highstate):
    return settled(lab, highstate, "cdn")


def salt_run(lab, *args, timeout=300):
    """salt-run on the lab's master: (exit code, parsed JSON output)."""
    out = subprocess.run([*lab.lab.salt_cmd("salt-run"), "--out=json", *args],
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else None


def put(lab, host, path, data):
    """Write ``data`` (bytes) to ``path`` on ``host``."""
    lab.exec(host, "sh", "-c", f"mkdir -p $(dirname {path}) && "
                               f"echo {base64.b64encode(data).decode()} | base64 -d > {path}")


def until(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.5)
    return found


# --- the lock ------------------------------------------------------------------------

#: A deploy in progress: a process that takes the lock and announces the start
#: through Salt's runner client, as an orchestration's salt.runner states do (in
#: its own process), then works for a while; it never frees the lock by hand.
HOLDER = """
import sys, time
import salt.config, salt.runner
client = salt.runner.RunnerClient(salt.config.master_config(sys.argv[1]))
assert client.cmd("hpd_deploy.lock", ["example", "dev"], kwarg={"rev": "main"})["locked"]
client.cmd("hpd_deploy.notify", ["example", "dev", "start"])
time.sleep(300)
"""


@pytest.fixture
def lock_file(lab):
    path = lab.lab.master_dir / "var/cache/salt/master/hpd_deploy" / f"{SITE}.{ENV}.lock"
    yield path
    path.unlink(missing_ok=True)


def test_a_second_deploy_is_refused_while_one_runs_and_the_lock_frees_with_its_process(
        lab, highstate, lock_file):
    config = str(lab.lab.master_dir / "master")
    opts = salt.config.master_config(config)
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
        first = subprocess.Popen([sys.executable, "-c", HOLDER, config],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            start = bus.get_event(wait=120, tag=f"hpd/deploy/{SITE}/start", full=True)
            assert start, "no hpd/deploy/example/start event"
            assert {k: start["data"][k] for k in ("site", "env", "rev", "who")} == {
                "site": SITE, "env": ENV, "rev": "main", "who": "root"}
            holder = json.loads(lock_file.read_text())
            assert holder["pid"] == first.pid

            rc, refused = salt_run(lab, "hpd_deploy.lock", SITE, ENV, "rev=v2")
            assert rc == 1
            assert refused["Error"].startswith(
                "deploy of example to dev refused: root has been deploying rev 'main' since ")
            assert f"process {first.pid} on the master" in refused["Error"]
            # The refused deploy's unlock leaves the running one's lock alone.
            rc, kept = salt_run(lab, "hpd_deploy.unlock", SITE, ENV)
            assert rc == 0 and kept["unlocked"] is False
            assert json.loads(lock_file.read_text()) == holder
        finally:
            first.kill()
            first.wait()

    rc, taken = salt_run(lab, "hpd_deploy.lock", SITE, ENV, "rev=v2")
    assert rc == 0 and taken["locked"] is True and taken["taken_over"]["pid"] == first.pid
    rc, status = salt_run(lab, "hpd_deploy.status")
    assert status[f"{SITE}/{ENV}"]["alive"] is False  # that salt-run has ended too


# --- the revision ------------------------------------------------------------------


@pytest.fixture
def git_on(lab, app):
    """git on the app host (the site role installs it); installed for the test
    when it is missing, and removed again."""
    installed = lab.exec(app, "test", "-x", "/usr/bin/git", check=False).returncode != 0
    if installed:
        assert lab.salt(app, "pkg.install", "git")[app]
        lab.salt(app, "saltutil.refresh_modules")
    yield app
    if installed:
        lab.salt(app, "pkg.purge", "git")
        lab.salt(app, "saltutil.refresh_modules")


def test_a_revision_is_resolved_on_an_app_host_and_a_missing_one_refused(lab, git_on):
    app = git_on
    sha = lab.publish_site()  # main's head, as the hosts see it
    rc, plan = salt_run(lab, "hpd_deploy.resolve", "main", app, f"repository={REPOSITORY}")
    assert rc == 0 and plan["sha"] == sha and plan["release"].endswith(f"Z-{sha[:12]}")
    rc, plan = salt_run(lab, "hpd_deploy.resolve", sha, app, f"repository={REPOSITORY}")
    assert rc == 0 and plan["sha"] == sha
    rc, refused = salt_run(lab, "hpd_deploy.resolve", "no-such-branch", app,
                           f"repository={REPOSITORY}")
    assert rc == 1
    assert refused["Error"] == (f"revision 'no-such-branch' not resolved on {app}: ERROR: "
                                f"revision 'no-such-branch' is not in {REPOSITORY}")


# --- the health gate ---------------------------------------------------------------

HEALTH = """
import http.server, json, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"release": sys.argv[1], "database": "ok"}).encode()
        self.send_response(200 if self.path == "/health/" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 18000), Health).serve_forever()
"""


@pytest.fixture
def health_server(lab, app):
    put(lab, app, "/tmp/hpd-test-health.py", HEALTH.encode())
    lab.exec(app, "systemd-run", "--unit", "hpd-test-health", "/usr/bin/python3",
             "/tmp/hpd-test-health.py", "r-test")
    yield app
    lab.exec(app, "systemctl", "stop", "hpd-test-health", check=False)
    lab.exec(app, "rm", "-f", "/tmp/hpd-test-health.py")


def test_the_health_gate_polls_the_host_at_its_inventory_address(lab, health_server):
    """Not where the host says it is: a host claiming another's address cannot
    have the gate ask that one."""
    app = health_server
    other = next(h for h in lab.hosts if h != app)
    with claimed_address(lab, app, lab.address(other)):
        rc, ok = salt_run(lab, "hpd_deploy.health", app, "r-test", "18000", "passes=2",
                          "timeout=30")
    assert rc == 0 and ok["result"] is True
    assert ok["hosts"][app]["url"] == f"http://{lab.address(app)}:18000/health/"
    rc, failed = salt_run(lab, "hpd_deploy.health", app, "r-new", "18000", "timeout=2")
    assert rc == 1 and failed["result"] is False
    assert failed["failed"] == {app: "not healthy within 2 s: reports release r-test, not r-new"}


# --- haproxy's runtime API, on a real haproxy ---------------------------------------

HAPROXY = "/usr/sbin/haproxy"
SOCKET = "/run/hpd-test-haproxy.sock"
HAPROXY_CFG = f"""
global
    stats socket {SOCKET} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend test
    bind 127.0.0.1:18080
    default_backend app
backend app
    # The first server with a free slot takes every request.
    balance first
    server s1 127.0.0.1:18081 maxconn 10 check inter 500ms
    server s2 127.0.0.1:18082 maxconn 10 check inter 500ms
"""
WEB = """
import http.server, sys, time
class Web(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(4)
        body = sys.argv[1].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Web).serve_forever()
"""
UNITS = ("hpd-test-haproxy", "hpd-test-s1", "hpd-test-s2", "hpd-test-slow")


@pytest.fixture
def haproxy(lab, cdn):
    """A throw-away haproxy on the lb host (beside any the lb role runs): backend
    app with two Python servers; haproxy installed for the test if missing."""
    host = lab.hosts_with("lb")[0]
    installed = lab.exec(host, "test", "-x", HAPROXY, check=False).returncode != 0
    if installed:
        assert lab.salt(host, "pkg.install", "haproxy")[host]
    put(lab, host, "/tmp/hpd-test-haproxy.cfg", HAPROXY_CFG.encode())
    put(lab, host, "/tmp/hpd-test-web.py", WEB.encode())
    for name, port in (("s1", 18081), ("s2", 18082)):
        lab.exec(host, "systemd-run", "--unit", f"hpd-test-{name}", "/usr/bin/python3",
                 "/tmp/hpd-test-web.py", name, str(port))
    lab.exec(host, "systemd-run", "--unit", "hpd-test-haproxy", HAPROXY, "-W", "-db", "-f",
             "/tmp/hpd-test-haproxy.cfg")
    yield host
    lab.exec(host, "systemctl", "stop", *UNITS, check=False)
    lab.exec(host, "systemctl", "reset-failed", *UNITS, check=False)
    lab.exec(host, "rm", "-f", "/tmp/hpd-test-haproxy.cfg", "/tmp/hpd-test-web.py", SOCKET)
    if installed:
        lab.salt(host, "pkg.purge", "haproxy")


def ask(lab, host, path="/"):
    return lab.exec(host, "curl", "-s", f"http://127.0.0.1:18080{path}").stdout


def state(lab, host, server):
    return lab.salt(host, "hpd_haproxy.state", "app", server, f"socket_path={SOCKET}")[host]


def test_drain_waits_for_the_servers_requests_then_ready_puts_it_back(lab, haproxy):
    host = haproxy
    until(lambda: isinstance(state(lab, host, "s2"), dict)
          and state(lab, host, "s2")["status"] == "UP", "haproxy with s2 up")
    assert ask(lab, host) == "s1"
    # A request in flight on s1 (4 s), then the drain.
    lab.exec(host, "systemd-run", "--unit", "hpd-test-slow", "curl", "-s",
             "http://127.0.0.1:18080/slow")
    until(lambda: state(lab, host, "s1")["sessions"] == 1, "s1's request in flight")
    drained = lab.salt(host, "hpd_haproxy.drain", "app", "s1", f"socket_path={SOCKET}",
                       "timeout=30")[host]
    assert drained["drained"] is True and drained["status"] == "DRAIN"
    assert drained["sessions"] == 0
    # drain returned once the request in flight had been answered.
    shown = lab.exec(host, "systemctl", "show", "hpd-test-slow", "-p", "ActiveState",
                     "-p", "Result").stdout.split()
    assert shown in (["Result=success", "ActiveState=inactive"],
                     ["ActiveState=inactive", "Result=success"]), shown
    assert [ask(lab, host) for _ in range(3)] == ["s2"] * 3  # no new requests for s1
    ready = lab.salt(host, "hpd_haproxy.ready", "app", "s1", f"socket_path={SOCKET}")[host]
    assert ready["status"] == "UP" and ready["weight"] == 1
    assert ask(lab, host) == "s1"


def test_haproxy_refusing_a_command_fails_the_job_with_its_answer(lab, haproxy):
    out = subprocess.run([*lab.lab.salt_cmd("salt"), haproxy, "hpd_haproxy.drain", "app", "s9",
                          f"socket_path={SOCKET}", "--out=json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "set server app/s9 state drain: No such server." in json.loads(out.stdout)[haproxy]


# --- the CDN origin ----------------------------------------------------------------

CSS = b"body{color:#c00;margin:0 auto}\n" * 40
#: A site of the test's own, which it removes.
PROBE = "hpd-test"
NAME = f"{PROBE}/static/css/site.0123456789ab.css"


def brotli_module():
    """Python's brotli, from the wheelhouse's wheel (whitenoise's): the same
    encoder collectstatic uses."""
    (wheel,) = (labctl.LAB_ROOT / "wheelhouse").glob("brotli-*cp311*.whl")
    target = labctl.LAB_ROOT / "hpd-test-brotli"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    sys.path.insert(0, str(target))
    try:
        import brotli
    finally:
        sys.path.remove(str(target))
    return brotli, target


@pytest.fixture
def pushed(lab, app, cdn):
    """A stylesheet and its .gz and .br variants pushed from an app host to the
    origin as the deploy pushes static files (Salt's rsync module, the push
    password file); removed from both afterwards."""
    brotli, extracted = brotli_module()
    variants = {"": CSS, ".gz": gzip.compress(CSS), ".br": brotli.compress(CSS)}
    subprocess.run(["rm", "-rf", str(extracted)], check=True)
    for ext, data in variants.items():
        put(lab, app, f"/tmp/hpd-test-static/{NAME}{ext}", data)
    ret = lab.salt(app, "rsync.rsync", "/tmp/hpd-test-static/",
                   f"rsync://hpd_cdn@{cdn}:8873/origin/",
                   "passwordfile=/etc/hpd/cdn-push.password")[app]
    assert ret["retcode"] == 0, ret
    yield variants
    lab.exec(app, "rm", "-rf", "/tmp/hpd-test-static", "/tmp/hpd-test-pulled")
    lab.exec(cdn, "rm", "-rf", f"/srv/cdn/{PROBE}")


def fetch(lab, host, path, accept=None):
    headers = {"Host": "static.hpd.test", **({"Accept-Encoding": accept} if accept else {})}
    request = urllib.request.Request(f"http://{lab.address(host)}:8090/{path}", headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.mark.parametrize("accept, encoding, ext", [
    ("br, gzip", "br", ".br"), ("gzip, deflate", "gzip", ".gz"), (None, None, "")])
def test_a_pushed_stylesheet_is_served_in_the_encoding_asked_for(lab, cdn, pushed, accept,
                                                                 encoding, ext):
    status, headers, body = fetch(lab, cdn, NAME, accept)
    assert status == 200 and body == pushed[ext]
    assert headers.get("Content-Encoding") == encoding
    assert headers["Content-Type"] == "text/css"
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_the_origin_serves_files_only(lab, cdn, pushed):
    assert fetch(lab, cdn, f"{PROBE}/static/css/missing.css")[0] == 404
    assert fetch(lab, cdn, f"{PROBE}/static/css/")[0] == 404  # no listing


def rsync_as(lab, host, password_cmd, *args):
    """rsync on `host` with the password from `password_cmd` in its environment."""
    cmd = f"RSYNC_PASSWORD=$({password_cmd}) rsync {' '.join(args)}"
    return lab.exec(host, "sh", "-c", cmd, check=False)


def test_the_push_target_is_write_only_for_the_app_hosts(lab, app, cdn, pushed):
    url = f"rsync://hpd_cdn@{cdn}:8873/origin"
    own = "cat /etc/hpd/cdn-push.password"
    pull = rsync_as(lab, app, own, f"{url}/{NAME}", "/tmp/hpd-test-pulled")
    assert pull.returncode != 0 and "write only" in pull.stderr
    listing = rsync_as(lab, app, own, f"{url}/")
    assert listing.returncode != 0
    probe = (f"/tmp/hpd-test-static/{PROBE}/", f"{url}/{PROBE}/")
    delete = rsync_as(lab, app, own, "-a", "--delete", *probe)
    assert delete.returncode != 0 and "delete" in delete.stderr
    wrong = rsync_as(lab, app, "echo not-the-password", "-a", *probe)
    assert wrong.returncode != 0 and "auth failed" in wrong.stderr
    # The origin host itself is no app host: the module does not exist for it,
    # password or not (the app host pushed to the same URL).
    other = rsync_as(lab, cdn, "cut -d: -f2- /etc/hpd/cdn-rsyncd.secrets", "-a",
                     "/etc/hostname", f"{url}/{PROBE}/")
    assert other.returncode != 0 and "Unknown module 'origin'" in other.stderr
    assert fetch(lab, cdn, NAME)[2] == CSS  # nothing of that changed what is served


# --- the deploy datapoint and the release log --------------------------------------


def test_the_deploy_datapoint_reaches_carbon(lab, app, highstate):
    mon = settled(lab, highstate, "monitoring")
    whisper = "/var/lib/graphite/whisper/deploys"
    # Only this test's datapoint: orch.deploy's own marks (test_deploy) go.
    lab.exec(mon, "rm", "-rf", whisper)
    try:
        sent = lab.salt(app, "hpd_release.mark", SITE)[app]
        metric, value, stamp = sent.split()
        assert (metric, value) == (f"deploys.{ENV}.{SITE}", "1")
        until(lambda: lab.exec(mon, "test", "-f", f"{whisper}/{ENV}/{SITE}.wsp",
                               check=False).returncode == 0, "the deploys whisper file")
        points = until(lambda: [line for line in lab.exec(
            mon, "whisper-fetch", "--from", str(int(stamp) - 120),
            f"{whisper}/{ENV}/{SITE}.wsp").stdout.splitlines() if line.endswith("\t1.000000")],
            "the datapoint in whisper")
        assert len(points) == 1
    finally:
        lab.exec(mon, "rm", "-rf", whisper)


def test_the_release_log_gets_a_line_per_release(lab, app):
    log = "/srv/hpd/log/releases.log"
    before = lab.exec(app, "sh", "-c", f"cat {log} 2>/dev/null || true").stdout
    try:
        line = lab.salt(app, "hpd_release.log", SITE, "deploy", "r-test", "who=tester")[app]
        after = lab.exec(app, "cat", log).stdout
        assert after == before + line + "\n"
        assert line.endswith(" example deploy release=r-test who=tester")
        assert lab.exec(app, "stat", "-c", "%a %U", log).stdout.split() == ["644", "root"]
    finally:
        if before:
            put(lab, app, log, before.encode())
        else:
            lab.exec(app, "rm", "-f", log)
