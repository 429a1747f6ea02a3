"""
The site's database user, with its password read on the minion from a role's
secret pillar (``hpd.settings(..., unmask=True)``), so the password is in no
state data (``state.show_sls``), state output or job cache.

PostgreSQL: Salt's own ``postgres_user.present`` with ``scram-sha-256`` (its
changes say only ``password: True``). MariaDB: the ``mariadb`` client as root
over the local socket (Debian's unix_socket authentication), the SQL on its
standard input, never on a command line; Salt's mysql states need a Python
MySQL driver the minions do not have.
"""

import functools
import json

from salt.utils.secret import REDACT_PLACEHOLDER

__virtualname__ = "hpd_db"


def __virtual__():
    return __virtualname__


def _secret(secret):
    """The value of ``role:key:...`` from the role's settings, unmasked."""
    role, *path = secret.split(":")
    settings = __salt__["hpd.settings"](role, __env__, unmask=True)
    return functools.reduce(lambda data, key: (data or {}).get(key), path, settings)


def _scrub(ret, password):
    """``ret`` with the password masked wherever it might have been echoed."""
    return json.loads(json.dumps(ret).replace(json.dumps(password)[1:-1], REDACT_PLACEHOLDER))


def _sql_string(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _mariadb(sql):
    out = __salt__["cmd.run_all"](["mariadb", "--batch", "--skip-column-names"], stdin=sql,
                                  python_shell=False, output_loglevel="quiet",
                                  ignore_retcode=True)
    if out["retcode"] != 0:
        raise RuntimeError(f"mariadb failed: {out['stderr'].strip()}")
    return out["stdout"].split()


def _mysql_user_present(name, password, hosts, database):
    """Missing pieces of ``name``@each host with ``password`` and every
    privilege on ``database``; users of that name at other hosts are dropped."""
    user = _sql_string(name)
    wanted = [
        f"SELECT IF(COUNT(*), '', 'database') FROM information_schema.schemata "
        f"WHERE schema_name = {_sql_string(database)};"
    ]
    for host in hosts:
        where = f"User = {user} AND Host = {_sql_string(host)}"
        wanted.append(
            f"SELECT IF(COUNT(*), '', {_sql_string('password@' + host)}) FROM mysql.user "
            f"WHERE {where} AND authentication_string = PASSWORD({_sql_string(password)});"
        )
        wanted.append(
            f"SELECT IF(COUNT(*), '', {_sql_string('grant@' + host)}) FROM mysql.db "
            f"WHERE {where} AND Db = {_sql_string(database)};"
        )
    stale = _mariadb(f"SELECT Host FROM mysql.user WHERE User = {user};")
    missing = [m for m in _mariadb("\n".join(wanted)) if m]
    extra = sorted(set(stale) - set(hosts))
    if not missing and not extra:
        return {}
    if __opts__["test"]:
        return {"missing": missing, "drop": extra, "test": True}
    sql = [f"CREATE DATABASE IF NOT EXISTS `{database}`;"]
    for host in hosts:
        account = f"{user}@{_sql_string(host)}"
        sql += [f"CREATE USER IF NOT EXISTS {account};",
                f"ALTER USER {account} IDENTIFIED BY {_sql_string(password)};",
                f"GRANT ALL PRIVILEGES ON `{database}`.* TO {account};"]
    sql += [f"DROP USER {user}@{_sql_string(host)};" for host in extra]
    _mariadb("\n".join(sql))
    return {"missing": missing, "drop": extra}


def user_present(name, secret, engine="postgresql", hosts=None, database=None, **kwargs):
    """
    The database user ``name`` with the password at ``secret`` (``role:key``,
    e.g. ``db:password``), stored as a SCRAM-SHA-256 verifier by PostgreSQL.

    engine
        ``postgresql`` (extra keyword arguments go to ``postgres_user.present``)
        or ``mysql``: the user at each of ``hosts`` (addresses), with every
        privilege on ``database`` (created when missing); the same user at
        any other host is dropped.
    """
    password = _secret(secret)
    if not password:
        return {"name": name, "result": False, "changes": {},
                "comment": f"pillar {secret} is not set"}
    if engine == "postgresql":
        ret = __states__["postgres_user.present"](
            name, password=password, encrypted="scram-sha-256", user="postgres", **kwargs
        )
        return _scrub(ret, password)
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        changes = _mysql_user_present(name, password, hosts or [], database)
    except RuntimeError as exc:
        return _scrub({**ret, "result": False, "comment": str(exc)}, password)
    if changes.pop("test", False):
        ret.update(result=None, comment=f"User {name} would be updated", changes=changes)
    elif changes:
        ret.update(comment=f"User {name} updated", changes=changes)
    else:
        ret["comment"] = f"User {name} is present with its password and grants"
    return _scrub(ret, password)


def _psql(sql):
    """Rows of ``sql`` run by the local PostgreSQL's superuser, as lists of fields."""
    out = __salt__["cmd.run_all"](["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                  runas="postgres", cwd="/", python_shell=False,
                                  ignore_retcode=True)
    if out["retcode"] != 0:
        raise RuntimeError(f"psql failed: {out['stderr'].strip()}")
    return [line.split("|") for line in out["stdout"].splitlines()]


def slots_managed(name, replicas):
    """
    On a PostgreSQL primary: one physical replication slot for each replica in
    ``replicas`` (minion ids, slot names from ``hpd.pg_slot_name``), so it keeps
    the WAL a replica has not received yet, and no slot of ours (``hpd_``) that
    no replica of the list uses any more, which would keep WAL for ever. A
    stale slot a replica still streams through is left, named in the comment.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        rows = _psql("SELECT slot_name, active FROM pg_replication_slots "
                     "WHERE slot_type = 'physical'")
        plan = __salt__["hpd.pg_slot_changes"]({s: a == "t" for s, a in rows}, replicas)
        changes = {k: plan[k] for k in ("create", "drop") if plan[k]}
        busy = f"; in use, left: {', '.join(plan['busy'])}" if plan["busy"] else ""
        if __opts__["test"]:
            ret.update(result=None if changes else True, changes=changes,
                       comment=f"Slots would change{busy}" if changes else f"Slots as wanted{busy}")
            return ret
        for slot in plan["create"]:
            _psql(f"SELECT pg_create_physical_replication_slot('{slot}')")
        for slot in plan["drop"]:
            _psql(f"SELECT pg_drop_replication_slot('{slot}')")
    except RuntimeError as exc:
        return {**ret, "result": False, "comment": str(exc)}
    ret.update(changes=changes,
               comment=("Slots changed" if changes else "Slots as wanted") + busy)
    return ret
