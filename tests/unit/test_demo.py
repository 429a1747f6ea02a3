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
