"""
The site's database backups, run on the backup host (role ``backup``).

``hpd_backup.dump``
    ``pg_dump -Fc`` of the site's database, pulled over the network from the
    db host as a read-only role, then the dumps older than the retention
    removed (the backup host's systemd timer runs it).
``hpd_backup.restore_test``
    the latest dump restored into a scratch database, every table's row count
    compared with the source's: False and a non-zero exit on any difference
    (``salt-run state.orchestrate orch.restore_test``).
``hpd_backup.anonymized_snapshot``
    the latest dump restored into a scratch database, pillar
    ``backup:anonymize`` applied, dumped again for developers.
``hpd_backup.pitr_restore``
    on the db host: the cluster restored by pgBackRest to a point in time
    (``orch.pitr_restore`` runs it, then the db role and the replicas' rebuild).
``hpd_backup.pitr_base_current``
    on the db host: whether pgBackRest's repository holds a backup taken on
    the server's current timeline (salt/db/pitr.sls takes one when not).
``hpd_backup.media_backup``
    each app host's media directory pulled with rsync (a read-only module of
    its rsync daemon) into a staging directory, then a restic snapshot of it
    in the backup host's own encrypted repository, older snapshots forgotten
    and pruned by pillar ``backup:media:keep`` (the timer runs it).
``hpd_backup.media_restore``
    a path of an app host's media directory restored from a snapshot (the
    latest, an id, or the newest before a time) and written back to the host.

The pure parts (dump names, retention, row-count comparison, anonymization
SQL) are plain functions, unit-tested without a minion.
"""

import datetime
import json
import re
import secrets
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from salt.exceptions import CommandExecutionError

__virtualname__ = "hpd_backup"

STAMP = "%Y%m%dT%H%M%SZ"

#: Every ordinary table of the connected database with its exact row count,
#: one "schema.table<TAB>count" line each (query_to_xml runs one count(*) per
#: table in the same statement).
COUNT_SQL = (
    "SELECT format('%I.%I', table_schema, table_name), "
    "(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', "
    "table_schema, table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)

#: Anonymization methods: column -> the SQL expression of its new value, given
#: the quoted column and a per-snapshot salt literal (so hashes of the same
#: value agree within one snapshot, and cannot be looked up across snapshots).
METHODS = {
    "hash": "md5({salt} || {col}::text)",
    "email": "'user-' || md5({salt} || {col}::text) || '@example.invalid'",
    "redact": "CASE WHEN {col} IS NULL THEN NULL ELSE 'redacted' END",
    "null": "NULL",
}


def __virtual__():
    return __virtualname__


def dump_name(database, when):
    """The file name of ``database``'s dump taken at ``when`` (UTC)."""
    return f"{database}-{when.strftime(STAMP)}.dump"


def dump_time(name, database):
    """When the dump ``name`` of ``database`` was taken (aware, UTC), or None
    for a name that is not one of its dumps."""
    prefix, suffix = f"{database}-", ".dump"
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    try:
        when = datetime.datetime.strptime(name[len(prefix):-len(suffix)], STAMP)
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.UTC)


def expired(names, database, now, keep_days):
    """The dumps of ``database`` among ``names`` taken more than ``keep_days``
    days before ``now``, sorted; other names are never selected."""
    limit = now - datetime.timedelta(days=keep_days)
    return sorted(n for n in names if (dump_time(n, database) or limit) < limit)


def latest(names, database):
    """The newest dump of ``database`` among ``names``, or None."""
    dumps = [n for n in names if dump_time(n, database)]
    return max(dumps, key=lambda n: dump_time(n, database)) if dumps else None


def parse_counts(text):
    """{table: rows} from COUNT_SQL's output."""
    counts = {}
    for line in text.splitlines():
        if line.strip():
            table, rows = line.split("\t")
            counts[table] = int(rows)
    return counts


def count_mismatches(source, restored):
    """Each table whose row count differs between ``source`` and ``restored``
    ({table: rows}), or that only one of them has, as a sentence; sorted."""
    found = []
    for table in sorted(set(source) | set(restored)):
        if table not in restored:
            found.append(f"{table}: {source[table]} rows in the source, missing from the dump")
        elif table not in source:
            found.append(f"{table}: in the dump ({restored[table]} rows), not in the source")
        elif source[table] != restored[table]:
            found.append(f"{table}: {source[table]} rows in the source, "
                         f"{restored[table]} in the dump")
    return found


def _ident(name):
    return '"' + name.replace('"', '""') + '"'


def anonymize_sql(rules, salt):
    """The SQL that applies ``rules`` ({table: {column: method}}, pillar
    ``backup:anonymize``), one UPDATE per table; ``salt`` salts the hashes.
    An unknown method raises ValueError naming the table and column."""
    statements = []
    literal = "'" + salt.replace("'", "''") + "'"
    for table, columns in sorted(rules.items()):
        sets = []
        for column, method in sorted(columns.items()):
            if method not in METHODS:
                raise ValueError(f"backup:anonymize:{table}:{column}: unknown method "
                                 f"{method!r} (one of {', '.join(sorted(METHODS))})")
            col = _ident(column)
            sets.append(f"{col} = " + METHODS[method].format(col=col, salt=literal))
        statements.append(f"UPDATE {_ident(table)} SET {', '.join(sets)};")
    return "\n".join(statements)


def _run(cmd, env=None, stdin=None, shell=False):
    """stdout of ``cmd`` (a list, or a shell line with ``shell``); an error
    with its stderr when it fails."""
    out = __salt__["cmd.run_all"](cmd, env=env, stdin=stdin, python_shell=shell,
                                  output_loglevel="quiet", ignore_retcode=True, cwd="/")
    if out["retcode"] != 0:
        shown = cmd if isinstance(cmd, str) else " ".join(cmd)
        raise CommandExecutionError(f"{shown} failed: {out['stderr'].strip()}")
    return out["stdout"]


def _as_postgres(args):
    """A shell line running ``args`` as the local server's superuser."""
    return "runuser -u postgres -- " + " ".join(shlex.quote(a) for a in args)


def dump(host, database, user, directory, keep_days, passfile):
    """
    Dump ``database`` from ``host`` as ``user`` (password from ``passfile``,
    a libpq password file) into ``directory`` as <database>-<UTC time>.dump,
    written under a temporary name first so a failed dump never counts as the
    latest; then remove that database's dumps older than ``keep_days`` days.

    CLI Example (the timer's, on a backup host):

    .. code-block:: bash

        salt-call --local hpd_backup.dump db hpd hpd_backup /var/backups/hpd 14 \
            /etc/hpd/backup.pgpass
    """
    now = datetime.datetime.now(datetime.UTC)
    target = Path(directory) / dump_name(database, now)
    partial = target.with_name("." + target.name + ".partial")
    try:
        _run(["pg_dump", "--format=custom", f"--host={host}", f"--username={user}",
              "--no-password", f"--file={partial}", database], env={"PGPASSFILE": passfile})
    except CommandExecutionError:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(target)
    removed = expired([p.name for p in Path(directory).iterdir()], database, now, int(keep_days))
    for name in removed:
        (Path(directory) / name).unlink()
    return {"dump": str(target), "removed": removed}


def _settings():
    """(backup settings, the site database's name, the db host) on a backup host."""
    backup = __salt__["hpd.settings"]("backup")
    database = __salt__["hpd.settings"]("db")["name"]
    hosts = (__pillar__.get("hpd") or {}).get("peers", {}).get("db") or []
    if not hosts:
        raise CommandExecutionError("pillar hpd:peers:db: no db host in this environment")
    return backup, database, hosts[0]


def _restore_latest(backup, database):
    """Restore the latest dump into the scratch database; its path."""
    directory = Path(backup["dir"])
    name = latest([p.name for p in directory.iterdir()], database) if directory.is_dir() else None
    if not name:
        raise CommandExecutionError(f"no dump of {database} in {directory}")
    scratch = backup["scratch_database"]
    _run(_as_postgres(["dropdb", "--if-exists", scratch]), shell=True)
    _run(_as_postgres(["createdb", scratch]), shell=True)
    # root opens the dump and hands it to pg_restore on its standard input.
    _run(_as_postgres(["pg_restore", "--no-owner", "--no-acl", "--exit-on-error",
                       f"--dbname={scratch}"]) + " < " + shlex.quote(str(directory / name)),
         shell=True)
    return directory / name


def _drop_scratch(backup):
    _run(_as_postgres(["dropdb", "--if-exists", backup["scratch_database"]]), shell=True)


def restore_test(passfile="/etc/hpd/backup.pgpass"):
    """
    Restore the latest dump into the scratch database on this backup host and
    compare every table's row count with the source database's (on the db
    host, as the read-only backup role). ``result`` False, the differences
    listed and a non-zero exit when any table differs.

    CLI Example:

    .. code-block:: bash

        salt-run state.orchestrate orch.restore_test
    """
    backup, database, host = _settings()
    try:
        path = _restore_latest(backup, database)
        restored = parse_counts(_run(_as_postgres(
            ["psql", "-XAtq", "-F", "\t", "-d", backup["scratch_database"], "-c", COUNT_SQL]),
            shell=True))
    finally:
        _drop_scratch(backup)
    source = parse_counts(_run(
        ["psql", "-XAtq", "-F", "\t", f"--host={host}", f"--username={backup['db_user']}",
         "--no-password", "-d", database, "-c", COUNT_SQL], env={"PGPASSFILE": passfile}))
    mismatches = count_mismatches(source, restored)
    # result False: the salt CLI and salt.function (orchestration) fail on it.
    return {"result": not mismatches, "dump": str(path), "tables": len(source),
            "mismatches": mismatches}


def anonymized_snapshot():
    """
    Restore the latest dump into the scratch database, apply pillar
    ``backup:anonymize`` in one transaction (a table or column the dump lacks
    fails it) and dump the result to <dir>/anonymized/<database>-<UTC
    time>.dump, readable by root only: hand it to developers from there.

    CLI Example:

    .. code-block:: bash

        salt -I hpd:roles:backup hpd_backup.anonymized_snapshot
    """
    backup, database, _host = _settings()
    scratch = backup["scratch_database"]
    target = Path(backup["dir"]) / "anonymized" / dump_name(
        database, datetime.datetime.now(datetime.UTC))
    target.parent.mkdir(mode=0o700, exist_ok=True)
    try:
        _restore_latest(backup, database)
        _run(_as_postgres(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", scratch]),
             stdin=anonymize_sql(backup["anonymize"], secrets.token_hex(16)), shell=True)
        _run("umask 077 && " + _as_postgres(["pg_dump", "--format=custom", scratch])
             + " > " + shlex.quote(str(target)), shell=True)
    finally:
        _drop_scratch(backup)
    return {"snapshot": str(target), "tables": sorted(backup["anonymize"])}


def wal_timeline(walfile):
    """The timeline of a WAL file name (its first 8 hex digits), an int."""
    if not re.fullmatch(r"[0-9A-F]{24}", str(walfile)):
        raise CommandExecutionError(f"not a WAL file name: {walfile!r}")
    return int(walfile[:8], 16)


def has_base_on_timeline(info, timeline):
    """
    Whether pgBackRest's ``info --output=json`` (a list of stanzas) holds a
    backup that started on ``timeline``. Restoring a later point replays the
    WAL from the backup on: a backup of an older timeline serves only when the
    repository holds every timeline between, which it does not after a
    failover (the other host archived those into its own repository).
    """
    return any(wal_timeline(b["archive"]["start"]) == int(timeline)
               for stanza in info for b in stanza.get("backup", []))


def _pitr_stanza():
    return __salt__["hpd.settings"]("backup")["pitr"]["stanza"]


def pitr_base_current():
    """
    Whether this db host's pgBackRest repository holds a backup taken on the
    running primary's current timeline, the base a point-in-time restore of
    any later moment starts from. False on a new cluster, after a promotion
    (orch.db_failover) and after a point-in-time restore: the db role
    (salt/db/pitr.sls) then takes a full backup.

    CLI Example:

    .. code-block:: bash

        salt db hpd_backup.pitr_base_current
    """
    info = _run(_as_postgres(["pgbackrest", f"--stanza={_pitr_stanza()}", "--output=json",
                              "info"]), shell=True)
    walfile = _run(_as_postgres(["psql", "-XAtq", "-c",
                                 "SELECT pg_walfile_name(pg_current_wal_lsn())"]), shell=True)
    return has_base_on_timeline(json.loads(info), wal_timeline(walfile.strip()))


#: Where pgBackRest's restore leaves recovery settings (postgresql.auto.conf):
#: reset once the server is promoted, so they never apply to a later recovery.
RECOVERY_SETTINGS = ("restore_command", "recovery_target_time", "recovery_target_action")


def pitr_restore(target, service="postgresql@15-main", timeout=120):
    """
    Restore this db host's PostgreSQL to the point in time ``target`` (a
    timestamp with time zone, e.g. ``2026-11-30 05:50:00+00``) from
    pgBackRest's repository (pillar ``backup:pitr``): the WAL up to now is
    archived first, the server stopped, its data directory restored (delta)
    and replayed to ``target``, then promoted and running on a new timeline.
    Everything written after ``target`` is gone from the server (still in the
    repository's WAL). The restore leaves no replication slot and no backup
    of the new timeline: ``orch.pitr_restore`` runs this, then the db role's
    highstate (slots, a full backup) and rebuilds the replicas, whose data
    went past ``target``.

    CLI Example:

    .. code-block:: bash

        salt db hpd_backup.pitr_restore '2026-11-30 05:50:00+00'
    """
    stanza = _pitr_stanza()

    def psql(query):
        return _run(_as_postgres(["psql", "-XAtq", "-c", query]), shell=True).strip()

    _run(_as_postgres(["pgbackrest", f"--stanza={stanza}", "check"]), shell=True)
    # Masked while it is down on purpose: the master's reactor starts a stopped
    # service again (salt/heal), not a masked one.
    _run(["systemctl", "mask", "--runtime", service])
    _run(["systemctl", "stop", service])
    try:
        _run(_as_postgres(["pgbackrest", f"--stanza={stanza}", "--delta", "--type=time",
                           f"--target={target}", "--target-action=promote", "restore"]),
             shell=True)
    finally:
        _run(["systemctl", "unmask", "--runtime", service])
        _run(["systemctl", "start", service])
    deadline = time.monotonic() + timeout
    while psql("SELECT pg_is_in_recovery()") != "f":
        if time.monotonic() > deadline:
            raise CommandExecutionError(f"still in recovery after {timeout} s")
        time.sleep(1)
    for name in RECOVERY_SETTINGS:
        psql(f"ALTER SYSTEM RESET {name}")
    _run(["systemctl", "restart", service])
    return {"target": target, "timeline": psql("SELECT timeline_id FROM pg_control_checkpoint()")}


#: restic forget's --keep-* options, in the order they are passed.
KEEP = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def forget_args(keep):
    """restic forget's policy options for ``keep`` (pillar backup:media:keep,
    {period: snapshots}); periods set to 0 are left out. A policy that keeps
    nothing raises ValueError (restic would forget no snapshot at all)."""
    unknown = sorted(set(keep) - set(KEEP))
    if unknown:
        raise ValueError(f"backup:media:keep: unknown periods {unknown} (one of {', '.join(KEEP)})")
    args = []
    for period in KEEP:
        if keep.get(period):
            args += [f"--keep-{period}", str(int(keep[period]))]
    if not args:
        raise ValueError("backup:media:keep: keeps no snapshot")
    return args


def snapshot_time(text):
    """restic's snapshot time (RFC 3339, nanoseconds) as an aware datetime."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not match:
        raise ValueError(f"not a snapshot time: {text!r}")
    stamp, fraction, zone = match.groups()
    fraction = ((fraction or "") + "000000")[:6]
    return datetime.datetime.fromisoformat(f"{stamp}.{fraction}{'+00:00' if zone == 'Z' else zone}")


def pick_snapshot(snapshots, spec):
    """The snapshot (a dict of ``restic snapshots --json``) that ``spec``
    names: ``latest``, ``before=<ISO time with zone>`` (the newest taken
    before it) or an id or its prefix. A ValueError saying why when none."""
    ordered = sorted(snapshots, key=lambda s: snapshot_time(s["time"]))
    if spec == "latest":
        chosen = ordered[-1:]
    elif spec.startswith("before="):
        try:
            limit = datetime.datetime.fromisoformat(spec[len("before="):])
        except ValueError as error:
            raise ValueError(f"snapshot {spec!r}: {error}") from None
        if limit.tzinfo is None:
            raise ValueError(f"snapshot {spec!r}: give the time zone (e.g. +00:00)")
        chosen = [s for s in ordered if snapshot_time(s["time"]) < limit][-1:]
    else:
        chosen = [s for s in ordered if s["id"].startswith(spec)] if spec else []
        if len(chosen) > 1:
            raise ValueError(f"snapshot {spec!r}: more than one snapshot has that prefix")
    if not chosen:
        raise ValueError(f"snapshot {spec!r}: no such snapshot")
    return chosen[0]


def media_path(path):
    """``path`` relative to the media directory, normalized; a ValueError for
    one that leaves it."""
    parts = [p for p in str(path).split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"path {path!r}: not a path inside the media directory")
    return "/".join(parts)


def _media_config(config):
    return json.loads(Path(config).read_text())


def _restic(conf, args):
    return _run(["restic", *args], env={"RESTIC_REPOSITORY": conf["repo"],
                                        "RESTIC_PASSWORD_FILE": conf["restic_password_file"]})


def _rsync(conf, args):
    return _run(["rsync", f"--password-file={conf['rsync_password_file']}", *args])


def _module_url(conf, host, module):
    return f"rsync://{conf['rsync_user']}@{host}/{module}/"


def media_backup(config="/etc/hpd/media-backup.json"):
    """
    Pull each app host's media directory (rsync from the host's read-only
    ``media`` module into <staging>/<host>), snapshot it with restic into this
    backup host's repository (created on the first run) and forget and prune
    that host's snapshots beyond pillar ``backup:media:keep``. The app hosts
    have no access to the repository. A host that fails does not stop the
    others; the run then fails naming it. ``config`` is written by salt/backup.

    CLI Example (the timer's, on a backup host):

    .. code-block:: bash

        salt-call --local hpd_backup.media_backup
    """
    conf = _media_config(config)
    if not (Path(conf["repo"]) / "config").exists():
        _restic(conf, ["init"])
    policy = forget_args(conf["keep"])
    taken, failed = {}, []
    for host in conf["hosts"]:
        staging = Path(conf["staging"]) / host
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            _rsync(conf, ["-a", "--delete", _module_url(conf, host, "media"), f"{staging}/"])
            summary = json.loads(_restic(conf, ["backup", "--json", "--quiet", "--host", host,
                                                str(staging)]).splitlines()[-1])
            _restic(conf, ["forget", "--quiet", "--host", host, *policy, "--prune"])
        except CommandExecutionError as error:  # the other hosts still get their snapshot
            failed.append(f"{host}: {error}")
            continue
        taken[host] = summary["snapshot_id"]
    if failed:
        raise CommandExecutionError(f"no snapshot of {'; '.join(failed)} "
                                    f"(taken: {', '.join(sorted(taken)) or 'none'})")
    return taken


def media_snapshots(host, config="/etc/hpd/media-backup.json"):
    """
    ``host``'s media snapshots in this backup host's repository, oldest first:
    [{id, time}].

    CLI Example:

    .. code-block:: bash

        salt -I hpd:roles:backup hpd_backup.media_snapshots app1
    """
    conf = _media_config(config)
    found = json.loads(_restic(conf, ["snapshots", "--json", "--host", host]) or "[]")
    return [{"id": s["id"], "time": s["time"]}
            for s in sorted(found, key=lambda s: snapshot_time(s["time"]))]


def media_restore(host, path, snapshot="latest", config="/etc/hpd/media-backup.json"):
    """
    Restore ``path`` (a file or directory, relative to the media directory)
    of app host ``host`` from a snapshot and write it back to the host's media
    directory (its rsync daemon's write-only ``media-restore`` module, from
    this backup host only), over what is there. ``snapshot``: ``latest``, a
    snapshot id (or prefix) or ``before=<ISO time with zone>``: the newest
    snapshot taken before that time, e.g. for a file deleted or overwritten
    then.

    CLI Example:

    .. code-block:: bash

        salt -I hpd:roles:backup hpd_backup.media_restore host=app1 \
            path=uploads/a.jpg snapshot='before=2026-11-16T00:00:00+00:00'
    """
    conf = _media_config(config)
    if host not in conf["hosts"]:
        raise CommandExecutionError(f"host {host!r}: not an app host of this backup host "
                                    f"({', '.join(conf['hosts'])})")
    try:
        relative = media_path(path)
        chosen = pick_snapshot(media_snapshots(host, config), snapshot)
    except ValueError as error:
        raise CommandExecutionError(str(error)) from None
    inside = f"{Path(conf['staging']) / host}/{relative}"
    scratch = tempfile.mkdtemp(prefix="media-restore-", dir=conf["staging"])
    try:
        _restic(conf, ["restore", chosen["id"], "--target", scratch, "--include", inside])
        base = Path(scratch + str(Path(conf["staging"]) / host))
        if not (base / relative).exists():
            raise CommandExecutionError(f"{relative}: not in snapshot {chosen['id'][:8]} "
                                        f"of {host} ({chosen['time']})")
        # --relative from /./: the path's directories are created on the host.
        _rsync(conf, ["-rtR", f"{base}/./{relative}",
                      _module_url(conf, host, "media-restore")])
    finally:
        shutil.rmtree(scratch)
    return {"host": host, "path": relative, "snapshot": chosen["id"], "time": chosen["time"]}
