"""
A deploy's work on the hosts that is not a state (orch.deploy calls these
through ``salt.function``).

``hpd_release.resolve``
    a revision resolved to its commit against the site's repository, as the app
    user clones it: the check that a revision exists, before any host changes.
``hpd_release.log``
    a line in the host's release log (``<common:app_root>/log/releases.log``)
    for each release it switches to.
``hpd_release.mark``
    the datapoint ``deploys.<env>.<site>`` in Graphite (carbon on the
    monitoring host), for graphs to mark deploys with.
``hpd_release.facts``
    what a deploy plans with: the host's environment, roles, the release
    ``current`` points to, the releases it has and the one a rollback goes back
    to (the last that served before the current one, by the release log).
``hpd_release.push_static``
    a release's static files pushed to the CDN origin.
``hpd_release.prune``
    the releases beyond the newest N removed (those that never served first),
    never the serving or previous one.

The computations are plain functions (the ``_``-prefixed helpers), unit-tested.
"""

import datetime
import os
import pwd
import re
import shutil
import socket
import tempfile
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "hpd_release"

SHA = re.compile(r"^[0-9a-f]{40}$")
ACTIONS = ("deploy", "rollback")
#: The order in which git itself picks a ref for a short name (git-rev-parse(1),
#: "SPECIFYING REVISIONS"): a tag before a branch of the same name.
REF_PREFIXES = ("", "refs/", "refs/tags/", "refs/heads/", "refs/remotes/")


def __virtual__():
    return __virtualname__


def _ref_sha(refs, rev):
    """
    The commit ``rev`` names among ``refs`` (``git ls-remote``'s ``{ref name:
    sha}``), or None: a full ref name, ``HEAD``, or a short name looked up as
    git does (a tag before a branch); an annotated tag gives the commit it
    points to (its peeled ``^{}`` entry), not the tag object.
    """
    for prefix in REF_PREFIXES:
        name = prefix + rev
        if name in refs:
            return refs.get(f"{name}^{{}}", refs[name])
    return None


def _fetch_commit(repository, sha, user):
    """Whether commit ``sha`` is in ``repository``: fetched (depth 1) into a
    throw-away bare repository as ``user``, which is removed again."""
    scratch = tempfile.mkdtemp(prefix="hpd-resolve-")
    try:
        if user:
            entry = pwd.getpwnam(user)
            os.chown(scratch, entry.pw_uid, entry.pw_gid)
        __salt__["git.init"](scratch, bare=True, user=user)
        try:
            __salt__["git.fetch"](scratch, remote=repository, refspecs=sha, opts="--depth=1",
                                  user=user)
            return __salt__["git.rev_parse"](scratch, f"{sha}^{{commit}}", user=user) == sha
        except CommandExecutionError:
            return False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def resolve(rev, repository=None, user=None):
    """
    The full sha of the commit ``rev`` names in ``repository``: a branch or tag
    (``git ls-remote``, a tag before a branch of the same name as git picks), or
    a full 40-digit sha the repository has (fetched into a throw-away directory
    to check). An abbreviated sha is refused: the repository cannot be asked
    for one. An error names a revision the repository does not have.

    repository
        default: pillar ``site:repository`` (as the release checkout clones it).
    user
        who asks (whose keys and git configuration count), default: the app user
        (pillar ``common:app_user:name``).

    CLI Example:

    .. code-block:: bash

        salt app1 hpd_release.resolve main
    """
    if not (isinstance(rev, str) and rev.strip() and not rev.startswith("-")):
        raise SaltInvocationError(f"rev must be a branch, a tag or a commit sha, not {rev!r}")
    if repository is None:
        repository = __salt__["hpd.settings"]("site")["repository"]
    if user is None:
        user = __salt__["hpd.settings"]("common")["app_user"]["name"]
    if "git.ls_remote" not in __salt__:
        raise CommandExecutionError("git is not installed on this host (Salt's git module "
                                    "needs it)")
    refs = __salt__["git.ls_remote"](remote=repository, user=user)
    sha = _ref_sha(refs, rev)
    if sha:
        return sha
    if SHA.match(rev) and (rev in refs.values() or _fetch_commit(repository, rev, user)):
        return rev
    if re.fullmatch(r"[0-9a-f]{4,39}", rev):
        raise CommandExecutionError(
            f"revision {rev!r} is no branch or tag of {repository}; give a commit as its full "
            "40-digit sha")
    raise CommandExecutionError(f"revision {rev!r} is not in {repository}")


def _log_line(when, site, action, release, sha, rev, who):
    """One line of the release log: UTC time, site, action, then key=value."""
    if action not in ACTIONS:
        raise SaltInvocationError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    fields = [("site", site), ("release", release), ("sha", sha), ("rev", rev), ("who", who)]
    for key, value in fields:
        if value is not None and (not str(value) or re.search(r"\s", str(value))):
            raise SaltInvocationError(f"{key} must be one word, not {value!r}")
    if not site or not release:
        raise SaltInvocationError("site and release are required")
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rest = " ".join(f"{k}={v}" for k, v in fields[1:] if v is not None)
    return f"{stamp} {site} {action} {rest}\n"


def log(site, action, release, sha=None, rev=None, who=None, path=None):
    """
    Append a line to the host's release log: when (UTC), the site, ``action``
    (deploy or rollback), the release it now runs, and the ``sha``, ``rev`` and
    ``who`` of the deploy. One write (O_APPEND), so lines of concurrent writers
    never mix.

    path
        default: ``<common:app_root>/log/releases.log`` (made 0644, root's).

    CLI Example:

    .. code-block:: bash

        salt app1 hpd_release.log example deploy 20261130T075527Z-4f6a0c2e9b1d who=alice
    """
    line = _log_line(time.time(), site, action, release, sha, rev, who)
    if path is None:
        path = os.path.join(__salt__["hpd.settings"]("common")["app_root"], "log",
                            "releases.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return line.rstrip("\n")


def _carbon(graphite, peers):
    """Where carbon is: ``(host, port)`` from the host's ``highperf:graphite``
    settings, the environment's monitoring host when they name none; None
    without either (as the vitals push, salt/common/vitals.sls)."""
    host = graphite.get("host") or (sorted(peers.get("monitoring") or []) or [None])[0]
    return (host, graphite["port"]) if host else None


def mark(site, value=1):
    """
    Send the datapoint ``deploys.<env>.<site> <value> <now>`` to carbon (the
    monitoring host of this host's environment, or pillar
    ``highperf:graphite:host``), for graphs to mark deploys with (e.g. graphite's
    ``drawAsInfinite(deploys.dev.example)``). Without a carbon host it sends
    nothing and says so; when carbon does not take it, an ``ERROR: ...`` string
    and a non-zero return code.

    CLI Example:

    .. code-block:: bash

        salt app1 hpd_release.mark example
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", str(site)):
        raise SaltInvocationError(f"site must be a metric name part, not {site!r}")
    hpd = __pillar__.get("hpd") or {}
    graphite = __salt__["hpd.settings"]("highperf")["graphite"]
    carbon = _carbon(graphite, hpd.get("peers") or {})
    metric = f"deploys.{hpd.get('env')}.{site}"
    if carbon is None:
        return f"no carbon host (highperf:graphite:host, hpd:peers:monitoring): {metric} not sent"
    line = f"{metric} {value} {int(time.time())}\n"
    try:
        with socket.create_connection(carbon, timeout=graphite["timeout"]) as sock:
            sock.sendall(line.encode())
    except OSError as exc:
        __context__["retcode"] = 1
        return f"ERROR: could not send {metric} to carbon at {carbon[0]}:{carbon[1]}: {exc}"
    return line.rstrip("\n")


def _releases(root):
    """The release directories under ``<root>/releases``, oldest first (by the
    time each was made: the first release's name is a branch's, not a time)."""
    base = os.path.join(root, "releases")
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    found = [(os.lstat(os.path.join(base, n)).st_mtime, n) for n in names
             if os.path.isdir(os.path.join(base, n))]
    return [n for _, n in sorted(found)]


def _logged(text):
    """The releases the release log names, oldest line first: each served (the
    log gets its line when a deploy or rollback has finished)."""
    return [m.group(1) for m in re.finditer(r" release=(\S+)", text)]


def _read_log(root):
    """The releases ``<root>/log/releases.log`` names (none without a log)."""
    try:
        with open(os.path.join(root, "log", "releases.log"), encoding="utf-8") as fh:
            return _logged(fh.read())
    except FileNotFoundError:
        return []


def _served(releases, logged):
    """The releases (of ``releases``, oldest first) that served: those the log
    names, and those made before the first it names (a highstate's, before the
    log had lines); with an empty log, all of them."""
    first = next((i for i, r in enumerate(releases) if r in logged), len(releases))
    return [r for i, r in enumerate(releases) if i < first or r in logged]


def _previous(current, releases, logged):
    """The release a rollback from ``current`` goes back to: the last one that
    served before it (the newest the log names other than ``current``), else
    the newest that served made before it; one the host still has, or None.
    Not simply the one made before ``current``: that may be a release that
    failed its deploy and was rolled back."""
    for name in reversed(logged):
        if name != current and name in releases:
            return name
    before = releases[:releases.index(current)] if current in releases else []
    served = [r for r in _served(releases, logged) if r in before]
    return served[-1] if served else None


def facts():
    """
    What orch.deploy and orch.rollback plan with, from this host: its
    environment and roles, the site's name, static directory and ``site:rev``
    (what a deploy without deploy:rev deploys), the app's port, the release
    ``current`` points to (None without one), the releases it has, oldest
    first, and ``previous``: the one a rollback goes back to (the last that
    served before the current one; None without one).

    CLI Example:

    .. code-block:: bash

        salt -I 'hpd:roles:app' hpd_release.facts
    """
    hpd = __pillar__.get("hpd") or {}
    roles = list(hpd.get("roles") or [])
    root = __salt__["hpd.settings"]("common")["app_root"]
    current = os.path.join(root, "current")
    serving = os.path.basename(os.readlink(current)) if os.path.islink(current) else None
    releases = _releases(root)
    answer = {"env": hpd.get("env"), "roles": roles, "current": serving, "releases": releases,
              "previous": _previous(serving, releases, _read_log(root))}
    if "app" in roles or "worker" in roles:
        site = __salt__["hpd.settings"]("site")
        answer.update(site=site["name"], static_dir=site["static_dir"], rev=site["rev"])
    if "app" in roles:
        answer["port"] = __salt__["hpd.settings"]("app")["port"]
    return answer


def _prunable(releases, keep, protected, served):
    """The releases (of ``releases``, oldest first) to remove so that ``keep``
    remain: those that never served (not in ``served``) go first, oldest
    first, then the oldest that served; never one of ``protected`` (the
    serving and the previous release)."""
    if not isinstance(keep, int) or keep < 1:
        raise SaltInvocationError(f"deploy:keep must be a whole number of releases >= 1, "
                                  f"not {keep!r}")
    ranked = [r for r in releases if r not in served] + [r for r in releases if r in served]
    return [r for r in ranked[:max(0, len(releases) - keep)] if r not in protected]


def _unused_venvs(root):
    """The virtualenvs under ``<root>/venvs`` no release's ``venv`` link points
    to (releases share one per requirements: a venv outlives the release that
    built it while a newer release still uses it)."""
    base = os.path.join(root, "venvs")
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    linked = {os.path.realpath(os.path.join(root, "releases", r, "venv")) for r in _releases(root)}
    return sorted(n for n in names if os.path.realpath(os.path.join(base, n)) not in linked)


def prune(keep=5, protect=()):
    """
    Remove this host's oldest releases so that the newest ``keep`` remain,
    those that never served (the release log names them not: a failed deploy's)
    first; never the release ``current`` points to nor any in ``protect`` (the
    deploy's previous release); then the virtualenvs no remaining release
    uses. Returns what it removed: ``{"releases": [...], "venvs": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt app1 hpd_release.prune keep=5
    """
    root = __salt__["hpd.settings"]("common")["app_root"]
    serving = facts()["current"]
    releases = _releases(root)
    removed = _prunable(releases, keep, {serving, *protect},
                        _served(releases, _read_log(root)))
    for name in removed:
        shutil.rmtree(os.path.join(root, "releases", name))
    venvs = _unused_venvs(root)
    for name in venvs:
        shutil.rmtree(os.path.join(root, "venvs", name))
    return {"releases": removed, "venvs": venvs}


def _push_target(cdn, peers, site, static_url):
    """The rsync URL of the site's static files at the CDN origin."""
    hosts = sorted(peers.get("cdn") or [])
    if not hosts:
        raise SaltInvocationError("no CDN origin (hpd:peers:cdn) to push static files to")
    path = static_url.strip("/")
    target = f"rsync://{cdn['push']['user']}@{hosts[0]}:{cdn['push']['port']}/origin/{site}/"
    return f"{target}{path}/" if path else target


def push_static(release, password_file="/etc/hpd/cdn-push.password"):
    """
    Push the static files of ``release`` (hashed names, .gz and .br variants)
    to the CDN origin of this host's environment (rsync, never deleting: the
    serving release's files stay). A failed push gives a non-zero return code.

    CLI Example:

    .. code-block:: bash

        salt app1 hpd_release.push_static 20261130T075527Z-4f6a0c2e9b1d
    """
    site = __salt__["hpd.settings"]("site")
    root = __salt__["hpd.settings"]("common")["app_root"]
    target = _push_target(__salt__["hpd.settings"]("cdn"),
                          (__pillar__.get("hpd") or {}).get("peers") or {},
                          site["name"], site["static_url"])
    source = os.path.join(root, "releases", release, site["static_dir"]) + "/"
    out = __salt__["rsync.rsync"](source, target, passwordfile=password_file,
                                  additional_opts=["--mkpath"])
    if out.get("retcode"):
        __context__["retcode"] = 1
        return f"ERROR: push of {source} to {target} failed: {out.get('stderr')}"
    return f"{source} pushed to {target}"
