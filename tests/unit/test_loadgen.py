"""Unit tests for benchmarks/loadgen.py (the load of deploy_under_load.py) against
a local server on loopback: plain HTTP and TLS with a Host other than the
address, Django's login dance, outcomes, periods and percentiles."""

import asyncio
import datetime
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import load_source

MODULE_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen.py"
SESSION = "s3cr3t-session"
TOKEN = "form-token-1"


@pytest.fixture(scope="module")
def lg():
    return load_source(MODULE_PATH)


class Site:
    """A Django-like site: / (anonymous), /account/ (needs the session cookie,
    else a redirect to the login), /accounts/login/ (a chunked form with a
    CSRF cookie and token; the POST checks both, the Referer, the password),
    /error (500), /slow (1.2 s), /wait (0.3 s). Records every request."""

    def __init__(self, tls_files=None):
        self.seen, self.in_flight, self.peak = [], 0, 0
        self.lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def reply(self, status, body=b"", headers=(), chunked=False):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 7):
                        part = body[i:i + 7]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                with site.lock:
                    site.seen.append((self.path, self.headers.get("Cookie"),
                                      self.headers.get("Host")))
                    site.in_flight += 1
                    site.peak = max(site.peak, site.in_flight)
                try:
                    self.route()
                finally:
                    with site.lock:
                        site.in_flight -= 1

            def route(self):
                cookie = self.headers.get("Cookie") or ""
                if self.path == "/":
                    self.reply(200, b"home")
                elif self.path == "/account/":
                    if f"sessionid={SESSION}" in cookie:
                        self.reply(200, b"account")
                    else:
                        self.reply(302, headers=[("Location", "/accounts/login/")])
                elif self.path == "/accounts/login/":
                    form = (f'<form method="post"><input type="hidden" '
                            f'name="csrfmiddlewaretoken" value="{TOKEN}"></form>').encode()
                    self.reply(200, form, [("Set-Cookie", "csrftoken=c00kie; Path=/")],
                               chunked=True)
                elif self.path == "/error":
                    self.reply(500, b"oops")
                elif self.path in ("/slow", "/wait"):
                    time.sleep(1.2 if self.path == "/slow" else 0.3)
                    self.reply(200, b"late")
                else:
                    self.reply(404)

            def do_POST(self):  # noqa: N802
                length = int(self.headers["Content-Length"])
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                site.seen.append(("POST " + self.path, self.headers.get("Cookie"),
                                  self.headers.get("Referer")))
                ok = (form.get("csrfmiddlewaretoken") == [TOKEN]
                      and "csrftoken=c00kie" in (self.headers.get("Cookie") or "")
                      and (self.headers.get("Referer") or "").endswith("/accounts/login/")
                      and form.get("password") == ["right"])
                if ok:
                    self.reply(302, headers=[
                        ("Location", "/account/"),
                        ("Set-Cookie", f"sessionid={SESSION}; HttpOnly; Path=/")])
                else:
                    self.reply(200, b"try again")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls_files:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls_files)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    server = Site()
    yield server
    server.close()


def self_signed(directory, name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def run_load(lg, target, rate, duration, **kwargs):
    async def go():
        load = lg.Load(target, rate, **kwargs)
        load.mark("idle")
        await load.run(duration)
        return load

    return asyncio.run(go())


def test_a_steady_mixed_load_sends_rate_times_duration_requests(lg, site):
    target = lg.Target(f"http://localhost:{site.port}/", connect_to="127.0.0.1")
    cookies = asyncio.run(lg.login(target, "loadtest", "right"))
    assert cookies["sessionid"] == SESSION
    site.seen.clear()
    load = run_load(lg, target, rate=120, duration=1, cookies=cookies, logged_in_share=0.25)
    report = load.report()["idle"]
    # (how many took over a second depends on the machine's load: not asserted here;
    # test_a_request_over_a_second_counts_as_slow_not_failed pins the count)
    assert report["requests"] == 120 and report["failures"] == 0
    assert report["logged_in"] == 30
    got = sorted(site.seen)
    assert got == sorted([("/account/", f"csrftoken=c00kie; sessionid={SESSION}",
                           f"localhost:{site.port}")] * 30
                         + [("/", None, f"localhost:{site.port}")] * 90)
    assert all(o.status == 200 for o in load.outcomes)
    assert 0 < report["p50"] <= report["p99"] <= report["max"]


def test_requests_go_out_on_schedule_while_earlier_ones_wait(lg, site):
    """Open loop: 0.3 s answers do not slow the rate (a closed loop would
    have sent 4 over one connection)."""
    target = lg.Target(f"http://127.0.0.1:{site.port}/wait")
    report = run_load(lg, target, rate=50, duration=1).report()["idle"]
    assert report["requests"] == 50 and report["failures"] == 0
    assert site.peak > 1 and len(site.seen) == 50


def test_every_non_2xx_3xx_answer_and_connection_error_is_a_failure(lg, site):
    errors = run_load(lg, lg.Target(f"http://127.0.0.1:{site.port}/error"), 20, 0.5).report()
    assert errors["idle"]["failures"] == 10 and errors["idle"]["failed_by"] == {"HTTP 500": 10}
    redirects = run_load(lg, lg.Target(f"http://127.0.0.1:{site.port}/account/"), 20,
                         0.5).report()
    assert redirects["idle"]["failures"] == 0  # a 302 is an answer
    site.close()
    refused = run_load(lg, lg.Target(f"http://127.0.0.1:{site.port}/"), 20, 0.5).report()
    assert refused["idle"]["failures"] == 10
    assert refused["idle"]["failed_by"] == {"ConnectionRefusedError": 10}


def test_a_request_over_a_second_counts_as_slow_not_failed(lg, site):
    report = run_load(lg, lg.Target(f"http://127.0.0.1:{site.port}/slow"), 4, 1).report()
    assert report["idle"]["slow"] == 4 and report["idle"]["failures"] == 0


def test_a_request_past_the_timeout_is_a_failure(lg, site):
    report = run_load(lg, lg.Target(f"http://127.0.0.1:{site.port}/slow"), 2, 1,
                      timeout=0.5).report()
    assert report["idle"]["failed_by"] == {"TimeoutError": 2}


def test_over_tls_the_host_and_server_name_are_the_urls_not_the_address(lg, tmp_path):
    server = Site(self_signed(tmp_path, "www.hpd.test"))
    try:
        target = lg.Target(f"https://www.hpd.test:{server.port}/", connect_to="127.0.0.1")
        cookies = asyncio.run(lg.login(target, "loadtest", "right"))
        referer = [s for s in server.seen if s[0].startswith("POST")][0][2]
        assert referer == f"https://www.hpd.test:{server.port}/accounts/login/"
        report = run_load(lg, target, 20, 0.5, cookies=cookies, logged_in_share=0.5).report()
        assert report["idle"]["requests"] == 10 and report["idle"]["failures"] == 0
        assert {s[2] for s in server.seen} - {referer} == {f"www.hpd.test:{server.port}"}
    finally:
        server.close()


def test_logins_are_a_share_of_the_load_and_succeed_with_a_session(lg, site):
    target = lg.Target(f"http://127.0.0.1:{site.port}/")
    cookies = asyncio.run(lg.login(target, "loadtest", "right"))
    form = asyncio.run(lg.login_form(target, "loadtest", "right"))
    site.seen.clear()
    load = run_load(lg, target, rate=40, duration=1, cookies=cookies, logged_in_share=0.3,
                    form=form, login_share=0.25)
    report = load.report()["idle"]
    assert (report["requests"], report["logins"], report["logged_in"]) == (40, 10, 12)
    assert report["failures"] == 0
    # One GET of the form, then each login posts it again.
    posts = [s for s in site.seen if s[0] == "POST /accounts/login/"]
    assert len(posts) == 10 and {cookie for _, cookie, _ in posts} == {"csrftoken=c00kie"}
    assert {o.status for o in load.outcomes if o.kind == "login"} == {302}


def test_a_login_without_a_session_is_a_failure(lg, site):
    target = lg.Target(f"http://127.0.0.1:{site.port}/")
    form = asyncio.run(lg.login_form(target, "loadtest", "wrong"))
    report = run_load(lg, target, 10, 1, form=form, login_share=0.5).report()["idle"]
    assert report["failures"] == 5 and report["failed_by"] == {"no session (HTTP 200)": 5}


def test_a_stopped_load_sends_no_more(lg, site):
    async def go():
        load = lg.Load(lg.Target(f"http://127.0.0.1:{site.port}/"), 20)
        run = asyncio.create_task(load.run(60))
        await asyncio.sleep(0.5)
        load.stop()
        await asyncio.wait_for(run, 5)
        return load

    assert 5 <= len(asyncio.run(go()).outcomes) <= 15


def test_a_wrong_password_is_a_login_failure(lg, site):
    target = lg.Target(f"http://127.0.0.1:{site.port}/")
    with pytest.raises(lg.LoginFailed, match="HTTP 200, no session"):
        asyncio.run(lg.login(target, "loadtest", "wrong"))


def test_periods_follow_the_marks(lg, site):
    async def go():
        load = lg.Load(lg.Target(f"http://127.0.0.1:{site.port}/"), 40)
        load.mark("idle")
        first = asyncio.create_task(load.run(1))
        await asyncio.sleep(0.5)
        load.mark("deploy")
        await first
        load.mark("idle")
        await load.run(0.5)
        return load

    load = asyncio.run(go())
    report = load.report()
    assert report["all"]["requests"] == 60
    assert report["idle"]["requests"] + report["deploy"]["requests"] == 60
    assert 0 < report["deploy"]["requests"] < 40 and report["idle"]["requests"] > 20
    boundary = next(at for at, label in load.marks if label == "deploy")
    first, second = load.outcomes[:40], load.outcomes[40:]
    assert [o.period for o in first] == ["idle" if o.sent < boundary else "deploy"
                                         for o in first]
    assert {o.period for o in second} == {"idle"}


def outcome(lg, latency, period="idle", status=200, error=None):
    return lg.Outcome(0.0, 0.0, latency, "anonymous", period, status, error)


def test_percentiles_are_nearest_rank(lg):
    values = [i / 1000 for i in range(1, 201)]  # 1..200 ms
    assert lg.percentile(values, 50) == 0.1 and lg.percentile(values, 99) == 0.198
    assert lg.percentile([0.5], 99) == 0.5 and lg.percentile([], 50) is None


def test_summarize_counts_per_period_and_overall(lg):
    outcomes = ([outcome(lg, 0.02) for _ in range(98)] + [outcome(lg, 1.5)]
                + [outcome(lg, 0.03, status=503)]
                + [outcome(lg, 0.04, "deploy"), outcome(lg, 10.0, "deploy", None, "Timeout")])
    report = lg.summarize(outcomes)
    assert report["idle"] == {"requests": 100, "failures": 1, "failed_by": {"HTTP 503": 1},
                              "slow": 1, "logged_in": 0, "logins": 0, "p50": 0.02, "p99": 0.03,
                              "max": 1.5, "max_lag": 0.0}
    assert report["deploy"]["failed_by"] == {"Timeout": 1} and report["deploy"]["slow"] == 1
    assert report["all"]["requests"] == 102 and report["all"]["failures"] == 2


@pytest.mark.parametrize("url", ["ftp://x/", "www.hpd.test", "https:///path"])
def test_bad_urls_are_refused(lg, url):
    with pytest.raises(ValueError, match="url must be"):
        lg.Target(url)


def test_a_request_in_flight_is_pending_neither_failed_nor_answered(lg):
    assert outcome(lg, 0.0, status=None).pending
    assert not outcome(lg, 0.1).pending and not outcome(lg, 0.1, status=None, error="x").pending


def test_priority_sets_the_calling_threads_nice_value_and_restores_it(lg):
    seen = {}

    def thread():
        me = threading.get_native_id()
        with lg.priority(7):
            seen["inside"] = os.getpriority(os.PRIO_PROCESS, me)
            child = threading.Thread(target=lambda: seen.setdefault(
                "started inside", os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
            child.start()
            child.join()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, me)

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    assert seen == {"inside": 7, "started inside": 7, "after": base}
    # Only that thread: this one kept its own.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


AUTOGROUP = "/proc/self/autogroup"


@pytest.mark.skipif(not os.path.exists(AUTOGROUP), reason="the kernel has no autogroups")
def test_session_priority_sets_the_sessions_autogroup_nice_value_and_restores_it():
    """In a session of its own, so this one's priority is never touched."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import loadgen\n"
        "read = lambda: open('/proc/self/autogroup').read().split('nice')[1].strip()\n"
        "before = read()\n"
        "with loadgen.session_priority(-7):\n"
        "    inside = read()\n"
        "print(before, inside, read())\n")
    out = subprocess.run([sys.executable, "-c", script, str(MODULE_PATH.parent)],
                         capture_output=True, text=True, check=True, start_new_session=True)
    assert out.stdout.split() == ["0", "-7", "0"]


def test_session_priority_does_nothing_without_autogroups(lg, tmp_path):
    with lg.session_priority(-7, autogroup=tmp_path / "absent"):
        pass
    assert not (tmp_path / "absent").exists()
