"""
The site on the app and worker hosts: its Django settings file, its uWSGI vassal,
its Celery workers and its releases, computed from pillar.

Pure functions of plain data (the unit tests pin them); the states call them
through the loader (``salt['hpd_site.django_settings'](...)``) so no computation
sits in Jinja.

Release layout under ``common:app_root`` (``/srv/hpd``)::

    releases/<release id>/     the site's code at one commit (user hpd)
        venv -> /srv/hpd/venvs/<key>   its virtualenv (see ``venv_key``)
        <site:static_dir>/          collectstatic's output (app hosts)
    venvs/<key>/               one virtualenv per requirements.txt and Python
    current -> releases/<id>   what uWSGI and the workers run (switched atomically)
    run/                       the uWSGI stats socket, the chain-reload trigger, the
                               master FIFO
    log/                       uWSGI's request log
    media/                     user uploads (the backup host pulls them)
"""

import hashlib
import json
import re

from salt.exceptions import SaltInvocationError

__virtualname__ = "hpd_site"

#: PostgreSQL's port (the db role does not move it).
POSTGRESQL_PORT = 5432
SESSION_ENGINES = {
    "cache": "django.contrib.sessions.backends.cache",
    "cached_db": "django.contrib.sessions.backends.cached_db",
}
SHA = re.compile(r"^[0-9a-f]{40}$")
RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Hex digits of the commit in a release id, and of the requirements' hash in a
#: virtualenv's key.
RELEASE_SHA_DIGITS = 12
VENV_HASH_DIGITS = 16


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------------------
# Settings (the JSON file HPD_SITE_CONFIG names)
# ---------------------------------------------------------------------------


def broker_url(broker, cache_peers, redis):
    """
    Celery's broker: redis on a cache host, directly (twemproxy does not proxy
    the commands Celery needs). ``broker`` is pillar ``site:broker``; its host
    defaults to the first of ``cache_peers`` (hpd:peers:cache), its port to the
    cache role's redis port (``redis``: pillar ``cache:redis``). None when there
    is no such host.
    """
    if broker["host"]:
        host = broker["host"]
    elif redis["enabled"] and cache_peers:
        host = sorted(cache_peers)[0]
    else:
        return None
    port = broker["port"] or redis["port"]
    return f"redis://{host}:{port}/{broker['database']}"


def django_settings(site, db, peers, cache, twemproxy, hosts):
    """
    The settings the farm gives the site (the upper-case keys of the JSON file
    ``HPD_SITE_CONFIG`` names), as a dict.

    site
        pillar ``site`` with its defaults, its secret unmasked.
    db
        pillar ``db`` with its defaults, its password unmasked.
    peers
        pillar ``hpd:peers``: the database is on the db host (the primary)
        and the db_replica hosts; the cache hosts hold memcached (through the
        local twemproxy) and the broker.
    cache, twemproxy
        pillars ``cache`` and ``twemproxy`` with their defaults.
    hosts
        this host's own names and address, which the load balancer's and the
        deploy's health checks use (besides the site's domains).

    ``DATABASES`` names every database host of the environment, the db
    hosts then the db_replica hosts, in one libpq multi-host ``HOST`` with
    ``target_session_attrs=read-write``: each new connection tries them in
    turn (``connect_timeout`` each) and keeps the one that takes writes, so
    once orch.db_failover promotes a replica the site finds it before the
    orchestration repoints it (the fenced old primary never takes writes).
    ``CONN_HEALTH_CHECKS`` makes a persistent connection (``CONN_MAX_AGE``)
    that died with the old primary be replaced at the next request instead
    of failing it.

    Missing pieces raise an error naming the pillar key to set.
    """
    if not site["secret_key"]:
        raise SaltInvocationError(
            "pillar site:secret_key is required on app and worker hosts "
            "(secrets/<env>/site.sls)")
    if db["engine"] != "postgresql":
        raise SaltInvocationError(
            f"pillar db:engine is {db['engine']}: the site's settings support postgresql only "
            "(the wheelhouse has no MySQL driver)")
    if not db["password"]:
        raise SaltInvocationError(
            "pillar db:password is required on app and worker hosts (secrets/<env>/db.sls)")
    primaries = sorted(peers.get("db") or [])
    if not primaries:
        raise SaltInvocationError("pillar hpd:peers:db is empty: no db host in this environment")
    if not (cache["memcached"]["enabled"] and peers.get("cache")):
        raise SaltInvocationError(
            "no memcached pool in the local twemproxy: the site needs pillar "
            "cache:memcached:enabled and a cache host (hpd:peers:cache)")
    broker = broker_url(site["broker"], peers.get("cache"), cache["redis"])
    if broker is None:
        raise SaltInvocationError(
            "no Celery broker: set pillar site:broker:host, or give the environment a "
            "cache host with redis (hpd:peers:cache, cache:redis:enabled)")
    domains = list(site["domains"])
    return {
        "SECRET_KEY": site["secret_key"],
        "ALLOWED_HOSTS": list(dict.fromkeys(domains + [h for h in hosts if h])),
        "CSRF_TRUSTED_ORIGINS": [f"https://{domain}" for domain in domains],
        "DATABASES": {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db["name"],
                "USER": db["user"],
                "PASSWORD": db["password"],
                "HOST": ",".join(primaries + sorted(peers.get("db_replica") or [])),
                "PORT": POSTGRESQL_PORT,
                "CONN_MAX_AGE": site["conn_max_age"],
                "CONN_HEALTH_CHECKS": True,
                "OPTIONS": {"connect_timeout": site["db_connect_timeout"],
                            "target_session_attrs": "read-write"},
            }
        },
        "CACHES": {
            "default": {
                "BACKEND": site["cache_backend"],
                "LOCATION": f"127.0.0.1:{twemproxy['ports']['memcached']}",
                "KEY_PREFIX": site["name"],
            }
        },
        "SESSION_ENGINE": SESSION_ENGINES[site["session_engine"]],
        "STATIC_URL": site["static_url"],
        "CELERY_BROKER_URL": broker,
        "SENTRY_DSN": site["sentry_dsn"],
        "ANONYMOUS_MAX_AGE": site["anonymous_max_age"],
    }


def settings_json(*args, **kwargs):
    """:func:`django_settings` as the file's text (sorted keys, one per line)."""
    return json.dumps(django_settings(*args, **kwargs), indent=2, sort_keys=True) + "\n"


def environment(site, config_file):
    """The environment the site's processes (uWSGI, Celery, manage.py) run with."""
    return {
        "DJANGO_SETTINGS_MODULE": site["settings_module"],
        "HPD_SITE_CONFIG": config_file,
        "DJANGO_LOG_LEVEL": site["log_level"],
    }


# ---------------------------------------------------------------------------
# uWSGI
# ---------------------------------------------------------------------------

#: The tuning's options (highperf.uwsgi_tune) the vassal sets, and pillar
#: app:uwsgi may override. Not its max-requests-delta: Debian's uWSGI (2.0.21)
#: has no such option and refuses to start with it.
UWSGI_TUNED = ("processes", "threads", "listen", "harakiri", "max-requests",
               "post-buffering", "buffer-size")


#: Seconds a worker of several threads being replaced (a chain reload, a
#: reload) may take to exit before its master kills it (uWSGI's default: 60).
#: Debian's uWSGI 2.0.21 stops such a worker by cancelling its other threads
#: (their requests with them) and joining them: a join that takes longer than
#: a moment waits on a thread that cannot be cancelled, not on work. Seen in the
#: lab: about one chain reload in ten under load held a deploy's health gate
#: for the whole 60 s.
WORKER_RELOAD_MERCY_THREADED = 5


def uwsgi_tuning(tune, overrides, somaxconn):
    """
    ``tune`` (highperf.uwsgi_tune for the host) with pillar ``app:uwsgi``'s
    non-null values over it. ``listen`` may not exceed the kernel's
    ``net.core.somaxconn`` (uWSGI refuses to start above it).

    ``worker-reload-mercy`` (unless pillar sets it): 5 s with several threads
    per worker (:data:`WORKER_RELOAD_MERCY_THREADED`), else ``harakiri`` (a
    single-threaded worker finishes its request before it exits).
    """
    tuned = {key: tune[key] for key in UWSGI_TUNED}
    tuned.update({key: value for key, value in overrides.items() if value is not None})
    tuned.setdefault("worker-reload-mercy", WORKER_RELOAD_MERCY_THREADED
                     if tuned["threads"] > 1 else tuned["harakiri"])
    if tuned["listen"] > somaxconn:
        raise SaltInvocationError(
            f"pillar app:uwsgi:listen ({tuned['listen']}) is above this host's "
            f"net.core.somaxconn ({somaxconn}): lower it or raise the sysctl")
    return tuned


def vassal(site, app, address, tuning, env, paths):
    """
    The site's uWSGI vassal as a list of ``[option, value]`` pairs (options may
    repeat), in the order of the file: ``site`` and ``app`` are their pillars,
    ``address`` the host's private address, ``tuning`` :func:`uwsgi_tuning`'s,
    ``env`` :func:`environment`'s.

    ``paths``: ``current`` (the release symlink), ``stats`` (the stats socket),
    ``reload`` (the chain-reload trigger), ``fifo`` (the master FIFO, which
    the emperor's unit writes to as it stops), ``request_log``.

    A chain reload (touching ``paths.reload``) replaces the workers one at a
    time; each new worker imports the code ``current`` points to then, because
    the import path, the virtualenv and each worker's directory (set after the
    fork) are given through the symlink, and apps load in the workers
    (lazy-apps), not in the master.
    """
    current = paths["current"]
    log_bytes = app["request_log_max_mb"] * 1024 * 1024
    options = [
        ["strict", "true"],
        # Loggers are plugins in Debian's uWSGI: systemd's journal, files.
        ["plugins", "python3,systemd_logger,logfile"],
        ["master", "true"],
        ["procname-prefix-spaced", site["name"]],
        ["auto-procname", "true"],
        ["http-socket", f"{address}:{app['port']}"],
        # uWSGI's bare HTTP socket closes each connection: say so.
        ["add-header", "Connection: close"],
        *([key, tuning[key]] for key in (*UWSGI_TUNED, "worker-reload-mercy")),
        ["thunder-lock", "true"],
        ["enable-threads", "true"],
        ["single-interpreter", "true"],
        ["lazy-apps", "true"],
        ["virtualenv", f"{current}/venv"],
        ["pythonpath", current],
        ["hook-post-fork", f"chdir:{current}"],
        ["module", site["wsgi_module"]],
        *(["env", f"{key}={value}"] for key, value in sorted(env.items())),
        ["need-app", "true"],
        ["die-on-term", "true"],
        ["vacuum", "true"],
        ["touch-chain-reload", paths["reload"]],
        # The unit's stop wakes the master through it (salt/app/files/uwsgi-emperor-stop).
        ["master-fifo", paths["fifo"]],
        ["stats", paths["stats"]],
        ["memory-report", "true"],
        ["log-x-forwarded-for", "true"],
        # Each request's line ends with its id (haproxy's X-Request-ID).
        ["log-format", '%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) '
                       '%(size) %(msecs)ms id=%(var.HTTP_X_REQUEST_ID)'],
        # uWSGI's and the site's own log to the journal (journalctl -u
        # uwsgi-emperor); one line per request to a file, moved to <file>.1
        # when it reaches its size.
        ["logger", "systemd"],
        ["req-logger", f"file:logfile={paths['request_log']},maxsize={log_bytes},"
                       f"backupname={paths['request_log']}.1"],
    ]
    if site["static_url"].startswith("/"):
        # Static files from the release itself when no CDN is in front.
        options += [["static-map", f"{site['static_url']}={current}/{site['static_dir']}"],
                    ["static-gzip-all", "true"]]
    return options


# ---------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------


def worker_units(name, count, cpus, enabled=()):
    """
    ``(wanted, extra)``: the site's Celery worker units a host runs
    (``<name>-worker@1`` ... ``@N``, N from pillar ``worker:count``, else one per
    core) and, of the ``enabled`` unit files (names or paths, e.g. the
    ``multi-user.target.wants`` links), the worker units beyond them.
    """
    n = count if count is not None else max(1, int(cpus))
    wanted = [f"{name}-worker@{i}" for i in range(1, n + 1)]
    prefix = f"{name}-worker@"
    found = {p.rsplit("/", 1)[-1].removesuffix(".service") for p in enabled}
    extra = sorted(u for u in found if u.startswith(prefix) and u not in wanted)
    return wanted, extra


# ---------------------------------------------------------------------------
# Releases
# ---------------------------------------------------------------------------


def release_id(rev):
    """
    The id (directory name) of a release: for a commit sha, its first 12 hex
    digits (a deploy's release, the same on every host without coordination);
    for a branch or tag (the highstate's first release, pillar site:rev), its
    name with ``/`` as ``-``.
    """
    if isinstance(rev, str) and SHA.match(rev):
        return rev[:RELEASE_SHA_DIGITS]
    rid = rev.replace("/", "-") if isinstance(rev, str) else None
    if rid is None or not RELEASE_ID.match(rid):
        raise SaltInvocationError(f"no release id for revision {rev!r}")
    return rid


def release(deploy, first_rev):
    """
    The release a release step works on: ``{"id", "rev"}``, ``rev`` being what
    to check out.

    ``deploy`` is pillar ``deploy`` (given by orch.deploy): ``deploy:sha``, the
    commit resolved once for the whole deploy, and optionally ``deploy:release``,
    the release id (default: :func:`release_id` of the sha); a rollback, or a
    switch to a release that exists, gives ``deploy:release`` alone (``rev`` is
    then None). Without ``deploy`` (the highstate's first release, made before
    the host has git to resolve anything) it is ``first_rev``, pillar site:rev.
    """
    if not deploy:
        return {"id": release_id(first_rev), "rev": first_rev}
    if not isinstance(deploy, dict):
        raise SaltInvocationError("pillar deploy must be a mapping (sha, release)")
    sha, rid = deploy.get("sha"), deploy.get("release")
    if sha is not None and not (isinstance(sha, str) and SHA.match(sha)):
        raise SaltInvocationError(f"pillar deploy:sha must be a full commit sha, not {sha!r}")
    if rid is None:
        if sha is None:
            raise SaltInvocationError("pillar deploy needs sha (a full commit sha) or release")
        rid = release_id(sha)
    elif not (isinstance(rid, str) and RELEASE_ID.match(rid)):
        raise SaltInvocationError(
            f"pillar deploy:release must be a directory name ({RELEASE_ID.pattern}), not {rid!r}")
    return {"id": rid, "rev": sha}


def local_repository(url):
    """The directory of a repository on the host itself (``file://`` URL or
    path), which git makes the app user trust explicitly (its owner is another
    user); None for a remote one."""
    path = url.removeprefix("file://")
    return path if path.startswith("/") else None


def venv_key(requirements, interpreter):
    """The name of the virtualenv a release with this requirements.txt text uses,
    e.g. ``python3.11-<16 hex digits>``: releases whose requirements and Python
    (``interpreter``, the name of the real executable) are the same share one."""
    digest = hashlib.sha256(requirements.encode()).hexdigest()[:VENV_HASH_DIGITS]
    return f"{interpreter}-{digest}"
