"""
haproxy's runtime API, spoken over its admin socket (``stats socket ... level
admin``; the lb role's is ``/run/haproxy/admin.sock``), for a deploy to take an
app host out of the pool and back.

Salt 3008 ships no haproxy module (``haproxyconn`` moved to the community
extensions and needs the ``haproxyctl`` library, which the wheelhouse lacks), so
this one talks to the socket itself: one command per connection, the answer
read to its end.

``hpd_haproxy.state``
    a server's state (``UP``, ``DRAIN``, ``MAINT``, ``DOWN``...) and current
    sessions, from ``show stat``.
``hpd_haproxy.drain``
    ``set server <backend>/<server> state drain`` (no new requests), then wait
    until its current sessions are 0; refused for the backend's last server
    that is UP (unless ``last=True``).
``hpd_haproxy.ready``
    ``set server <backend>/<server> state ready`` (back in the pool), then wait
    until haproxy has it UP.
``hpd_haproxy.responses``
    a backend's (or server's) responses so far, by status class, from
    ``show stat`` (the error-rate beacon reads them).

The parsing is in plain functions (``_``-prefixed), unit-tested.
"""

import csv
import io
import socket
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "hpd_haproxy"

SOCKET = "/run/haproxy/admin.sock"
#: Answers of haproxy that say a command failed (it answers nothing on success).
_FAILED = ("Unknown command", "No such", "Require ", "not found", "Permission denied",
           "Invalid ", "failed")


def __virtual__():
    return __virtualname__


def command(cmd, socket_path=SOCKET, timeout=10):
    """
    Send one command to haproxy's runtime API and return its answer (text).

    CLI Example:

    .. code-block:: bash

        salt lb hpd_haproxy.command 'show servers state app'
    """
    if not isinstance(cmd, str) or not cmd.strip() or "\n" in cmd or ";" in cmd:
        raise SaltInvocationError(f"cmd must be one runtime API command, not {cmd!r}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(socket_path)
            conn.sendall(cmd.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise CommandExecutionError(f"haproxy's runtime API at {socket_path}: {exc}") from None
    return b"".join(chunks).decode(errors="replace")


def _stat_rows(text):
    """``show stat``'s CSV (its header line starts with ``# ``) as dicts."""
    lines = text.lstrip("# ").splitlines()
    return [row for row in csv.DictReader(io.StringIO("\n".join(lines))) if row.get("pxname")]


def _row(backend, server, socket_path):
    """The ``show stat`` row of ``server`` in ``backend`` (``BACKEND``: the
    backend's own); an error when haproxy has none."""
    for row in _stat_rows(command("show stat", socket_path)):
        if row["pxname"] == backend and row["svname"] == server:
            return row
    raise CommandExecutionError(f"haproxy has no server {backend}/{server}")


def state(backend, server, socket_path=SOCKET):
    """
    The state of ``server`` in ``backend``: ``{"status", "sessions", "weight",
    "check"}``, ``status`` as haproxy's stats show it (``UP``, ``DRAIN``,
    ``MAINT``, ``DOWN``, ``UP 1/2``...), ``sessions`` its current sessions.
    An error when haproxy has no such server.

    CLI Example:

    .. code-block:: bash

        salt lb hpd_haproxy.state app app1
    """
    row = _row(backend, server, socket_path)
    return {
        "status": row["status"],
        "sessions": int(row["scur"] or 0),
        "weight": int(row["weight"] or 0),
        "check": row.get("check_status") or None,
    }


def _servers(rows, backend):
    """{server: status} of ``backend``'s servers in ``show stat`` rows."""
    return {r["svname"]: r["status"] for r in rows
            if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}


def statuses(backend, socket_path=SOCKET):
    """
    ``{server: status}`` of every server of ``backend`` (``UP``, ``DRAIN``,
    ``MAINT``, ``DOWN``...; {} when haproxy has no such backend).

    CLI Example:

    .. code-block:: bash

        salt lb hpd_haproxy.statuses app
    """
    return _servers(_stat_rows(command("show stat", socket_path)), backend)


#: Response counters of `show stat`, by status class.
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


def responses(backend, server="BACKEND", socket_path=SOCKET):
    """
    The responses ``server`` of ``backend`` gave since haproxy started, by
    status class: ``{"1xx", "2xx", "3xx", "4xx", "5xx", "other"}``. The
    default, ``BACKEND``, counts the backend's own answers too (a 503 with no
    server up). An error when haproxy has no such backend or server.

    CLI Example:

    .. code-block:: bash

        salt lb hpd_haproxy.responses app
    """
    row = _row(backend, server, socket_path)
    return {c: int(row.get(f"hrsp_{c}") or 0) for c in _CLASSES}


def _set_state(backend, server, wanted, socket_path):
    answer = command(f"set server {backend}/{server} state {wanted}", socket_path).strip()
    if answer and any(word in answer for word in _FAILED):
        raise CommandExecutionError(f"set server {backend}/{server} state {wanted}: {answer}")


def _wait(read, done, timeout, interval):
    """Call ``read()`` (a server's state) until ``done(state)`` or ``timeout``
    seconds pass; ``(done, last state, seconds waited)``."""
    start = time.monotonic()
    while True:
        now = read()
        if done(now):
            return True, now, time.monotonic() - start
        if time.monotonic() - start + interval > timeout:
            return False, now, time.monotonic() - start
        time.sleep(interval)


def _last_up(rows, backend, server):
    """The refusal of draining ``server`` when it is the last server of
    ``backend`` that is UP (the others DRAIN, MAINT, DOWN...: draining it would
    empty the pool), else None. A server haproxy has no row for is left to the
    ``set server`` command to refuse."""
    servers = _servers(rows, backend)
    if not servers.get(server, "").startswith("UP"):
        return None
    others = {name: status for name, status in sorted(servers.items()) if name != server}
    if any(status.startswith("UP") for status in others.values()):
        return None
    states = ", ".join(f"{n} is {s}" for n, s in others.items()) or "it is the only server"
    return (f"refusing to drain {backend}/{server}: it is the last server of backend "
            f"{backend} that is UP ({states}); last=True drains it anyway")


def drain(backend, server, timeout=60, interval=0.2, socket_path=SOCKET, last=False):
    """
    Take ``server`` of ``backend`` out of the pool (``state drain``: haproxy
    sends it no new requests and keeps checking its health), then wait until
    its current sessions are 0, polling every ``interval`` seconds. After
    ``timeout`` seconds with sessions left, ``drained`` is False and the return
    code non-zero; the server stays drained.

    Refused (an error, nothing changed) when ``server`` is the last server of
    ``backend`` that is UP, the others drained, in maintenance or down: the
    pool would be empty. ``last=True`` drains it anyway.

    Returns ``{"drained", "status", "sessions", "seconds"}``.

    CLI Example:

    .. code-block:: bash

        salt lb hpd_haproxy.drain app app1 timeout=30
    """
    if not last:
        refusal = _last_up(_stat_rows(command("show stat", socket_path)), backend, server)
        if refusal:
            raise CommandExecutionError(refusal)
    _set_state(backend, server, "drain", socket_path)
    drained, seen, waited = _wait(lambda: state(backend, server, socket_path),
                                  lambda now: now["sessions"] == 0, timeout, interval)
    if not drained:
        __context__["retcode"] = 1
    return {"drained": drained, "status": seen["status"], "sessions": seen["sessions"],
            "seconds": round(waited, 3)}


def ready(backend, server, timeout=30, interval=0.2, socket_path=SOCKET):
    """
    Put ``server`` of ``backend`` back in the pool (``state ready``), then wait
    until haproxy has it UP (a server its health checks took down rises only
    after ``rise`` good checks), polling every ``interval`` seconds: the next
    host's drain counts it as in the pool. Returns its state (as
    :func:`state`); still not UP after ``timeout`` seconds, the return code is
    non-zero.

    CLI Example:

    .. code-block:: bash

        salt lb hpd_haproxy.ready app app1
    """
    _set_state(backend, server, "ready", socket_path)
    up, seen, _ = _wait(lambda: state(backend, server, socket_path),
                        lambda now: now["status"].startswith("UP"), timeout, interval)
    if not up:
        __context__["retcode"] = 1
    return seen
