"""hpd_edge: haproxy's app pool (inventory, names, last known pool) and the values
the VCL is written from."""

import json
import re
from pathlib import Path

import pytest
import salt.utils.yaml
from conftest import load_source
from salt.exceptions import CommandExecutionError

REPO = Path(__file__).resolve().parents[2]


EDGE = load_source("_modules/hpd_edge.py")


def varnish_settings(**pillar):
    schema = salt.utils.yaml.safe_load((REPO / "pillar/varnish/schema.yaml").read_text())
    return load_source("_modules/hpd.py").check(schema, pillar, "varnish")


# ---------------------------------------------------------------------------
# The app pool
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("found", "expected"), [
    (["127.0.1.1", "10.0.0.21"], "10.0.0.21"),
    (["10.0.0.21", "10.0.0.99"], "10.0.0.21"),
    ("10.0.0.21", "10.0.0.21"),
    (["::1", "fe80::1", "0.0.0.0", "10.0.0.21"], "10.0.0.21"),
    (["127.0.0.1"], None),
    ([], None),
    (None, None),
    ({"not": "a list"}, None),
    (["garbage"], None),
])
def test_a_hosts_address_is_its_first_ipv4_address_that_is_not_loopback(found, expected):
    assert EDGE._private_address(found) == expected


def test_the_pool_is_the_inventorys_app_hosts_at_the_addresses_found():
    pool, missing = EDGE._app_pool(
        ["app2", "app1"],
        {"app1": "10.0.0.21", "app2": "10.0.0.22", "intruder": "10.0.0.66"},
        {"app1": "10.0.0.99", "gone": "10.0.0.50"})
    # What was found wins over the last known address; a minion the inventory
    # does not list never joins; one it dropped leaves.
    assert pool == {"app1": "10.0.0.21", "app2": "10.0.0.22"}
    assert missing == []


def test_a_host_without_an_address_keeps_its_last_known_one():
    pool, missing = EDGE._app_pool(["app1", "app2", "app3"],
                                   {"app1": "10.0.0.31", "app2": None, "app3": None},
                                   {"app2": "10.0.0.22"})
    assert pool == {"app1": "10.0.0.31", "app2": "10.0.0.22"}
    assert missing == ["app3"]


@pytest.fixture
def loaded(tmp_path):
    """The module as the loader would give it: pillar, a resolver (hpd.resolve)
    that knows ``names``, a known pool file; no mine, no grains."""
    module = load_source("_modules/hpd_edge.py")
    calls = []
    module.__pillar__ = {"hpd": {"peers": {"app": ["app1", "app2"], "lb": ["lb"]},
                                 "addresses": {"app1": "10.0.0.21"}}}
    module.names = {"app1": "10.0.0.91", "app2": "10.0.0.22"}

    def resolve(names, key):
        calls.append((names, key))
        if names[0] not in module.names:
            raise CommandExecutionError(f"{key}: host {names[0]!r} does not resolve")
        return {names[0]: module.names[names[0]]}

    module.__salt__ = {"hpd.resolve": resolve}
    module.calls = calls
    module.known = tmp_path / "pool.json"
    return module


def test_app_pool_takes_the_inventorys_address_else_resolves_the_name(loaded):
    assert loaded.app_pool(str(loaded.known)) == {"app1": "10.0.0.21", "app2": "10.0.0.22"}
    assert loaded.calls == [(["app2"], "hpd:peers:app")]


def test_app_pool_reads_the_last_known_pool_for_a_name_that_does_not_resolve(loaded):
    loaded.names = {}
    loaded.known.write_text(json.dumps({"app1": "10.0.0.99", "app2": "10.0.0.22"}))
    assert loaded.app_pool(str(loaded.known)) == {"app1": "10.0.0.21", "app2": "10.0.0.22"}


@pytest.mark.parametrize("known", [None, "not json", "[1, 2]"])
def test_app_pool_fails_naming_the_key_when_no_member_has_an_address(loaded, known):
    loaded.__pillar__["hpd"]["addresses"] = {}
    loaded.names = {}
    if known is not None:
        loaded.known.write_text(known)
    with pytest.raises(CommandExecutionError, match=r"hpd:peers:app: no address for any of app1"):
        loaded.app_pool(str(loaded.known))


@pytest.mark.parametrize("address", ["app1.example", "127.0.0.1", "", None])
def test_an_inventory_address_that_is_not_one_is_an_error_naming_it(loaded, address):
    loaded.__pillar__["hpd"]["addresses"] = {"app1": address}
    with pytest.raises(CommandExecutionError, match=r"inventory app1:address: .* is not an IPv4"):
        loaded.app_pool(str(loaded.known))


def test_app_pool_of_an_environment_without_app_hosts_is_empty(loaded):
    loaded.__pillar__ = {"hpd": {"peers": {"lb": ["lb"]}}}
    assert loaded.app_pool(str(loaded.known)) == {}
    assert loaded.calls == []


# ---------------------------------------------------------------------------
# The site's error page
# ---------------------------------------------------------------------------


def test_an_app_host_publishes_the_page_of_its_current_release(tmp_path):
    release = tmp_path / "releases" / "r1"
    release.mkdir(parents=True)
    (tmp_path / "current").symlink_to(release)
    assert EDGE.error_page(str(tmp_path)) is None
    (release / "500.html").write_text("<h1>Something went wrong</h1>")
    assert EDGE.error_page(str(tmp_path)) == "<h1>Something went wrong</h1>"


def test_the_first_app_host_by_name_with_a_page_gives_it():
    mined = {"app2": "<p>two</p>", "app1": None, "app3": "<p>three</p>", "lb": "<p>no</p>"}
    assert EDGE._first_page(["app3", "app2", "app1"], mined) == "<p>two</p>"
    assert EDGE._first_page(["app1"], mined) is None
    assert EDGE._first_page(["app1"], {"app1": "  \n"}) is None


class Clock:
    """time.monotonic and time.sleep for a module under test, without waiting."""

    def __init__(self):
        self.now = 0.0
        self.slept = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def waiting(loaded, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(loaded.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(loaded.time, "sleep", clock.sleep)
    answers = []

    def mine_get(tgt, fun, tgt_type):
        loaded.calls.append((tgt, fun, tgt_type))
        return answers.pop(0) if answers else {}

    loaded.__salt__ = {"mine.get": mine_get}
    loaded.answers = answers
    loaded.clock = clock
    return loaded


def test_the_varnish_host_waits_for_the_first_page_published(waiting):
    waiting.answers.extend([{}, {"app1": None}, {"app2": "<p>page</p>"}])
    assert waiting.site_error_page(wait=60, interval=5) == "<p>page</p>"
    assert waiting.clock.slept == [5, 5]
    assert waiting.calls[0] == (["app1", "app2"], "hpd_error_page", "list")


def test_the_varnish_host_gives_up_after_the_wait(waiting):
    assert waiting.site_error_page(wait=12, interval=5) is None
    assert waiting.clock.now >= 12 and len(waiting.calls) == 4


def test_the_wait_ends_once_every_app_hosts_first_release_failed(waiting):
    """An app host whose first release failed publishes False: no page will come
    from it, and the varnish host stops waiting when none can come."""
    waiting.answers.extend([{"app1": False}, {"app1": False, "app2": False}])
    assert waiting.site_error_page(wait=600, interval=5) is None
    assert waiting.clock.slept == [5] and len(waiting.calls) == 2
    # One host still building: the wait goes on, and its page ends it.
    waiting.answers.extend([{"app1": False}, {"app1": False, "app2": "<p>page</p>"}])
    assert waiting.site_error_page(wait=600, interval=5) == "<p>page</p>"


def test_no_wait_asks_once_and_no_app_host_asks_nothing(waiting):
    assert waiting.site_error_page() is None
    assert len(waiting.calls) == 1 and waiting.clock.slept == []
    waiting.__pillar__ = {"hpd": {"peers": {"lb": ["lb"]}}}
    assert waiting.site_error_page(wait=60) is None
    assert len(waiting.calls) == 1


# ---------------------------------------------------------------------------
# The VCL's values
# ---------------------------------------------------------------------------


def matches(pattern, text):
    """PCRE's answer for these patterns (no construct where it differs from Python's re)."""
    return re.search(pattern, text) is not None


def test_the_default_settings_drop_static_files_only():
    drop = EDGE.vcl(varnish_settings())["drop"]
    for url in ["/static/site.css", "/static/site.CSS?v=3", "/favicon.ico", "/a/b.min.js"]:
        assert matches(drop, url), url
    for url in ["/", "/css/", "/accounts/login/", "/search/?q=site.css&x=1", "/jsx"]:
        assert not matches(drop, url), url


def test_static_files_the_app_serves_itself_are_not_dropped():
    # site:static_url a path: uWSGI serves the release's static files there.
    drop = EDGE.vcl(varnish_settings(), "/static/")["drop"]
    for url in ["/static/site.css", "/static/hpdexample/site.4f3a.js?v=1"]:
        assert not matches(drop, url), url
    for url in ["/favicon.ico", "/wp-content/x.png", "/static.css", "/a/static/x.js"]:
        assert matches(drop, url), url
    # A CDN's URL: nothing of the site's is served here.
    assert EDGE.vcl(varnish_settings(), "https://cdn.example.com/s/")["drop"] == \
        EDGE.vcl(varnish_settings())["drop"]


def test_the_default_settings_pass_logged_in_visitors_and_their_paths():
    values = EDGE.vcl(varnish_settings())
    for cookie in ["sessionid=abc", "csrftoken=x; sessionid=y", "a=1;sessionid=2"]:
        assert matches(values["pass_cookie"], cookie), cookie
    for cookie in ["csrftoken=x", "xsessionid=1", "_ga=sessionid"]:
        assert not matches(values["pass_cookie"], cookie), cookie
    for url in ["/accounts/login/", "/account/", "/admin/auth/user/?o=1"]:
        assert matches(values["pass_path"], url), url
    for url in ["/", "/accounts", "/about/account/", "/administrators/"]:
        assert not matches(values["pass_path"], url), url


def test_the_bypass_parameter_is_a_whole_query_parameter():
    bypass = EDGE.vcl(varnish_settings(bypass_parameter="no.cache"))["bypass"]
    for url in ["/?no.cache", "/?no.cache=1", "/p?a=1&no.cache&b=2"]:
        assert matches(bypass, url), url
    for url in ["/no.cache", "/?no.cachex=1", "/?xno.cache=1", "/?noxcache=1"]:
        assert not matches(bypass, url), url


def test_empty_lists_and_a_null_parameter_write_no_rule():
    values = EDGE.vcl(varnish_settings(drop_extensions=[], pass_cookies=[], pass_paths=[],
                                       bypass_parameter=None))
    assert [values[k] for k in ("drop", "pass_cookie", "pass_path", "bypass")] == [None] * 4


def test_the_purge_acl_takes_addresses_and_networks():
    acl = EDGE.vcl(varnish_settings(purge_acl=["127.0.0.1", "10.93.0.0/24"]))["acl"]
    assert acl == ['"127.0.0.1"', '"10.93.0.0"/24']


def test_redirects_keep_their_order_and_defaults():
    rules = [
        {"host": "hpd.test", "location": "https://www.hpd.test/"},
        {"path": "/old-blog/", "location": "/blog/", "status": 302},
        {"host": "www.hpd.test", "path": "/about.php", "location": "/about/",
         "keep_path": False, "status": 308},
    ]
    assert EDGE.vcl(varnish_settings(redirects=rules))["redirects"] == [
        {"condition": 'req.http.host == "hpd.test"',
         "location": '"https://www.hpd.test" + req.url', "status": 301},
        {"condition": r'req.url ~ "^/old\-blog/"',
         "location": r'"/blog/" + regsub(req.url, "^/old\-blog/", "")', "status": 302},
        {"condition": r'req.http.host == "www.hpd.test" && req.url ~ "^/about\.php"',
         "location": '"/about/"', "status": 308},
    ]


@pytest.mark.parametrize("rule", [
    {"location": "https://www.hpd.test"},
    {"host": "hpd.test"},
    {"host": "hpd.test", "location": 'https://x"; }'},
    {"host": "Hpd.Test", "location": "https://www.hpd.test"},
    {"host": "hpd.test", "location": "https://www.hpd.test", "status": 200},
])
def test_a_bad_redirect_is_refused_naming_the_key(rule):
    with pytest.raises(Exception, match=r"varnish:redirects:0"):
        varnish_settings(redirects=[rule])
