"""cache: memcached and redis on the cache hosts' private addresses, reached by the
site through twemproxy (nutcracker) on every app host, which ejects a dead cache
host and takes it back.

The lab's farm has two cache hosts (cache1, cache2), both running memcached and
redis (pillar cache's defaults), and two app hosts.
"""

import json
import time

import pytest
from conftest import failures

pytestmark = pytest.mark.lab

KINDS = ("memcached", "redis")
RETRY_MS = 2000  # twemproxy:server_retry_timeout for the ejection test

# Run inside a host: cache operations in order, one connection per target,
# reconnecting after an error. argv: kind, tries, operations as JSON
# [[op, host, port, key], ...], op "set" (the value is the key) or "get". Each
# operation is tried until it succeeds, at most `tries` times; prints
# [[succeeded, failed tries, last reply's first line], ...].
CLIENT = r"""
import json, socket, sys
kind, tries, ops = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
conns = {}

def command(op, key):
    if kind == "memcached":
        return (f"set {key} 0 0 {len(key)}\r\n{key}\r\n" if op == "set"
                else f"get {key}\r\n").encode()
    words = ["SET", key, key] if op == "set" else ["GET", key]
    return "".join([f"*{len(words)}\r\n"] + [f"${len(w)}\r\n{w}\r\n" for w in words]).encode()

def complete(data):
    if not data.endswith(b"\r\n"):
        return False
    if data.startswith(b"VALUE"):
        return data.endswith(b"END\r\n")
    if data.startswith(b"$") and not data.startswith(b"$-1"):
        return data.count(b"\r\n") >= 2
    return True

def request(target, payload):
    if target not in conns:
        conns[target] = socket.create_connection(target, timeout=2)
    try:
        conns[target].sendall(payload)
        data = b""
        while not complete(data):
            chunk = conns[target].recv(4096)
            if not chunk:
                raise OSError("connection closed")
            data += chunk
        return data.decode()
    except OSError:
        conns.pop(target).close()
        raise

def once(op, host, port, key):
    try:
        reply = request((host, port), command(op, key))
    except OSError as err:
        return False, str(err)
    # set: stored; get: a hit (memcached's VALUE block, redis's bulk string).
    return (reply in ("STORED\r\n", "+OK\r\n") if op == "set" else key in reply,
            reply.split("\r\n")[0])

out = []
for op in ops:
    failed = 0
    while True:
        ok, reply = once(*op)
        if ok or failed + 1 == tries:
            break
        failed += 1
    out.append([ok, failed + (not ok), reply])
print(json.dumps(out))
"""


def run(lab, host, kind, ops, tries=1):
    """[(succeeded, failed tries, reply), ...] of ops run in order from host."""
    out = lab.exec(host, "python3", "-c", CLIENT, kind, str(tries), json.dumps(ops))
    return [tuple(r) for r in json.loads(out.stdout)]


@pytest.fixture(scope="module")
def farm(lab, highstate):
    """(cache hosts, app hosts, settings), after a highstate without failures here."""
    caches, apps = lab.hosts_with("cache"), lab.hosts_with("app")
    assert len(caches) >= 2 and apps, "the farm needs two cache hosts and an app host"
    ours = [r for host in caches + apps for r in highstate[host]
            if r.get("__id__", "").startswith(("cache-", "twemproxy-"))]
    assert {r["__id__"] for r in ours} >= {"cache-memcached-service-running",
                                           "cache-redis-service-running",
                                           "twemproxy-nutcracker-service-running"}
    failed = failures(ours)
    assert not failed, failed
    cache = lab.salt(caches[0], "hpd.settings", "cache")[caches[0]]
    twemproxy = lab.salt(apps[0], "hpd.settings", "twemproxy")[apps[0]]
    return caches, apps, cache, twemproxy


def listeners(lab, host, port):
    out = lab.exec(host, "ss", "-Hltn", f"sport = :{port}").stdout
    return sorted(line.split()[3] for line in out.splitlines())


@pytest.mark.parametrize("kind", KINDS)
def test_cache_listens_on_the_private_address_only(lab, farm, kind):
    caches, apps, cache, _ = farm
    port = cache[kind]["port"]
    for host in caches:
        assert listeners(lab, host, port) == [f"{lab.address(host)}:{port}"], host
        # Served from an app host at that address, and not on the host's loopback.
        (stored,) = run(lab, apps[0], kind, [["set", lab.address(host), port, "probe"]])
        assert stored[0], f"{host}: {stored}"
        (local,) = run(lab, host, kind, [["set", "127.0.0.1", port, "probe"]])
        assert not local[0] and "refused" in local[2], f"{host}: {local}"


def test_memcached_memory_comes_from_the_host(lab, farm):
    caches, _, cache, _ = farm
    for host in caches:
        mem = lab.salt(host, "grains.get", "mem_total")[host]
        tuned = lab.salt(host, "highperf.cache_tune", f"mem_total={mem}")[host]
        conf = lab.exec(host, "cat", "/etc/memcached.conf").stdout.split("\n")
        assert f"-m {cache['memcached']['memory_mb'] or tuned['memcached']}" in conf
        maxmemory = lab.exec(host, "redis-cli", "-h", lab.address(host), "config", "get",
                             "maxmemory").stdout.split()
        assert int(maxmemory[1]) == (cache["redis"]["maxmemory_mb"] or tuned["redis"]) * 2**20


@pytest.mark.parametrize("kind", KINDS)
def test_twemproxy_on_every_app_host_shards_over_the_cache_hosts(lab, farm, kind):
    caches, apps, cache, twemproxy = farm
    local = twemproxy["ports"][kind]
    # Keys that differ in their first characters: twemproxy's fnv1a_64 is a 32-bit
    # FNV-1a (prime 0x1b3), which spreads a difference only towards the end.
    keys = [f"{i}-shard-{kind}" for i in range(40)]
    for app in apps:
        assert listeners(lab, app, local) == [f"127.0.0.1:{local}"], app
        assert listeners(lab, app, twemproxy["ports"]["stats"]) == [
            f"127.0.0.1:{twemproxy['ports']['stats']}"]
        results = run(lab, app, kind, [["set", "127.0.0.1", local, k] for k in keys]
                      + [["get", "127.0.0.1", local, k] for k in keys])
        assert all(ok for ok, *_ in results), f"{app}: {results}"
    # Every key is on exactly one cache host, and each host holds some.
    held = {host: [ok for ok, *_ in run(lab, apps[0], kind,
                                       [["get", lab.address(host), cache[kind]["port"], k]
                                        for k in keys])]
            for host in caches}
    assert all(sum(hits) == 1 for hits in zip(*held.values(), strict=True))
    assert all(any(hits) for hits in held.values()), held


def apply_twemproxy(lab, host, pillar=None):
    args = [host, "state.apply", "twemproxy"]
    if pillar:
        args.append("pillar=" + json.dumps(pillar))
    ret = lab.salt(*args)[host]
    assert isinstance(ret, dict) and all(r["result"] for r in ret.values()), ret


@pytest.fixture
def short_retry(lab, farm):
    """The first app host's twemproxy with a short server_retry_timeout; restored after."""
    app = farm[1][0]
    apply_twemproxy(lab, app, {"twemproxy": {"server_retry_timeout": RETRY_MS}})
    conf = lab.exec(app, "cat", "/etc/nutcracker/nutcracker.yml").stdout
    assert f"server_retry_timeout: {RETRY_MS}\n" in conf
    yield app
    apply_twemproxy(lab, app)
    conf = lab.exec(app, "cat", "/etc/nutcracker/nutcracker.yml").stdout
    assert f"server_retry_timeout: {farm[3]['server_retry_timeout']}\n" in conf


@pytest.mark.parametrize(("kind", "service"), [("memcached", "memcached"),
                                               ("redis", "redis-server")])
def test_a_dead_cache_host_is_ejected_and_rejoins(lab, farm, short_retry, kind, service):
    caches, _, cache, twemproxy = farm
    app, dead, port = short_retry, caches[-1], cache[kind]["port"]
    local = twemproxy["ports"][kind]
    limit = twemproxy["server_failure_limit"]

    def on_dead_host(keys, back=False):
        """The keys of keys that twemproxy put on the dead host; none while the
        host is coming `back` and refuses some."""
        results = run(lab, app, kind, [["set", "127.0.0.1", local, k] for k in keys])
        if back and not all(ok for ok, *_ in results):
            return []
        assert all(ok for ok, *_ in results), results
        hits = run(lab, app, kind, [["get", lab.address(dead), port, k] for k in keys])
        return [k for k, (ok, *_) in zip(keys, hits, strict=True) if ok]

    keys = on_dead_host([f"{i}-eject-{kind}" for i in range(60)])
    assert len(keys) >= 10, "too few keys on the host to stop"
    # Disabled first: a service that merely stops is started again by the
    # master's reactor (salt/heal) within seconds.
    lab.exec(dead, "systemctl", "disable", "--now", service)
    try:
        # Each of its keys set, then read back, through twemproxy, each operation
        # retried until it succeeds: the first one fails until twemproxy has seen
        # server_failure_limit failures and ejected the host (or none, when the
        # site's own requests on that host, e.g. haproxy's health checks, already
        # made it), then every operation succeeds (its keys land on the live
        # host). One run, well within the retry timeout.
        results = run(lab, app, kind, [["set", "127.0.0.1", local, k] for k in keys]
                      + [["get", "127.0.0.1", local, k] for k in keys], tries=limit + 1)
        assert all(ok for ok, *_ in results), results
        failures = [failed for _, failed, _ in results]
        assert failures[0] <= limit and not any(failures[1:]), results
    finally:
        lab.exec(dead, "systemctl", "enable", "--now", service)
    # Back after the retry timeout: new keys land on it again. (memcached's unit is
    # started once its process runs, and may refuse connections a moment longer.)
    for _ in range(30):
        if on_dead_host([f"{i}-rejoin-{kind}" for i in range(20)], back=True):
            break
        time.sleep(RETRY_MS / 1000)
    else:
        pytest.fail(f"{dead} did not rejoin twemproxy's {kind} pool")


def test_bad_cache_pillar_is_refused_naming_the_key(lab, farm):
    caches = farm[0]
    before = lab.exec(caches[0], "cat", "/etc/memcached.conf").stdout
    bad = {"cache": {"memcached": {"memory_mb": "lots"}}}
    ret = lab.salt(caches[0], "state.apply", "cache", "pillar=" + json.dumps(bad))[caches[0]]
    assert "cache:memcached:memory_mb" in json.dumps(ret), ret
    assert lab.exec(caches[0], "cat", "/etc/memcached.conf").stdout == before


def test_a_cache_host_that_does_not_resolve_is_refused_naming_the_key(lab, farm):
    app = farm[1][0]
    before = lab.exec(app, "cat", "/etc/nutcracker/nutcracker.yml").stdout
    peers = {"hpd": {"peers": {"cache": [farm[0][0], "ghost"]}}}
    ret = lab.salt(app, "state.apply", "twemproxy", "pillar=" + json.dumps(peers))[app]
    assert isinstance(ret, list), f"states ran: {ret}"
    assert any("hpd:peers:cache: host 'ghost' does not resolve" in line for line in ret), ret
    assert lab.exec(app, "cat", "/etc/nutcracker/nutcracker.yml").stdout == before
