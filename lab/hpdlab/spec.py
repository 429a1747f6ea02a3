"""Lab specs: the hosts of a lab, their addresses, roles, environment and size."""

import ipaddress
from pathlib import Path

import yaml

from hpdlab.util import REPO, LabError

DEFAULT_SPEC = REPO / "lab" / "specs" / "farm.yaml"


def load_spec(path=None, name=None, subnet=None):
    """Read a lab spec and return it normalised (addresses as strings, sizes ints).

    `name` and `subnet` override the spec's, so a second lab of the same spec (the
    tests') can run beside the first (the demo's).
    """
    path = Path(path or DEFAULT_SPEC)
    spec = yaml.safe_load(path.read_text())
    subnet = ipaddress.ip_network(subnet or spec.get("subnet", "10.77.0.0/24"))
    if subnet.overlaps(ipaddress.ip_network("192.0.2.0/24")):
        raise LabError(f"subnet {subnet} overlaps the machine's network 192.0.2.0/24")
    hosts = {host: host_entry(subnet, host, entry) for host, entry in spec["hosts"].items()}
    name = name or spec["name"]
    if not name.isalnum() or len(name) > 8:
        raise LabError(f"lab name {name!r}: at most 8 letters and digits (it names the bridge)")
    return {"name": name, "subnet": str(subnet), "hosts": hosts}


def host_entry(subnet, name, host):
    subnet = ipaddress.ip_network(subnet)
    address = subnet.network_address + int(host["address"])
    if address not in subnet or int(host["address"]) < 2:
        raise LabError(f"host {name}: address {host['address']} is not a host number in {subnet}")
    entry = {
        "address": str(address),
        "roles": sorted(host.get("roles", [])),
        "env": host.get("env", "dev"),
        "memory": host.get("memory"),
        "cpus": host.get("cpus"),
    }
    if entry["env"] not in ("dev", "staging", "production"):
        raise LabError(f"host {name}: env must be dev, staging or production")
    return entry
