"""
Beacon: the share of a haproxy backend's responses that are server errors (5xx)
over each interval, read from haproxy's runtime API (``show stat`` on its stats
socket: the backend's ``hrsp_5xx`` against all its ``hrsp_*``, whether the
servers or haproxy itself, with no server up, answered). Salt has no beacon for
it. While the share is at or above ``percent`` of at least ``min_responses``
responses, every interval fires one event, tagged
``salt/beacon/<minion id>/hpd_errors/<backend>``, as Salt's threshold beacons
do; the master turns them into one alert per incident (_runners/hpd_alert.py).

.. code-block:: yaml

    beacons:
      hpd_errors:
        - backend: app
        - percent: 5
        - min_responses: 20
        - interval: 10
"""

import socket

import salt.utils.beacons

__virtualname__ = "hpd_errors"

#: haproxy's runtime API (salt/lb/map.jinja: haproxy.socket).
SOCKET = "/run/haproxy/admin.sock"
#: Response counters of `show stat`, by status class.
CLASSES = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
#: backend -> its counters at the last look (this process's; a first look, or a
#: haproxy restarted since, only sets them).
_LAST = {}


def __virtual__():
    return __virtualname__


def counters(stat, backend):
    """``{"responses", "errors"}`` of ``backend`` in the CSV of ``show stat``;
    None when it is not there."""
    lines = stat.lstrip("# ").splitlines()
    if not lines:
        return None
    fields = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(fields, line.split(","), strict=False))
        if row.get("pxname") == backend and row.get("svname") == "BACKEND":
            count = {k: int(row.get(k) or 0) for k in CLASSES}
            return {"responses": sum(count.values()), "errors": count["hrsp_5xx"]}
    return None


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


def _show_stat(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(path)
        conn.sendall(b"show stat\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.decode(errors="replace")


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
        now = counters(_show_stat(config.get("socket", SOCKET)), backend)
    except OSError:
        now = None
    event = rate(_LAST.get(backend), now, config["percent"], config.get("min_responses", 20))
    _LAST[backend] = now
    return [{"tag": backend, **event}] if event else []
