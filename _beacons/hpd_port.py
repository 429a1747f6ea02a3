"""
Beacon: TCP ports that must accept a connection (Salt has no beacon for a plain
TCP service: memcached, redis, PostgreSQL, carbon). While a port refuses or
times out, every interval fires one event for it, tagged
``salt/beacon/<minion id>/hpd_port/<name>``, as Salt's threshold beacons
(diskusage, memusage) fire while a threshold is passed; the master turns them
into one alert per incident (_runners/hpd_alert.py).

.. code-block:: yaml

    beacons:
      hpd_port:
        - ports:
            memcached: {address: 10.0.0.5, port: 11211}
        - timeout: 2
        - interval: 10
"""

import socket

import salt.utils.beacons

__virtualname__ = "hpd_port"


def __virtual__():
    return __virtualname__


def validate(config):
    """A list whose ``ports`` maps names to an address and a port."""
    if not isinstance(config, list):
        return False, "Configuration for hpd_port beacon must be a list."
    config = salt.utils.beacons.list_to_dict(config)
    ports = config.get("ports")
    if not isinstance(ports, dict) or not ports:
        return False, "Configuration for hpd_port beacon requires ports: {name: {address, port}}."
    for name, spec in ports.items():
        if not (isinstance(spec, dict) and isinstance(spec.get("address"), str)
                and isinstance(spec.get("port"), int) and 0 < spec["port"] < 65536):
            return False, f"hpd_port beacon: port {name} needs an address and a port (1-65535)."
    return True, "Valid beacon configuration"


def beacon(config):
    """One event for each port that does not accept a connection within ``timeout``."""
    config = salt.utils.beacons.list_to_dict(config)
    timeout = float(config.get("timeout", 2))
    ret = []
    for name, spec in sorted(config["ports"].items()):
        try:
            socket.create_connection((spec["address"], spec["port"]), timeout=timeout).close()
        except OSError as exc:
            ret.append({"tag": name, "address": spec["address"], "port": spec["port"],
                        "error": exc.strerror or str(exc)})
    return ret
