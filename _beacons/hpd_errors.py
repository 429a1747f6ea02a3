"""
Beacon: the share of a haproxy backend's responses that are server errors (5xx)
over each interval, read from haproxy's runtime API (``hpd_haproxy.responses``:
the backend's 5xx against all its responses, whether the servers or haproxy
itself, with no server up, answered). Salt has no beacon for it. While the
share is at or above ``percent`` of at least ``min_responses`` responses, every
interval fires one event, tagged ``salt/beacon/<minion id>/hpd_errors/<backend>``,
as Salt's threshold beacons do; the master turns them into one alert per
incident (_runners/hpd_alert.py).

.. code-block:: yaml

    beacons:
      hpd_errors:
        - backend: app
        - percent: 5
        - min_responses: 20
        - interval: 10
"""

import salt.utils.beacons
from salt.exceptions import CommandExecutionError

__virtualname__ = "hpd_errors"

#: backend -> its counters at the last look (this process's; a first look, or a
#: haproxy restarted since, only sets them).
_LAST = {}


def __virtual__():
    return __virtualname__


def rate(last, now, percent, min_responses):
    """The event for the interval from counters ``last`` to ``now``: None unless
    at least ``min_responses`` responses were given, ``percent`` % or more of
    them errors (counters that went back, a restarted haproxy: None)."""
    if last is None or now is None:
        return None
    responses, errors = now["responses"] - last["responses"], now["errors"] - last["errors"]
    if responses < max(min_responses, 1) or errors < 0:
        return None
    share = round(100.0 * errors / responses, 1)
    if share < percent:
        return None
    return {"percent": share, "errors": errors, "responses": responses, "threshold": percent}


def validate(config):
    """A list with ``backend`` (a name) and ``percent`` (0-100]."""
    if not isinstance(config, list):
        return False, "Configuration for hpd_errors beacon must be a list."
    config = salt.utils.beacons.list_to_dict(config)
    if not isinstance(config.get("backend"), str) or not config["backend"]:
        return False, "Configuration for hpd_errors beacon requires backend: <haproxy backend>."
    percent = config.get("percent")
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
        return False, "hpd_errors beacon: percent must be a number in (0, 100]."
    return True, "Valid beacon configuration"


def beacon(config):
    """One event for the backend when its error share over the interval passed
    the threshold; none when haproxy does not answer (the port beacon alerts)."""
    config = salt.utils.beacons.list_to_dict(config)
    backend = config["backend"]
    try:
        count = __salt__["hpd_haproxy.responses"](backend)
        now = {"responses": sum(count.values()), "errors": count["5xx"]}
    except CommandExecutionError:
        now = None
    event = rate(_LAST.get(backend), now, config["percent"], config.get("min_responses", 20))
    _LAST[backend] = now
    return [{"tag": backend, **event}] if event else []
