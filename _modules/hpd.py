"""
Role settings for the hpd-salt state tree: a role's pillar, with the defaults and
checks of its schema (``pillar/<role>/schema.yaml``, JSON Schema as YAML).

States read their settings through this module (``salt['hpd.settings']('common')``
in a role's ``map.jinja``), so a wrong pillar value fails the render with the key
named, and no state runs. Secrets (``writeOnly`` properties) come back masked, as
Salt masks pillar: only the template that writes a secret asks for its value
(``unmask=True``), on the minion, so no call returns it to the master.

:depends: jsonschema
"""

import copy
import re
import socket

import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError
from salt.utils.secret import REDACT_PLACEHOLDER

try:
    import jsonschema

    HAS_JSONSCHEMA = True
except ImportError:
    HAS_JSONSCHEMA = False

__virtualname__ = "hpd"


def __virtual__():
    if not HAS_JSONSCHEMA:
        return (False, "hpd: the jsonschema Python package is not installed")
    return __virtualname__


def with_defaults(schema, data):
    """
    Return ``data`` with the schema's ``default`` values filled in where ``data``
    leaves a property out, recursively through objects. ``data`` is not changed.
    """
    if schema.get("type") != "object" or not isinstance(data, dict):
        return data
    filled = copy.deepcopy(data)
    for key, sub in schema.get("properties", {}).items():
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        if key in filled:
            filled[key] = with_defaults(sub, filled[key])
    return filled


def defaults(schema):
    """The settings a role gets from an empty pillar."""
    return with_defaults(schema, {})


def secret_paths(schema, path=(), own=False):
    """Paths (tuples of keys) of the properties the schema marks ``writeOnly``;
    with ``own``, only those it also keeps from the roles that read the role's
    secrets (``x-secret-readers: []`` on the property): the role's own hosts
    alone get them, from ``secrets/<env>/<role>-own.sls`` (pillar/top.sls)."""
    found = []
    for key, sub in schema.get("properties", {}).items():
        if sub.get("writeOnly") and (not own or sub.get("x-secret-readers") == []):
            found.append((*path, key))
        found.extend(secret_paths(sub, (*path, key), own))
    return found


def problems(schema, data, role, env=None):
    """
    Every way ``data`` breaks ``schema``, each as ``"<role>:<key>:...: <reason>"``
    (Salt's colon notation for pillar keys), sorted by key. Empty when valid.
    The value of a ``writeOnly`` property (a secret) is never repeated, and one
    starting with ``dev-only`` (a throw-away value, public in this repository) is
    refused unless ``env`` is ``dev``.
    """
    validator = jsonschema.Draft202012Validator(schema)
    secrets = secret_paths(schema)
    found = []
    for error in validator.iter_errors(data):
        path = tuple(str(p) for p in error.absolute_path)
        key = ":".join([role, *path])
        if any(path[: len(s)] == s for s in secrets):
            found.append(f"{key}: a secret that fails '{error.validator}' (value not shown)")
        else:
            found.append(f"{key}: {error.message}")
    if env != "dev":
        for path in secrets:
            value = _lookup(data, path)
            if isinstance(value, str) and value.startswith("dev-only"):
                key = ":".join([role, *path])
                found.append(f"{key}: a dev-only secret outside the dev environment ({env})")
    return sorted(found)


def check(schema, data, role, env=None):
    """
    ``data`` with defaults filled in, or SaltInvocationError naming every bad key.
    """
    if data is None:
        data = {}
    filled = with_defaults(schema, data)
    found = problems(schema, filled, role, env)
    if found:
        raise SaltInvocationError(
            "pillar {} is invalid: {}".format(role, "; ".join(found))
        )
    return filled


def _lookup(data, path):
    """The value at ``path`` (a tuple of keys) in nested dicts, or None."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def masked(schema, data):
    """
    ``data`` with the value of every ``writeOnly`` property (a secret) that is set
    replaced by Salt's mask (``**********``); ``data`` is not changed. A secret
    left unset stays ``None``, so a template can still tell that it is missing.
    """
    out = copy.deepcopy(data)
    for path in secret_paths(schema):
        parent = _lookup(out, path[:-1])
        if isinstance(parent, dict) and parent.get(path[-1]) is not None:
            parent[path[-1]] = REDACT_PLACEHOLDER
    return out


def schema(role, saltenv=None):
    """
    The schema of a role's pillar, from ``salt://pillar/<role>/schema.yaml``,
    fetched once per job (a highstate renders many files that ask for it).

    CLI Example:

    .. code-block:: bash

        salt '*' hpd.schema common
    """
    saltenv = saltenv or __opts__["saltenv"] or "base"
    key = f"hpd.schema:{saltenv}:{role}"
    if key not in __context__:
        text = __salt__["cp.get_file_str"](f"salt://pillar/{role}/schema.yaml", saltenv=saltenv)
        if not text:
            raise CommandExecutionError(
                f"no schema for role {role} (pillar/{role}/schema.yaml)"
            )
        __context__[key] = salt.utils.yaml.safe_load(text)
    return __context__[key]


def settings(role, saltenv=None, unmask=False):
    """
    A role's settings: pillar ``<role>`` with its schema's defaults filled in,
    checked against the schema. A wrong value raises an error naming the key.

    Secrets (``writeOnly`` properties) come back as ``**********``. Only the
    template that writes a secret into its file passes ``unmask=True``: it runs
    on the minion, so the value never travels back to the master. From the CLI,
    ``unmask=True`` shows the value and leaves it in the master's job cache,
    as ``pillar.items unmask=True`` does.

    CLI Example:

    .. code-block:: bash

        salt '*' hpd.settings common
    """
    role_schema = schema(role, saltenv)
    env = (__pillar__.get("hpd") or {}).get("env")
    filled = check(role_schema, __pillar__.get(role), role, env)
    return filled if unmask else masked(role_schema, filled)


def service_address(preferred=None, key="listen_address"):
    """
    The IPv4 address a farm service listens on: ``preferred`` when pillar sets
    one (pillar ``key``), else the master's inventory's address for this host
    (pillar ``hpd:addresses``: where the lb hosts and the deploy's health gate
    reach it), else the first non-loopback address this host's name resolves to
    (grain ``fqdn_ip4``). Never a wildcard address; an error naming the pillar
    ``key`` when there is none.

    CLI Example:

    .. code-block:: bash

        salt mon hpd.service_address
    """
    if preferred:
        return preferred
    listed = ((__pillar__.get("hpd") or {}).get("addresses") or {}).get(__grains__.get("id"))
    if listed:
        return listed
    for address in __grains__.get("fqdn_ip4", []):
        if not address.startswith("127."):
            return address
    raise CommandExecutionError(
        f"{__grains__.get('fqdn')} resolves to no non-loopback IPv4 address; set its address in "
        f"the inventory or pillar {key}"
    )


def resolve(names, key="hpd:peers"):
    """
    Each host name in ``names`` (minion ids from pillar ``hpd:peers``, which
    every farm host resolves) with its IPv4 address, as ``{name: address}``,
    looked up now: for configuration that must not depend on name lookups at
    connection time. An error naming the pillar ``key`` for a name that does
    not resolve.

    CLI Example:

    .. code-block:: bash

        salt app1 hpd.resolve '[cache1, cache2]' hpd:peers:cache
    """
    found = {}
    for name in names or []:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise CommandExecutionError(
                f"{key}: host {name!r} does not resolve to an IPv4 address ({exc})"
            ) from None
        found[name] = infos[0][4][0]
    return found


def addresses(names, key="hpd:peers"):
    """
    The IPv4 addresses of the host names in ``names`` (``resolve``), sorted
    and without duplicates: for access lists.

    CLI Example:

    .. code-block:: bash

        salt db hpd.addresses '[app1, app2]'
    """
    found = set(resolve(names, key).values())
    return sorted(found, key=lambda a: tuple(int(p) for p in a.split(".")))


def pg_slot_name(minion_id):
    """
    The physical replication slot the primary keeps for the replica
    ``minion_id``: ``hpd_`` and the id, lower case, every character outside
    ``[a-z0-9_]`` as ``_`` (slot names allow no other), at most 63 characters.

    CLI Example:

    .. code-block:: bash

        salt db hpd.pg_slot_name db2.example.com
    """
    return ("hpd_" + re.sub(r"[^a-z0-9_]", "_", str(minion_id).lower()))[:63]


def pg_slot_changes(existing, replicas):
    """
    What a primary does to its physical replication slots so that it keeps one
    for each replica in ``replicas`` (minion ids; ``pg_slot_name``) and none
    for a replica that left: ``{"create": [...], "drop": [...], "busy": [...]}``.
    ``existing`` maps each physical slot's name to whether a replica streams
    through it now. Only slots named like ours (``hpd_``) are dropped, and an
    active one never (PostgreSQL refuses): it is listed in ``busy``.

    CLI Example:

    .. code-block:: bash

        salt db hpd.pg_slot_changes '{hpd_db2: true, hpd_gone: false}' '[db2, db3]'
    """
    wanted = {pg_slot_name(r) for r in replicas or []}
    stale = sorted(s for s in existing if s.startswith("hpd_") and s not in wanted)
    return {"create": sorted(wanted - set(existing)),
            "drop": [s for s in stale if not existing[s]],
            "busy": [s for s in stale if existing[s]]}


#: Settings a hot standby must have at least as high as its primary's, else it
#: does not start (PostgreSQL's "insufficient parameter settings"), with
#: PostgreSQL's defaults: the floor a replica keeps.
PG_STANDBY_FLOOR = {
    "max_worker_processes": 8,
    "max_wal_senders": 10,
    "max_locks_per_transaction": 64,
}


def pg_standby_settings(settings):
    """
    ``settings`` (a host's tuning) for a hot standby: each setting that must
    not be lower than the primary's raised to at least PostgreSQL's default
    (the tuning sizes max_worker_processes by the host's CPUs, and a replica
    may have fewer than its primary). A primary tuned above those defaults
    needs the same values on its replicas from pillar db:postgresql:settings.

    CLI Example:

    .. code-block:: bash

        salt db2 hpd.pg_standby_settings '{max_worker_processes: 1}'
    """
    ret = dict(settings)
    for name, floor in PG_STANDBY_FLOOR.items():
        ret[name] = max(int(ret.get(name, floor)), floor)
    return ret
