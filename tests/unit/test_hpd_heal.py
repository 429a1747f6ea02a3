"""The hosts' side of self-healing (_modules/hpd_heal.py) and the port beacon
(_beacons/hpd_port.py): the units and beacons of a host's roles, waiting for
systemd to settle, the restart limit kept across calls."""

import socket

import pytest
from conftest import load_source
from salt.exceptions import CommandExecutionError, SaltInvocationError
from test_hpd import REPO, hpd_module, load

HPD = hpd_module()
HEAL = HPD.defaults(load(REPO / "pillar/heal/schema.yaml"))
ALERTS = HPD.defaults(load(REPO / "pillar/alerts/schema.yaml"))



@pytest.fixture
def hh():
    return load_source("_modules/hpd_heal.py")


@pytest.fixture
def port_beacon():
    return load_source("_beacons/hpd_port.py")


@pytest.fixture
def errors_beacon():
    return load_source("_beacons/hpd_errors.py")


@pytest.fixture
def units_beacon():
    return load_source("_beacons/hpd_units.py")


# ---------------------------------------------------------------- units and beacons


def test_a_host_watches_the_units_of_its_roles_and_restarts_only_services(hh):
    units = hh._units(HEAL["services"], ["db", "backup"], {})
    assert units == ["hpd-backup-dump.timer", "hpd-backup-media.timer",
                     "hpd-pgbackrest-backup.timer", "mariadb", "postgresql@15-main"]
    assert hh._service_units(units) == ["mariadb.service", "postgresql@15-main.service"]
    assert hh._units(HEAL["services"], [], {}) == []


def test_the_web_tier_runs_its_services(hh):
    units = hh._units(HEAL["services"], ["lb", "varnish", "cdn"], {})
    assert units == ["haproxy", "hpd-cdn-rsyncd", "nginx", "varnish"]
    assert "uwsgi-emperor" in hh._units(HEAL["services"], ["app"], {})


def test_a_template_stands_for_the_instances_the_host_runs(hh):
    workers = ["example-worker@1", "example-worker@2"]
    units = hh._units(HEAL["services"], ["worker"], {"example-worker@": workers})
    assert units == [*workers, "nutcracker"]
    assert hh._service_units(units) == [
        "example-worker@1.service", "example-worker@2.service", "nutcracker.service"]
    # site:name changed, heal:services:worker not: the key is named.
    with pytest.raises(SaltInvocationError, match=r"pillar heal:services:worker: example-worker@ "
                       r"is a template this host runs no instances of \(known: shop-worker@\)"):
        hh._units(HEAL["services"], ["worker"], {"shop-worker@": ["shop-worker@1"]})


def test_a_worker_host_runs_the_worker_units_salt_worker_makes(hh):
    site = load_source("_modules/hpd_site.py")
    settings = {"site": {"name": "example"}, "worker": {"count": None}}
    hh.__salt__ = {"hpd.settings": settings.get, "hpd_site.worker_units": site.worker_units}
    hh.__grains__ = {"num_cpus": 3}
    assert hh._instances(["worker"]) == {
        "example-worker@": ["example-worker@1", "example-worker@2", "example-worker@3"]}
    assert hh._instances(["app"]) == {}


@pytest.mark.parametrize("role, check, port", [
    ("app", "uwsgi", ("app", "port")),
    ("app", "twemproxy-memcached", ("twemproxy", "ports", "memcached")),
    ("app", "twemproxy-redis", ("twemproxy", "ports", "redis")),
    ("worker", "twemproxy-memcached", ("twemproxy", "ports", "memcached")),
    ("worker", "twemproxy-redis", ("twemproxy", "ports", "redis")),
    ("lb", "http", ("lb", "ports", "http")),
    ("lb", "https", ("lb", "ports", "https")),
    ("varnish", "varnish", ("varnish", "listen_port")),
    ("cdn", "nginx", ("cdn", "port")),
    ("cdn", "rsyncd", ("cdn", "push", "port")),
])
def test_the_port_checks_default_to_the_roles_own_ports(role, check, port):
    value = HPD.defaults(load(REPO / f"pillar/{port[0]}/schema.yaml"))
    for key in port[1:]:
        value = value[key]
    assert ALERTS["ports"]["roles"][role][check]["port"] == value


def test_beacons_follow_the_roles_and_the_thresholds(hh):
    units = hh._units(HEAL["services"], ["cache"], {})
    config = hh._beacons(HEAL, ALERTS, ["cache"], units, cpus=4, address="10.0.0.5")
    assert set(config) == set(hh.BEACONS)
    assert config["hpd_units"][:2] == [{"units": ["memcached", "redis-server"]}, {"delay": 0}]
    assert config["service"] is None  # Salt's own, removed where an older tree ran it
    # Every beacon pauses during a state run: a highstate that restarts a service
    # reports nothing (the loop of salt#62711 needs an event to start).
    assert all({"disable_during_state_run": True} in c for c in config.values() if c)
    assert config["load"][0] == {"averages": {"5m": [0.0, 8.0]}}  # 2.0 per CPU x 4
    assert config["diskusage"][:2] == [{"/": "90%"}, {"/(srv|var|mnt)(/.*)?": "90%"}]
    assert config["hpd_port"][0] == {"ports": {
        "memcached": {"address": "10.0.0.5", "port": 11211},
        "redis": {"address": "10.0.0.5", "port": 6379}}}
    app = hh._beacons(HEAL, ALERTS, ["app"], [], cpus=1, address="10.0.0.6")
    assert app["hpd_units"] is None  # no unit: no units beacon
    assert app["hpd_port"][0]["ports"]["twemproxy-memcached"] == {"address": "127.0.0.1",
                                                                  "port": 22121}


def test_an_lb_host_watches_the_server_errors_of_its_app_backend(hh):
    lb = hh._beacons(HEAL, ALERTS, ["lb"], [], cpus=1, address="10.0.0.7")
    assert lb["hpd_errors"] == [{"backend": "app"}, {"percent": 5}, {"min_responses": 20},
                                {"interval": 10}, {"disable_during_state_run": True}]
    assert hh._beacons(HEAL, ALERTS, ["app"], [], cpus=1, address="10.0.0.6")["hpd_errors"] is None
    off = {**ALERTS, "errors": {**ALERTS["errors"], "enabled": False}}
    assert hh._beacons(HEAL, off, ["lb"], [], cpus=1, address="10.0.0.7")["hpd_errors"] is None


def test_a_check_turned_off_removes_its_beacon(hh):
    alerts = {**ALERTS, "memory": {**ALERTS["memory"], "enabled": False},
              "ports": {**ALERTS["ports"], "enabled": False}}
    config = hh._beacons(HEAL, alerts, ["cache"], ["memcached"], cpus=1, address="10.0.0.5")
    assert config["memusage"] is None and config["hpd_port"] is None
    assert config["swapusage"] is not None


def test_a_mount_pattern_that_is_no_regular_expression_is_refused_by_key(hh):
    alerts = {**ALERTS, "disk": {**ALERTS["disk"], "mounts": {"/srv(": 80}}}
    with pytest.raises(SaltInvocationError, match=r"pillar alerts:disk:mounts:/srv\(: not a"):
        hh._beacons(HEAL, alerts, [], [], cpus=1, address="10.0.0.5")


# ---------------------------------------------------------------- waiting for systemd


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def scripted(clock, states):
    """show() that returns the given (ActiveState, activation) one per call."""
    it = iter(states)

    def show():
        state, run = next(it)
        return {"ActiveState": state, "ActiveEnterTimestampMonotonic": str(run), "NRestarts": "0"}
    return show


def test_settle_waits_while_systemd_restarts_a_crash(hh):
    clock = Clock()
    show = scripted(clock, [("activating", 1)] * 5 + [("active", 2)] * 20)
    assert hh._settle(show, 2, 60, clock, clock.sleep) == "active"
    assert clock.now >= 5 * hh.TRANSIENT_POLL + 2  # 5 looks at the restart, then 2 s active


def test_settle_sees_the_end_of_a_stop_within_a_transient_poll(hh):
    """The reactor's heal usually arrives while the stop is under way: the
    start must not wait a whole POLL once it is over."""
    clock = Clock()
    show = scripted(clock, [("deactivating", 1)] * 7 + [("inactive", 1)])
    assert hh._settle(show, 2, 60, clock, clock.sleep) == "inactive"
    assert clock.now == pytest.approx(7 * hh.TRANSIENT_POLL) and hh.TRANSIENT_POLL <= 0.05


def test_a_unit_that_crashes_again_within_settle_is_not_running(hh):
    clock = Clock()
    loop = [("active", 1), ("activating", 1), ("active", 2), ("activating", 2),
            ("active", 3), ("failed", 3)]
    assert hh._settle(scripted(clock, loop), 2, 60, clock, clock.sleep) == "failed"


def test_settle_gives_up_at_its_timeout(hh):
    clock = Clock()
    show = scripted(clock, [("activating", 1)] * 1000)
    assert hh._settle(show, 2, 5, clock, clock.sleep) == "activating"
    assert 5 <= clock.now <= 5 + hh.TRANSIENT_POLL


def test_the_window_keeps_recent_starts_only(hh):
    kept, allowed = hh._admit([100.0, 500.0, 650.0], now=700.0, max_restarts=3, window=600)
    assert kept == [500.0, 650.0] and allowed
    assert hh._admit([500.0, 650.0, 690.0], 700.0, 3, 600) == ([500.0, 650.0, 690.0], False)


# ---------------------------------------------------------------- heal, on a fake unit


class FakeUnit:
    """One systemd unit: each start succeeds (`works`) or fails at once."""

    def __init__(self, state, works, enabled=True):
        self.state, self.works, self.is_enabled = state, works, enabled
        self.starts = 0

    def show(self, name):
        return {"ActiveState": self.state, "ActiveEnterTimestampMonotonic": str(self.starts),
                "NRestarts": "0", "LoadState": "loaded",
                "UnitFileState": "enabled" if self.is_enabled else "disabled"}

    def start(self, name):
        self.starts += 1
        assert self.starts <= 10, "started without a limit"
        self.state = "active" if self.works else "failed"
        if not self.works:
            raise CommandExecutionError("Job for memcached.service failed")
        return True


@pytest.fixture
def host(hh, tmp_path):
    def make(unit, heal=None):
        settings = {"heal": {**HEAL, "settle": 0, "timeout": 5, **(heal or {})}}
        hh.__salt__ = {"hpd.settings": settings.get, "service.show": unit.show,
                       "service.start": unit.start, "cmd.run_all": lambda cmd, **kw: {"retcode": 0}}
        hh.__pillar__ = {"hpd": {"roles": ["cache"]}}
        hh.__opts__ = {"cachedir": str(tmp_path)}
        return unit
    return make


def test_a_unit_that_fails_every_start_gets_max_restarts_starts_whoever_asks(hh, host):
    unit = host(FakeUnit("failed", works=False))
    first = hh.heal("memcached")
    assert (first["state"], len(first["starts"]), first["limited"]) == ("failed", 3, True)
    for _ in range(3):  # later reports (a highstate, the beacon again): no more starts
        again = hh.heal("memcached")
        assert (again["starts"], again["limited"]) == ([], True)
    assert unit.starts == 3
    assert hh.reset("memcached") == 3
    assert len(hh.heal("memcached")["starts"]) == 3  # the operator gave it its starts back


def test_a_stopped_unit_is_started_once(hh, host):
    unit = host(FakeUnit("inactive", works=True))
    ret = hh.heal("memcached")
    assert (ret["before"], ret["state"], unit.starts, ret["limited"]) == (
        "inactive", "active", 1, False)


def test_a_unit_systemd_brings_back_is_not_started(hh, host):
    unit = host(FakeUnit("active", works=True))
    ret = hh.heal("memcached")
    assert (ret["state"], ret["starts"], unit.starts) == ("active", [], 0)


def test_a_disabled_unit_is_left_down(hh, host):
    unit = host(FakeUnit("inactive", works=True, enabled=False))
    ret = hh.heal("memcached")
    assert (ret["state"], ret["enabled"], unit.starts) == ("inactive", False, 0)


@pytest.mark.parametrize("props, wanted", [
    ({"LoadState": "loaded", "UnitFileState": "enabled"}, True),
    ({"LoadState": "loaded", "UnitFileState": "enabled-runtime"}, True),  # postgresql@15-main
    ({"LoadState": "loaded", "UnitFileState": "static"}, True),
    ({"LoadState": "loaded", "UnitFileState": "disabled"}, False),
    ({"LoadState": "masked", "UnitFileState": "masked-runtime"}, False),
    ({"LoadState": "not-found", "UnitFileState": ""}, False),  # mariadb on a PostgreSQL host
])
def test_only_a_unit_that_should_run_is_started(hh, props, wanted):
    assert hh._wanted(props) is wanted


def test_a_unit_outside_the_hosts_roles_is_refused(hh, host):
    host(FakeUnit("inactive", works=True))
    with pytest.raises(SaltInvocationError, match="nginx is not a unit of this host's roles"):
        hh.heal("nginx")


def test_a_second_call_while_one_heals_does_nothing(hh, host):
    unit = host(FakeUnit("inactive", works=True))
    with hh._record("memcached", wait=True):
        ret = hh.heal("memcached")
    assert ret["busy"] and unit.starts == 0


# ---------------------------------------------------------------- the units beacon


def down(unit, running=False):
    return {"tag": unit, "service_name": unit, unit: {"running": running}}


def test_the_units_beacon_reports_each_change_once_and_nothing_at_its_first_look(units_beacon):
    seen, look = {}, units_beacon.changes
    assert look({"memcached": "active", "redis-server": "failed"}, 0, 0.0, seen) == []
    assert look({"memcached": "inactive", "redis-server": "failed"}, 0, 1.0, seen) == [
        down("memcached")]
    assert look({"memcached": "failed", "redis-server": "reloading"}, 0, 2.0, seen) == [
        down("redis-server", running=True)]
    assert look({"memcached": "failed", "redis-server": "active"}, 0, 3.0, seen) == []
    assert look({"memcached": "failed"}, 0, 4.0, seen) == [] and list(seen) == ["memcached"]
    assert look({}, 0, 5.0, seen) == [] and list(seen) == ["memcached"]  # systemd silent


def test_the_units_beacon_reports_a_change_that_lasts_its_delay_only(units_beacon):
    seen, look = {}, units_beacon.changes
    look({"memcached": "active"}, 2, 0.0, seen)
    assert look({"memcached": "inactive"}, 2, 1.0, seen) == []
    assert look({"memcached": "active"}, 2, 2.0, seen) == []  # back before the delay
    assert look({"memcached": "inactive"}, 2, 4.0, seen) == []
    assert look({"memcached": "inactive"}, 2, 6.0, seen) == [down("memcached")]


def test_the_units_beacon_asks_systemd_once_for_all_its_units(units_beacon, tmp_path,
                                                              monkeypatch):
    calls = tmp_path / "calls"
    (tmp_path / "systemctl").write_text(
        f"#!/bin/sh\necho \"$@\" >> {calls}\n"
        "printf 'ActiveState=active\\n\\nActiveState=deactivating\\n'\n")
    (tmp_path / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    config = [{"units": ["memcached", "example-worker@1"]}, {"delay": 0}]
    assert units_beacon.validate(config)[0]
    assert units_beacon.active_states(["memcached", "example-worker@1"]) == {
        "memcached": "active", "example-worker@1": "deactivating"}
    assert units_beacon.beacon(config) == []  # the first look
    assert calls.read_text().splitlines() == [
        "show --property=ActiveState -- memcached example-worker@1"] * 2
    (tmp_path / "systemctl").write_text("#!/bin/sh\nexit 1\n")
    assert units_beacon.active_states(["memcached"]) == {}  # no answer: no event


@pytest.mark.parametrize("config, why", [
    ([{"units": []}], "units must be a list of systemd unit names"),
    ([{"units": ["mem cached"]}], "units must be a list of systemd unit names"),
    ([{"units": ["1234"]}], "units must be a list of systemd unit names"),  # a job id
    ([{"units": ["memcached"]}, {"delay": -1}], "delay must be a number of seconds"),
])
def test_the_units_beacon_refuses_a_bad_configuration(units_beacon, config, why):
    valid, message = units_beacon.validate(config)
    assert not valid and why in message


# ---------------------------------------------------------------- the port beacon


def test_the_port_beacon_reports_a_port_that_refuses_and_not_one_that_answers(port_beacon):
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refuses
        config = [{"ports": {
            "up": {"address": "127.0.0.1", "port": listening.getsockname()[1]},
            "down": {"address": "127.0.0.1", "port": closed.getsockname()[1]}}},
            {"timeout": 1}]
        assert port_beacon.validate(config)[0]
        events = port_beacon.beacon(config)
    assert [(e["tag"], e["error"]) for e in events] == [("down", "Connection refused")]


def test_the_port_beacon_refuses_a_port_without_address(port_beacon):
    valid, why = port_beacon.validate([{"ports": {"x": {"port": 1}}}])
    assert not valid and "port x needs an address" in why


# ---------------------------------------------------------------- the error-rate beacon

@pytest.mark.parametrize("last, now, event", [
    # 10 errors out of 100 responses in the interval: 10 % >= 5 %.
    ({"responses": 500, "errors": 5}, {"responses": 600, "errors": 15},
     {"percent": 10.0, "errors": 10, "responses": 100, "threshold": 5}),
    # 4 out of 100: below.
    ({"responses": 500, "errors": 5}, {"responses": 600, "errors": 9}, None),
    # 5 out of 10: too few responses to count.
    ({"responses": 500, "errors": 5}, {"responses": 510, "errors": 10}, None),
    # The first look, haproxy not answering, haproxy restarted (counters back).
    (None, {"responses": 600, "errors": 600}, None),
    ({"responses": 600, "errors": 0}, None, None),
    ({"responses": 600, "errors": 0}, {"responses": 50, "errors": 50}, None),
])
def test_the_error_beacon_fires_on_the_share_of_errors_in_the_interval(errors_beacon, last, now,
                                                                        event):
    assert errors_beacon.rate(last, now, percent=5, min_responses=20) == event


def test_the_error_beacon_fires_from_the_second_look(errors_beacon):
    answers = iter([{"2xx": 100, "5xx": 0}, {"2xx": 100, "5xx": 50}, {"2xx": 200, "5xx": 50},
                    CommandExecutionError("haproxy's runtime API: refused"),
                    {"2xx": 200, "5xx": 150}, {"2xx": 200, "5xx": 250}])

    def responses(backend):
        assert backend == "app"
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return {"1xx": 0, "3xx": 1, "4xx": 2, "other": 0, **answer}

    errors_beacon.__salt__ = {"hpd_haproxy.responses": responses}
    config = [{"backend": "app"}, {"percent": 5}, {"min_responses": 20}]
    assert errors_beacon.validate(config)[0]
    assert errors_beacon.beacon(config) == []
    assert errors_beacon.beacon(config) == [
        {"tag": "app", "percent": 100.0, "errors": 50, "responses": 50, "threshold": 5}]
    assert errors_beacon.beacon(config) == []  # 100 ok since: cleared
    assert errors_beacon.beacon(config) == []  # haproxy not answering: no event
    assert errors_beacon.beacon(config) == []  # its first answer after: a new start
    assert errors_beacon.beacon(config) == [
        {"tag": "app", "percent": 100.0, "errors": 100, "responses": 100, "threshold": 5}]


@pytest.mark.parametrize("config, why", [
    ([{"percent": 5}], "requires backend"),
    ([{"backend": "app"}, {"percent": 0}], "percent must be a number"),
    ([{"backend": "app"}, {"percent": True}], "percent must be a number"),
])
def test_the_error_beacon_refuses_a_bad_configuration(errors_beacon, config, why):
    valid, message = errors_beacon.validate(config)
    assert not valid and why in message
