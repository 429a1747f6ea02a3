"""
Alerts on the master: one ``hpd/alert/<severity>/<host>/<check>`` event per
incident, one ``hpd/alert/resolved/<host>/<check>`` when it clears, and what is
done with each (the master's reactor maps them, reactor/README.md).

Where incidents come from:

- the hosts' threshold beacons (Salt's load, memusage, swapusage, diskusage and
  the tree's hpd_port and hpd_errors), which fire at every interval while a threshold is
  passed: :func:`observe` opens an incident at the first and clears it when the
  check has not fired for ``alerts:clear_after_intervals`` of its intervals
  (:func:`sweep` looks);
- :func:`sweep`, which the master's schedule runs: a minion that answered
  before and misses ``alerts:minion:misses`` pings in a row;
- other runners (:func:`raise_alert`, :func:`clear`): a unit the reactor gave
  up restarting (_runners/hpd_heal.py).

:func:`record` handles each event: a JSON line in ``hpd-alerts.log`` beside the
master's log, a counter in Graphite on the environment's monitoring host
(``alerts.<host>.<check>.<severity>``, the number so far), and a POST to the
webhook pillar ``alerts:webhook`` names.

The reactions hand the events over as they came; :func:`observe` and
:func:`record` refuse, with one line in the master's log and nothing done, an
event its host did not send, about a host that is no accepted minion of the
inventory, or naming a check the host does not have (_runners/hpd_trust.py).

Settings are each host's pillar (``alerts``; ``monitoring`` of its environment's
monitoring host), as the master last compiled it, with the schema's defaults.
The incidents are kept in ``<cachedir>/hpd/alerts.json``, under a lock (the
reactor runs runners in threads, the schedule in processes).
"""

import contextlib
import datetime
import fcntl
import importlib.util
import json
import logging
import os
import re
import time
import urllib.request

import salt.cache
import salt.client
import salt.fileserver
import salt.key
import salt.utils.yaml
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

#: Beacon -> key of pillar `alerts` that configures it.
BEACON_SETTINGS = {"load": "load", "memusage": "memory", "swapusage": "swap",
                   "diskusage": "disk", "hpd_port": "ports", "hpd_errors": "errors"}
EMPTY = {"incidents": {}, "minions": {}, "totals": {}}
#: The first part of an alert's tag: a severity (pillar alerts' schema), or resolved.
KINDS = ("warning", "critical", "resolved")
#: A check's name, as :func:`_slug` and :func:`_check_name` make them.
CHECK = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_HPD = []


# ----------------------------------------------------------------- pure functions


def _slug(text):
    """A check name part safe in an event tag and a Graphite path (``/`` -> root)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "root"


def _check_name(beacon, suffix, data):
    """The check a threshold beacon's event is about: load, memory, swap,
    disk-<mount point>, port-<name>, errors-<haproxy backend> (``suffix``: what
    follows the beacon's name in the event's tag)."""
    if beacon == "diskusage":
        return "disk-" + _slug(data.get("mount", ""))
    if beacon == "hpd_port":
        return "port-" + _slug(suffix)
    if beacon == "hpd_errors":
        return "errors-" + _slug(suffix)
    return BEACON_SETTINGS[beacon]


def _observed(rest, data, alerts, roles):
    """(beacon, check) of a threshold beacon's event (``rest``: its tag after
    ``salt/beacon/<host>/``) when the host has that check: the beacon is on in
    ``alerts`` (the host's pillar, with the schema's defaults), its tag ends at
    the beacon's name but for a port's or a backend's name, a disk's mount
    point matches a mount pattern (as Salt's diskusage beacon matches them), a
    port is one of its ``roles``, the error share is an lb host's app backend;
    refused (``SaltInvocationError``) otherwise."""
    beacon, suffix = rest[0], "/".join(rest[1:])
    if beacon not in BEACON_SETTINGS:
        raise SaltInvocationError(f"{beacon!r} is not a threshold beacon")
    found = alerts[BEACON_SETTINGS[beacon]]
    mount = data.get("mount")
    ports = {name for role in ["common", *roles] for name in found.get("roles", {}).get(role, {})}
    if not found["enabled"]:
        raise SaltInvocationError(f"the host's {beacon} check is off")
    if suffix and beacon not in ("hpd_port", "hpd_errors"):
        raise SaltInvocationError(f"the {beacon} beacon's tag ends at {beacon}/")
    if beacon == "diskusage" and not (isinstance(mount, str) and any(
            re.match(p if p.endswith("$") else f"{p}$", mount) for p in found["mounts"])):
        raise SaltInvocationError(f"the host watches no mount {mount!r}")
    if beacon == "hpd_port" and suffix not in ports:
        raise SaltInvocationError(f"the host's roles have no port {suffix!r}")
    if beacon == "hpd_errors" and ("lb" not in roles or suffix != "app"):
        raise SaltInvocationError(f"the host watches no backend {suffix!r}")
    return beacon, _check_name(beacon, suffix, data)


def _recorded(tag):
    """(kind, host, check) of an alert's tag ``hpd/alert/<kind>/<host>/<check>``,
    as :func:`_open_incident` and :func:`_close_incident` make them; refused
    (``SaltInvocationError``) otherwise."""
    parts = tag.split("/") if isinstance(tag, str) else []
    if len(parts) != 5 or parts[:2] != ["hpd", "alert"] or parts[2] not in KINDS:
        raise SaltInvocationError("not an hpd/alert/<severity or resolved>/<host>/<check> event")
    if not CHECK.fullmatch(parts[4]):
        raise SaltInvocationError(f"{parts[4]!r} is not a check's name")
    return tuple(parts[2:])


def _open_incident(store, host, check, now, severity, clear_after, detail):
    """Open the incident (host, check) unless it is open; the event to fire
    (tag, data), or None when it was open already (its last sighting is now)."""
    key = f"{host}/{check}"
    incident = store["incidents"].get(key)
    if incident:
        incident["last"] = now
        return None
    store["incidents"][key] = {"host": host, "check": check, "severity": severity,
                               "opened": now, "last": now, "clear_after": clear_after,
                               "detail": detail}
    return (f"hpd/alert/{severity}/{host}/{check}",
            {"host": host, "check": check, "severity": severity, "detail": detail})


def _close_incident(store, host, check, now):
    """Close the incident (host, check); the resolved event, or None when none was open."""
    incident = store["incidents"].pop(f"{host}/{check}", None)
    if incident is None:
        return None
    return (f"hpd/alert/resolved/{host}/{check}",
            {"host": host, "check": check, "severity": incident["severity"],
             "detail": incident["detail"], "lasted": round(now - incident["opened"], 1)})


def _stale_incidents(store, now):
    """(host, check) of the incidents whose check has not fired for their
    clear_after (threshold incidents; the others are closed by name)."""
    return sorted((i["host"], i["check"]) for i in store["incidents"].values()
                  if i["clear_after"] is not None and now - i["last"] >= i["clear_after"])


def _count_misses(store, accepted, answered, now):
    """Note who answered the ping: (hosts that missed it, with their misses in a
    row, among those that answered some ping before; hosts that answered). Hosts
    no longer accepted are forgotten, with their incidents."""
    for host in set(store["minions"]) - set(accepted):
        del store["minions"][host]
    for key, incident in list(store["incidents"].items()):
        if incident["host"] not in accepted:
            del store["incidents"][key]
    missing = {}
    for host in accepted:
        seen = store["minions"].setdefault(host, {"answered": None, "misses": 0})
        if host in answered:
            seen.update(answered=now, misses=0)
        elif seen["answered"] is not None:
            seen["misses"] += 1
            missing[host] = seen["misses"]
    return missing, sorted(set(answered) & set(accepted))


def _count(store, host, check, kind):
    """Add one to the number of ``kind`` events of (host, check); the new number."""
    key = f"{host}/{check}/{kind}"
    store["totals"][key] = store["totals"].get(key, 0) + 1
    return store["totals"][key]


# ------------------------------------------------------------------ the master side


@contextlib.contextmanager
def _store():
    """The alert store, locked for the block and saved after it."""
    directory = os.path.join(__opts__["cachedir"], "hpd")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, "alerts.json"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        store = {**json.loads(json.dumps(EMPTY)), **(json.loads(text) if text.strip() else {})}
        yield store
        f.seek(0)
        f.truncate()
        json.dump(store, f)


def _fire(events):
    for event in events:
        if event:
            __salt__["event.send"](*event)


def _hpd():
    """The tree's hpd execution module (_modules/hpd.py, from the master's file
    roots): its pure schema functions check settings here as on the hosts."""
    if not _HPD:
        path = salt.fileserver.Fileserver(__opts__).find_file("_modules/hpd.py", "base")["path"]
        spec = importlib.util.spec_from_file_location("hpd_settings", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _HPD.append(module)
    return _HPD[0]


def _pillar(minion):
    """The pillar the master last compiled for ``minion`` ({} if none)."""
    return salt.cache.factory(__opts__).fetch("pillar", minion) or {}


def settings(minion, role, unmask=False):
    """
    A role's settings for ``minion`` on the master: its pillar as the master last
    compiled it, with the schema's defaults, checked (secrets masked unless
    ``unmask``), as ``hpd.settings`` gives them on the host.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_alert.settings app1 alerts
    """
    hpd = _hpd()
    path = salt.fileserver.Fileserver(__opts__).find_file(f"pillar/{role}/schema.yaml", "base")
    if not path:
        raise SaltInvocationError(f"no schema for role {role}")
    with open(path["path"]) as f:
        schema = salt.utils.yaml.safe_load(f)
    pillar = _pillar(minion)
    filled = hpd.check(schema, pillar.get(role), role, (pillar.get("hpd") or {}).get("env"))
    return filled if unmask else hpd.masked(schema, filled)


def observe(tag, data):
    """
    A threshold beacon's event (``salt/beacon/<host>/<beacon>/<suffix>``): opens
    the incident of its check at the first, with the severity and interval of
    pillar ``alerts`` of the host, and notes the sighting at the others. Refused
    (one line in the master's log, nothing done) unless the host sent it and has
    the check (:func:`_observed`). Returns the check.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_alert.observe salt/beacon/app1/diskusage/ '{id: app1, mount: /, diskusage: 95}'
    """
    try:
        host, rest = __salt__["hpd_trust.sender"](tag, data)
        alerts = settings(host, "alerts")
        beacon, check = _observed(rest, data, alerts,
                                  (_pillar(host).get("hpd") or {}).get("roles") or [])
    except SaltInvocationError as exc:
        return __salt__["hpd_trust.refused"]("hpd_alert", tag, exc)
    detail = {k: v for k, v in data.items() if k not in ("id", "_stamp")}
    found = alerts[BEACON_SETTINGS[beacon]]
    with _store() as store:
        event = _open_incident(store, host, check, time.time(), found["severity"],
                              found["interval"] * alerts["clear_after_intervals"], detail)
    _fire([event])
    return check


def raise_alert(host, check, kind, detail=None):
    """
    Open the incident (host, check), with the severity of pillar
    ``alerts:<kind>`` of the host; it stays open until :func:`clear`. Whether
    it was opened now (False: it was open). The check's name is made safe for
    a tag and a Graphite path (``restart-postgresql@15-main`` ->
    ``restart-postgresql-15-main``), here as in :func:`clear` and :func:`is_open`.
    """
    check = _slug(check)
    severity = settings(host, "alerts")[kind]["severity"]
    with _store() as store:
        event = _open_incident(store, host, check, time.time(), severity, None, detail or {})
    _fire([event])
    return event is not None


def clear(host, check):
    """Close the incident (host, check) if it is open; whether it was."""
    check = _slug(check)
    with _store() as store:
        event = _close_incident(store, host, check, time.time())
    _fire([event])
    return event is not None


def is_open(host, check):
    """Whether the incident (host, check) is open."""
    check = _slug(check)
    with _store() as store:
        return f"{host}/{check}" in store["incidents"]


def sweep(ping_timeout=5):
    """
    What the master's schedule runs every few seconds: pings every accepted
    minion; a minion that answered before and now misses ``alerts:minion:misses``
    pings in a row raises ``hpd/alert/<severity>/<host>/minion``, resolved when it
    answers again. Clears the threshold incidents whose check has not fired for
    its ``clear_after``. Returns the events fired.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_alert.sweep
    """
    accepted = salt.key.get_key(__opts__).list_status("accepted").get("minions", [])
    answered = set()
    if accepted:
        with salt.client.get_local_client(__opts__["conf_file"]) as client:
            answered = {m for m, ok in client.cmd(accepted, "test.ping", tgt_type="list",
                                                  timeout=ping_timeout,
                                                  gather_job_timeout=ping_timeout).items()
                        if ok is True}
    now = time.time()
    with _store() as store:
        missing, present = _count_misses(store, accepted, answered, now)
        events = [_close_incident(store, host, "minion", now) for host in present]
        events += [_close_incident(store, host, check, now)
                   for host, check in _stale_incidents(store, now) if host not in missing]
        for host, misses in sorted(missing.items()):
            minion = settings(host, "alerts")["minion"]
            if misses >= minion["misses"]:
                events.append(_open_incident(store, host, "minion", now, minion["severity"],
                                            None, {"misses": misses}))
    _fire(events)
    return {"answered": sorted(answered), "missing": missing,
            "events": [e[0] for e in events if e]}


def _post(url, token, timeout, body):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"posted ({response.status})"
    except (OSError, ValueError) as exc:
        return f"post failed: {exc}"


def record(tag, data):
    """
    What the reactor does with each ``hpd/alert/...`` event: a JSON line in
    ``hpd-alerts.log`` beside the master's log; the number of such events of the
    host's check so far to Graphite on its environment's monitoring host
    (``hpd_heal.alert_metric`` there); a POST of the event, as JSON, to the
    webhook pillar ``alerts:webhook`` of the host names, with the token of pillar
    ``monitoring:alerts:webhook_token`` of that monitoring host. Refused (one
    line in the master's log, nothing done) for a minion's event, a tag
    :func:`_recorded` does not read, a host that is no accepted minion of the
    inventory.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_alert.record hpd/alert/warning/app1/disk-root '{detail: {}}'
    """
    try:
        kind, host, check = _recorded(tag)
        __salt__["hpd_trust.from_master"](data)
        __salt__["hpd_trust.known"](host)
    except SaltInvocationError as exc:
        return __salt__["hpd_trust.refused"]("hpd_alert", tag, exc)
    with _store() as store:
        total = _count(store, host, check, kind)
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    body = {"tag": tag, "kind": kind, "host": host, "check": check, "time": stamp,
            "severity": data.get("severity"), "detail": data.get("detail")}
    entry = {**body, "count": total}
    monitoring = ((_pillar(host).get("hpd") or {}).get("peers") or {}).get("monitoring") or []
    token = None
    if monitoring:
        mon = sorted(monitoring)[0]
        with salt.client.get_local_client(__opts__["conf_file"]) as client:
            client.cmd_async(mon, "hpd_heal.alert_metric", [host, check, kind, total])
        token = settings(mon, "monitoring", unmask=True)["alerts"]["webhook_token"]
    webhook = settings(host, "alerts")["webhook"]
    if webhook["url"]:
        entry["webhook"] = _post(webhook["url"], token, webhook["timeout"], body)
    path = os.path.join(os.path.dirname(__opts__["log_file"]), "hpd-alerts.log")
    with open(path, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry
