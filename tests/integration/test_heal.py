"""Self-healing and alerts on the farm (salt/heal, the master's reactor):
systemd brings a killed daemon (the uWSGI emperor: the site serves again) back
by itself, the reactor starts a stopped one (the emperor, the web tier's),
server errors through haproxy give one alert and one resolution,
a service failing every start gets heal:max_restarts starts then one alert, a
disk filled past its threshold gives one alert and one resolution (logged,
counted in Graphite, posted to the webhook), a silent minion likewise. Each
test puts back what it broke."""

import contextlib
import http.server
import json
import socket
import threading
import time
import urllib.request

import pytest
from conftest import EventBus, settled, through_the_pool

pytestmark = pytest.mark.lab

FAILING = "/run/systemd/system/memcached.service.d/zz-hpd-test-fails.conf"
DISK = "/mnt/hpd-disk-test"
WEBHOOK_PORT = 8470  # pillar/environments/dev.sls (alerts:webhook): the master's address


def show(lab, host, unit, *props):
    out = lab.exec(host, "systemctl", "show", "-p", ",".join(props), unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.5)


def answers(address, port):
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=2):
        return True
    return False


def alerts(bus, host, check):
    """The alert events (tag, data) of `host`'s `check` seen, resolutions included."""
    return [(t, d) for t, d in bus.tagged("hpd/alert/") if t.endswith(f"/{host}/{check}")]


@pytest.fixture(scope="module")
def cache(lab, highstate):
    return settled(lab, highstate, "cache")


def healed(bus, host, unit):
    """The host's answers to the reactor that started `unit`."""
    return [r for r in bus.returns("hpd_heal.heal", host)
            if isinstance(r, dict) and r.get("service") == unit and r.get("starts")]


def health(lab, host):
    """(status, body) of /health/ on an app host's uWSGI port, as haproxy asks it."""
    port = lab.salt(host, "hpd.settings", "app")[host]["port"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{lab.address(host)}:{port}/health/", timeout=2) as response:
            return response.status, json.loads(response.read())
    except (OSError, ValueError):
        return None, None


@pytest.fixture
def app(lab, highstate):
    """The first app host, serving /health/ with its release; its restart count
    given back after the test."""
    if not lab.hosts_with("app"):
        pytest.skip("the lab has no app host")
    host = settled(lab, highstate, "app")
    release = lab.exec(host, "readlink", "/srv/hpd/current").stdout.strip().rsplit("/", 1)[-1]
    assert health(lab, host) == (200, {"release": release, "database": "ok", "cache": "ok"})
    yield host, release
    lab.salt(host, "hpd_heal.reset", "uwsgi-emperor")


class Webhook(http.server.BaseHTTPRequestHandler):
    posts = []

    def do_POST(self):  # noqa: N802 -- http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Webhook.posts.append((self.headers.get("Authorization"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def webhook(lab):
    """A receiver where dev's pillar points the master's posts: the lab's bridge
    address (where the master listens), port 8470."""
    server = http.server.HTTPServer((lab.lab.bridge_address(lab.state), WEBHOOK_PORT), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Webhook.posts
    server.shutdown()
    server.server_close()


def test_every_service_of_a_hosts_roles_restarts_on_failure(lab, highstate):
    services = lab.salt("*", "hpd_heal.service_units")
    assert sorted(services) == lab.hosts
    assert any(services.values())
    loaded = {}
    for host, units in services.items():
        out = lab.exec(host, "systemctl", "show", "-p", "Id,LoadState,Restart,StartLimitBurst",
                       *units).stdout if units else ""
        for block in out.strip().split("\n\n") if out.strip() else []:
            props = dict(line.split("=", 1) for line in block.splitlines())
            if props.pop("LoadState") == "loaded":  # mariadb: listed for db hosts that run it
                loaded[(host, props.pop("Id"))] = props
    assert {(h, u) for h in lab.hosts_with("cache") for u in ("memcached.service",
                                                             "redis-server.service")} <= set(loaded)
    burst = str(lab.salt(lab.hosts[0], "hpd.settings", "heal")[lab.hosts[0]]["start_limit_burst"])
    assert {k: v for k, v in loaded.items()
            if v != {"Restart": "on-failure", "StartLimitBurst": burst}} == {}


def test_a_killed_daemon_comes_back_without_salt(lab, highstate):
    # nutcracker: Debian's unit has no Restart=, the tree's drop-in gives it one.
    app = settled(lab, highstate, "app")
    before = show(lab, app, "nutcracker", "NRestarts", "MainPID")
    lab.exec(app, "systemctl", "kill", "-s", "KILL", "nutcracker")

    def restarted_by_systemd():
        now = show(lab, app, "nutcracker", "NRestarts", "MainPID", "ActiveState")
        return (now["ActiveState"] == "active" and now["MainPID"] != before["MainPID"]
                and int(now["NRestarts"]) == int(before["NRestarts"]) + 1)

    wait_until(restarted_by_systemd, 30, "nutcracker restarted by systemd (NRestarts + 1)")
    wait_until(lambda: lab.exec(app, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/22121",
                                check=False).returncode == 0, 30, "twemproxy answering")


def test_a_killed_uwsgi_emperor_serves_again_without_salt(lab, app):
    host, release = app
    before = show(lab, host, "uwsgi-emperor", "NRestarts", "MainPID")
    with EventBus(lab) as bus:
        lab.exec(host, "kill", "-9", before["MainPID"])
        wait_until(lambda: health(lab, host)[0] == 200, 60, "/health/ answering again")
        bus.drain(5)  # the beacon's report, if any, and the host's answer
    assert health(lab, host)[1]["release"] == release
    now = show(lab, host, "uwsgi-emperor", "NRestarts", "MainPID")
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1 and now["MainPID"] != before[
        "MainPID"], "not restarted by systemd"
    assert healed(bus, host, "uwsgi-emperor") == []  # no start by the reactor


def test_a_stopped_uwsgi_emperor_is_started_by_the_reactor(lab, app):
    host, release = app
    lab.salt(host, "hpd_heal.reset", "uwsgi-emperor")  # a first incident
    since = lab.exec(host, "date", "+@%s").stdout.strip()
    with EventBus(lab) as bus:
        lab.exec(host, "systemctl", "stop", "uwsgi-emperor")
        ret = bus.wait(lambda _: healed(bus, host, "uwsgi-emperor"), 120,
                       "a start of uwsgi-emperor by the reactor")[0]
    assert (ret["before"], ret["state"], len(ret["starts"])) == ("inactive", "active", 1), ret
    # The emperor stopped its vassal (which, signalled by systemd too, would
    # reload and be killed 30 s later).
    log = lab.exec(host, "journalctl", "-u", "uwsgi-emperor", "--since", since, "-o", "cat",
                   "--no-pager").stdout
    assert "[emperor] removed uwsgi instance" in log, log[-2000:]
    wait_until(lambda: health(lab, host)[0] == 200, 60, "/health/ answering again")
    assert health(lab, host)[1]["release"] == release


WEB_TIER = {"lb": ["haproxy"], "varnish": ["varnish"], "cdn": ["nginx", "hpd-cdn-rsyncd"]}


def test_the_web_tier_services_stopped_are_started_by_the_reactor(lab, highstate):
    # varnishd exits with 64 on SIGTERM: a stop leaves it inactive, not failed.
    stopped = [(settled(lab, highstate, role), unit) for role, units in sorted(WEB_TIER.items())
               if lab.hosts_with(role) for unit in units]
    if not stopped:
        pytest.skip("the lab has no lb, varnish or cdn host")
    for host, unit in stopped:
        lab.salt(host, "hpd_heal.reset", unit)
    try:
        with EventBus(lab) as bus:
            # How each stop ended, seen before the reactor's start (a second on).
            ended = {(h, u): lab.exec(h, "sh", "-c", f"systemctl stop {u} && "
                                      f"systemctl show -p Result --value {u}").stdout.strip()
                     for h, u in stopped}
            rets = {(host, unit): bus.wait(lambda _, h=host, u=unit: healed(bus, h, u), 120,
                                           f"a start of {unit} on {host} by the reactor")[0]
                    for host, unit in stopped}
        assert ended == dict.fromkeys(stopped, "success")
        assert {k: (r["state"], len(r["starts"])) for k, r in rets.items()} == {
            k: ("active", 1) for k in stopped}
    finally:
        for host, unit in stopped:
            lab.exec(host, "systemctl", "start", unit, check=False)
            lab.salt(host, "hpd_heal.reset", unit)


def test_a_stopped_service_is_started_again_by_the_reactor(lab, cache):
    address = lab.address(cache)
    lab.salt(cache, "hpd_heal.reset", "memcached")  # a first incident
    with EventBus(lab) as bus:
        lab.exec(cache, "systemctl", "stop", "memcached")
        healed = bus.wait(lambda _: [r for r in bus.returns("hpd_heal.heal", cache)
                                     if isinstance(r, dict) and r.get("starts")], 120,
                          "a start of memcached by the reactor")
    assert healed[0]["before"] == "inactive" and healed[0]["state"] == "active", healed
    assert len(healed[0]["starts"]) == 1
    wait_until(lambda: answers(address, 11211), 30, "memcached answering")
    assert lab.salt(cache, "hpd_heal.reset", "memcached")[cache] == 1  # its start given back


def test_a_masked_service_is_left_down(lab, cache):
    # How a restore keeps a service down (hpd_backup.pitr_restore).
    with EventBus(lab) as bus:
        lab.exec(cache, "sh", "-c", "systemctl mask --runtime memcached && "
                 "systemctl stop memcached")
        try:
            ret = bus.wait(lambda _: bus.returns("hpd_heal.heal", cache), 120,
                           "the host's answer to the reactor")[0]
            assert (ret["state"], ret["enabled"], ret["starts"]) == ("inactive", False, []), ret
            assert lab.exec(cache, "systemctl", "is-active", "memcached",
                            check=False).stdout.strip() == "inactive"
        finally:
            lab.exec(cache, "sh", "-c", "systemctl unmask --runtime memcached && "
                     "systemctl start memcached")


def test_a_service_failing_every_start_gets_its_restarts_then_one_alert(lab, cache):
    heal = lab.salt(cache, "hpd.settings", "heal")[cache]
    limit = heal["max_restarts"]
    # The units beacon reports a change from what it last saw, looking every
    # beacon:interval s: a test before may have stopped and started memcached
    # between two looks. Let it see memcached running before it fails.
    lab.exec(cache, "systemctl", "is-active", "memcached")
    time.sleep(heal["beacon"]["interval"] + 1)
    lab.exec(cache, "sh", "-c", f"mkdir -p {FAILING.rsplit('/', 1)[0]} && printf "
             f"'[Service]\\nExecStartPre=/bin/false\\n' > {FAILING} && systemctl daemon-reload")
    try:
        with EventBus(lab) as bus:
            lab.exec(cache, "systemctl", "restart", "memcached", check=False)
            bus.wait(lambda _: alerts(bus, cache, "restart-memcached"), 300,
                     "the restart alert of memcached")
            # What loops in salt#62711 / #23685: a pillar refresh and a state run
            # over the failing service, then time for any reaction.
            lab.salt(cache, "saltutil.refresh_pillar")
            lab.salt(cache, "state.apply", "cache")
            lab.exec(cache, "systemctl", "start", "memcached", check=False)
            bus.drain(20)
        starts = [t for r in bus.returns("hpd_heal.heal", cache) if isinstance(r, dict)
                  for t in r["starts"]]
        assert len(starts) == limit, bus.returns("hpd_heal.heal", cache)
        assert [t for t, _ in alerts(bus, cache, "restart-memcached")] == [
            f"hpd/alert/critical/{cache}/restart-memcached"]
    finally:
        lab.exec(cache, "sh", "-c", f"rm -f {FAILING} && systemctl daemon-reload && "
                 "systemctl reset-failed memcached")
        lab.salt(cache, "hpd_heal.reset", "memcached")
        with EventBus(lab) as bus:
            lab.exec(cache, "systemctl", "start", "memcached")
            bus.wait(lambda _: alerts(bus, cache, "restart-memcached"), 120,
                     "the restart alert's resolution")
    assert alerts(bus, cache, "restart-memcached")[0][0] == \
        f"hpd/alert/resolved/{cache}/restart-memcached"


def test_a_disk_past_its_threshold_alerts_once_and_resolves_once(lab, cache, webhook):
    check = "disk-mnt-hpd-disk-test"
    mon = lab.hosts_with("monitoring")[0]
    lab.exec(cache, "sh", "-c", f"mkdir -p {DISK} && mount -t tmpfs -o size=1m tmpfs {DISK}")
    try:
        with EventBus(lab) as bus:
            lab.exec(cache, "dd", "if=/dev/zero", f"of={DISK}/fill", "bs=1k", "count=980")
            bus.wait(lambda _: alerts(bus, cache, check), 120, "the disk alert")
            bus.drain(15)  # the beacon fires on: still one alert
            lab.exec(cache, "rm", f"{DISK}/fill")
            bus.wait(lambda _: len(alerts(bus, cache, check)) == 2, 180, "the resolution")
    finally:
        lab.exec(cache, "umount", DISK, check=False)
    assert [t for t, _ in alerts(bus, cache, check)] == [
        f"hpd/alert/warning/{cache}/{check}", f"hpd/alert/resolved/{cache}/{check}"]
    # Recorded (as the reactor handles each event, after it): the master's log, the
    # webhook (with the token), the counters in Graphite on mon.
    def logged():
        log = (lab.lab.master_dir / "hpd-alerts.log").read_text().splitlines()
        return [e["kind"] for e in map(json.loads, log)
                if (e["host"], e["check"]) == (cache, check)]

    wait_until(lambda: logged()[-2:] == ["warning", "resolved"], 60, "both in the master's log")
    wait_until(lambda: [(auth, body["tag"]) for auth, body in webhook
                        if body["check"] == check][-2:] == [
        ("Bearer dev-only-alerts-webhook-token", f"hpd/alert/warning/{cache}/{check}"),
        ("Bearer dev-only-alerts-webhook-token", f"hpd/alert/resolved/{cache}/{check}")],
        60, "both posted to the webhook with the token")
    whisper = f"/var/lib/graphite/whisper/alerts/{cache}/{check}"
    wait_until(lambda: lab.exec(mon, "test", "-f", f"{whisper}/resolved.wsp",
                                check=False).returncode == 0, 90, "the counters in Graphite")
    counted = lab.exec(mon, "python3", "-c", "import sys, whisper; print(max(v for v in "
                       "whisper.fetch(sys.argv[1], 0)[1] if v is not None))",
                       f"{whisper}/warning.wsp").stdout
    assert float(counted) >= 1


def test_server_errors_through_haproxy_alert_once_and_resolve_once(lab, highstate):
    # The site's /health/ answers 503 while its database is down (masked: the
    # reactor leaves it down), then haproxy finds no app host up and answers 503.
    if not all(lab.hosts_with(role) for role in ("lb", "app", "db")):
        pytest.skip("the lab has no lb, app or db host")
    lb, db = settled(lab, highstate, "lb"), settled(lab, highstate, "db")
    unit, check = "postgresql@15-main", "errors-app"

    def traffic_until(found, timeout, what):
        deadline = time.monotonic() + timeout
        while not (result := found()):
            assert time.monotonic() < deadline, f"{what} not within {timeout}s"
            through_the_pool(lab, lb, 25)
            bus.drain(1)
        return result

    with EventBus(lab) as bus:
        lab.exec(db, "sh", "-c", f"systemctl mask --runtime {unit} && systemctl stop {unit}")
        try:
            traffic_until(lambda: alerts(bus, lb, check), 180, "the error-rate alert")
            end = time.monotonic() + 15  # errors go on: still one alert
            traffic_until(lambda: time.monotonic() > end, 60, "15 s more of errors")
        finally:
            lab.exec(db, "sh", "-c", f"systemctl unmask --runtime {unit} && systemctl start {unit}")
        traffic_until(lambda: len(alerts(bus, lb, check)) == 2, 240, "the resolution")
    assert [t for t, _ in alerts(bus, lb, check)] == [
        f"hpd/alert/critical/{lb}/{check}", f"hpd/alert/resolved/{lb}/{check}"]
    threshold = lab.salt(lb, "hpd.settings", "alerts")[lb]["errors"]["percent"]
    assert alerts(bus, lb, check)[0][1]["detail"]["percent"] >= threshold


def test_a_minion_that_stops_answering_alerts_and_resolves(lab, highstate):
    host = (lab.hosts_with("lb") or lab.hosts)[0]
    with EventBus(lab) as bus:
        lab.exec(host, "systemctl", "stop", "salt-minion")
        try:
            bus.wait(lambda _: alerts(bus, host, "minion"), 120, "the minion alert")
        finally:
            lab.exec(host, "systemctl", "start", "salt-minion")
        bus.wait(lambda _: len(alerts(bus, host, "minion")) == 2, 120, "its resolution")
    assert [t for t, _ in alerts(bus, host, "minion")] == [
        f"hpd/alert/critical/{host}/minion", f"hpd/alert/resolved/{host}/minion"]
