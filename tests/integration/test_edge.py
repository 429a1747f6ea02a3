"""The edge on real hosts: haproxy and Varnish on the lb host in front of the app
hosts' uWSGI, reached from the machine like a visitor would.

A request: https://www.hpd.test (the lb's address) -> haproxy (TLS) -> Varnish ->
haproxy's app pool -> uWSGI on app1/app2. Tests that break something (uWSGI
stopped, a bad pillar) put it back.
"""

import json
import re
import ssl
import time
import uuid

import pytest
from conftest import claimed_address, haproxy_app, settled
from hpdlab.web import DOMAIN, fetch, login

pytestmark = pytest.mark.lab

TOOL = "/usr/local/sbin/hpd-haproxy"
MANAGE = "/usr/local/sbin/example-manage"  # the site's manage.py (salt/site)
UWSGI = "uwsgi-emperor"
VCL = "/etc/varnish/default.vcl"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"


@pytest.fixture(scope="module")
def lb(lab, highstate):
    """The lb host (settled: its first highstate failed nothing) and its address."""
    host = settled(lab, highstate, "lb")
    return host, lab.address(host)


def purge(lab, host, address, path="/"):
    """PURGE sent from a lab host to `address`; the status haproxy/Varnish answered."""
    out = lab.exec(host, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PURGE",
                   "--resolve", f"{DOMAIN}:443:{address}", f"https://{DOMAIN}{path}")
    return int(out.stdout)


def wait_for(what, check, timeout=120, interval=1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)


def varnish_backend_health(lab, host):
    """'healthy' or 'sick': Varnish's view of its backend (haproxy's app pool)."""
    listing = lab.exec(host, "varnishadm", "backend.list").stdout
    return re.search(r"\b(healthy|sick)\b", listing).group(1)


def servers(lab, host):
    """{server: status} of haproxy's backend app, from the runtime API's stats."""
    return {name: s["status"] for name, s in haproxy_app(lab, host).items() if name != "BACKEND"}


def active_vcl(lab, host):
    """The name of the VCL the running Varnish uses."""
    listing = lab.exec(host, "varnishadm", "vcl.list").stdout.splitlines()
    return next(line.split()[-1] for line in listing if line.startswith("active"))


def state_result(returned, state_id):
    return next(r for r in returned.values() if r["__id__"] == state_id)


# ---------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------


def test_the_anonymous_page_then_a_varnish_hit(lab, lb):
    host, address = lb
    assert purge(lab, host, "127.0.0.1") == 200
    status, headers, body = fetch(address)
    assert status == 200, body
    assert "Welcome" in body and headers["x-cache"] == "miss"
    assert "set-cookie" not in headers
    time.sleep(1.2)  # Age counts whole seconds
    status, again, body_again = fetch(address)
    assert status == 200
    assert again["x-cache"] == "hit" and int(again["age"]) > 0, again
    assert body_again == body


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
REQUEST_LOG = "/srv/hpd/log/example-access.log"


def test_each_request_gets_an_id_the_app_hosts_log_and_the_client_gets(lab, lb):
    """haproxy stamps every request (a client's own id replaced), Varnish passes
    it, uWSGI's request line ends with it, and the response returns it; a
    Varnish hit returns its own request's id, not the cached one's."""
    _, address = lb
    path = f"/?id-test={uuid.uuid4().hex}"  # a URL Varnish has not cached: a miss
    forged = "forged-" + uuid.uuid4().hex
    status, headers, _ = fetch(address, path, headers={"X-Request-ID": forged})
    assert status == 200 and headers["x-cache"] == "miss", headers
    first = headers["x-request-id"]
    assert UUID.fullmatch(first), first
    deadline = time.monotonic() + 10  # uWSGI writes the line after the response
    while (logged := {host: lab.exec(host, "grep", "-c", f"id={first}$", REQUEST_LOG,
                                     check=False).stdout.strip()
                      for host in lab.hosts_with("app")}) and "1" not in logged.values():
        assert time.monotonic() < deadline, logged
        time.sleep(1)
    assert sorted(logged.values()) == ["0"] * (len(logged) - 1) + ["1"], logged
    assert not any(lab.exec(host, "grep", "-q", forged, REQUEST_LOG, check=False).returncode == 0
                   for host in lab.hosts_with("app"))
    status, again, _ = fetch(address, path)
    assert again["x-cache"] == "hit" and UUID.fullmatch(again["x-request-id"])
    assert again["x-request-id"] != first


def test_plain_http_redirects_to_https_and_https_says_hsts(lb):
    _, address = lb
    status, headers, _ = fetch(address, "/some/page/?a=1", tls=False)
    assert status == 301 and headers["location"] == f"https://{DOMAIN}/some/page/?a=1"
    _, headers, _ = fetch(address)
    assert headers["strict-transport-security"] == "max-age=31536000"


def test_the_naked_domain_redirects_to_www(lb):
    _, address = lb
    status, headers, _ = fetch(address, "/about/?x=2", host="hpd.test")
    assert status == 301 and headers["location"] == f"https://{DOMAIN}/about/?x=2"


def test_the_certificate_is_made_for_the_sites_domains(lab, lb):
    host, address = lb
    pem = ssl.get_server_certificate((address, 443))
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [DOMAIN, "hpd.test"]
    key = lab.exec(host, "stat", "-c", "%U %a", "/etc/haproxy/certs/site.pem.key").stdout
    assert key.split() == ["root", "600"]


def test_files_the_app_never_serves_are_answered_by_varnish(lb):
    _, address = lb
    status, headers, _ = fetch(address, "/wp-content/logo.png")
    assert status == 404 and headers.get("server") == "Varnish"
    # The site's own static files (uWSGI serves site:static_url /static/) pass.
    status, _, body = fetch(address, "/static/hpdexample/site.css")
    assert status == 200, body


def test_a_logged_in_visitor_passes_to_django(lab, lb):
    _, address = lb
    app = lab.hosts_with("app")[0]
    password = uuid.uuid4().hex
    lab.exec(app, "env", f"HPD_USER_PASSWORD={password}", MANAGE, "ensure_user", "edgetest")
    status, headers, _ = fetch(address, "/accounts/login/")
    assert status == 200 and headers["x-cache"] == "miss"
    session = login(address, "edgetest", password)
    for _ in range(2):  # never from the cache: each one is Django's
        status, headers, page = fetch(address, "/account/",
                                      headers={"Cookie": f"sessionid={session}"})
        assert status == 200 and '<span class="username">edgetest</span>' in page
        assert headers["x-cache"] == "miss" and headers["age"] == "0"
    # Without the cookie, the same URL is Django's login redirect, not a cached copy.
    status, headers, _ = fetch(address, "/account/")
    assert status == 302 and headers["location"].startswith("/accounts/login/")


def test_purge_from_the_acl_and_405_from_elsewhere(lab, lb):
    host, address = lb
    fetch(address)
    outsider = lab.hosts_with("worker")[0]
    assert purge(lab, outsider, address) == 405
    _, headers, _ = fetch(address)
    assert headers["x-cache"] == "hit"
    assert purge(lab, host, "127.0.0.1") == 200
    _, headers, _ = fetch(address)
    assert headers["x-cache"] == "miss"


def test_varnish_storage_is_sized_from_the_hosts_ram(lab, lb):
    host, _ = lb
    expected = lab.salt(host, "highperf.varnish_tune")[host]["storage_mb"]
    unit = lab.exec(host, "systemctl", "show", "-p", "ExecStart", "varnish").stdout
    assert f"-s malloc,{expected}m" in unit


# ---------------------------------------------------------------------------
# The app hosts down: grace, then the site's error page
# ---------------------------------------------------------------------------


@pytest.fixture
def app_hosts_stopped(lab, lb):
    apps = lab.hosts_with("app")
    host, _ = lb
    yield apps
    for app in apps:
        lab.exec(app, "systemctl", "enable", "--now", UWSGI)
    wait_for("Varnish to see its backend healthy again",
             lambda: varnish_backend_health(lab, host) == "healthy", timeout=180)


def test_grace_serves_the_stale_page_then_the_sites_error_page(lab, lb, app_hosts_stopped):
    host, address = lb
    assert purge(lab, host, "127.0.0.1") == 200
    status, headers, page = fetch(address)
    assert status == 200 and headers["x-cache"] == "miss"
    ttl = int(re.search(r"max-age=(\d+)", headers["cache-control"]).group(1))
    cached_at = time.monotonic()
    # Disabled, not only stopped: the heal reactor starts a stopped one again.
    for app in app_hosts_stopped:
        lab.exec(app, "systemctl", "disable", "--now", UWSGI)
    wait_for("Varnish to see its backend sick",
             lambda: varnish_backend_health(lab, host) == "sick", timeout=120)
    time.sleep(max(0.0, ttl + 2 - (time.monotonic() - cached_at)))
    status, headers, stale = fetch(address)
    assert status == 200 and stale == page
    assert int(headers["age"]) > ttl, headers
    # A page Varnish does not have: the site's own error page (what its
    # generate_500_html rendered on the app hosts), not Varnish's.
    status, headers, error = fetch(address, f"/?never-cached={uuid.uuid4().hex}")
    assert status == 503, error
    rendered = lab.exec(app_hosts_stopped[0], "cat", "/srv/hpd/current/500.html").stdout
    assert error == rendered and "Something went wrong" in error
    assert "Guru Meditation" not in error


# ---------------------------------------------------------------------------
# The pool and the runtime API
# ---------------------------------------------------------------------------


def test_the_pool_is_the_app_hosts_at_the_inventorys_addresses(lab, lb):
    """An app host that claims another's address (its grains, what the mine once
    published) changes nothing: the pool's addresses are the inventory's."""
    host, _ = lb
    apps = lab.hosts_with("app")
    assert sorted(servers(lab, host)) == apps
    config = lab.exec(host, "cat", HAPROXY_CFG).stdout
    for app in apps:
        assert f" {lab.address(app)}:" in config, f"{app} not at its inventory address"
    with claimed_address(lab, apps[0], lab.address(apps[-1])):
        returned = lab.salt(host, "state.apply", "lb")[host]
        assert isinstance(returned, dict), returned
        changed = [r["__id__"] for r in returned.values() if r["changes"]]
        assert not changed and all(r["result"] for r in returned.values()), changed
        assert lab.exec(host, "cat", HAPROXY_CFG).stdout == config
    assert sorted(servers(lab, host)) == apps


def test_a_drained_server_stays_drained_across_a_reload(lab, lb):
    host, _ = lb
    app = lab.hosts_with("app")[0]
    lab.exec(host, TOOL, "set", "server", f"app/{app}", "state", "drain")
    try:
        assert servers(lab, host)[app] == "DRAIN"
        lab.exec(host, "systemctl", "reload", "haproxy")
        assert wait_for("the reloaded haproxy's stats", lambda: servers(lab, host))[app] == "DRAIN"
    finally:
        lab.exec(host, TOOL, "set", "server", f"app/{app}", "state", "ready")
    wait_for(f"{app} up again", lambda: servers(lab, host)[app] == "UP", timeout=30)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("sls", "pillar", "state_id", "says"), [
    ("varnish", {"varnish": {"vcl": {"recv": "set req.http.X-Broken = ;"}}},
     "varnish-vcl-file-managed", "VCL compilation failed"),
    ("lb", {"lb": {"backend_options": ["no-such-keyword on"]}},
     "lb-haproxy-config-file-managed", "unknown keyword 'no-such-keyword'"),
])
def test_a_broken_fragment_is_refused_and_the_running_config_serves(lab, lb, sls, pillar,
                                                                     state_id, says):
    host, address = lb
    files = lab.exec(host, "cat", VCL, HAPROXY_CFG).stdout
    vcl = active_vcl(lab, host)
    returned = lab.salt(host, "state.apply", sls, "pillar=" + json.dumps(pillar))[host]
    result = state_result(returned, state_id)
    assert result["result"] is False and says in result["comment"], result["comment"]
    assert lab.exec(host, "cat", VCL, HAPROXY_CFG).stdout == files
    assert active_vcl(lab, host) == vcl
    status, _, _ = fetch(address)
    assert status == 200


@pytest.mark.parametrize(("sls", "pillar", "key"), [
    ("lb", {"lb": {"maxconn": "lots"}}, "lb:maxconn"),
    ("varnish", {"varnish": {"grace": "6h"}}, "varnish:grace"),
    ("varnish", {"varnish": {"purge_acl": ["10.0.0.300"]}}, "varnish:purge_acl:0"),
])
def test_a_wrong_type_is_refused_at_render_naming_the_key(lab, lb, sls, pillar, key):
    host, _ = lb
    files = lab.exec(host, "cat", VCL, HAPROXY_CFG).stdout
    returned = lab.salt(host, "state.apply", sls, "pillar=" + json.dumps(pillar))[host]
    assert isinstance(returned, list), f"states ran despite a bad pillar: {returned}"
    assert any(key in line for line in returned), returned
    assert lab.exec(host, "cat", VCL, HAPROXY_CFG).stdout == files
