"""
The reactor's second line of defence (reactor/heal.sls): a host's service
beacon reported one of its units stopped or running again.

The host does the work (``hpd_heal.heal``, _modules/hpd_heal.py): it waits for
systemd to be done with the unit, starts it only if systemd has not brought it
back, and counts its starts, so no more than ``heal:max_restarts`` happen in
``heal:window`` whatever runs meanwhile (highstates included). Here: a unit the
host gave up on raises ``hpd/alert/<severity>/<host>/restart-<unit>`` (once per
incident, _runners/hpd_alert.py), resolved once the unit runs again.
"""

import logging

import salt.client

log = logging.getLogger(__name__)


def service(minion, name, running, timeout=900):
    """
    The service beacon of ``minion`` saw unit ``name`` stop (``running``
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
