"""lab/demo.py reaches lab addresses directly, whatever proxy the environment names."""

import http.server
import json
import threading

import demo
import pytest


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers graphite-web's render API; records every request it gets."""

    def do_GET(self):  # noqa: N802 -- the name http.server calls
        self.server.requests.append(self.path)
        if "format=json" in self.path:
            body = json.dumps([{"target": t, "datapoints": [[1.0, i] for i in range(12)]}
                               for t in range(3)]).encode()
        else:
            body = b"\x89PNG graph"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    def start():
        srv = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
        srv.requests = []
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    servers = []
    yield lambda: servers.append(start()) or servers[-1]
    for srv in servers:
        srv.shutdown()
        srv.server_close()


class FakeLab:
    def __init__(self, directory):
        self.dir = directory


def test_the_graph_is_fetched_directly_not_through_the_environments_proxy(
        server, tmp_path, monkeypatch, capsys):
    graphite, proxy = server(), server()
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.server_port}")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(demo, "GRAPH_PORT", graphite.server_port)
    state = {"hosts": {"mon": {"address": "127.0.0.1", "roles": ["monitoring"]}}}
    demo.graph(FakeLab(tmp_path), state)
    assert proxy.requests == []
    assert len(graphite.requests) == 2
    assert (tmp_path / "vitals.png").read_bytes() == b"\x89PNG graph"


def state(sid, sls, result, comment, run):
    return {f"x_|-{sid}_|-{sid}_|-f": {"__id__": sid, "__sls__": sls, "result": result,
                                       "comment": comment, "__run_num__": run, "changes": {}}}


def test_a_failed_highstate_names_the_state_that_failed_not_those_it_took_down():
    ret = {**state("site-release-checked-out", "site.checkout", True, "ok", 0),
           **state("site-release-venv-linked", "site.venv", False,
                   "pip install -r r.txt failed: ERROR: No matching distribution", 1),
           **state("site-release-current-switched", "site.switch", False,
                   "One or more requisite failed: site.venv.site-release-venv-linked", 2)}
    assert demo.failures(ret) == [("site-release-venv-linked", "site.venv",
                                   "pip install -r r.txt failed: ERROR: No matching distribution")]
    assert demo.failures({k: v for k, v in ret.items() if "venv" not in k}) == [
        ("site-release-current-switched", "site.switch",
         "One or more requisite failed: site.venv.site-release-venv-linked")]


def test_a_highstate_that_did_not_render_is_one_failure():
    assert demo.failures(["Rendering SLS 'base:site' failed: bad"]) == [
        ("highstate", "render", "Rendering SLS 'base:site' failed: bad")]


class Returns:
    """A lab whose salt_iter yields the given (host, return) pairs, counting them."""

    def __init__(self, returns):
        self.returns, self.taken = returns, 0

    def salt_iter(self, target, fun, timeout):
        for pair in self.returns:
            self.taken += 1
            yield pair


def test_the_highstate_stops_at_the_first_host_that_failed(capsys):
    ok = state("common-ok", "common", True, "ok", 0)
    bad = state("site-release-venv-linked", "site.venv", False, "pip: ERROR: no redis", 1)
    lab = Returns([("db", ok), ("app1", {**ok, **bad}), ("lb", ok)])
    assert demo.highstate(lab) == ("app1", [("site-release-venv-linked", "site.venv",
                                             "pip: ERROR: no redis")])
    assert lab.taken == 2  # the lb host's return was not waited for
    out = capsys.readouterr().out
    assert "highstate failed on app1" in out and "pip: ERROR: no redis" in out
    assert demo.highstate(Returns([("db", ok), ("lb", ok)])) is None
