"""
Carbon's storage-aggregation.conf as salt/monitoring renders it, read the way
carbon reads it: sections in order, the first whose pattern matches
(re.search) wins.
"""

import configparser
import pathlib
import re

import jinja2
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "salt" / "monitoring" / "files" / "storage-aggregation.conf.jinja"


def rules(prefix):
    """[(pattern, aggregationMethod), ...] of the rendered file, in order."""
    body = TEMPLATE.read_text()
    body = body.split("\n", 1)[1]  # the map.jinja import: carbon is given below
    pattern = "^" + re.escape(prefix) + r"\."
    parser = configparser.ConfigParser()
    parser.read_string(jinja2.Template(body).render(carbon={"vitals_pattern": pattern}))
    sections = [parser[name] for name in parser.sections()]
    return [(re.compile(s["pattern"]), s["aggregationMethod"]) for s in sections]


def method(metric, prefix="servers"):
    return next(m for pattern, m in rules(prefix) if pattern.search(metric))


@pytest.mark.parametrize("prefix", ["servers", "farm.servers"])
@pytest.mark.parametrize(
    ("leaf", "expected"),
    [
        ("cpu.count", "average"),  # a core count, not a tally to sum
        ("cpu.interval", "average"),
        ("cpu.percent.busy", "average"),
        ("load.1min", "average"),
        ("load.per_cpu.15min", "average"),
        ("memory.used_percent", "max"),
        ("memory.swap_used_percent", "max"),
        ("memory.available", "average"),
        ("disk.root.used_percent", "max"),
        ("disk.var_lib.inodes_used_percent", "max"),
        ("disk.max.free", "average"),  # a mount point named max is no max
        ("network.host0.rx_bytes", "max"),
        ("network.eth0_100.tx_drops", "max"),
        ("network.host0.rx_bytes_per_s", "average"),
        ("network.min.rx_packets_per_s", "average"),
    ],
)
def test_vitals_aggregate_by_meaning_whatever_the_leaf_name(prefix, leaf, expected):
    assert method(f"{prefix}.web1_example_com.{leaf}", prefix) == expected


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("app.requests.count", "sum"),
        ("app.latency.max", "max"),
        ("app.latency.min", "min"),
        ("app.latency.mean", "average"),
        ("serversfoo.web1.cpu.count", "sum"),  # not under the vitals prefix
        ("alerts.app1.disk-root.warning", "max"),  # the master's counters, which only grow
        ("alerts.cache1.port-memcached.count", "max"),
    ],
)
def test_other_metrics_keep_carbons_conventions(metric, expected):
    assert method(metric) == expected


def test_deploy_marks_add_up_and_survive_the_roll_up():
    """One point per deploy: an average over a 5-minute point would be 0.2, and
    xFilesFactor 0.5 would drop it for having too few points."""
    assert method("deploys.dev.example") == "sum"
    body = TEMPLATE.read_text().split("\n", 1)[1]
    parser = configparser.ConfigParser()
    parser.read_string(jinja2.Template(body).render(carbon={"vitals_pattern": "^servers\\."}))
    deploys = next(parser[s] for s in parser.sections()
                   if re.compile(parser[s]["pattern"]).search("deploys.dev.example"))
    assert float(deploys["xFilesFactor"]) == 0
