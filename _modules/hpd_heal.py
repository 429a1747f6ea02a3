"""
Self-healing on the hosts of the hpd-salt tree: the systemd units each role runs
(pillar ``heal``), the beacons that watch them and the host's thresholds (pillar
``alerts``), and the second line of defence the master's reactor calls when a
unit stops (:func:`heal`).

systemd is the first line: every service of the list has ``Restart=on-failure``
(salt/heal/systemd.sls), so a crash is healed without Salt. :func:`heal` waits
for systemd to be done with a unit before it decides anything, so it never races
systemd's own restart, and starts a unit at most ``heal:max_restarts`` times per
``heal:window`` seconds whatever asks it to (the count is kept here, on the host).
"""

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "hpd_heal"

#: The beacons salt/heal/beacons.sls manages on every host (None: absent).
#: Salt's own service beacon ("service") is removed where an older tree ran it:
#: hpd_units watches the same units for a fraction of its cost.
BEACONS = ("hpd_units", "service", "load", "memusage", "swapusage", "diskusage", "hpd_port",
           "hpd_errors")
#: systemd states in which systemd is still working on a unit.
TRANSIENT = frozenset({"activating", "deactivating", "reloading", "refreshing"})
#: Seconds between two looks at a unit that is settling: while it has to stay up,
#: and (TRANSIENT_POLL) while systemd is working on it, so that a start follows
#: the end of a stop at once (the reactor's heal usually arrives during the stop).
POLL = 0.2
TRANSIENT_POLL = 0.05
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def __virtual__():
    return __virtualname__


def _units(services, roles, instances):
    """The units of ``roles`` (and of ``common``) in ``heal:services``, sorted. A
    template (``name@``) stands for its instances on the host (``instances``:
    template -> instance names); one the host has none known of is an error
    naming the key."""
    found = set()
    for role in ["common", *roles]:
        for unit in services.get(role, []):
            if not unit.endswith("@"):
                found.add(unit)
            elif unit in instances:
                found.update(instances[unit])
            else:
                raise SaltInvocationError(
                    f"pillar heal:services:{role}: {unit} is a template this host runs no "
                    f"instances of (known: {', '.join(sorted(instances)) or 'none'})")
    return sorted(found)


def _service_units(units):
    """The services among ``units`` as systemd names them (``name.service``):
    the ones systemd restarts. Timers are watched only."""
    return sorted(
        unit if unit.endswith(".service") else f"{unit}.service"
        for unit in units
        if "." not in unit or unit.endswith(".service")
    )


def _beacons(heal, alerts, roles, units, cpus, address):
    """
    The configuration of each beacon in ``BEACONS`` for a host with ``roles``
    and ``cpus`` CPUs whose private address is ``address``, as lists of
    one-key dicts (Salt's beacon form); None for a beacon the host runs without.
    Every beacon pauses while a state run is in progress, so a highstate that
    restarts a service reports nothing. An lb host watches the share of server
    errors among its app backend's responses (hpd_errors).
    """

    def every(interval, *items):
        return [*items, {"interval": interval}, {"disable_during_state_run": True}]

    config = dict.fromkeys(BEACONS)
    if units:
        config["hpd_units"] = every(heal["beacon"]["interval"], {"units": units},
                                    {"delay": heal["beacon"]["delay"]})
    load, memory, swap, disk = (alerts[k] for k in ("load", "memory", "swap", "disk"))
    if load["enabled"]:
        high = round(load["per_cpu"] * cpus, 2)
        config["load"] = every(load["interval"], {"averages": {"5m": [0.0, high]}})
    if memory["enabled"]:
        config["memusage"] = every(memory["interval"], {"percent": f"{memory['percent']}%"})
    if swap["enabled"]:
        config["swapusage"] = every(swap["interval"], {"percent": f"{swap['percent']}%"})
    if disk["enabled"] and disk["mounts"]:
        for pattern in disk["mounts"]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise SaltInvocationError(
                    f"pillar alerts:disk:mounts:{pattern}: not a regular expression ({exc})"
                ) from None
        config["diskusage"] = every(
            disk["interval"], *({p: f"{pct}%"} for p, pct in sorted(disk["mounts"].items())))
    ports = _ports(alerts["ports"], roles, address)
    if alerts["ports"]["enabled"] and ports:
        config["hpd_port"] = every(alerts["ports"]["interval"], {"ports": ports},
                                   {"timeout": alerts["ports"]["timeout"]})
    errors = alerts["errors"]
    if errors["enabled"] and "lb" in roles:
        config["hpd_errors"] = every(errors["interval"], {"backend": "app"},
                                     {"percent": errors["percent"]},
                                     {"min_responses": errors["min_responses"]})
    return config


def _ports(settings, roles, address):
    """Check name -> {address, port} of the ports of ``roles`` (and common)."""
    found = {}
    for role in ["common", *roles]:
        for name, spec in sorted(settings["roles"].get(role, {}).items()):
            found[name] = {"address": spec.get("address") or address, "port": spec["port"]}
    return found


def _admit(starts, now, max_restarts, window):
    """(the starts still inside the window ending ``now``, whether one more start
    stays within ``max_restarts`` of them)."""
    kept = sorted(t for t in starts if now - t < window)
    return kept, len(kept) < max_restarts


def _settle(show, settle, timeout, clock=time.monotonic, sleep=time.sleep):
    """
    Wait until systemd is done with a unit; its state then. ``show()`` returns
    the unit's properties (``systemctl show``). ``"active"`` once the unit has
    stayed active in one run (same activation time, same restart count) for
    ``settle`` seconds; ``"failed"``/``"inactive"`` once systemd stopped working
    on it (no restart pending); its current state when ``timeout`` s pass first.
    """
    t0 = clock()
    run = since = None
    while True:
        props = show()
        state = props.get("ActiveState", "unknown")
        now = clock()
        if state == "active":
            mark = (props.get("ActiveEnterTimestampMonotonic"), props.get("NRestarts"))
            if mark != run:
                run, since = mark, now
            if now - since >= settle:
                return state
        elif state not in TRANSIENT:
            return state
        else:
            run = None
        if now - t0 >= timeout:
            return state
        sleep(TRANSIENT_POLL if state in TRANSIENT else POLL)


def _wanted(props):
    """Whether a unit's properties (``systemctl show``) say it should run: loaded
    (not masked, not missing) and not disabled."""
    return props.get("LoadState") == "loaded" and props.get("UnitFileState") != "disabled"


def _settings():
    """(heal settings, this host's roles) from pillar."""
    return __salt__["hpd.settings"]("heal"), (__pillar__.get("hpd") or {}).get("roles", [])


def _instances(roles):
    """Template -> the instances this host runs of it: a worker host's Celery
    units (``<site:name>-worker@``: ``@1`` ... ``@N``, as salt/worker makes them)."""
    if "worker" not in roles:
        return {}
    site = __salt__["hpd.settings"]("site")["name"]
    count = __salt__["hpd.settings"]("worker")["count"]
    wanted, _ = __salt__["hpd_site.worker_units"](site, count, __grains__.get("num_cpus") or 1)
    return {f"{site}-worker@": wanted}


def _host_units(heal, roles):
    return _units(heal["services"], roles, _instances(roles))


def units():
    """
    The systemd units this host's roles run (pillar ``heal:services``, a
    template as the instances the host runs): its services get
    Restart=on-failure, and its units beacon watches them all.

    CLI Example:

    .. code-block:: bash

        salt '*' hpd_heal.units
    """
    heal, roles = _settings()
    return _host_units(heal, roles)


def service_units():
    """
    The services among :func:`units` as systemd names them (``<name>.service``),
    which salt/heal/systemd.sls gives ``Restart=on-failure``.

    CLI Example:

    .. code-block:: bash

        salt '*' hpd_heal.service_units
    """
    return _service_units(units())


def beacons():
    """
    This host's beacons (name -> configuration, None: the host runs without it):
    the units beacon over :func:`units` (pillar ``heal``), and the thresholds of
    pillar ``alerts`` (load per CPU from grain ``num_cpus``, memory, swap, disk,
    the ports of its roles). A mount pattern that is not a regular expression is
    an error naming the pillar key.

    CLI Example:

    .. code-block:: bash

        salt '*' hpd_heal.beacons
    """
    heal, roles = _settings()
    alerts = __salt__["hpd.settings"]("alerts")
    return _beacons(heal, alerts, roles, _host_units(heal, roles),
                    int(__grains__.get("num_cpus") or 1), __salt__["hpd.service_address"]())


@contextlib.contextmanager
def _record(unit, wait):
    """The starts recorded for ``unit`` (a dict, saved back at the end), under an
    exclusive lock; None when another call holds it and ``wait`` is False."""
    directory = os.path.join(__opts__["cachedir"], "hpd_heal")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, _UNSAFE.sub("_", unit) + ".json"), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        f.seek(0)
        text = f.read()
        record = json.loads(text) if text.strip() else {"starts": []}
        yield record
        f.seek(0)
        f.truncate()
        json.dump(record, f)


def heal(service):
    """
    Bring ``service`` (one of :func:`units`) back if it is down, as the master's
    reactor asks when the units beacon reports it stopped.

    First waits until systemd is done with the unit (a crash it is restarting, a
    start or stop under way), so systemd's own restart is never raced. A unit
    that is then active has been healed by systemd. A unit that is disabled,
    masked or missing is left alone (that is how an operator, or a restore, keeps
    a service down: ``systemctl disable --now``, ``systemctl mask --runtime``). Else
    the unit's failed state is reset (systemd's start limit) and it is started,
    and again while it does not stay up, at most ``heal:max_restarts`` starts in
    ``heal:window`` seconds counted across calls. Returns the unit's state,
    the times of the starts made, and ``limited`` when the limit stopped it
    (the master then raises an alert). ``busy`` when another call is at it.

    CLI Example:

    .. code-block:: bash

        salt cache1 hpd_heal.heal memcached
    """
    heal_settings, roles = _settings()
    if service not in _host_units(heal_settings, roles):
        raise SaltInvocationError(
            f"{service} is not a unit of this host's roles (pillar heal:services)")

    def settle():
        return _settle(lambda: __salt__["service.show"](service),
                       heal_settings["settle"], heal_settings["timeout"])

    result = {"service": service, "starts": [], "limited": False, "busy": False}
    with _record(service, wait=False) as record:
        if record is None:
            return {**result, "busy": True, "state": None}
        result["state"] = result["before"] = settle()
        if result["state"] in TRANSIENT or result["state"] == "active":
            return result
        result["enabled"] = _wanted(__salt__["service.show"](service))
        while result["enabled"] and result["state"] != "active":
            now = time.time()
            record["starts"], allowed = _admit(record["starts"], now,
                                               heal_settings["max_restarts"],
                                               heal_settings["window"])
            if not allowed:
                result["limited"] = True
                break
            record["starts"].append(now)
            result["starts"].append(now)
            __salt__["cmd.run_all"](["systemctl", "reset-failed", service],
                                    python_shell=False, ignore_retcode=True)
            try:
                __salt__["service.start"](service)
            except CommandExecutionError as exc:
                log.warning("hpd_heal: starting %s failed: %s", service, exc)
            result["state"] = settle()
        result["recent_starts"] = len(record["starts"])
    return result


def reset(service):
    """
    Forget the starts :func:`heal` made of ``service``: it may start it
    ``heal:max_restarts`` times again (after a flapping service was fixed).

    CLI Example:

    .. code-block:: bash

        salt cache1 hpd_heal.reset memcached
    """
    with _record(service, wait=True) as record:
        forgotten = len(record["starts"])
        record["starts"] = []
    return forgotten


def alert_metric(host, check, kind, total):
    """
    Send an alert counter to this (the monitoring) host's carbon:
    ``alerts.<host, dots as _>.<check>.<kind> <total>``, the number of alerts of
    that kind (``warning``, ``critical``, ``resolved``) so far; the master calls
    it as it records each alert. Returns the line sent, or ``ERROR: ...`` (with a
    non-zero return code) when carbon cannot be reached.

    CLI Example:

    .. code-block:: bash

        salt mon hpd_heal.alert_metric app1 disk-root warning 3
    """
    graphite = __salt__["hpd.settings"]("highperf")["graphite"]
    monitoring = __salt__["hpd.settings"]("monitoring")
    address = __salt__["hpd.service_address"](monitoring["listen_address"],
                                              "monitoring:listen_address")
    path = ".".join(_UNSAFE.sub("_", str(p)) for p in ("alerts", host, check, kind))
    line = f"{path} {int(total)} {int(time.time())}\n"
    try:
        with socket.create_connection((address, graphite["port"]),
                                      timeout=graphite["timeout"]) as sock:
            sock.sendall(line.encode())
    except OSError as exc:
        __context__["retcode"] = 1
        return f"ERROR: could not send {path} to carbon at {address}:{graphite['port']}: {exc}"
    return line.strip()
