"""
The parts of a deploy that run on the master (``orch.deploy``, ``orch.rollback``)
and that Salt has none of: the deploy lock, the revision resolved once into the
release every host builds, the health gate, the audit events.

``hpd_deploy.lock`` / ``unlock`` / ``status``
    one deploy per site and environment at a time. The lock is a JSON file in the
    master's cache (``<cachedir>/hpd_deploy/<site>.<env>.lock``) naming its
    holder: the process that runs the orchestration (its PID and start time),
    who started it, since when, which revision and release. A second deploy is
    refused with that record in its message. The holder's liveness decides, not
    a lease: when the orchestration's process is gone (it failed, was killed,
    the machine rebooted), the next ``lock`` takes the lock over, with no hand
    unlock. A lease would have to outlast the longest step (a migration, a
    dependency install), which is also how long a crash would block the next
    deploy; a process is gone the moment it is. ``unlock`` frees only the lock
    its own process holds, so a refused deploy cannot free the running one's.
``hpd_deploy.resolve``
    the revision (branch, tag or full sha) resolved to its commit on one app
    host, against the site's repository as that host clones it, before any host
    changes; and the release id every host uses.
``hpd_deploy.health``
    the health gate: each app host's ``/health/``, straight at its address and
    port, until it reports the release.
``hpd_deploy.notify``
    the events ``hpd/deploy/<site>/<phase>`` on the master's bus.
``hpd_deploy.plan``
    what ``orch.deploy`` and ``orch.rollback`` do, computed once when they
    render: the hosts (the master's inventory), the lock taken, the hosts synced,
    the batches, the revision resolved, the release each host serves now.

The computations are plain functions (the ``_``-prefixed helpers and
:func:`release_id`), unit-tested; the public functions do the I/O.
"""

import datetime
import fcntl
import ipaddress
import json
import logging
import multiprocessing
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil
import salt.utils.user
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "hpd_deploy"

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SHA = re.compile(r"^[0-9a-f]{40}$")
#: Hex digits of the commit in a release id (as hpd_site's release ids).
RELEASE_SHA_DIGITS = 12
PHASES = ("start", "step", "finish", "rollback")
#: saltutil.runner runs a runner in a child process of this name when it drops
#: privileges to the master's user; the orchestration is then its parent.
RUNAS_CHILD_PREFIX = "saltutil-runas-"
#: The roles of the hosts a deploy touches, and the kinds of extension modules
#: it needs synced there.
DEPLOYED = ("app", "worker", "lb", "varnish")
SYNCED = ["saltutil.sync_modules", "saltutil.sync_states"]


def __virtual__():
    return __virtualname__


def _utc(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def _iso(timestamp):
    return _utc(timestamp).strftime("%Y-%m-%dT%H:%M:%SZ")


def _failed(ret):
    """``ret`` as a failure: the orchestration's ``salt.runner`` state fails (the
    job's return code), and so does ``salt-run`` (which exits with the return's
    ``retcode``)."""
    __context__["retcode"] = 1
    return {**ret, "retcode": 1}


def _name(value, key):
    if not (isinstance(value, str) and NAME.match(value)):
        raise SaltInvocationError(
            f"{key} must be a name of lower-case letters, digits, - and _ (got {value!r})")
    return value


# ---------------------------------------------------------------------------
# The release
# ---------------------------------------------------------------------------


def release_id(sha, when):
    """
    The id (directory name) of the release a deploy of commit ``sha`` makes,
    started at ``when`` (seconds since the epoch): ``<UTC time>-<12 hex digits
    of the sha>``, e.g. ``20261130T075527Z-4f6a0c2e9b1d``. Computed once per
    deploy, so every host builds the same one; names sort in deploy order (what
    keeping the last N and finding the previous release go by), and each deploy
    is a release of its own, a redeploy of the same commit after a rollback
    included.
    """
    if not (isinstance(sha, str) and SHA.match(sha)):
        raise SaltInvocationError(f"a release id needs a full commit sha, not {sha!r}")
    return f"{_utc(when).strftime('%Y%m%dT%H%M%SZ')}-{sha[:RELEASE_SHA_DIGITS]}"


def resolve(rev, host, repository=None, timeout=120):
    """
    The revision ``rev`` (a branch, a tag or a full commit sha) resolved on the
    app host ``host`` (a minion id) against the site's repository, as that host
    clones it (``repository``, default: the host's pillar ``site:repository``;
    as the app user: ``hpd_release.resolve``), and the release id of a deploy of
    it starting now.
    A revision the repository does not have is refused here, before any host
    changes (the error names it; ``salt-run`` exits 1).

    Returns ``{"rev", "sha", "release"}``.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_deploy.resolve main app1
    """
    _rev(rev)
    _name(host, "host")
    answers = __salt__["salt.execute"](host, "hpd_release.resolve", arg=[rev],
                                       kwarg={"repository": repository} if repository else None,
                                       tgt_type="list", timeout=timeout)
    answer = answers.get(host)
    if not (isinstance(answer, str) and SHA.match(answer)):
        reason = answer if answer else "no answer (is its minion up?)"
        return _failed({"Error": f"revision {rev!r} not resolved on {host}: {reason}"})
    return {"rev": rev, "sha": answer, "release": release_id(answer, time.time())}


# ---------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------


def _process_start(pid):
    """The start time of process ``pid`` (seconds since the epoch, 10 ms
    resolution), or None when there is no such process."""
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _holder_pid():
    """The PID of the process that runs the orchestration calling this runner."""
    if multiprocessing.current_process().name.startswith(RUNAS_CHILD_PREFIX):
        return os.getppid()
    return os.getpid()


def _identity():
    pid = _holder_pid()
    return {"pid": pid, "started": _process_start(pid)}


def _alive(record, start_of=_process_start):
    """Whether the process a lock record names still runs: the same PID, started
    at the same time (a PID the system has given to a new process is not it)."""
    started = start_of(record.get("pid"))
    return started is not None and started == record.get("started")


def _same_holder(record, identity):
    return (record.get("pid"), record.get("started")) == (identity["pid"], identity["started"])


def _refusal(site, env, record, now):
    """The message a deploy refused by a live lock gives, naming its holder."""
    minutes = int(max(0, now - record["since"]) // 60)
    what = f"rev {record.get('rev')!r}"
    if record.get("sha"):
        what += f" ({record['sha'][:RELEASE_SHA_DIGITS]})"
    if record.get("release"):
        what += f", release {record['release']}"
    return (f"deploy of {site} to {env} refused: {record.get('who')} has been deploying "
            f"{what} since {_iso(record['since'])} ({minutes} min), process "
            f"{record['pid']} on the master, job {record.get('jid')}")


def _lock_dir():
    path = os.path.join(__opts__["cachedir"], "hpd_deploy")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class _Guard:
    """An exclusive flock on the lock directory: one check-and-set at a time."""

    def __init__(self, directory):
        self.path = os.path.join(directory, ".guard")

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # A record nobody can read names no holder: it blocks no one.
        log.warning("hpd_deploy: unreadable lock %s (%s): taken as free", path, exc)
        return None
    return record if isinstance(record, dict) else None


def _write(path, record):
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)


def _lock_path(site, env):
    return os.path.join(_lock_dir(), f"{_name(site, 'site')}.{_name(env, 'env')}.lock")


def _who():
    """Who runs the deploy: the user Salt says published the job, else (a runner
    client that names none: Salt's "UNKNOWN") the user this process runs for
    (``sudo_<login>`` under sudo)."""
    user = globals().get("__user__")
    return user if user and user != "UNKNOWN" else salt.utils.user.get_specific_user()


def lock(site, env, rev=None, sha=None, release=None, rev_from=None):
    """
    Take the deploy lock of ``site`` in environment ``env`` for the process
    running this orchestration, recording who (the user who started it), since
    when, ``rev`` (as asked), where it came from (``rev_from``: ``deploy:rev``
    or ``site:rev``), ``sha`` and ``release``. Refused (``salt-run`` and
    the orchestration's state fail) while another live process holds it, with a
    message naming that holder; a lock whose holder is gone is taken over (and
    the takeover logged). Taking it again from the same process succeeds.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_deploy.lock example dev rev=main
    """
    path = _lock_path(site, env)
    me = _identity()
    now = time.time()
    with _Guard(os.path.dirname(path)):
        current = _read(path)
        mine = bool(current) and _same_holder(current, me)
        if current and not mine and _alive(current):
            return _failed({"Error": _refusal(site, env, current, now), "holder": current})
        if current and not mine:
            log.warning("hpd_deploy: lock of %s/%s held by process %s, which is gone: taken over",
                        site, env, current.get("pid"))
        record = {**me, "site": site, "env": env, "who": _who(),
                  "since": current["since"] if mine else now,
                  "rev": rev, "rev_from": rev_from, "sha": sha, "release": release,
                  "jid": globals().get("__jid__")}
        _write(path, record)
    return {"locked": True, "holder": record, "taken_over": None if mine else current}


def unlock(site, env, force=False):
    """
    Free the deploy lock of ``site`` in ``env`` if this orchestration's process
    holds it; a lock another live process holds is left alone (a deploy that
    was refused must not free the one that runs), which is not an error.
    ``force=True`` frees it whoever holds it: for a deploy whose process lives
    on but no longer deploys (``status`` names its jid: ``salt-run
    jobs.lookup_jid <jid>``); the record it freed is logged and returned.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_deploy.unlock example dev
        salt-run hpd_deploy.unlock example dev force=True
    """
    path = _lock_path(site, env)
    with _Guard(os.path.dirname(path)):
        current = _read(path)
        if current is None:
            return {"unlocked": False, "comment": f"{site}/{env} is not locked"}
        mine = _same_holder(current, _identity())
        if not (mine or force is True):
            return {"unlocked": False,
                    "comment": f"{site}/{env} is held by process {current.get('pid')}, "
                               "not this one: left alone (force=True frees it)"}
        os.remove(path)
    if mine:
        return {"unlocked": True, "comment": f"{site}/{env} unlocked"}
    log.warning("hpd_deploy: lock of %s/%s forced free by %s: it was %s", site, env, _who(),
                json.dumps(current, sort_keys=True))
    return {"unlocked": True, "comment": f"{site}/{env} forced free", "freed": current}


def status(site=None, env=None):
    """
    The deploy locks on this master, ``{"<site>/<env>": record}``, each with
    ``alive`` (whether its holder still runs: a lock whose holder is gone holds
    nothing back and is taken over by the next deploy). ``site``/``env`` narrow
    it down.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_deploy.status
    """
    found = {}
    directory = _lock_dir()
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".lock"):
            continue
        record = _read(os.path.join(directory, name))
        if record is None or (site and record.get("site") != site) or (
                env and record.get("env") != env):
            continue
        found[f"{record.get('site')}/{record.get('env')}"] = {**record, "alive": _alive(record)}
    return found


def _held(site, env):
    """The lock record this process holds for ``site``/``env``, or an error."""
    current = _read(_lock_path(site, env))
    if current is None or not _same_holder(current, _identity()):
        raise SaltInvocationError(
            f"no deploy of {site} to {env} holds the lock in this process "
            "(hpd_deploy.lock comes first)")
    return current


# ---------------------------------------------------------------------------
# Audit events
# ---------------------------------------------------------------------------


def _event(record, phase, now, step=None, result=None, comment=None):
    """The tag and data of a deploy event, from the lock's record."""
    if phase not in PHASES:
        raise SaltInvocationError(f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    data = {
        "site": record["site"],
        "env": record["env"],
        "release": record.get("release"),
        "rev": record.get("rev"),
        "rev_from": record.get("rev_from"),
        "sha": record.get("sha"),
        "who": record.get("who"),
        "since": _iso(record["since"]),
        "duration": round(now - record["since"], 3),
    }
    for key, value in (("step", step), ("result", result), ("comment", comment)):
        if value is not None:
            data[key] = value
    return f"hpd/deploy/{record['site']}/{phase}", data


def _progress(data, phase):
    """The line the operator sees for a deploy event."""
    what = " ".join(str(data[k]) for k in ("step", "comment") if data.get(k) is not None)
    return (f"[{data['site']}/{data['env']} {data.get('release')} +{data['duration']:.0f}s] "
            f"{phase}{': ' + what if what else ''}")


def notify(site, env, phase, step=None, result=None, comment=None):
    """
    Fire ``hpd/deploy/<site>/<phase>`` (``phase``: start, step, finish or
    rollback) on the master's event bus, with the release id, revision, sha and
    user of the deploy holding the lock (this orchestration's), the seconds since
    it took the lock (``duration``), and ``step``/``result``/``comment`` when
    given. Operators follow a deploy with ``salt-run state.event
    'hpd/deploy/*'``.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_deploy.notify example dev step step=migrate
    """
    tag, data = _event(_held(site, env), phase, time.time(), step, result, comment)
    __salt__["event.send"](tag, data)
    # The orchestration runs this runner in salt-run's own process: the
    # operator sees each step as it starts, not only the output at the end.
    print(_progress(data, phase), file=sys.stderr, flush=True)
    # Not "data": Salt's runner client judges a return with a "data" key as
    # state results, and the orchestration's step would fail.
    return {"tag": tag, "event": data}


# ---------------------------------------------------------------------------
# The health gate
# ---------------------------------------------------------------------------


def _address(host, entry):
    """Where the master reaches ``host``'s services: the address its inventory
    ``entry`` gives (an IPv4 address), else the first IPv4 address its name
    resolves to on the master; never what the host says of itself (its grains).
    ``(address, None)``, or ``(None, why)``."""
    given = (entry or {}).get("address") if isinstance(entry, dict) else None
    if given is not None:
        try:
            return str(ipaddress.IPv4Address(str(given))), None
        except ValueError:
            return None, f"inventory {host}:address: {given!r} is not an IPv4 address"
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return None, f"no address: none in the inventory and the name does not resolve ({exc})"
    return infos[0][4][0], None


def _verdict(status, body, release):
    """``(healthy, seen release, reason)`` for one answer of /health/."""
    try:
        seen = json.loads(body).get("release")
    except (ValueError, AttributeError):
        return False, None, f"HTTP {status}, not JSON with a release"
    if status != 200:
        return False, seen, f"HTTP {status} (release {seen})"
    if seen != release:
        return False, seen, f"reports release {seen}, not {release}"
    return True, seen, "healthy"


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _probe(url, release, timeout):
    """One GET of ``url`` (no proxy): ``(healthy, status, seen, reason)``."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, urllib.error.URLError) as exc:
        return False, None, None, f"no answer: {getattr(exc, 'reason', exc)}"
    healthy, seen, reason = _verdict(status, body, release)
    return healthy, status, seen, reason


def _wait_healthy(url, release, timeout, interval, passes):
    """Poll ``url`` until it answers healthy ``passes`` times in a row, or
    ``timeout`` seconds pass: the host's verdict as a dict."""
    start = time.monotonic()
    deadline = start + timeout
    streak = 0
    while True:
        last = _probe(url, release, max(1.0, min(10.0, deadline - time.monotonic())))
        streak = streak + 1 if last[0] else 0
        if streak >= passes or time.monotonic() + interval > deadline:
            break
        time.sleep(interval)
    healthy, status, seen, reason = last
    verdict = {"healthy": streak >= passes, "url": url, "status": status, "release": seen,
               "seconds": round(time.monotonic() - start, 3)}
    verdict["reason"] = reason if verdict["healthy"] else (
        f"not healthy within {timeout} s: {reason}")
    return verdict


def _gate(urls, release, timeout, interval, passes, unreachable=None):
    """Every host's verdict, polled at once; the gate's return. ``urls``: host ->
    its health URL; ``unreachable``: host -> why it has none (not healthy)."""
    with ThreadPoolExecutor(max_workers=max(1, len(urls))) as pool:
        futures = {host: pool.submit(_wait_healthy, url, release, timeout, interval, passes)
                   for host, url in urls.items()}
        hosts = {host: f.result() for host, f in futures.items()}
    for host, why in sorted((unreachable or {}).items()):
        hosts[host] = {"healthy": False, "url": None, "status": None, "release": None,
                       "seconds": 0, "reason": why}
    failed = {h: v["reason"] for h, v in sorted(hosts.items()) if not v["healthy"]}
    comment = ("; ".join(f"{h}: {r}" for h, r in failed.items()) if failed
               else f"{', '.join(sorted(hosts))} serve release {release}")
    return {"result": not failed, "release": release, "failed": failed, "hosts": hosts,
            "comment": comment}


def health(hosts, release, port, path="/health/", timeout=120, interval=0.5, passes=3):
    """
    The health gate. Polls ``http://<address>:<port><path>`` of each app host in
    ``hosts`` (minion ids; a string is one id) at once, straight at the host (no
    proxy, not through the load balancer), every ``interval`` seconds until it
    answers 200 with JSON whose ``release`` is ``release`` ``passes`` times in a
    row (a chain reload serves old and new workers side by side for a while), or
    ``timeout`` seconds pass. The address: the master's inventory's for the
    host, else where its name resolves on the master; never what the host says
    of itself (a compromised host could point the gate at another that answers
    well).

    Returns ``{"result", "release", "failed": {host: why}, "hosts": {host:
    {"healthy", "url", "status", "release", "seconds", "reason"}}, "comment"}``;
    when a host fails, ``result`` is False, the comment names each failed host
    and why, and ``salt-run`` (the orchestration's state) fails.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_deploy.health '[app1, app2]' 20261130T075527Z-4f6a0c2e9b1d 8000
    """
    if isinstance(hosts, str):
        hosts = [hosts]
    if not hosts:
        raise SaltInvocationError("hosts: name at least one app host")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise SaltInvocationError(f"port must be a TCP port number, not {port!r}")
    inventory = __salt__["hpd_trust.inventory"]()
    urls, unreachable = {}, {}
    for host in hosts:
        address, why = _address(host, inventory.get(host))
        if address:
            urls[host] = f"http://{address}:{port}{path}"
        else:
            unreachable[host] = why
    ret = _gate(urls, release, timeout, interval, passes, unreachable)
    return ret if ret["result"] else _failed(ret)


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------


def _rev(rev):
    if not (isinstance(rev, str) and rev.strip()):
        raise SaltInvocationError(
            f"deploy:rev must be a branch, a tag or a commit sha, not {rev!r}")
    return rev


def _deploy_rev(rev, facts, app):
    """``(revision, where it came from)`` of a deploy: ``deploy:rev`` when given,
    else the ``site:rev`` of the environment's app hosts ``app`` (what a
    highstate builds there), which they must agree on."""
    if rev is not None:
        return _rev(rev), "deploy:rev"
    revs = {facts[h].get("rev") for h in app}
    if len(revs) != 1 or None in revs:
        seen = ", ".join(f"{h}: {facts[h].get('rev')!r}" for h in app)
        raise SaltInvocationError(f"deploy:rev not given and the app hosts' site:rev differ "
                                  f"({seen}): name the revision with deploy:rev")
    return revs.pop(), "site:rev"


def _count(value, key):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SaltInvocationError(f"{key} must be a whole number >= 1, not {value!r}")
    return value


def _environment(inventory, env, skip=None):
    """``env`` checked against the inventory's app hosts (None: the one
    environment they are all in), and the inventory's hosts of it that a deploy
    touches (:data:`DEPLOYED`), sorted, but those ``skip`` names (each must be
    one of its app or worker hosts)."""
    if not isinstance(inventory, dict):
        raise SaltInvocationError("the master's inventory is not a mapping of minion ids")
    entries = {h: e for h, e in inventory.items() if isinstance(e, dict)}
    envs = sorted({str(e.get("env")) for e in entries.values()
                   if "app" in (e.get("roles") or [])})
    if not envs:
        raise SaltInvocationError("the master's inventory has no app host")
    if env is None:
        if len(envs) != 1:
            raise SaltInvocationError(f"deploy:env must name the environment (app hosts are in "
                                      f"{', '.join(envs)})")
        env = envs[0]
    elif env not in envs:
        raise SaltInvocationError(f"deploy:env {env!r} has no app host (app hosts are in "
                                  f"{', '.join(envs)})")
    hosts = sorted(h for h, e in entries.items() if e.get("env") == env
                   and set(e.get("roles") or []) & set(DEPLOYED))
    # Only app and worker hosts may be left out: a deploy that skipped an lb
    # host would switch app hosts it never drained there.
    switched = [h for h in hosts if {"app", "worker"} & set(entries[h].get("roles") or [])]
    skip = [] if skip is None else skip
    if not (isinstance(skip, list) and all(h in switched for h in skip)):
        raise SaltInvocationError(f"deploy:skip must be a list of app or worker hosts of "
                                  f"{env} ({', '.join(switched)}), not {skip!r}")
    return env, [h for h in hosts if h not in skip]


def _answered(facts, targets):
    """The answers of ``targets``; a host that did not answer stops the plan,
    named (deploy:skip leaves out a host out of the pool on purpose)."""
    silent = [h for h in targets if not isinstance(facts.get(h), dict)]
    if silent:
        raise SaltInvocationError(
            "no hpd_release.facts answer from " + "; ".join(
                f"{h} ({facts.get(h, 'no return')})" for h in silent)
            + ": deploy:skip names a host the deploy may leave out")
    return {h: facts[h] for h in targets}


def _hosts(inventory, facts, env):
    """The hosts of ``env`` that answered (``facts``: :func:`_answered`) by
    role, from the master's inventory (never from a host's answer), and the
    site, its app port and static directory from the answers."""
    roles = {role: sorted(h for h in facts if role in (inventory[h].get("roles") or []))
             for role in DEPLOYED}
    if not roles["app"]:
        raise SaltInvocationError(f"every app host of {env} is skipped")
    sites = sorted({str(facts[h].get("site")) for h in roles["app"] + roles["worker"]})
    if len(sites) != 1:
        raise SaltInvocationError(f"the app and worker hosts of {env} run sites {sites}: one "
                                  "site per environment")
    return {"site": sites[0], "env": env, "port": facts[roles["app"][0]].get("port"),
            "static_dir": facts[roles["app"][0]].get("static_dir"), **roles}


def _batches(hosts, size):
    return [hosts[i:i + size] for i in range(0, len(hosts), size)]


def _undo(batches):
    """For each batch, the hosts a deploy failing in it moves back, in order:
    that batch's first (out of the pool already), then the earlier batches
    from the last to the first, so each drain leaves hosts in the pool."""
    return [[h for b in reversed(batches[:n + 1]) for h in b] for n in range(len(batches))]


def _previous(answer, release=None):
    """The release a rollback of one host goes back to: ``release`` when named
    (it must be on the host), else the one the host names as its previous (the
    last that served before the serving one: ``hpd_release.facts``)."""
    have = answer["releases"]
    if release is not None:
        if release not in have:
            raise SaltInvocationError(f"release {release!r} is not on the host (it has "
                                      f"{', '.join(have)})")
        return release
    if answer.get("previous") is None:
        raise SaltInvocationError(f"no release served before {answer['current']!r} on the host")
    return answer["previous"]


def _rollback_targets(facts, hosts, release):
    targets, errors = {}, []
    for host in hosts:
        try:
            targets[host] = _previous(facts[host], release)
        except SaltInvocationError as exc:
            errors.append(f"{host}: {exc}")
    if errors:
        raise SaltInvocationError("; ".join(errors))
    return targets


def _out_of_pool(pools, lbs, app):
    """The refusal of a deploy while one of the ``app`` hosts is drained or in
    maintenance in the pool of one of the ``lbs`` (``pools``: their
    ``hpd_haproxy.statuses app`` answers), as a deploy that died midway leaves
    it, or while an lb host does not say; None when every one is in the pool."""
    out = [f"{host} is {pools[lb][host]} on {lb}" for lb in lbs
           if isinstance(pools.get(lb), dict) for host in app
           if pools[lb].get(host, "").split(" ")[0] in ("DRAIN", "MAINT")]
    silent = [lb for lb in lbs if not isinstance(pools.get(lb), dict)]
    if silent:
        out.append(f"no answer from {', '.join(silent)}")
    if not out:
        return None
    return ("app hosts out of the pool (" + "; ".join(out) + "), as a deploy that died midway "
            "leaves them: put each back once it serves what the others do (salt <lb> "
            "hpd_haproxy.ready app <host>), roll back (orch.rollback), or name it in deploy:skip")


def _facts(targets, timeout):
    """Each of ``targets``' ``hpd_release.facts`` answer (:func:`_answered`)."""
    return _answered(__salt__["salt.execute"](targets, "hpd_release.facts", tgt_type="list",
                                              timeout=timeout), targets)


def plan(rev=None, env=None, batch=1, release=None, rollback=False, skip=None, timeout=60):
    """
    What ``orch.deploy`` (``rev``; without it the app hosts' ``site:rev``,
    ``rev_from`` says which) or ``orch.rollback`` (``rollback=True``,
    ``release`` or each host's previous release) will do, computed once when it
    renders, before any host changes: the environment's app, worker, lb and
    varnish hosts (by the master's inventory; each must answer
    ``hpd_release.facts``, but those ``skip`` names), the app hosts in batches of
    ``batch`` (``undo``: for each batch, the hosts a failure in it moves back,
    in order; ``drain_last``: one batch holds every app host, so its drains
    empty the pool as asked), the deploy lock taken for this process, the
    revision resolved on the first app host (which migrates and pushes the
    static files) into the release id, and the release each host serves now
    (``previous``: where a failed deploy returns it; for a rollback, where it
    goes).

    A bad key, a refused lock or an unknown revision is an ``Error`` (and
    ``salt-run`` fails) before any host changes.

    CLI Example:

    .. code-block:: bash

        salt-run hpd_deploy.plan rev=main
    """
    try:
        _count(batch, "deploy:batch")
        if not rollback and rev is not None:
            _rev(rev)
        inventory = __salt__["hpd_trust.inventory"]()
        env, targets = _environment(inventory, env, skip)
        # The site names the lock: asked before the lock, with nothing changed
        # on any host (a refused deploy must not touch what the running one
        # loads); asked again once the lock is held and the hosts run this
        # tree's modules and states (one job; all 18 kinds of saltutil.sync_all
        # cost ~20 s).
        site = _hosts(inventory, _facts(targets, timeout), env)["site"]
    except SaltInvocationError as exc:
        return _failed({"Error": str(exc)})
    taken = lock(site, env, rev=rev, release=release)
    if "Error" in taken:
        return taken
    planned = _locked_plan(inventory, site, env, targets, rev, batch, release, rollback, timeout)
    if "Error" in planned:  # refused after all: the next deploy need not wait for this one
        unlock(site, env)
    return planned


def _locked_plan(inventory, site, env, targets, rev, batch, release, rollback, timeout):
    """The part of :func:`plan` that runs once this process holds the lock."""
    try:
        __salt__["salt.execute"](targets, SYNCED, arg=[[] for _ in SYNCED], tgt_type="list",
                                 timeout=timeout)
        facts = _facts(targets, timeout)
        hosts = _hosts(inventory, facts, env)
        if hosts["site"] != site:
            raise SaltInvocationError(f"the site of {env} changed from {site} to "
                                      f"{hosts['site']} while the deploy started")
        rev, rev_from = (None, None) if rollback else _deploy_rev(rev, facts, hosts["app"])
        refusal = None if rollback or not hosts["lb"] else _out_of_pool(
            __salt__["salt.execute"](hosts["lb"], "hpd_haproxy.statuses", arg=["app"],
                                     tgt_type="list", timeout=timeout), hosts["lb"], hosts["app"])
        if refusal:
            raise SaltInvocationError(refusal)
    except SaltInvocationError as exc:
        return _failed({"Error": str(exc)})
    lock(site, env, rev=rev, release=release, rev_from=rev_from)
    switched = hosts["app"] + hosts["worker"]
    if rollback:
        try:
            previous = _rollback_targets(facts, switched, release)
        except SaltInvocationError as exc:
            return _failed({"Error": f"rollback of {hosts['site']} in {hosts['env']} refused: "
                                     f"{exc}"})
        target = {"release": release or previous[hosts["app"][0]], "sha": None, "rev": None}
    else:
        target = resolve(rev, hosts["app"][0])
        if "Error" in target:
            return target
        previous = {h: facts[h]["current"] for h in switched}
        lock(hosts["site"], hosts["env"], rev=rev, sha=target["sha"],
             release=target["release"], rev_from=rev_from)
    who = _held(hosts["site"], hosts["env"])["who"]
    batches = _batches(hosts["app"], batch)
    return {**hosts, **target, "rev_from": rev_from, "who": who, "batches": batches,
            "undo": _undo(batches), "drain_last": len(batches) == 1, "previous": previous}
