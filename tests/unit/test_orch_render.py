"""orch/deploy.sls and orch/rollback.sls rendered by Salt's own Jinja renderer
with a plan as hpd_deploy.plan returns it: the requisites that make a failed
batch roll back (deploy) or stop (rollback), and a dry run's states."""

import json

import pytest
import salt.utils.templates
import salt.utils.yaml
from conftest import FILE_ROOTS, local_opts
from test_hpd import REPO

PLAN = {"site": "example", "env": "dev", "app": ["app1", "app2"], "worker": ["worker1"],
        "lb": ["lb"], "varnish": ["lb"], "port": 8000, "release": "20261130T075527Z-4f6a0c2e9b1d",
        "sha": "4f6a0c2e9b1d" + "7" * 28, "rev": "main", "rev_from": "deploy:rev", "who": "alice",
        "batches": [["app1"], ["app2"]], "undo": [["app1"], ["app2", "app1"]],
        "drain_last": False, "previous": {"app1": "r-old", "app2": "r-old", "worker1": "r-old"}}


def render(tmp_path, sls, pillar, test=False, plan=PLAN):
    opts = local_opts(tmp_path, file_roots=FILE_ROOTS, test=test)
    calls = []

    def runner(name, kwarg=None):
        calls.append((name, kwarg))
        return plan

    funcs = {"saltutil.runner": runner,
             "pillar.get": lambda key, default=None: pillar.get(key, default)}
    out = salt.utils.templates.JINJA(str(REPO / "orch" / f"{sls}.sls"), to_str=True, opts=opts,
                                     saltenv="base", sls=f"orch.{sls}", grains={},
                                     pillar=pillar, salt=funcs)
    assert out["result"], out["data"]
    assert [name for name, _ in calls] == ["hpd_deploy.plan"]
    return salt.utils.yaml.safe_load(out["data"]), calls[0][1]


def args(state):
    """A state's arguments ({name: value}) from its list of one-key dicts."""
    (fun, body), = state.items()
    return fun, {k: v for item in body for k, v in item.items()}


def test_a_deploys_failed_batch_rolls_back_the_switched_hosts(tmp_path):
    states, kwarg = render(tmp_path, "deploy", {"deploy": {"rev": "main"}})
    assert kwarg == {"rev": "main", "env": None, "batch": 1, "skip": None}
    # The second batch failing moves app1 and app2 back to their previous release.
    _, back = args(states["deploy-batch-2-rollback-app1-switch"])
    assert back["pillar"] == {"deploy": {"release": "r-old"}}
    onfail = {next(iter(r.values())) for r in back["onfail"]}
    assert onfail == {"deploy-batch-2-switch", "deploy-batch-2-health",
                      "deploy-batch-2-drain-app2", "deploy-batch-2-ready-app2"}
    # The failed batch's host first (drained already), then app1: the pool keeps one.
    ids = list(states)
    assert ids.index("deploy-batch-2-rollback-app2-drain-app2") < ids.index(
        "deploy-batch-2-rollback-app1-drain-app1")
    assert "kwarg" not in args(states["deploy-batch-2-rollback-app1-drain-app1"])[1]
    fun, failed = args(states["deploy-batch-2-failed"])
    assert fun == "test.fail_without_changes" and failed["failhard"] is True
    # A batch's own move never stops the orchestration: its rollback must run.
    assert "failhard" not in args(states["deploy-batch-1-health"])[1]
    assert args(states["deploy-migrate"])[1]["tgt"] == "app1"
    # The new release's error page reaches Varnish after the switch.
    served = args(states["deploy-error-page-served"])[1]
    assert served["tgt"] == ["lb"] and served["sls"] == "varnish"


def test_a_deploy_in_one_batch_drains_the_last_server_as_asked(tmp_path):
    plan = {**PLAN, "batches": [["app1", "app2"]], "undo": [["app1", "app2"]],
            "drain_last": True}
    states, _ = render(tmp_path, "deploy", {"deploy": {"rev": "main"}}, plan=plan)
    for host in ("app1", "app2"):
        assert args(states[f"deploy-batch-1-drain-{host}"])[1]["kwarg"] == {"last": True}


def test_a_rollbacks_failed_move_stops_it(tmp_path):
    states, kwarg = render(tmp_path, "rollback", {"deploy": {}})
    assert kwarg["rollback"] is True
    for step in ("switch", "health", "drain-app1", "ready-app1"):
        assert args(states[f"rollback-batch-1-1-{step}"])[1]["failhard"] is True, step
    assert args(states["rollback-workers-1"])[1]["failhard"] is True
    assert args(states["rollback-error-page-served"])[1]["tgt"] == ["lb"]


def test_a_dry_run_changes_no_host(tmp_path):
    states, _ = render(tmp_path, "deploy", {"deploy": {"rev": "main"}}, test=True)
    touching = {"salt.state", "salt.function"}
    for sid, state in states.items():
        fun, body = args(state)
        if fun not in touching:
            continue
        # Only the checkout runs (as test=True, by the orchestration's own test
        # flag), and the audit/housekeeping calls Salt skips in a dry run.
        assert sid in {"deploy-checkout", "deploy-release-logged", "deploy-marked",
                       "deploy-pruned"}, (sid, json.dumps(body))


@pytest.mark.parametrize("sls", ["deploy", "rollback"])
@pytest.mark.parametrize("test", [False, True])
def test_a_refused_plan_is_one_failing_state_saying_why(tmp_path, sls, test):
    reason = "deploy:batch must be a whole number >= 1, not 0"
    states, _ = render(tmp_path, sls, {"deploy": {"rev": "main", "batch": 0}}, test=test,
                       plan={"Error": reason, "retcode": 1})
    assert list(states) == [f"{sls}-refused"]
    fun, body = args(states[f"{sls}-refused"])
    assert fun == "test.configurable_test_state"
    assert body == {"result": False, "changes": False, "comment": reason,
                    "allow_test_mode_failure": True}


@pytest.mark.parametrize("sls", ["deploy", "rollback"])
def test_every_state_is_one_function_call(tmp_path, sls):
    pillar = {"deploy": {"rev": "main"}} if sls == "deploy" else {"deploy": {}}
    states, _ = render(tmp_path, sls, pillar)
    for sid, state in states.items():
        assert len(state) == 1, sid


@pytest.mark.parametrize("sls, parallel, serial", [
    ("deploy", {"deploy-error-page-served", "deploy-release-logged", "deploy-marked",
                "deploy-pruned"}, {"deploy-workers"}),
    ("rollback", {"rollback-error-page-served", "rollback-release-logged"}, set()),
])
def test_the_steps_after_the_switch_run_in_parallel_and_the_finish_waits_for_them(
        tmp_path, sls, parallel, serial):
    pillar = {"deploy": {"rev": "main"}} if sls == "deploy" else {"deploy": {}}
    states, _ = render(tmp_path, sls, pillar)
    assert {sid for sid, state in states.items() if args(state)[1].get("parallel")} == parallel
    finish = args(states[f"{sls}-finish"])[1]
    assert {next(iter(r.values())) for r in finish["require"]} == parallel | serial
    # The static files are collected with the checkout, before the migration.
    if sls == "deploy":
        ids = list(states)
        assert args(states["deploy-checkout"])[1]["sls"] == [
            "site.checkout", "site.venv", "site.static"]
        assert ids.index("deploy-checkout") < ids.index("deploy-migrate") < ids.index(
            "deploy-static-pushed") < ids.index("deploy-batch-1-drain-app1")


def test_a_deploys_failed_worker_step_rolls_every_host_back_and_stops(tmp_path):
    states, _ = render(tmp_path, "deploy", {"deploy": {"rev": "main"}})
    ids = list(states)
    onfail = [{"salt": "deploy-workers"}]
    workers = args(states["deploy-workers-rollback-1"])[1]
    assert (workers["tgt"], workers["sls"], workers["pillar"], workers["onfail"]) == (
        ["worker1"], "worker.restart", {"deploy": {"release": "r-old"}}, onfail)
    # Then the app hosts, the last batch first, each drained, switched back,
    # health-gated and put back only when the worker step failed.
    moved = [sid for sid in ids if sid.startswith("deploy-workers-rollback-app")]
    assert moved[0] == "deploy-workers-rollback-app2-drain-app2"
    assert moved.index("deploy-workers-rollback-app2-ready-app2") < moved.index(
        "deploy-workers-rollback-app1-drain-app1")
    assert all(args(states[sid])[1]["onfail"] == onfail for sid in moved)
    assert args(states["deploy-workers-rollback-app1-switch"])[1]["pillar"] == {
        "deploy": {"release": "r-old"}}
    failed = args(states["deploy-workers-failed"])[1]
    assert failed["onfail"] == onfail and failed["failhard"] is True
    assert ids.index("deploy-workers") < ids.index("deploy-workers-failed") < ids.index(
        "deploy-pruned")
