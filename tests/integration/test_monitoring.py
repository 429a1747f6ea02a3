"""monitoring: every host's vitals reach carbon on the schedule, without gaps, and
graphite-web draws them.

The lab's hosts push highperf.push_vitals on a Salt schedule job (salt/common/vitals.sls)
every highperf:graphite:interval seconds (5 in dev) to carbon-cache on the host with the
monitoring role; graphite-web (uWSGI) renders them there.
"""

import json
import re
import socket
import time
import urllib.request

import pytest
from conftest import failures

pytestmark = pytest.mark.lab

METRICS = ("load.1min", "memory.used_percent")
WINDOW = 4  # consecutive intervals that must all hold a point, per host and metric
FILES_TIMEOUT = 90  # seconds for every host's first push to reach a whisper file

# Run inside the monitoring host: which whisper files exist, and their points in a window.
WHISPER_SCRIPT = r"""
import json, os, sys, whisper
paths, start, count = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = {}
for path in paths:
    if not os.path.exists(path):
        out[path] = None
        continue
    step = whisper.info(path)["archives"][0]["secondsPerPoint"]
    if count:
        (first, _, step), values = whisper.fetch(path, start - 1, start + count * step - 1)
    else:
        first, values = None, []
    out[path] = {"step": step, "first": first, "values": values}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mon(lab, highstate):
    hosts = lab.hosts_with("monitoring")
    assert hosts, "the lab has no host with the monitoring role"
    name = hosts[0]
    ours = [r for host in highstate for r in highstate[host]
            if r.get("__id__", "").startswith(("monitoring-", "common-vitals-"))]
    assert any(r["__id__"].startswith("monitoring-") for r in highstate[name])
    failed = failures(ours)
    assert not failed, failed
    return name


@pytest.fixture(scope="module")
def settings(lab, mon):
    """(highperf, monitoring) settings of the monitoring host, as its states see them."""
    highperf = lab.salt(mon, "hpd.settings", "highperf")[mon]
    monitoring = lab.salt(mon, "hpd.settings", "monitoring")[mon]
    return highperf["graphite"], monitoring


def whisper_path(prefix, host, metric):
    parts = [*prefix.split("."), re.sub(r"[^A-Za-z0-9_-]", "_", host), *metric.split(".")]
    return "/var/lib/graphite/whisper/" + "/".join(parts) + ".wsp"


def read_whisper(lab, mon, paths, start=0, count=0):
    out = lab.exec(mon, "python3", "-c", WHISPER_SCRIPT, json.dumps(paths), str(start),
                   str(count))
    return json.loads(out.stdout)


def test_carbon_and_graphite_web_are_running(lab, mon):
    out = lab.exec(mon, "systemctl", "is-active", "carbon-cache", "graphite-web", check=False)
    assert out.stdout.split() == ["active", "active"], out.stdout + out.stderr
    enabled = lab.exec(mon, "systemctl", "is-enabled", "carbon-cache", "graphite-web",
                       check=False)
    assert enabled.stdout.split() == ["enabled", "enabled"]


def test_carbon_listens_on_the_private_address_only(lab, mon, settings):
    graphite, monitoring = settings
    address = lab.address(mon)
    listening = {}
    for line in lab.exec(mon, "ss", "-Hltnp").stdout.splitlines():
        found = re.search(r'users:\(\("([^"]+)"', line)
        if found:
            listening.setdefault(found.group(1), set()).add(line.split()[3])
    assert listening.get("carbon-cache") == {
        f"{address}:{graphite['port']}",  # the line receiver the hosts push to
        f"127.0.0.1:{monitoring['carbon']['cache_query_port']}",  # graphite-web's reads
    }, listening
    assert listening.get("uwsgi-core") == {f"{address}:{monitoring['web']['port']}"}, listening


def test_every_host_has_every_point_of_its_vitals(lab, mon, settings):
    graphite, _ = settings
    interval = graphite["interval"]
    assert interval <= 10, "the dev environment pushes every 10 s or less"
    paths = {whisper_path(graphite["prefix"], host, metric): (host, metric)
             for host in lab.hosts for metric in METRICS}

    # Every host's first push has reached carbon (it creates the file then).
    deadline = time.monotonic() + FILES_TIMEOUT
    while True:
        missing = [paths[p] for p, v in read_whisper(lab, mon, list(paths)).items() if v is None]
        if not missing:
            break
        assert time.monotonic() < deadline, f"no whisper file after {FILES_TIMEOUT}s: {missing}"
        time.sleep(interval / 2)

    # The window starts at the next slot and ends two intervals before the read, so
    # pushes in flight and points still in carbon's cache are not in it.
    start = (int(time.time()) // interval + 1) * interval
    time.sleep(max(0.0, start + (WINDOW + 2) * interval - time.time()))
    found = read_whisper(lab, mon, list(paths), start, WINDOW)

    gaps = []
    for path, data in sorted(found.items()):
        host, metric = paths[path]
        assert data["step"] == interval, (
            f"{path}: finest precision {data['step']}s, the push interval is {interval}s")
        assert data["first"] == start and len(data["values"]) == WINDOW, data
        missing = [start + i * interval for i, v in enumerate(data["values"]) if v is None]
        if missing:
            gaps.append(f"{host} {metric}: no point at {missing}")
    assert not gaps, f"gaps in the {WINDOW} slots from {start}:\n" + "\n".join(gaps)


def test_graphite_web_renders_a_host_vitals_graph(lab, mon, settings):
    graphite, monitoring = settings
    host = sorted(lab.hosts)[0]
    base = f"http://{lab.address(mon)}:{monitoring['web']['port']}/render"
    target = f"{graphite['prefix']}.{host}.load.1min"
    # The lab's address straight from this machine, never through a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    with opener.open(f"{base}?target={target}&from=-5min&format=png", timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        png = resp.read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000

    with opener.open(f"{base}?target={target}&from=-2min&format=json", timeout=30) as resp:
        series = json.load(resp)
    assert [s["target"] for s in series] == [target]
    assert any(value is not None for value, _ in series[0]["datapoints"]), series


# Run inside the monitoring host: every vitals whisper file's archives and aggregation.
ARCHIVES_SCRIPT = r"""
import json, os, sys, whisper
out = {}
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        if name.endswith(".wsp"):
            info = whisper.info(os.path.join(root, name))
            out[os.path.join(root, name)] = {
                "archives": [[a["secondsPerPoint"], a["points"]] for a in info["archives"]],
                "aggregationMethod": info["aggregationMethod"],
            }
print(json.dumps(out))
"""


def vitals_files(lab, mon, prefix):
    directory = "/var/lib/graphite/whisper/" + prefix.replace(".", "/")
    return json.loads(lab.exec(mon, "python3", "-c", ARCHIVES_SCRIPT, directory).stdout)


def test_vitals_aggregate_by_meaning_on_carbon(lab, mon, settings):
    """Files carbon creates for the vitals roll up by average (max for fills and
    counters), whatever the leaf's name: cpu.count is no tally to sum."""
    graphite, _ = settings
    host = "aggregation_test"
    expected = {"cpu.count": "average", "load.1min": "average",
                "memory.used_percent": "max", "network.host0.rx_bytes": "max",
                "network.host0.rx_bytes_per_s": "average"}
    now = int(time.time())
    lines = "".join(f"{graphite['prefix']}.{host}.{leaf} 1 {now}\n" for leaf in expected)
    paths = {whisper_path(graphite["prefix"], host, leaf): leaf for leaf in expected}
    try:
        with socket.create_connection((lab.address(mon), graphite["port"]), timeout=10) as s:
            s.sendall(lines.encode())
        deadline = time.monotonic() + FILES_TIMEOUT
        while any(v is None for v in read_whisper(lab, mon, list(paths)).values()):
            assert time.monotonic() < deadline, "carbon created no file"
            time.sleep(1)
        found = {paths[p]: v["aggregationMethod"]
                 for p, v in vitals_files(lab, mon, graphite["prefix"]).items() if p in paths}
        assert found == expected
    finally:
        lab.exec(mon, "rm", "-rf", "/var/lib/graphite/whisper/"
                 + "/".join([*graphite["prefix"].split("."), host]))


def highstate_mon(lab, mon, interval=None):
    """The monitoring host's highstate in test mode (with `interval` as
    highperf:graphite:interval): {state id: result}."""
    pillar = {"highperf": {"graphite": {"interval": interval}}} if interval else None
    args = [f"pillar={json.dumps(pillar)}"] if pillar else []
    returned = lab.salt(mon, "state.apply", "test=True", *args)[mon]
    assert isinstance(returned, dict), returned
    return {r["__id__"]: r for r in returned.values()}


def test_a_new_push_interval_would_resize_every_vitals_file(lab, mon, settings):
    """Changing highperf:graphite:interval reaches the state that brings the
    existing files to the new precision: every vitals file would be resized; at
    the interval they have, none. In test mode: whisper-resize itself, owner,
    mode and points kept, and a second run changing nothing, are tested on real
    whisper files in tests/unit/test_whisper_state.py (a real resize of the
    lab's hundreds of files, there and back, took 6 minutes of the suite)."""
    graphite, _ = settings
    new = 10 if graphite["interval"] != 10 else 5
    files = vitals_files(lab, mon, graphite["prefix"])
    assert len(files) > 50, files
    resize = highstate_mon(lab, mon, new)["monitoring-carbon-vitals-resized"]
    assert resize["result"] is None, resize
    assert set(resize["changes"]["resized"]) >= set(files), resize["comment"]
    assert f"to {new}s:" in resize["comment"], resize["comment"]
    kept = highstate_mon(lab, mon)["monitoring-carbon-vitals-resized"]
    assert kept["result"] is True and kept["changes"] == {}, kept


def test_a_push_after_an_interactive_call_covers_the_whole_interval(lab, mon, settings):
    """An operator's highperf.vitals in the middle of a slot: the push that follows
    still reports over the whole interval since the previous push (cpu.interval),
    not over the half interval since the operator's call."""
    graphite, _ = settings
    interval = graphite["interval"]
    # Half into a slot (a whole slot on, in case the previous test has just
    # changed the schedule).
    time.sleep(interval - time.time() % interval + interval + interval / 2)
    called = time.time()
    assert sorted(lab.salt("*", "highperf.vitals")) == lab.hosts
    ended = time.time()
    # Every push from the first slot after the call to the first after its return;
    # whenever a host took its sample, the push that followed it is among them.
    start = (int(called) // interval + 1) * interval
    count = int(ended) // interval + 1 - int(called) // interval
    time.sleep(max(0.0, start + (count + 2) * interval - time.time()))
    paths = {whisper_path(graphite["prefix"], host, "cpu.interval"): host for host in lab.hosts}
    # And one more, a quiet push, to end on.
    found = read_whisper(lab, mon, list(paths), start, count + 1)
    covered = {paths[p]: v["values"] for p, v in found.items()}
    # The call's own load may delay a push (seen: 6.6 s) and the next one then
    # covers that much less (3.4 s); together they cover the time from the push
    # before the call to the last one, `count + 1` intervals. A push that covered
    # only the time since the call would leave them half an interval short.
    short = {h: vs for h, vs in covered.items()
             if None in vs or abs(sum(vs) - (count + 1) * interval) > 0.2 * interval}
    assert not short, f"pushes from {start} covered {covered}; the interval is {interval}s"
