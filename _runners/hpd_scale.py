"""
Hosts that come and go (reactor/scale.sls maps the events):

- ``salt/key`` with ``act: accepted``: :func:`accepted` marks the minion new;
- ``salt/minion/<id>/start``: :func:`joined` provisions a new minion at its
  first start: its extension modules, its highstate (its roles from the
  inventory), its mine, then a highstate of the hosts of its environment whose
  configuration names the hosts of its roles (:data:`FOLLOWERS`: haproxy's pool
  on the lb hosts, PostgreSQL's access list on the db hosts...), so they take
  it in;
- ``salt/key`` with ``act: delete``: :func:`left` drops what the master cached
  of it (grains, pillar, mine) and highstates the same hosts, which then leave
  it out (remove it from the inventory before deleting its key: they follow the
  inventory).

Each fires ``hpd/scale/joined/<id>`` or ``hpd/scale/left/<id>`` with the
outcome. The master keeps a deleted minion's cache until :func:`left` has read
its environment from it (master option ``preserve_minion_cache: True``).
Minions whose keys were accepted before the master ran these reactions (a farm
brought up at once, highstated by its operator) are left to the operator.

The reaction hands each event over as it came (:func:`react`), which checks it
first (_runners/hpd_trust.py): a key event must be the master's, a start its
minion's, the minion one of the inventory.
"""

import contextlib
import logging
import os

import salt.cache
import salt.client
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

#: Seconds a highstate may take (a new host installs its packages).
HIGHSTATE_TIMEOUT = 1800
#: role -> the roles whose hosts' configuration lists the hosts of that role
#: (pillar hpd:peers:<role>). An app host: haproxy's pool (lb), PostgreSQL's
#: access list (db, and db_replica, which may be promoted), the CDN origin's
#: rsync daemon (cdn), the media backup (backup). A worker host: the access
#: list. A cache host: twemproxy's pool and the Celery broker (app, worker). A
#: db_replica host: its replication slot and access (db), the database hosts
#: the site tries in turn (app, worker). A backup host: the access list for its
#: dumps (db, db_replica), the media rsync daemon (app). Not here: a new db
#: primary (a failover, orch.db_failover) and a new monitoring host (every
#: host pushes to it: a highstate of all).
FOLLOWERS = {"app": ("lb", "db", "db_replica", "cdn", "backup"),
             "worker": ("db", "db_replica"),
             "cache": ("app", "worker"),
             "db_replica": ("db", "app", "worker"),
             "backup": ("db", "db_replica", "app")}


def _pending(minion):
    directory = os.path.join(__opts__["cachedir"], "hpd", "scale")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, f"{minion}.pending")


def _outcome(returned):
    """{minion: {"failed": [state ids], "changed": n}} of a state run's returns
    (a minion that returned no states: {"error": what it returned})."""
    found = {}
    for minion, states in returned.items():
        if not isinstance(states, dict):
            found[minion] = {"error": str(states)}
            continue
        found[minion] = {
            "failed": sorted(s.get("__id__", key) for key, s in states.items()
                             if s.get("result") is not True),
            "changed": sum(1 for s in states.values() if s.get("changes")),
        }
    return found


def _ok(outcome):
    return all(not o.get("error") and not o["failed"] for o in outcome.values())


def _followers(hpd):
    """The hosts of a host's environment whose configuration follows hosts with
    its roles (:data:`FOLLOWERS`), by name, from its pillar ``hpd`` (its roles,
    and ``peers``: the inventory's hosts of its environment by role). Named
    one by one: the master then waits for each (a pillar target is matched
    against the master's pillar cache, which once left the backup host out)."""
    follow = {f for role in hpd.get("roles") or [] for f in FOLLOWERS.get(role, ())}
    peers = hpd.get("peers") or {}
    return sorted({host for role in follow for host in peers.get(role) or []})


def _highstate_followers(client, hpd):
    """Highstate the hosts that follow a host whose pillar ``hpd`` is ``hpd``;
    their outcome (a host that did not answer: an error)."""
    hosts = _followers(hpd)
    if not hosts:
        return {}
    found = _outcome(client.cmd(hosts, "state.apply", tgt_type="list",
                                timeout=HIGHSTATE_TIMEOUT))
    return {**{host: {"error": "did not return"} for host in hosts}, **found}


def react(tag, data):
    """
    The reaction to ``salt/key`` and ``salt/minion/<id>/start``
    (reactor/scale.sls), the event as it came: a key accepted, :func:`accepted`;
    deleted, :func:`left`; a minion's start, :func:`joined`; another key event,
    nothing (None). Refused, with one line in the master's log and nothing done:
    a key event a minion sent, an accepted key of a host the inventory lacks, a
    deleted key still accepted, a start sent by another minion than the one it
    names, or by one not accepted or not in the inventory.
    """
    try:
        if tag != "salt/key":
            minion, rest = __salt__["hpd_trust.sender"](tag, data, "minion")
            if rest != ["start"]:
                raise SaltInvocationError(f"not the tag salt/minion/{minion}/start")
            step = joined
        elif __salt__["hpd_trust.from_master"](data).get("act") == "accepted":
            minion, step = __salt__["hpd_trust.known"](data.get("id")), accepted
        elif data.get("act") == "delete":
            minion, step = __salt__["hpd_trust.minion_id"](data.get("id")), left
            if __salt__["hpd_trust.accepted"](minion):
                raise SaltInvocationError(f"{minion!r}'s key is still accepted")
        else:
            return None
    except SaltInvocationError as exc:
        return __salt__["hpd_trust.refused"]("hpd_scale", tag, exc)
    return step(minion)


def accepted(minion):
    """
    ``minion``'s key was accepted: it is provisioned when it starts (:func:`joined`).

    CLI Example:

    .. code-block:: bash

        salt-run hpd_scale.accepted app3
    """
    with open(_pending(minion), "w"):
        pass
    return True


def joined(minion):
    """
    ``minion`` started: if its key was accepted since it last started, sync its
    extension modules, highstate it, update its mine and highstate the hosts
    that follow its roles (:data:`FOLLOWERS`) in its environment; fire
    ``hpd/scale/joined/<minion>`` with the outcome.
    Returns the outcome (None: not a new minion).

    CLI Example:

    .. code-block:: bash

        salt-run hpd_scale.joined app3
    """
    try:
        os.remove(_pending(minion))
    except FileNotFoundError:
        return None
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        client.cmd(minion, "saltutil.sync_all", timeout=300)
        own = _outcome(client.cmd(minion, "state.apply", timeout=HIGHSTATE_TIMEOUT))
        client.cmd(minion, "mine.update", timeout=60)
        hpd = (salt.cache.factory(__opts__).fetch("pillar", minion) or {}).get("hpd", {})
        followers = _highstate_followers(client, hpd)
    result = {"minion": minion, "env": hpd.get("env"), "highstate": own, "followers": followers,
              "result": bool(own) and _ok(own) and _ok(followers)}
    __salt__["event.send"](f"hpd/scale/joined/{minion}", result)
    return result


def left(minion):
    """
    ``minion``'s key was deleted: drop its grains, pillar and mine from the
    master's cache and highstate the hosts that followed its roles in its
    environment; fire ``hpd/scale/left/<minion>`` with the outcome.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_scale.left app3
    """
    with contextlib.suppress(FileNotFoundError):
        os.remove(_pending(minion))
    cache = salt.cache.factory(__opts__)
    hpd = (cache.fetch("pillar", minion) or {}).get("hpd", {})
    for bank in ("grains", "pillar", "mine"):
        cache.flush(bank, minion)
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        followers = _highstate_followers(client, hpd)
    result = {"minion": minion, "env": hpd.get("env"), "followers": followers,
              "result": _ok(followers)}
    __salt__["event.send"](f"hpd/scale/left/{minion}", result)
    return result
