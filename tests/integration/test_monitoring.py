"""monitoring: every host's vitals reach carbon on the schedule, without gaps, and
graphite-web draws them.

The lab's hosts push highperf.push_vitals on a Salt schedule job (salt/common/vitals.sls)
every highperf:graphite:interval seconds (5 in dev) to carbon-cache on the host with the
monitoring role; graphite-web (uWSGI) renders them there.
"""

import json
import re
import time
import urllib.request

import pytest

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


def monitoring_host(lab):
    hosts = sorted(n for n, h in lab.state["hosts"].items() if "monitoring" in h["roles"])
    assert hosts, "the lab has no host with the monitoring role"
    return hosts[0]


@pytest.fixture(scope="module")
def mon(lab, highstate):
    name = monitoring_host(lab)
    ours = [r for host in highstate for r in highstate[host]
            if r.get("__id__", "").startswith(("monitoring-", "common-vitals-"))]
    assert any(r["__id__"].startswith("monitoring-") for r in highstate[name])
    failed = [f"{r['__id__']}: {r['comment']}" for r in ours if r["result"] is not True]
    assert not failed, "\n".join(failed)
    return name


@pytest.fixture(scope="module")
def settings(lab, mon):
    """(highperf, monitoring) settings of the monitoring host, as its states see them."""
    highperf = lab.salt(mon, "hpd.settings", "highperf")[mon]
    monitoring = lab.salt(mon, "hpd.settings", "monitoring")[mon]
    return highperf["graphite"], monitoring


def address_of(lab, host):
    return lab.state["hosts"][host]["address"]


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
    address = address_of(lab, mon)
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
    base = f"http://{address_of(lab, mon)}:{monitoring['web']['port']}/render"
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
