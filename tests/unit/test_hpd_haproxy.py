"""Unit tests for ``_modules/hpd_haproxy.py`` against a fake haproxy admin socket
(a Unix socket server answering one command per connection, as haproxy does in
non-interactive mode). The lab test tests/integration/test_deploy_parts.py runs
the same functions against a real haproxy."""

import socket
import threading
from pathlib import Path

import pytest
from conftest import load_source
from salt.exceptions import CommandExecutionError, SaltInvocationError
from test_highperf import FakeClock

MODULE_PATH = Path(__file__).resolve().parents[2] / "_modules" / "hpd_haproxy.py"
# haproxy 2.6's `show stat` header, in full: the module reads columns by name.
HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
          "wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,"
          "sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,"
          "check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,"
          "req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,"
          "lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,"
          "agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
          "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,"
          "intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,"
          "qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,"
          "used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
          "agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd")
COLUMNS = HEADER[2:].split(",")


class FakeHaproxy:
    """Backend `app` with servers app1, app2. A drained server loses one current
    session per `show stat`; a server made ready shows `DOWN 1/2` for `rising`
    `show stat`s first; `set server` answers nothing on success."""

    def __init__(self, path, sessions=3):
        self.path, self.commands, self.rising = str(path), [], 0
        self.servers = {"app1": {"status": "UP", "scur": sessions, "weight": 1},
                        "app2": {"status": "UP", "scur": 5, "weight": 1}}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        threading.Thread(target=self.serve, daemon=True).start()

    def row(self, name, server=None):
        values = dict.fromkeys(COLUMNS, "")
        values.update(pxname="app", svname=name, scur="0", weight="0", status="UP")
        if server:
            values.update(status=server["status"], scur=str(server["scur"]),
                          weight=str(server["weight"]), check_status="L7OK", hrsp_2xx="40",
                          hrsp_5xx="2")
        elif name == "BACKEND":
            values.update(hrsp_2xx="80", hrsp_3xx="7", hrsp_4xx="3", hrsp_5xx="10")
        return ",".join(values[c] for c in COLUMNS)

    def answer(self, cmd):
        words = cmd.split()
        if cmd == "show stat":
            for server in self.servers.values():
                if server["status"] == "DRAIN" and server["scur"]:
                    server["scur"] -= 1
                if "rise" in server:
                    server["rise"] -= 1
                    if server["rise"] < 0:
                        del server["rise"]
                        server["status"] = "UP"
            rows = [self.row("FRONTEND")] + [self.row(n, s) for n, s in self.servers.items()]
            rows.append(self.row("BACKEND"))
            return HEADER + "\n" + "\n".join(rows) + "\n\n"
        if words[:2] == ["set", "server"] and len(words) == 5 and words[3] == "state":
            backend, _, name = words[2].partition("/")
            if backend != "app":
                return "No such backend.\n"
            if name not in self.servers:
                return "No such server.\n"
            state = {"ready": ("UP", 1), "drain": ("DRAIN", 0), "maint": ("MAINT", 0)}
            if words[4] not in state:
                return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
            self.servers[name]["status"], self.servers[name]["weight"] = state[words[4]]
            if words[4] == "ready" and self.rising:
                self.servers[name].update(status="DOWN 1/2", rise=self.rising)
            return "\n"
        return "Unknown command. Please enter one of the following commands only :\n"

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    data += conn.recv(1024)
                cmd = data.decode().strip()
                self.commands.append(cmd)
                conn.sendall(self.answer(cmd).encode())

    def close(self):
        self.sock.close()


@pytest.fixture
def hx(monkeypatch):
    module = load_source(MODULE_PATH)
    module.__context__ = {}
    return module


@pytest.fixture
def fake(tmp_path):
    server = FakeHaproxy(tmp_path / "admin.sock")
    yield server
    server.close()


@pytest.fixture
def clock(hx, monkeypatch):
    fake_clock = FakeClock()
    monkeypatch.setattr(hx, "time", fake_clock)
    return fake_clock


def test_state_reads_a_servers_status_and_sessions_by_column_name(hx, fake):
    assert hx.state("app", "app2", socket_path=fake.path) == {
        "status": "UP", "sessions": 5, "weight": 1, "check": "L7OK"}
    assert fake.commands == ["show stat"]


def test_statuses_of_a_backends_servers_in_one_command(hx, fake):
    fake.servers["app2"]["status"] = "DRAIN"
    assert hx.statuses("app", socket_path=fake.path) == {"app1": "UP", "app2": "DRAIN"}
    assert hx.statuses("other", socket_path=fake.path) == {}
    assert fake.commands == ["show stat", "show stat"]


def test_responses_count_a_backends_or_servers_answers_by_class(hx, fake):
    assert hx.responses("app", socket_path=fake.path) == {
        "1xx": 0, "2xx": 80, "3xx": 7, "4xx": 3, "5xx": 10, "other": 0}
    assert hx.responses("app", "app1", socket_path=fake.path) == {
        "1xx": 0, "2xx": 40, "3xx": 0, "4xx": 0, "5xx": 2, "other": 0}
    with pytest.raises(CommandExecutionError, match="haproxy has no server static/BACKEND"):
        hx.responses("static", socket_path=fake.path)


def test_state_of_an_unknown_server_is_an_error_naming_it(hx, fake):
    with pytest.raises(CommandExecutionError, match="haproxy has no server app/app9"):
        hx.state("app", "app9", socket_path=fake.path)


def test_drain_waits_until_the_servers_sessions_are_zero(hx, fake, clock):
    got = hx.drain("app", "app1", timeout=10, interval=0.5, socket_path=fake.path)
    assert got == {"drained": True, "status": "DRAIN", "sessions": 0, "seconds": 1.0}
    assert fake.commands == ["show stat", "set server app/app1 state drain"] + ["show stat"] * 3
    assert clock.sleeps == [0.5, 0.5]
    assert "retcode" not in hx.__context__
    assert fake.servers["app2"]["status"] == "UP"


def test_drain_that_times_out_says_so_and_fails_the_job(hx, tmp_path, clock):
    fake = FakeHaproxy(tmp_path / "slow.sock", sessions=100)
    try:
        got = hx.drain("app", "app1", timeout=2, interval=0.5, socket_path=fake.path)
    finally:
        fake.close()
    assert got["drained"] is False and got["sessions"] == 95 and got["seconds"] == 2.0
    assert hx.__context__["retcode"] == 1
    assert fake.servers["app1"]["status"] == "DRAIN"


@pytest.mark.parametrize("other", ["DRAIN", "MAINT", "DOWN", "DOWN 1/2"])
def test_drain_refuses_the_last_server_that_is_up_naming_the_others(hx, fake, clock, other):
    fake.servers["app2"]["status"] = other
    with pytest.raises(CommandExecutionError, match=(
            rf"^refusing to drain app/app1: it is the last server of backend app that is UP "
            rf"\(app2 is {other}\); last=True drains it anyway$")):
        hx.drain("app", "app1", timeout=10, socket_path=fake.path)
    assert fake.commands == ["show stat"]  # nothing changed
    assert fake.servers["app1"]["status"] == "UP"


def test_drain_of_the_last_server_up_with_last_true_drains_it(hx, fake, clock):
    fake.servers["app2"]["status"] = "DRAIN"
    got = hx.drain("app", "app1", timeout=10, socket_path=fake.path, last=True)
    assert got["drained"] is True and fake.servers["app1"]["status"] == "DRAIN"
    assert fake.commands[0] == "set server app/app1 state drain"


@pytest.mark.parametrize("app1, app2", [("DRAIN", "DRAIN"), ("MAINT", "DOWN"),
                                        ("UP", "UP 1/2")])
def test_drain_of_a_server_that_leaves_one_up_or_is_not_up_itself_goes_ahead(
        hx, fake, clock, app1, app2):
    fake.servers["app1"]["status"], fake.servers["app2"]["status"] = app1, app2
    assert hx.drain("app", "app1", timeout=10, socket_path=fake.path)["drained"] is True


def test_last_up_counts_only_the_backends_own_servers(hx):
    rows = [{"pxname": "app", "svname": n, "status": s} for n, s in
            (("FRONTEND", "OPEN"), ("app1", "UP"), ("BACKEND", "UP"))]
    rows.append({"pxname": "other", "svname": "app2", "status": "UP"})
    assert hx._last_up(rows, "app", "app1") == (
        "refusing to drain app/app1: it is the last server of backend app that is UP (it is "
        "the only server); last=True drains it anyway")
    assert hx._last_up(rows, "app", "app9") is None


def test_ready_puts_the_server_back_and_returns_its_state(hx, fake, clock):
    hx.drain("app", "app1", timeout=10, socket_path=fake.path)
    assert hx.ready("app", "app1", socket_path=fake.path)["status"] == "UP"
    assert fake.commands[-2:] == ["set server app/app1 state ready", "show stat"]


def test_ready_waits_until_haproxy_has_the_server_up(hx, fake, clock):
    fake.rising = 2  # its health checks took it down: up after `rise` good checks
    hx.drain("app", "app1", timeout=10, socket_path=fake.path)
    assert hx.ready("app", "app1", interval=0.5, socket_path=fake.path)["status"] == "UP"
    assert fake.commands[-4:] == ["set server app/app1 state ready"] + ["show stat"] * 3
    assert "retcode" not in hx.__context__


def test_ready_of_a_server_that_stays_down_fails_the_job(hx, fake, clock):
    fake.rising = 100
    got = hx.ready("app", "app1", timeout=2, interval=0.5, socket_path=fake.path)
    assert got["status"] == "DOWN 1/2" and hx.__context__["retcode"] == 1


@pytest.mark.parametrize("backend, server, message", [
    ("app", "app9", "set server app/app9 state drain: No such server."),
    ("web", "app1", "set server web/app1 state drain: No such backend."),
])
def test_haproxy_refusing_a_command_is_an_error_with_its_answer(hx, fake, backend, server,
                                                                message):
    with pytest.raises(CommandExecutionError, match=message):
        hx.drain(backend, server, socket_path=fake.path)


def test_a_socket_that_does_not_answer_is_an_error_naming_it(hx, tmp_path):
    with pytest.raises(CommandExecutionError, match=f"runtime API at {tmp_path}/none.sock"):
        hx.command("show info", socket_path=str(tmp_path / "none.sock"))


@pytest.mark.parametrize("cmd", ["", "show stat\nshutdown sessions server app/app1",
                                 "show stat; disable server app/app1"])
def test_command_sends_exactly_one_command(hx, fake, cmd):
    with pytest.raises(SaltInvocationError, match="one runtime API command"):
        hx.command(cmd, socket_path=fake.path)
    assert fake.commands == []
