#!/usr/bin/env python
"""
A steady HTTP load for benchmarks/deploy_under_load.py: asyncio and the standard
library only.

Open loop: request i is sent at start + i/rate whether or not earlier ones have
been answered, so a server that stalls meets the same rate (and its stall shows
in the latencies) instead of slowing the client down with it. Each request is a
new connection (``Connection: close``), so every request's outcome is its own:
no retry on a reused connection hides a failure. A share of the requests is a
logged-in visitor's (the session cookie :func:`login` got, to ``--logged-in-path``),
a share logins (each one posts the :class:`LoginForm` again: Django writes a
session and the user's last_login, so these are the load's database writes, and
one succeeds only when a session cookie comes back), the rest anonymous (no
cookie, to the URL's path).

Each request's outcome is recorded: when it was sent, its latency (to the last
byte of the answer), its status or error, and the period it was sent in (the
label of the latest :meth:`Load.mark` before it). A failure is any answer other
than 2xx/3xx, or no answer (refused, reset, timed out); a slow request is one
that took over 1 s. :func:`summarize` gives per period: requests, failures (and
by status/error), slow requests, p50/p99/max latency.

    /opt/hpd-salt/venv/bin/python benchmarks/loadgen.py https://www.hpd.test/ \\
        --connect-to 10.77.0.10 --rate 100 --duration 30 \\
        [--logged-in-share 0.3 --user loadtest --password ...]
"""

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import re
import ssl
import sys
import threading
import time
import urllib.parse

SLOW = 1.0
#: Seconds a request may take before it counts as failed (no answer).
TIMEOUT = 10.0
#: Requests in flight at most; past it a request is not sent and counts as
#: failed: the server is that far behind.
MAX_IN_FLIGHT = 1000


@contextlib.contextmanager
def priority(nice):
    """The calling thread at CPU priority ``nice`` inside the block, back to
    its own after (Linux keeps a nice value per thread; threads and processes
    it starts inside inherit it). A load generator on the machine that runs
    the lab shares its CPUs: at -10 (root only) the client is not the one
    starved, and its own delays stay out of the latencies it measures."""
    thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, thread)
    os.setpriority(os.PRIO_PROCESS, thread, nice)
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, thread, before)


@contextlib.contextmanager
def session_priority(nice, autogroup="/proc/self/autogroup"):
    """This process's session at CPU priority ``nice`` inside the block, back
    to its own after. Where the kernel shares the CPUs out between sessions
    first (Linux's autogroups, for processes in no CPU cgroup of their own:
    a benchmark started from a shell on a machine without systemd), a
    thread's nice value only counts against the threads of its own session,
    not against the lab's services or salt-master in theirs: measured, a
    client at nice -10 was still up to 0.2 s late while a deploy kept the
    CPUs busy. Processes started in a new session are not affected. Nothing
    happens where the kernel has no autogroups."""
    path = pathlib.Path(autogroup)
    try:
        before = int(path.read_text().split("nice", 1)[1])
    except (OSError, IndexError, ValueError):
        yield
        return
    path.write_text(str(nice))
    try:
        yield
    finally:
        path.write_text(str(before))


class LoginFailed(Exception):
    pass


@dataclasses.dataclass
class Target:
    """Where requests go: the URL's scheme, Host (and TLS server name) and port;
    ``connect_to``, an address to connect to instead of the host's (as curl's
    --resolve), e.g. the lb host's address with Host www.hpd.test."""

    url: str
    connect_to: str | None = None
    verify: bool = False

    def __post_init__(self):
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port]/path, not {self.url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.path = parts.path or "/"
        self.origin = f"{parts.scheme}://{parts.netloc}"
        if self.tls:
            self.context = ssl.create_default_context()
            if not self.verify:  # the lab's self-signed certificate
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE


@dataclasses.dataclass
class Response:
    status: int
    headers: list  # [(lower-case name, value)]
    body: bytes

    def header(self, name):
        return [v for k, v in self.headers if k == name]


def _dechunk(data):
    """The body of a ``Transfer-Encoding: chunked`` answer."""
    body, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2:]
    return body


async def request(target, path, method="GET", cookies=None, headers=None, body=b"",
                  timeout=TIMEOUT):
    """One request on a new connection: its :class:`Response`. Connection
    errors and timeouts raise (OSError, asyncio.TimeoutError, ...)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {target.host}"
             + ("" if target.port == (443 if target.tls else 80) else f":{target.port}"),
             "Connection: close", "User-Agent: hpd-loadgen", "Accept-Encoding: identity"]
    if cookies:
        lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items()))
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")

    async def exchange():
        reader, writer = await asyncio.open_connection(
            target.connect_to or target.host, target.port,
            ssl=target.context if target.tls else None,
            server_hostname=target.host if target.tls else None)
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        return raw

    raw = await asyncio.wait_for(exchange(), timeout)
    head, sep, payload = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionError(f"incomplete answer ({len(raw)} bytes)")
    status_line, *header_lines = head.decode("iso-8859-1").split("\r\n")
    status = int(status_line.split()[1])
    parsed = [(k.strip().lower(), v.strip()) for k, _, v in
              (line.partition(":") for line in header_lines)]
    if any(k == "transfer-encoding" and "chunked" in v.lower() for k, v in parsed):
        payload = _dechunk(payload)
    return Response(status, parsed, payload)


def _cookies(response, jar):
    for value in response.header("set-cookie"):
        name, _, rest = value.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return jar


@dataclasses.dataclass(frozen=True)
class LoginForm:
    """Django's login form filled in, to post as often as wanted: the CSRF
    cookie and form token of one GET stay valid together."""

    path: str
    cookies: dict
    body: bytes

    async def post(self, target, timeout=TIMEOUT):
        """One login (as Django's LoginView expects: a Referer and Origin on
        https): the answer and its cookies over the form's, ``sessionid``
        among them when it succeeded."""
        answer = await request(target, self.path, "POST", cookies=self.cookies, body=self.body,
                               timeout=timeout, headers={
                                   "Content-Type": "application/x-www-form-urlencoded",
                                   "Referer": target.origin + self.path,
                                   "Origin": target.origin})
        return answer, _cookies(answer, dict(self.cookies))


async def login_form(target, username, password, path="/accounts/login/"):
    """The :class:`LoginForm` of ``path`` for these credentials (its GET)."""
    page = await request(target, path)
    jar = _cookies(page, {})
    found = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
    if page.status != 200 or not found or "csrftoken" not in jar:
        raise LoginFailed(f"GET {path}: HTTP {page.status}, no CSRF cookie and token")
    form = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrfmiddlewaretoken": found.group(1).decode()}).encode()
    return LoginForm(path, jar, form)


async def login(target, username, password, path="/accounts/login/"):
    """Log in and return the cookies, ``sessionid`` among them. LoginFailed
    when no session comes back."""
    form = await login_form(target, username, password, path)
    answer, jar = await form.post(target)
    if "sessionid" not in jar:
        raise LoginFailed(f"POST {path}: HTTP {answer.status}, no session")
    return jar


@dataclasses.dataclass
class Outcome:
    sent: float        # seconds since the load started
    lag: float         # seconds late against its schedule (the client's own delay)
    latency: float     # seconds to the whole answer, or to the error
    kind: str          # anonymous | logged-in | login
    period: str
    status: int | None = None
    error: str | None = None

    @property
    def pending(self):
        """Sent and not answered yet (nor failed)."""
        return self.status is None and self.error is None

    @property
    def failed(self):
        return self.error is not None or not 200 <= self.status < 400


class Load:
    """A steady load on ``target``: ``rate`` requests per second, a share
    ``logged_in_share`` of them with ``cookies`` to ``logged_in_path``, a share
    ``login_share`` posts of ``form`` (a :class:`LoginForm`)."""

    def __init__(self, target, rate, cookies=None, logged_in_share=0.0,
                 logged_in_path="/account/", timeout=TIMEOUT, max_in_flight=MAX_IN_FLIGHT,
                 form=None, login_share=0.0):
        if rate <= 0:
            raise ValueError("rate must be positive")
        if logged_in_share and not cookies:
            raise ValueError("logged-in requests need the cookies of a login")
        if login_share and not form:
            raise ValueError("logins need a login form")
        if logged_in_share + login_share > 1:
            raise ValueError("the logged-in and login shares add up to more than 1")
        self.target, self.rate, self.cookies = target, rate, cookies
        self.share, self.logged_in_path = logged_in_share, logged_in_path
        self.form, self.login_share = form, login_share
        self.timeout, self.max_in_flight = timeout, max_in_flight
        self.outcomes, self.marks, self.in_flight, self.peak = [], [], 0, 0
        self._start, self._stopped = None, False
        self._kinds = {"login": 0, "logged-in": 0, "anonymous": 0}

    def _now(self):
        return time.monotonic() - self._start

    def mark(self, label):
        """Requests sent from now on belong to period ``label``."""
        self.marks.append((self._now() if self._start is not None else 0.0, label))

    def _period(self, sent):
        label = "unmarked"
        for at, name in self.marks:
            if at <= sent:
                label = name
        return label

    def _kind(self):
        """The next request's kind: the one furthest behind its share (of n
        requests, each kind's count stays within 1 of n x its share)."""
        shares = {"login": self.login_share, "logged-in": self.share,
                  "anonymous": 1 - self.login_share - self.share}
        n = sum(self._kinds.values()) + 1
        kind = max(shares, key=lambda k: shares[k] * n - self._kinds[k])
        self._kinds[kind] += 1
        return kind

    async def _one(self, kind, scheduled):
        sent = self._now()
        outcome = Outcome(sent, max(0.0, sent - scheduled), 0.0, kind, self._period(sent))
        self.outcomes.append(outcome)
        if self.in_flight >= self.max_in_flight:
            outcome.error = f"not sent: {self.in_flight} requests in flight"
            return
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if kind == "login":
                answer, jar = await self.form.post(self.target, self.timeout)
            elif kind == "logged-in":
                answer = await request(self.target, self.logged_in_path, cookies=self.cookies,
                                       timeout=self.timeout)
            else:
                answer = await request(self.target, self.target.path, timeout=self.timeout)
            outcome.status = answer.status
            if kind == "login" and "sessionid" not in jar and not outcome.failed:
                outcome.error = f"no session (HTTP {answer.status})"
        except (OSError, ValueError, IndexError) as exc:  # TimeoutError is an OSError
            outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            outcome.latency = self._now() - sent
            self.in_flight -= 1

    def stop(self):
        """Send no more requests (:meth:`run` returns once those sent are
        done); from any thread."""
        self._stopped = True

    async def run(self, duration):
        """Send ``rate x duration`` requests on schedule, or until :meth:`stop`;
        return when every one is answered or has failed."""
        if self._start is None:
            self._start = time.monotonic()
        begin = self._now()
        tasks = []
        for i in range(int(round(duration * self.rate))):
            if self._stopped:
                break
            scheduled = begin + i / self.rate
            delay = scheduled - self._now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(self._kind(), scheduled)))
        await asyncio.gather(*tasks)

    def report(self):
        return summarize(self.outcomes)


def percentile(values, q):
    """The nearest-rank ``q``-th percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(outcomes, slow=SLOW):
    """Per period (and ``all``): requests, failures (by status or error), slow
    requests (over ``slow`` s), latency p50/p99/max (s), the logged-in and login
    requests and
    the client's worst lag against its schedule."""
    periods = {}
    for outcome in outcomes:
        for name in (outcome.period, "all"):
            periods.setdefault(name, []).append(outcome)
    report = {}
    for name, group in periods.items():
        latencies = [o.latency for o in group]
        causes = {}
        for o in group:
            if o.failed:
                cause = o.error.split(":")[0] if o.error else f"HTTP {o.status}"
                causes[cause] = causes.get(cause, 0) + 1
        report[name] = {
            "requests": len(group),
            "failures": sum(causes.values()),
            "failed_by": causes,
            "slow": sum(1 for o in group if o.latency > slow),
            "logged_in": sum(1 for o in group if o.kind == "logged-in"),
            "logins": sum(1 for o in group if o.kind == "login"),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
            "max_lag": max(o.lag for o in group),
        }
    return report


async def _main(args):
    target = Target(args.url, args.connect_to)
    cookies = await login(target, args.user, args.password) if args.user else None
    load = Load(target, args.rate, cookies, args.logged_in_share if cookies else 0.0)
    load.mark("run")
    await load.run(args.duration)
    return load.report()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--connect-to", help="address to connect to instead of the URL's host")
    parser.add_argument("--rate", type=float, default=100, help="requests per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds")
    parser.add_argument("--logged-in-share", type=float, default=0.3)
    parser.add_argument("--user", help="log in as this user for the logged-in requests")
    parser.add_argument("--password")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_main(args)), indent=2))


if __name__ == "__main__":
    sys.exit(main())
