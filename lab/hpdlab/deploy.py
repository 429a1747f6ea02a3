"""orch.deploy and orch.rollback run on a lab's master, for the tests, the
deploy benchmark and the demo: salt-run's exit code, the orchestration's states
by id, and what it printed (the progress lines on stderr included)."""

import json
import subprocess


def orchestrate(lab, sls, pillar, timeout=1800):
    """``salt-run state.orchestrate <sls> pillar=<pillar>`` on ``lab``'s master:
    ``(exit code, {state id: result}, stderr + stdout)``."""
    # salt-run in a session of its own: where the kernel shares the CPUs out by
    # session, a caller's priority (the deploy benchmark's load client) stays
    # the caller's.
    out = subprocess.run([*lab.salt_cmd("salt-run"), "--out=json", "state.orchestrate", sls,
                          f"pillar={json.dumps(pillar)}"],
                         capture_output=True, text=True, timeout=timeout, start_new_session=True)
    try:
        data = json.loads(out.stdout).get("data") or {}
    except ValueError:
        data = {}
    ret = next(iter(data.values()), {}) if isinstance(data, dict) else {}
    states = {r["__id__"]: r for r in ret.values()
              if isinstance(r, dict) and "__id__" in r} if isinstance(ret, dict) else {}
    return out.returncode, states, out.stderr + out.stdout


def deploy(lab, rev, **more):
    """orch.deploy of ``rev`` (``more``: the other deploy keys)."""
    return orchestrate(lab, "orch.deploy", {"deploy": {"rev": rev, **more}})
