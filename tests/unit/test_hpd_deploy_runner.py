"""Unit tests for ``_runners/hpd_deploy.py``: the deploy lock, the release id,
the revision check, the audit events and the health gate (against HTTP servers
on loopback)."""

import json
import multiprocessing
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import load_source
from salt.exceptions import SaltInvocationError
from test_highperf import FakeClock

MODULE_PATH = Path(__file__).resolve().parents[2] / "_runners" / "hpd_deploy.py"
SHA = "4f6a0c2e9b1d" + "7" * 28
WHEN = 1796025327.0  # 2026-11-30T07:55:27Z


def load_runner(cachedir, salt_funcs=None, user="alice"):
    module = load_source(MODULE_PATH)
    module.__opts__ = {"cachedir": str(cachedir)}
    module.__context__ = {}
    module.__salt__ = salt_funcs or {}
    module.__user__ = user
    return module


@pytest.fixture
def hd(tmp_path):
    return load_runner(tmp_path)


@pytest.fixture
def other_process():
    """A live process that is not this one (a deploy running elsewhere)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def record_of(hd, pid, **extra):
    return {"pid": pid, "started": hd._process_start(pid), "site": "example", "env": "dev",
            "who": "bob", "since": WHEN, "rev": "main", "sha": SHA,
            "release": "20261130T075527Z-4f6a0c2e9b1d", "jid": "20261130075527000000", **extra}


def write_lock(hd, record):
    hd._write(hd._lock_path("example", "dev"), record)


# --- the release id -------------------------------------------------------------


def test_release_id_is_utc_time_and_short_sha_sorting_in_deploy_order(hd):
    assert hd.release_id(SHA, WHEN) == "20261130T075527Z-4f6a0c2e9b1d"
    later = hd.release_id("0" * 40, WHEN + 1)
    assert sorted([later, hd.release_id(SHA, WHEN)]) == [hd.release_id(SHA, WHEN), later]


@pytest.mark.parametrize("sha", ["main", "4f6a0c2", None, SHA.upper()])
def test_release_id_wants_a_full_sha(hd, sha):
    with pytest.raises(SaltInvocationError, match="full commit sha"):
        hd.release_id(sha, WHEN)


def test_resolve_asks_the_app_host_and_computes_the_release_once(tmp_path):
    calls = []

    def execute(tgt, fun, arg=(), tgt_type="glob", timeout=None, kwarg=None):
        calls.append((tgt, fun, list(arg), kwarg, tgt_type))
        return {"app1": SHA}

    hd = load_runner(tmp_path, {"salt.execute": execute})
    got = hd.resolve("main", "app1")
    assert hd.resolve("main", "app1", repository="file:///x.git")["sha"] == SHA
    assert calls == [("app1", "hpd_release.resolve", ["main"], None, "list"),
                     ("app1", "hpd_release.resolve", ["main"], {"repository": "file:///x.git"},
                      "list")]
    assert got["sha"] == SHA and got["rev"] == "main"
    assert got["release"].endswith("-4f6a0c2e9b1d") and len(got["release"]) == 29
    assert "retcode" not in hd.__context__


@pytest.mark.parametrize("answer, reason", [
    ("ERROR: revision 'nope' is not in file:///srv/git/example.git", "is not in"),
    (None, "no answer"),
])
def test_resolve_refuses_a_revision_the_host_cannot_find(tmp_path, answer, reason):
    hd = load_runner(tmp_path, {"salt.execute": lambda *a, **k: {"app1": answer} if answer
                                else {}})
    got = hd.resolve("nope", "app1")
    assert "revision 'nope' not resolved on app1" in got["Error"] and reason in got["Error"]
    assert hd.__context__["retcode"] == 1 and got["retcode"] == 1


def test_resolve_refuses_an_empty_revision_naming_the_key(hd):
    with pytest.raises(SaltInvocationError, match="deploy:rev"):
        hd.resolve("  ", "app1")


# --- the lock ------------------------------------------------------------------


def test_a_second_deploy_is_refused_naming_the_holder(hd, other_process):
    held = record_of(hd, other_process.pid)
    write_lock(hd, held)
    got = hd.lock("example", "dev", rev="v2")
    assert hd.__context__["retcode"] == 1 and got["retcode"] == 1
    message = got["Error"]
    assert message.startswith("deploy of example to dev refused: bob has been deploying")
    for part in ("rev 'main' (4f6a0c2e9b1d)", "release 20261130T075527Z-4f6a0c2e9b1d",
                 "since 2026-11-30T07:55:27Z", f"process {other_process.pid}",
                 "job 20261130075527000000"):
        assert part in message
    assert hd._read(hd._lock_path("example", "dev")) == held


def test_a_lock_is_per_site_and_environment(hd, other_process):
    write_lock(hd, record_of(hd, other_process.pid))
    assert hd.lock("example", "staging")["locked"] is True
    assert hd.lock("other", "dev")["locked"] is True


def test_the_lock_of_a_holder_that_is_gone_is_taken_over(hd):
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = {**record_of(hd, os.getpid()), "pid": gone.pid, "started": 1.0}
    write_lock(hd, stale)
    got = hd.lock("example", "dev", rev="v2", sha=SHA, release="r2")
    assert got["locked"] is True and got["taken_over"] == stale
    assert "retcode" not in hd.__context__
    holder = hd._read(hd._lock_path("example", "dev"))
    assert (holder["pid"], holder["who"], holder["rev"], holder["release"]) == (
        os.getpid(), "alice", "v2", "r2")


def test_a_pid_given_to_a_new_process_is_not_the_holder(hd, other_process):
    """The same PID, started at another time: the holder is gone."""
    write_lock(hd, {**record_of(hd, other_process.pid), "started": 1.0})
    assert hd.lock("example", "dev")["locked"] is True


def test_who_is_the_publishing_user_else_this_processs_user(tmp_path, monkeypatch):
    import salt.utils.user

    monkeypatch.setattr(salt.utils.user, "get_specific_user", lambda: "sudo_carol")
    assert load_runner(tmp_path / "a", user="alice")._who() == "alice"
    for unnamed in ("UNKNOWN", None):
        assert load_runner(tmp_path / "b", user=unnamed)._who() == "sudo_carol"


def test_the_holder_may_lock_again_and_keeps_its_start(hd):
    first = hd.lock("example", "dev", rev="main")["holder"]
    again = hd.lock("example", "dev", rev="main", sha=SHA, release="r1")
    assert again["locked"] is True and again["taken_over"] is None
    assert again["holder"]["since"] == first["since"] and again["holder"]["sha"] == SHA


def test_unlock_frees_only_the_lock_its_own_process_holds(hd, other_process):
    held = record_of(hd, other_process.pid)
    write_lock(hd, held)
    got = hd.unlock("example", "dev")
    assert got["unlocked"] is False and f"held by process {other_process.pid}" in got["comment"]
    assert hd._read(hd._lock_path("example", "dev")) == held

    hd.lock("example", "other")
    assert hd.unlock("example", "other")["unlocked"] is True
    assert not os.path.exists(hd._lock_path("example", "other"))
    assert hd.unlock("example", "other") == {"unlocked": False,
                                             "comment": "example/other is not locked"}


def test_unlock_with_force_frees_a_live_holders_lock_and_says_whose(hd, other_process):
    held = record_of(hd, other_process.pid)
    write_lock(hd, held)
    assert hd.unlock("example", "dev", force="yes")["unlocked"] is False
    assert hd.unlock("example", "dev", force=True) == {
        "unlocked": True, "comment": "example/dev forced free", "freed": held}
    assert hd.status() == {}
    assert hd.lock("example", "dev")["locked"] is True


def test_status_says_whether_each_holder_still_runs(hd, other_process):
    write_lock(hd, record_of(hd, other_process.pid))
    gone = {**record_of(hd, other_process.pid), "env": "staging", "started": 1.0}
    hd._write(hd._lock_path("example", "staging"), gone)
    found = hd.status()
    assert sorted(found) == ["example/dev", "example/staging"]
    assert found["example/dev"]["alive"] is True and found["example/staging"]["alive"] is False
    assert list(hd.status(env="staging")) == ["example/staging"]


@pytest.mark.parametrize("site, env, key", [("Example", "dev", "site"), ("ex", "../x", "env"),
                                            ("", "dev", "site")])
def test_bad_names_are_refused_naming_the_argument(hd, site, env, key):
    with pytest.raises(SaltInvocationError, match=f"^{key} must be a name"):
        hd.lock(site, env)
    assert os.listdir(hd._lock_dir()) == []


def _race(cachedir, barrier, done, results):
    hd = load_runner(cachedir)
    barrier.wait()
    results.put("locked" if hd.lock("example", "dev").get("locked") else "refused")
    done.wait()  # the winner stays alive until both have tried


def test_two_deploys_starting_at_once_get_one_lock(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for _ in range(10):
        cachedir = tmp_path / str(_)
        barrier, done, results = ctx.Barrier(2), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(cachedir, barrier, done, results))
                 for _ in range(2)]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=30) for _ in procs)
        done.set()
        for p in procs:
            p.join()
        assert outcomes == ["locked", "refused"]


def _holder_in_child(queue):
    queue.put(load_runner("/nonexistent")._holder_pid())


def test_under_saltutil_runas_the_holder_is_the_orchestration_process():
    """saltutil.runner runs a runner in a child when it drops privileges: the
    lock must name the orchestration (the child's parent), not the child."""
    ctx = multiprocessing.get_context("fork")
    for name, expected in (("saltutil-runas-salt", os.getpid()), ("Process-9", None)):
        queue = ctx.Queue()
        child = ctx.Process(target=_holder_in_child, args=(queue,), name=name)
        child.start()
        got = queue.get(timeout=30)
        child.join()
        assert got == (expected or child.pid)


# --- audit events ---------------------------------------------------------------


def test_notify_fires_the_deploy_event_with_the_locks_record(tmp_path, monkeypatch):
    sent = []
    hd = load_runner(tmp_path, {"event.send": lambda tag, data: sent.append((tag, data))})
    monkeypatch.setattr(hd.time, "time", lambda: WHEN)
    hd.lock("example", "dev", rev="main", sha=SHA, release="20261130T075527Z-4f6a0c2e9b1d",
            rev_from="site:rev")
    monkeypatch.setattr(hd.time, "time", lambda: WHEN + 42.5)
    got = hd.notify("example", "dev", "step", step="migrate")
    assert sent == [(got["tag"], got["event"])]
    assert "data" not in got  # Salt judges a runner return with "data" as state results
    assert got["tag"] == "hpd/deploy/example/step"
    assert got["event"] == {"site": "example", "env": "dev",
                           "release": "20261130T075527Z-4f6a0c2e9b1d", "rev": "main",
                           "rev_from": "site:rev", "sha": SHA, "who": "alice",
                           "since": "2026-11-30T07:55:27Z", "duration": 42.5, "step": "migrate"}
    finish = hd.notify("example", "dev", "finish", result=False, comment="app2: HTTP 503")
    assert finish["tag"] == "hpd/deploy/example/finish"
    assert (finish["event"]["result"], finish["event"]["comment"]) == (False, "app2: HTTP 503")


def test_notify_needs_the_lock_and_a_known_phase(tmp_path, other_process):
    sent = []
    hd = load_runner(tmp_path, {"event.send": lambda tag, data: sent.append(tag)})
    with pytest.raises(SaltInvocationError, match="holds the lock in this process"):
        hd.notify("example", "dev", "start")
    write_lock(hd, record_of(hd, other_process.pid))
    with pytest.raises(SaltInvocationError, match="holds the lock in this process"):
        hd.notify("example", "dev", "start")
    hd.lock("example", "staging")
    with pytest.raises(SaltInvocationError, match="phase must be one of"):
        hd.notify("example", "staging", "begin")
    assert sent == []


# --- the health gate -------------------------------------------------------------


class Health:
    """A /health/ endpoint on loopback answering from a script of (status,
    release) pairs, the last one repeated; counts requests."""

    def __init__(self, script):
        self.script, self.requests = list(script), 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                status, release = outer.script[min(outer.requests, len(outer.script) - 1)]
                outer.requests += 1
                body = json.dumps({"release": release, "database": "ok"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def health_server():
    servers = []

    def make(script):
        servers.append(Health(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def clock(hd, monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(hd, "time", fake)
    return fake


def test_the_gate_waits_until_the_host_reports_the_release(hd, health_server, clock):
    server = health_server([(200, "old"), (200, "old"), (200, "new")])
    got = hd._wait_healthy(server.url, "new", timeout=30, interval=1, passes=1)
    assert got["healthy"] is True and got["release"] == "new" and got["status"] == 200
    assert server.requests == 3 and clock.sleeps == [1, 1]


def test_the_gate_wants_passes_in_a_row(hd, health_server, clock):
    """A chain reload serves old and new workers side by side."""
    server = health_server([(200, "new"), (200, "old"), (200, "new"), (200, "new"),
                            (200, "new"), (200, "old")])
    got = hd._wait_healthy(server.url, "new", timeout=30, interval=1, passes=3)
    assert got["healthy"] is True and server.requests == 5


@pytest.mark.parametrize("script, reason", [
    ([(200, "old")], "not healthy within 5 s: reports release old, not new"),
    ([(503, "new")], "not healthy within 5 s: HTTP 503 (release new)"),
])
def test_a_host_that_never_reports_the_release_fails_with_why(hd, health_server, clock,
                                                              script, reason):
    server = health_server(script)
    got = hd._wait_healthy(server.url, "new", timeout=5, interval=1, passes=1)
    assert got["healthy"] is False and got["reason"] == reason
    assert server.requests == 6 and sum(clock.sleeps) == 5


def test_a_host_that_does_not_answer_fails_with_why(hd, health_server, clock):
    server = health_server([(200, "new")])
    url = server.url
    server.close()
    got = hd._wait_healthy(url, "new", timeout=2, interval=1, passes=1)
    assert got["healthy"] is False
    assert got["reason"].startswith("not healthy within 2 s: no answer:")
    assert "refused" in got["reason"].lower()


def test_gate_names_each_failed_host(hd, health_server):
    good = health_server([(200, "new")])
    bad = health_server([(200, "old")])
    got = hd._gate({"app1": good.url, "app2": bad.url}, "new", timeout=1, interval=0.2, passes=2,
                   unreachable={"app3": "no address: none in the inventory"})
    assert got["result"] is False
    assert got["hosts"]["app1"]["healthy"] is True
    assert sorted(got["failed"]) == ["app2", "app3"]
    assert got["failed"]["app2"] == "not healthy within 1 s: reports release old, not new"
    assert got["failed"]["app3"].startswith("no address")
    assert got["comment"].startswith("app2: not healthy within 1 s")
    ok = hd._gate({"app1": good.url}, "new", timeout=1, interval=0.2, passes=2)
    assert ok["result"] is True and ok["failed"] == {} and ok["comment"] == (
        "app1 serve release new")


def test_health_targets_each_hosts_inventory_address_and_fails_the_job(tmp_path, monkeypatch):
    """The inventory's address, else the name resolved on the master: never the
    host's grains (none are asked)."""
    inventory = {"app1": {"roles": ["app"], "env": "dev", "address": "10.96.0.21"},
                 "localhost": {"roles": ["app"], "env": "dev"},
                 "app2": {"roles": ["app"], "env": "dev", "address": "app2.example"},
                 "app3.invalid": {"roles": ["app"], "env": "dev"}}
    hd = load_runner(tmp_path, {"hpd_trust.inventory": lambda: inventory})
    seen = {}

    def gate(urls, release, timeout, interval, passes, unreachable):
        seen.update(urls, **unreachable)
        return {"result": False}

    monkeypatch.setattr(hd, "_gate", gate)
    assert hd.health(list(inventory), "r1", 8000) == {"result": False, "retcode": 1}
    assert seen["app1"] == "http://10.96.0.21:8000/health/"
    assert seen["localhost"] == "http://127.0.0.1:8000/health/"
    assert seen["app2"] == "inventory app2:address: 'app2.example' is not an IPv4 address"
    assert seen["app3.invalid"].startswith("no address: none in the inventory and the name")
    assert hd.__context__["retcode"] == 1


@pytest.mark.parametrize("hosts, port, match", [([], 8000, "hosts"), (["app1"], "8000", "port"),
                                                (["app1"], 0, "port")])
def test_health_refuses_bad_arguments_naming_them(hd, hosts, port, match):
    with pytest.raises(SaltInvocationError, match=f"^{match}"):
        hd.health(hosts, "r1", port)


# --- the plan --------------------------------------------------------------------------


def facts(env, roles, current="r1", releases=("r0", "r1"), rev="main", previous="r0"):
    answer = {"env": env, "roles": roles, "current": current, "releases": list(releases),
              "previous": previous}
    if "app" in roles or "worker" in roles:
        answer.update(site="example", static_dir="collected_static", rev=rev)
    if "app" in roles:
        answer["port"] = 8000
    return answer


FARM = {
    "app2": facts("dev", ["common", "app"]), "app1": facts("dev", ["common", "app"]),
    "worker1": facts("dev", ["common", "worker"]),
    "lb": facts("dev", ["common", "lb", "varnish"]),
    "db": facts("dev", ["common", "db"]), "papp": facts("prod", ["common", "app"]),
    "broken": "'hpd_release.facts' is not available.",
}


INVENTORY = {h: {"env": f["env"], "roles": f["roles"][1:]} for h, f in FARM.items()
             if isinstance(f, dict)} | {"broken": {"env": "dev", "roles": ["app"]}}
DEV = ["app1", "app2", "lb", "worker1"]


def test_hosts_of_the_environment_by_role(hd):
    assert hd._hosts(INVENTORY, hd._answered(FARM, DEV), "dev") == {
        "site": "example", "env": "dev", "port": 8000, "static_dir": "collected_static",
        "app": ["app1", "app2"], "worker": ["worker1"], "lb": ["lb"], "varnish": ["lb"]}


def test_roles_and_environment_come_from_the_inventory_not_the_hosts(hd):
    lying = {**FARM, "db": facts("dev", ["common", "app", "lb"]),
             "app2": facts("prod", ["common", "app"]), "stranger": facts("dev", ["app"])}
    env, targets = hd._environment(INVENTORY, "dev", ["broken"])
    assert targets == DEV
    hosts = hd._hosts(INVENTORY, hd._answered(lying, targets), env)
    assert (hosts["app"], hosts["lb"]) == (["app1", "app2"], ["lb"])


def test_a_host_that_does_not_answer_stops_the_plan_naming_it(hd):
    with pytest.raises(SaltInvocationError, match=(
            r"^no hpd_release.facts answer from broken \('hpd_release.facts' is not available.\); "
            r"worker1 \(no return\): deploy:skip names a host the deploy may leave out$")):
        hd._answered({h: f for h, f in FARM.items() if h != "worker1"}, ["broken", "worker1"])


@pytest.mark.parametrize("env, message", [
    (None, "deploy:env must name the environment (app hosts are in dev, prod)"),
    ("staging", "deploy:env 'staging' has no app host (app hosts are in dev, prod)"),
])
def test_the_environment_must_be_one_the_inventory_can_tell(hd, env, message):
    with pytest.raises(SaltInvocationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hd._environment(INVENTORY, env)


def test_a_deploy_touches_the_inventorys_hosts_of_its_environment_but_skipped_ones(hd):
    assert hd._environment(INVENTORY, "dev") == ("dev", sorted(DEV + ["broken"]))
    assert hd._environment(INVENTORY, "dev", ["broken", "worker1"]) == ("dev", ["app1", "app2",
                                                                              "lb"])
    assert hd._environment({"p": {"env": "prod", "roles": ["app"]}}, None) == ("prod", ["p"])
    for skip in (["papp"], "broken", [["broken"]], ["lb"]):
        with pytest.raises(SaltInvocationError, match=r"^deploy:skip must be a list of app or "
                                                      r"worker hosts of dev \(app1, app2, broken, "
                                                      r"worker1\), not "):
            hd._environment(INVENTORY, "dev", skip)


def execute_on(farm, calls, resolved=None, pools=None):
    pools = pools or {}

    def execute(tgt, fun, arg=(), tgt_type="glob", timeout=None, kwarg=None):
        calls.append((tgt, fun, tgt_type))
        if fun == "hpd_release.resolve":
            (resolved if resolved is not None else []).append(arg)
            return {"app1": SHA}
        if fun == "hpd_haproxy.statuses":
            return {h: pools.get(h, {"app1": "UP", "app2": "UP"}) for h in tgt}
        return {h: farm[h] for h in tgt if h in farm} if fun == "hpd_release.facts" else {}
    return {"salt.execute": execute, "hpd_trust.inventory": lambda: INVENTORY}


def test_plan_locks_before_it_syncs_and_asks_only_the_hosts_a_deploy_touches(tmp_path):
    calls = []
    targets = DEV
    hd = load_runner(tmp_path, execute_on(FARM, calls))
    real_lock = hd.lock

    def lock(*args, **kwargs):
        calls.append(("lock", args))
        return real_lock(*args, **kwargs)

    hd.lock = lock
    plan = hd.plan(rev="main", env="dev", skip=["broken"])
    assert calls[:4] == [
        (targets, "hpd_release.facts", "list"), ("lock", ("example", "dev")),
        (targets, ["saltutil.sync_modules", "saltutil.sync_states"], "list"),
        (targets, "hpd_release.facts", "list")]
    assert ("app1", "hpd_release.resolve", "list") in calls
    assert plan["app"] == ["app1", "app2"] and plan["varnish"] == ["lb"]
    assert plan["sha"] == SHA and plan["previous"] == {"app1": "r1", "app2": "r1",
                                                        "worker1": "r1"}
    assert plan["rev"] == "main" and plan["rev_from"] == "deploy:rev"
    assert plan["undo"] == [["app1"], ["app2", "app1"]] and plan["drain_last"] is False


def test_a_deploy_is_refused_while_an_app_host_is_out_of_the_pool(tmp_path):
    calls = []
    hd = load_runner(tmp_path, execute_on(FARM, calls, pools={"lb": {"app1": "UP",
                                                                     "app2": "DRAIN"}}))
    got = hd.plan(rev="main", env="dev", skip=["broken"])
    assert got["Error"].startswith("app hosts out of the pool (app2 is DRAIN on lb), as a "
                                   "deploy that died midway leaves them: "), got
    assert hd.status() == {}  # refused under the lock: freed
    assert "hpd_release.resolve" not in [fun for _, fun, _ in calls]
    assert hd.plan(rev="main", env="dev", skip=["broken", "app2"])["app"] == ["app1"]


def test_out_of_pool_names_each_host_and_each_silent_lb(hd):
    assert hd._out_of_pool({"lb": {"app1": "UP", "app2": "UP 1/2", "other": "MAINT"}},
                           ["lb"], ["app1", "app2"]) is None
    got = hd._out_of_pool({"lb": {"app1": "MAINT", "app2": "DRAIN (agent)"}, "lb2": "no"},
                          ["lb", "lb2", "lb3"], ["app1", "app2"])
    assert got.startswith("app hosts out of the pool (app1 is MAINT on lb; app2 is DRAIN "
                          "(agent) on lb; no answer from lb2, lb3), ")


def test_a_refused_plan_changes_no_host(tmp_path, other_process):
    calls = []
    hd = load_runner(tmp_path, execute_on(FARM, calls))
    write_lock(hd, record_of(hd, other_process.pid))
    assert "refused" in hd.plan(rev="main", env="dev", skip=["broken"])["Error"]
    assert [fun for _, fun, _ in calls] == ["hpd_release.facts"]


def test_plan_without_deploy_rev_deploys_the_app_hosts_site_rev(tmp_path):
    resolved = []
    hd = load_runner(tmp_path, execute_on(FARM, [], resolved))
    plan = hd.plan(env="dev", batch=2, skip=["broken"])
    assert (plan["rev"], plan["rev_from"], plan["sha"]) == ("main", "site:rev", SHA)
    assert resolved == [["main"]]
    assert plan["undo"] == [["app1", "app2"]] and plan["drain_last"] is True
    assert hd.status()["example/dev"]["rev_from"] == "site:rev"


def test_deploy_rev_is_deploy_rev_else_the_site_rev_the_app_hosts_agree_on(hd):
    farm = {"app1": facts("dev", ["app"]), "app2": facts("dev", ["app"], rev="v2"),
            "worker1": facts("dev", ["worker"], rev="v3")}
    assert hd._deploy_rev("v9", farm, ["app1", "app2"]) == ("v9", "deploy:rev")
    assert hd._deploy_rev(None, farm, ["app1"]) == ("main", "site:rev")
    with pytest.raises(SaltInvocationError, match=(
            r"^deploy:rev not given and the app hosts' site:rev differ \(app1: 'main', "
            r"app2: 'v2'\): name the revision with deploy:rev$")):
        hd._deploy_rev(None, farm, ["app1", "app2"])
    with pytest.raises(SaltInvocationError, match="not ' '"):
        hd._deploy_rev(" ", farm, ["app1"])


def test_undo_moves_the_failed_batch_back_first_then_the_earlier_ones_last_first(hd):
    assert hd._undo([["a"], ["b"]]) == [["a"], ["b", "a"]]
    assert hd._undo([["a", "b"], ["c", "d"], ["e"]]) == [
        ["a", "b"], ["c", "d", "a", "b"], ["e", "c", "d", "a", "b"]]


@pytest.mark.parametrize("kwargs, message", [
    ({"rev": "main", "batch": 0}, "deploy:batch must be a whole number >= 1, not 0"),
    ({"rev": " "}, "deploy:rev must be a branch, a tag or a commit sha, not ' '"),
])
def test_plan_refuses_a_bad_key_before_any_host_or_the_lock(tmp_path, kwargs, message):
    def execute(*args, **kw):
        raise AssertionError("no host is asked")

    hd = load_runner(tmp_path, {"salt.execute": execute})
    assert hd.plan(**kwargs) == {"Error": message, "retcode": 1}
    assert hd.status() == {}


def test_batches_split_the_app_hosts_in_order(hd):
    assert hd._batches(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    assert hd._batches(["a", "b"], 1) == [["a"], ["b"]]
    with pytest.raises(SaltInvocationError, match="deploy:batch"):
        hd._count(0, "deploy:batch")


def test_rollback_goes_to_the_hosts_previous_release_or_a_named_one(hd):
    answer = facts("dev", ["app"], current="r2", releases=["main", "r1", "r2", "r3"],
                   previous="main")
    assert hd._previous(answer) == "main"
    assert hd._previous(answer, "r1") == "r1"
    with pytest.raises(SaltInvocationError, match="release 'gone' is not on the host"):
        hd._previous(answer, "gone")
    first = facts("dev", ["app"], current="main", releases=["main"], previous=None)
    with pytest.raises(SaltInvocationError, match="no release served before 'main'"):
        hd._previous(first)
    farm = {"a": answer, "b": first}
    with pytest.raises(SaltInvocationError, match="^b: no release served before 'main'"):
        hd._rollback_targets(farm, ["a", "b"], None)


def test_progress_line_names_the_deploy_step_and_time(hd):
    data = {"site": "example", "env": "dev", "release": "R", "duration": 12.4,
            "step": "batch 1", "comment": "app1"}
    assert hd._progress(data, "step") == "[example/dev R +12s] step: batch 1 app1"
