"""
The reactor's second line of defence (reactor/heal.sls): a host's units
beacon (_beacons/hpd_units.py) reported one of its units stopped or running again.

The host does the work (``hpd_heal.heal``, _modules/hpd_heal.py): it waits for
systemd to be done with the unit, starts it only if systemd has not brought it
back, and counts its starts, so no more than ``heal:max_restarts`` happen in
``heal:window`` whatever runs meanwhile (highstates included). Here: a unit the
host gave up on raises ``hpd/alert/<severity>/<host>/restart-<unit>`` (once per
incident, _runners/hpd_alert.py), resolved once the unit runs again.

The reaction hands the event over as it came (:func:`beacon`): its host must
have sent it (_runners/hpd_trust.py) and name a unit, or nothing happens.
"""

import logging
import re

import salt.client
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

#: A unit's name, as pillar heal:services lists them (pillar/heal/schema.yaml).
UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9@_.-]*")


def _unit_event(host, rest, data):
    """(unit, whether it runs) of the units beacon's event about ``host``
    (``rest``: its tag after ``salt/beacon/<host>/``, which must be
    ``hpd_units/<unit>``); refused (``SaltInvocationError``) otherwise."""
    unit = data.get("service_name")
    if not isinstance(unit, str) or not UNIT.fullmatch(unit):
        raise SaltInvocationError(f"service_name {unit!r} is not a unit name")
    if rest != ["hpd_units", unit]:
        raise SaltInvocationError(f"not the tag salt/beacon/{host}/hpd_units/{unit}")
    seen = data.get(unit)
    if not isinstance(seen, dict):
        raise SaltInvocationError(f"no state of {unit} in the event")
    return unit, seen.get("running") is True


def beacon(tag, data):
    """
    The reaction to a host's units beacon (reactor/heal.sls): the event
    ``salt/beacon/<host>/hpd_units/<unit>`` as it came. Refused, with one line in
    the master's log and nothing done, unless ``<host>`` sent it, is an
    accepted minion of the inventory (_runners/hpd_trust.py) and ``<unit>`` a
    unit's name; else :func:`service` (which the host refuses for a unit not
    of its roles).
    """
    try:
        host, rest = __salt__["hpd_trust.sender"](tag, data)
        unit, running = _unit_event(host, rest, data)
    except SaltInvocationError as exc:
        return __salt__["hpd_trust.refused"]("hpd_heal", tag, exc)
    return service(host, unit, running)


def service(minion, name, running, timeout=900):
    """
    The units beacon of ``minion`` saw unit ``name`` stop (``running``
    False) or run again (True). Stopped: the host heals it (``hpd_heal.heal``),
    and the master alerts when the host gave up on it. Running again after an
    alert: the host checks that it stays up, and the alert is resolved. Returns
    what the host said (None when there was nothing to do).

    CLI Example:

    .. code-block:: bash

        salt-run hpd_heal.service cache1 memcached False
    """
    check = f"restart-{name}"
    if running and not __salt__["hpd_alert.is_open"](minion, check):
        return None
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        ret = client.cmd(minion, "hpd_heal.heal", [name], timeout=timeout).get(minion)
    if not isinstance(ret, dict):
        log.warning("hpd_heal: %s did not heal %s: %s", minion, name, ret)
        return ret
    if ret["state"] == "active":
        __salt__["hpd_alert.clear"](minion, check)
    elif ret["limited"]:
        __salt__["hpd_alert.raise_alert"](minion, check, "restarts",
                                          {"service": name, "state": ret["state"],
                                           "recent_starts": ret["recent_starts"]})
    return ret
