"""The master's side: one alert per incident and its resolution
(_runners/hpd_alert.py), the heal and scale runners, and the reactor files that
map Salt's events to them."""

import http.server
import json
import threading

import pytest
import salt.config
import salt.utils.templates
import salt.utils.yaml
from conftest import load_source
from test_hpd import REPO, hpd_module, load

ALERTS = hpd_module().defaults(load(REPO / "pillar/alerts/schema.yaml"))



@pytest.fixture
def ha(tmp_path):
    runner = load_source("_runners/hpd_alert.py")
    runner.__opts__ = {"cachedir": str(tmp_path), "log_file": str(tmp_path / "master.log")}
    runner.fired = []
    runner.__salt__ = {"event.send": lambda tag, data: runner.fired.append((tag, data))}
    return runner


def empty():
    return {"incidents": {}, "minions": {}, "totals": {}}


def test_an_incident_opens_once_and_resolves_once(ha):
    store = empty()
    opened = ha._open_incident(store, "app1", "disk-root", 10.0, "warning", 15, {"mount": "/"})
    assert opened == ("hpd/alert/warning/app1/disk-root",
                      {"host": "app1", "check": "disk-root", "severity": "warning",
                       "detail": {"mount": "/"}})
    assert ha._open_incident(store, "app1", "disk-root", 20.0, "warning", 15, {}) is None
    assert ha._stale_incidents(store, 34.0) == []  # last seen at 20: not yet
    assert ha._stale_incidents(store, 35.0) == [("app1", "disk-root")]
    tag, data = ha._close_incident(store, "app1", "disk-root", 35.0)
    assert tag == "hpd/alert/resolved/app1/disk-root" and data["lasted"] == 25.0
    assert ha._close_incident(store, "app1", "disk-root", 36.0) is None


def test_an_incident_without_clear_after_stays_until_closed(ha):
    store = empty()
    ha._open_incident(store, "cache1", "restart-memcached", 0.0, "critical", None, {})
    assert ha._stale_incidents(store, 10**9) == []


def test_a_minion_alerts_only_after_answering_once_and_is_forgotten_when_its_key_goes(ha):
    store = empty()
    missing, present = ha._count_misses(store, ["app1", "new"], {"app1"}, 0.0)
    assert missing == {} and present == ["app1"]  # "new" never answered: still booting
    for n in (1, 2):
        missing, _ = ha._count_misses(store, ["app1", "new"], set(), float(n))
        assert missing == {"app1": n}
    ha._open_incident(store, "app1", "minion", 2.0, "critical", None, {})
    missing, present = ha._count_misses(store, ["new"], set(), 3.0)
    assert missing == {} and store["minions"].keys() == {"new"} and store["incidents"] == {}


def test_check_names_are_safe_in_tags_and_graphite_paths(ha):
    assert ha._check_name("diskusage", "", {"mount": "/"}) == "disk-root"
    assert ha._check_name("diskusage", "", {"mount": "/mnt/hpd-disk.test"}) == \
        "disk-mnt-hpd-disk-test"
    assert ha._check_name("hpd_port", "graphite-web", {}) == "port-graphite-web"
    assert ha._check_name("hpd_errors", "app", {"percent": 50.0}) == "errors-app"
    assert ha._check_name("memusage", "", {}) == "memory"
    assert ha._slug("restart-postgresql@15-main") == "restart-postgresql-15-main"


def test_a_beacon_firing_on_and_on_is_one_alert_then_one_resolution(ha, monkeypatch):
    monkeypatch.setattr(ha, "settings", lambda minion, role: ALERTS)
    monkeypatch.setattr(ha, "_pillar", lambda minion: {"hpd": {"roles": []}})
    # The sender checked (tests/unit/test_reactor_trust.py).
    ha.__salt__["hpd_trust.sender"] = lambda tag, data: ("app1", tag.split("/")[3:])
    for _ in range(5):
        assert ha.observe("salt/beacon/app1/diskusage/", {"id": "app1", "mount": "/mnt/t",
                                                           "diskusage": 97.0}) == "disk-mnt-t"
    assert [tag for tag, _ in ha.fired] == ["hpd/alert/warning/app1/disk-mnt-t"]
    with ha._store() as store:
        incident = store["incidents"]["app1/disk-mnt-t"]
        assert incident["clear_after"] == 60 * 3  # alerts:disk:interval x clear_after_intervals
        incident["last"] -= 181
    with ha._store() as store:
        events = [ha._close_incident(store, h, c, 0) for h, c in ha._stale_incidents(store, 1e12)]
    assert [e[0] for e in events] == ["hpd/alert/resolved/app1/disk-mnt-t"]


class Receiver(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):  # noqa: N802 -- http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.got.append((self.headers.get("Authorization"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_webhook_gets_the_alert_as_json_with_its_token(ha):
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        assert ha._post(url, "a-token-of-16-chars", 5, {"tag": "hpd/alert/x"}) == "posted (204)"
        assert ha._post(url, None, 5, {"tag": "t2"}) == "posted (204)"
    finally:
        server.shutdown()
        server.server_close()
    assert Receiver.got == [("Bearer a-token-of-16-chars", {"tag": "hpd/alert/x"}),
                            (None, {"tag": "t2"})]
    assert ha._post(url, None, 1, {}).startswith("post failed:")


def test_scale_outcomes_name_failed_states_and_silent_hosts():
    scale = load_source("_runners/hpd_scale.py")
    outcome = scale._outcome({
        "lb": {"a": {"__id__": "lb-haproxy", "result": True, "changes": {"x": 1}},
               "b": {"__id__": "lb-check", "result": False, "changes": {}}},
        "lb2": "Minion did not return. [No response]"})
    assert outcome == {"lb": {"failed": ["lb-check"], "changed": 1},
                       "lb2": {"error": "Minion did not return. [No response]"}}
    assert not scale._ok(outcome)
    assert scale._ok({"lb": {"failed": [], "changed": 0}})


def test_a_host_coming_or_going_highstates_the_hosts_that_list_its_roles():
    scale = load_source("_runners/hpd_scale.py")
    # An app host: haproxy's pool, PostgreSQL's access list, the CDN origin's
    # rsync daemon, the media backup (an app host's /health/ needs the db's).
    peers = {"app": ["app1", "app3"], "lb": ["lb"], "db": ["db"], "db_replica": ["db2"],
             "cdn": ["lb"], "backup": ["backup"], "cache": ["cache1"], "monitoring": ["mon"]}
    assert scale._followers({"roles": ["common", "app"], "peers": peers}) == [
        "backup", "db", "db2", "lb"]
    assert scale._followers({"roles": ["worker"], "peers": peers}) == ["db", "db2"]
    # A cache host: twemproxy on the app and worker hosts.
    assert scale._followers({"roles": ["cache"], "peers": {**peers, "worker": ["worker1"]}}) == [
        "app1", "app3", "worker1"]
    # A replica: its slot on the primary, the database hosts the site tries.
    assert scale._followers({"roles": ["db_replica"], "peers": peers}) == ["app1", "app3", "db"]
    assert scale._followers({"roles": ["backup"], "peers": peers}) == [
        "app1", "app3", "db", "db2"]
    assert scale._followers({"roles": ["common", "monitoring"], "peers": peers}) == []
    assert scale._followers({"roles": ["app"]}) == []


def test_a_follower_that_does_not_answer_is_an_error():
    scale = load_source("_runners/hpd_scale.py")

    class Client:
        def cmd(self, tgt, fun, tgt_type, timeout):
            assert (tgt, fun, tgt_type) == (["db", "lb"], "state.apply", "list")
            return {"lb": {"s": {"__id__": "s", "result": True, "changes": {}}}}

    outcome = scale._highstate_followers(Client(), {"roles": ["app"],
                                                    "peers": {"lb": ["lb"], "db": ["db"]}})
    assert outcome == {"lb": {"failed": [], "changed": 0}, "db": {"error": "did not return"}}
    assert not scale._ok(outcome)


# ---------------------------------------------------------------- the reactor files


def react(sls, tag, data):
    opts = salt.config.master_config(None)
    out = salt.utils.templates.JINJA(str(REPO / "reactor" / sls), to_str=True, opts=opts,
                                     saltenv="base", tag=tag, data=data, salt={})
    assert out["result"], out["data"]
    return salt.utils.yaml.safe_load(out["data"]) or {}


def only(reactions):
    assert len(reactions) == 1, reactions
    (fun, args), = next(iter(reactions.values())).items()
    return fun, {k: v for arg in args[0]["args"] for k, v in arg.items()}


def test_each_event_goes_to_its_runner_as_it_came():
    # The runners check them (tests/unit/test_reactor_trust.py).
    stamp = "2026-11-30T08:00:14.454885+00:00"
    for sls, tag, data, fun in [
        ("heal.sls", "salt/beacon/cache1/hpd_units/memcached",
         {"id": "cache1", "service_name": "memcached", "memcached": {"running": False},
          "_stamp": stamp}, "runner.hpd_heal.beacon"),
        ("scale.sls", "salt/key", {"act": "accepted", "id": "app3", "result": True},
         "runner.hpd_scale.react"),
        ("scale.sls", "salt/minion/app3/start", {"id": "app3"}, "runner.hpd_scale.react"),
        ("alert_observe.sls", "salt/beacon/app1/diskusage/",
         {"id": "app1", "mount": "/", "diskusage": 97.0, "_stamp": stamp},
         "runner.hpd_alert.observe"),
        ("alert_record.sls", "hpd/alert/warning/app1/disk-root",
         {"host": "app1", "check": "disk-root", "_stamp": stamp}, "runner.hpd_alert.record"),
    ]:
        assert only(react(sls, tag, data)) == (fun, {"tag": tag, "data": data})
