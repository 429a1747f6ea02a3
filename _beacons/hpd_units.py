"""
Beacon: systemd units that stop or run again, for the master's reactor
(reactor/heal.sls). An event ``salt/beacon/<minion id>/hpd_units/<unit>`` with
``{"service_name": unit, unit: {"running": bool}}`` when a unit's state has
changed for ``delay`` seconds since the last look that reported it; the first
look reports nothing.

Salt's service beacon gives the same answer at a cost a host pays every
second: two or three ``systemctl`` processes per unit per look, in the
minion's main process (measured in the lab: half of that process's time, 8-10 %
of a core per host, and jobs started 8-15 s late on a loaded host). This one
asks systemd once per look for every unit (``systemctl show``).

.. code-block:: yaml

    beacons:
      hpd_units:
        - units: [memcached, redis-server]
        - delay: 0
        - interval: 1
"""

import logging
import re
import subprocess
import time

import salt.utils.beacons

log = logging.getLogger(__name__)

__virtualname__ = "hpd_units"

#: A unit's name, as pillar heal:services lists them (pillar/heal/schema.yaml).
UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9@_.-]*")
#: The ActiveState values in which `systemctl is-active` says a unit runs.
RUNNING = frozenset({"active", "reloading", "refreshing"})
#: unit -> {"reported": whether it ran at the last report, "since": when a
#: different state was first seen (None: none pending)}.
SEEN = {}


def __virtual__():
    return __virtualname__


def validate(config):
    """A list whose ``units`` names systemd units, and an optional ``delay`` (s)."""
    if not isinstance(config, list):
        return False, "Configuration for hpd_units beacon must be a list."
    config = salt.utils.beacons.list_to_dict(config)
    units = config.get("units")
    if not (isinstance(units, list) and units
            and all(isinstance(u, str) and UNIT.fullmatch(u) and not u.isdigit()
                    for u in units)):
        return False, "hpd_units beacon: units must be a list of systemd unit names."
    delay = config.get("delay", 0)
    if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
        return False, "hpd_units beacon: delay must be a number of seconds (0 or more)."
    return True, "Valid beacon configuration"


def active_states(units):
    """{unit: its ActiveState} from one ``systemctl show``; {} when systemd did
    not answer (logged)."""
    try:
        out = subprocess.run(["systemctl", "show", "--property=ActiveState", "--", *units],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("hpd_units: systemctl show failed: %s", exc)
        return {}
    # One block per unit, in the order asked, separated by blank lines.
    blocks = [b for b in out.split("\n\n") if b.strip()]
    if len(blocks) != len(units):
        log.warning("hpd_units: systemctl show answered %d blocks for %d units",
                    len(blocks), len(units))
        return {}
    return {unit: block.strip().partition("=")[2]
            for unit, block in zip(units, blocks, strict=True)}


def changes(states, delay, now, seen):
    """The events for ``states`` ({unit: ActiveState}) at ``now``, updating
    ``seen``: a unit whose running or not differs from its last report for at
    least ``delay`` s; none for a unit seen for the first time. A unit no
    longer watched is forgotten."""
    if states:  # {}: systemd did not answer
        for unit in set(seen) - set(states):
            del seen[unit]
    events = []
    for unit, state in states.items():
        running = state in RUNNING
        last = seen.setdefault(unit, {"reported": running, "since": None})
        if running == last["reported"]:
            last["since"] = None
            continue
        if last["since"] is None:
            last["since"] = now
        if now - last["since"] >= delay:
            last.update(reported=running, since=None)
            events.append({"tag": unit, "service_name": unit, unit: {"running": running}})
    return events


def beacon(config):
    """One event per unit whose state changed (see the module's docstring)."""
    config = salt.utils.beacons.list_to_dict(config)
    return changes(active_states(config["units"]), config.get("delay", 0), time.monotonic(),
                   SEEN)
