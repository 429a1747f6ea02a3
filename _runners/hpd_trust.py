"""
What the master's reactions trust of an event (reactor/README.md).

A minion chooses the tag and the data of the events it sends (``salt-call
event.fire_master DATA TAG``, ``event.send``, a beacon of its own), so the
reactor files hand both to a runner only as JSON arguments, and the runners
check them here before they act:

- an event about a host (``salt/beacon/<host>/...``, ``salt/minion/<host>/start``)
  was sent by that host: ``data['id']`` names it. A minion's single event
  (``fire_master``, ``event.send``, its start) reaches the reactor as the
  minion's request, whose ``id`` the master checked against the minion's key,
  with ``cmd: _minion_event``; a beacon's event carries the id its minion put
  there (its own, unless the minion is modified);
- the host is a minion whose key is accepted, and a host of the master's
  inventory (``inventory.yaml`` in the pillar roots, pillar/inventory.sls);
- an event only the master fires (``salt/key``, ``hpd/alert/...``) is not a
  minion's request (Salt forwards a minion's single event under any tag).

A refusal is one line in the master's log naming the event (quoted: a tag may
hold newlines), and nothing else happens.
"""

import logging
import os
import re

import salt.key
import salt.utils.yaml
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

#: A minion id as the inventory names hosts (a DNS name).
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# ----------------------------------------------------------------- pure functions


def minion_id(name):
    """``name`` if it is a minion id (:data:`HOST`); refused otherwise."""
    if not isinstance(name, str) or not HOST.fullmatch(name):
        raise SaltInvocationError(f"{name!r} is not a minion id")
    return name


def _sender(tag, data, kind):
    """(host, the rest of the tag split at ``/``) of a minion's event
    ``salt/<kind>/<host>/...`` whose ``data['id']`` names the same host;
    refused otherwise."""
    parts = tag.split("/") if isinstance(tag, str) else []
    if len(parts) < 4 or parts[:2] != ["salt", kind]:
        raise SaltInvocationError(f"not a salt/{kind}/<host>/... event")
    host = minion_id(parts[2])
    sent_by = data.get("id") if isinstance(data, dict) else None
    if sent_by != host:
        raise SaltInvocationError(f"about {host!r} but sent by {sent_by!r}")
    return host, parts[3:]


def from_master(data):
    """
    ``data`` of an event only the master fires (``salt/key``, ``hpd/alert/...``);
    refused when it is not a mapping or is a minion's request (``cmd:
    _minion_event``: Salt forwards a minion's single event under any tag).
    """
    if not isinstance(data, dict):
        raise SaltInvocationError("its data is not a mapping")
    if data.get("cmd") == "_minion_event":
        raise SaltInvocationError(f"sent by minion {data.get('id')!r}, not by the master")
    return data


# ------------------------------------------------------------------ the master side


def inventory():
    """
    The master's inventory, ``{minion id: {roles, env}}``: the first
    ``inventory.yaml`` of the base pillar roots ({} if none). What a host is
    comes from here, never from the host.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_trust.inventory
    """
    for root in __opts__.get("pillar_roots", {}).get("base", []):
        path = os.path.join(root, "inventory.yaml")
        if os.path.isfile(path):
            with open(path) as f:
                return salt.utils.yaml.safe_load(f) or {}
    return {}


def accepted(host):
    """
    Whether ``host``'s key is accepted on this master.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_trust.accepted app1
    """
    return host in salt.key.get_key(__opts__).list_status("accepted").get("minions", [])


def known(host):
    """
    ``host`` if it is a minion id whose key is accepted and a host of the
    master's inventory; refused (``SaltInvocationError``) otherwise.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_trust.known app1
    """
    minion_id(host)
    if not accepted(host):
        raise SaltInvocationError(f"{host!r} is not an accepted minion")
    if host not in inventory():
        raise SaltInvocationError(f"{host!r} is not in the inventory")
    return host


def sender(tag, data, kind="beacon"):
    """(host, the rest of the tag) of a minion's event ``salt/<kind>/<host>/...``
    sent by that host, a known one (:func:`known`); refused otherwise."""
    host, rest = _sender(tag, data, kind)
    return known(host), rest


def refused(runner, tag, why):
    """Log the refusal of the event ``tag`` as one line; what the reaction returns."""
    log.warning("%s: refused the event %r: %s", runner, tag, why)
    return {"refused": str(why)}

