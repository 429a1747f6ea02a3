"""
Unit tests for ``_modules/highperf.py``.

Two layers, as Salt tests its own modules:

* the pure computations, imported straight from the file (no minion);
* the public functions through Salt's loader (pytest-salt-factories'
  functional ``Loaders``), including ``push_vitals`` against a real TCP
  listener standing in for carbon.
"""

import json
import logging
import math
import os
import pathlib
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import namedtuple

import pytest
import salt.loader
import salt.loader.lazy
from conftest import load_source, local_opts
from salt.exceptions import SaltInvocationError
from saltfactories.utils.functional import Loaders

REPO = pathlib.Path(__file__).resolve().parents[2]
MODULE_PATH = REPO / "_modules" / "highperf.py"

KB, MB, GB = 1, 1024, 1024 * 1024
MIB_PER_TIB = 1024 * 1024
GIB = 1024**3  # bytes

# The edge hosts of the issue plus ordinary ones: (mem_total MiB, cpus).
HOSTS = [
    (512, 1),
    (512, 128),
    (1024, 1),
    (2048, 2),
    (4096, 4),
    (6144, 3),
    (16384, 8),
    (32768, 16),
    (65536, 32),
    (262144, 64),
    (MIB_PER_TIB, 1),
    (MIB_PER_TIB, 128),
]
PROFILES = ["seed", "web", "oltp", "dw", "mixed", "desktop"]
STORAGE = ["hdd", "ssd", "san", "nvme"]
SIZE_RE = re.compile(r"^(\d+)(kB|MB|GB)$")
GRAPHITE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.fixture(scope="module")
def hp():
    """The module imported directly from its file, for the pure functions."""
    return load_source(MODULE_PATH)


def size_kb(value):
    """'4GB' -> 4194304 (kB)."""
    match = SIZE_RE.match(value)
    assert match, f"not a postgresql.conf size: {value!r}"
    return int(match.group(1)) * {"kB": KB, "MB": MB, "GB": GB}[match.group(2)]


def rounded_down(kb):
    """The issue's rounding: whole kB below 1MB, else whole MB."""
    kb = int(kb)
    return kb if kb < MB else kb // MB * MB


def pg_size(kb):
    kb = rounded_down(kb)
    if kb < MB:
        return f"{kb}kB"
    return f"{kb // GB}GB" if kb % GB == 0 else f"{kb // MB}MB"


# ---------------------------------------------------------------------------
# pg_tune: pinned tables
# ---------------------------------------------------------------------------

SEED_TABLE = [
    # (mem MiB, cpus, kwargs, expected)
    (
        512,
        1,
        {},
        {
            "max_connections": 100,
            "shared_buffers": "128MB",
            "effective_cache_size": "256MB",
            "maintenance_work_mem": "32MB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "3MB",
            "random_page_cost": 1.1,
            "effective_io_concurrency": 200,
            "work_mem": "10MB",
            "min_wal_size": "1GB",
            "max_wal_size": "4GB",
        },
    ),
    (
        2048,
        2,
        {"max_connections": 50, "storage": "hdd"},
        {
            "max_connections": 50,
            "shared_buffers": "512MB",
            "effective_cache_size": "1GB",
            "maintenance_work_mem": "128MB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "16MB",  # 15728kB is within 2MB of 16MB: snapped up
            "random_page_cost": 4.0,
            "effective_io_concurrency": 2,
            "work_mem": "81MB",
            "min_wal_size": "1GB",
            "max_wal_size": "4GB",
        },
    ),
    (
        16384,
        8,
        {},
        {
            "max_connections": 100,
            "shared_buffers": "4GB",
            "effective_cache_size": "8GB",
            "maintenance_work_mem": "1GB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "16MB",
            "random_page_cost": 1.1,
            "effective_io_concurrency": 200,
            "work_mem": "327MB",  # 2 x 16GB / 100 = 327.68MB, rounded down
            "min_wal_size": "1GB",
            "max_wal_size": "4GB",
            "max_worker_processes": 8,
            "max_parallel_workers_per_gather": 4,
            "max_parallel_workers": 8,
            "max_parallel_maintenance_workers": 4,
        },
    ),
    (
        32768,
        16,
        {"max_connections": 399, "storage": "san"},
        {
            "max_connections": 399,
            "shared_buffers": "8GB",
            "effective_cache_size": "16GB",
            "maintenance_work_mem": "2GB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "16MB",
            "random_page_cost": 1.1,
            "effective_io_concurrency": 300,
            "work_mem": "164MB",
            "min_wal_size": "1GB",
            "max_wal_size": "4GB",
            "max_worker_processes": 16,
            "max_parallel_workers_per_gather": 4,
            "max_parallel_workers": 16,
            "max_parallel_maintenance_workers": 4,
        },
    ),
    (
        MIB_PER_TIB,
        128,
        {},
        {
            "max_connections": 100,
            "shared_buffers": "8GB",  # 25% capped at 8GB
            "effective_cache_size": "512GB",
            "maintenance_work_mem": "64GB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "16MB",
            "random_page_cost": 1.1,
            "effective_io_concurrency": 200,
            "work_mem": "20971MB",
            "min_wal_size": "1GB",
            "max_wal_size": "4GB",
            "max_worker_processes": 128,
            "max_parallel_workers_per_gather": 4,
            "max_parallel_workers": 128,
            "max_parallel_maintenance_workers": 4,
        },
    ),
]

PGTUNE_TABLE = [
    (
        16384,
        4,
        {"profile": "web"},
        {
            "max_connections": 200,
            "shared_buffers": "4GB",
            "effective_cache_size": "12GB",
            "maintenance_work_mem": "1GB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "16MB",
            "default_statistics_target": 100,
            "random_page_cost": 1.1,
            "effective_io_concurrency": 200,
            "work_mem": "20MB",  # PGTune prints 20560kB
            "huge_pages": "try",
            "min_wal_size": "1GB",
            "max_wal_size": "4GB",
            "max_worker_processes": 4,
            "max_parallel_workers_per_gather": 2,
            "max_parallel_workers": 4,
            "max_parallel_maintenance_workers": 2,
            "jit": "off",
        },
    ),
    (
        65536,
        16,
        {"profile": "dw", "storage": "hdd"},
        {
            "max_connections": 40,
            "shared_buffers": "16GB",
            "effective_cache_size": "48GB",
            "maintenance_work_mem": "8GB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "16MB",
            "default_statistics_target": 500,
            "random_page_cost": 4.0,
            "effective_io_concurrency": 2,
            "work_mem": "146MB",
            "huge_pages": "try",
            "min_wal_size": "4GB",
            "max_wal_size": "16GB",
            "max_worker_processes": 16,
            "max_parallel_workers_per_gather": 8,
            "max_parallel_workers": 16,
            "max_parallel_maintenance_workers": 4,
            "autovacuum_max_workers": 4,
            "autovacuum_work_mem": "2GB",
        },
    ),
    (
        MIB_PER_TIB,
        128,
        {"profile": "oltp", "storage": "san"},
        {
            "max_connections": 300,
            "shared_buffers": "256GB",
            "effective_cache_size": "768GB",
            "maintenance_work_mem": "8GB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "16MB",
            "default_statistics_target": 100,
            "random_page_cost": 1.1,
            "effective_io_concurrency": 300,
            "work_mem": "612MB",
            "huge_pages": "try",
            "min_wal_size": "2GB",
            "max_wal_size": "8GB",
            "max_worker_processes": 128,
            "max_parallel_workers_per_gather": 4,
            "max_parallel_workers": 128,
            "max_parallel_maintenance_workers": 4,
            "jit": "off",
            "autovacuum_max_workers": 5,
            "autovacuum_work_mem": "2GB",
        },
    ),
    (
        512,
        1,
        {"profile": "mixed"},
        {
            "max_connections": 100,
            "shared_buffers": "128MB",
            "effective_cache_size": "384MB",
            "maintenance_work_mem": "32MB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "3MB",
            "default_statistics_target": 100,
            "random_page_cost": 1.1,
            "effective_io_concurrency": 200,
            "work_mem": "4MB",  # PGTune's 4MB floor
            "huge_pages": "off",
            "min_wal_size": "1GB",
            "max_wal_size": "4GB",
            "jit": "off",
        },
    ),
    (
        2048,
        2,
        {"profile": "desktop", "storage": "nvme"},
        {
            "max_connections": 20,
            "shared_buffers": "128MB",
            "effective_cache_size": "512MB",
            "maintenance_work_mem": "128MB",
            "checkpoint_completion_target": 0.9,
            "wal_buffers": "3MB",
            "default_statistics_target": 100,
            "random_page_cost": 1.1,
            "effective_io_concurrency": 1000,
            "work_mem": "4MB",
            "huge_pages": "off",
            "min_wal_size": "100MB",
            "max_wal_size": "2GB",
            "wal_level": "minimal",
            "max_wal_senders": 0,
        },
    ),
]


@pytest.mark.parametrize(("mem", "cpus", "kwargs", "expected"), SEED_TABLE + PGTUNE_TABLE)
def test_pg_tune_pinned(hp, mem, cpus, kwargs, expected):
    assert hp._pg_tune(mem, cpus, **kwargs) == expected


def test_pg_tune_seed_is_default_profile(hp):
    assert hp._pg_tune(16384, 8) == hp._pg_tune(16384, 8, profile="seed", storage="ssd")


# ---------------------------------------------------------------------------
# pg_tune: rules over the whole grid
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("mem", "cpus"), HOSTS)
@pytest.mark.parametrize("conns", [None, 1, 100, 399])
def test_pg_tune_seed_rules(hp, mem, cpus, conns):
    ret = hp._pg_tune(mem, cpus, max_connections=conns)
    ram = mem * 1024
    n = conns or 100
    assert ret["max_connections"] == n
    expected_kb = {
        "shared_buffers": max(min(ram // 4, 8 * GB), 128),
        "work_mem": min(max(2 * ram // n, 64), 2147483647),
        "maintenance_work_mem": max(ram // 16, 1 * MB),
        "effective_cache_size": ram // 2,
    }
    for setting, kb in expected_kb.items():
        assert size_kb(ret[setting]) == rounded_down(kb), setting
    assert size_kb(ret["shared_buffers"]) <= 8 * GB


@pytest.mark.parametrize(("mem", "cpus"), HOSTS)
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("storage", STORAGE)
def test_pg_tune_values_are_valid_postgresql_conf(hp, mem, cpus, profile, storage):
    ret = hp._pg_tune(mem, cpus, storage=storage, profile=profile)
    minimums = {
        "shared_buffers": 128,
        "work_mem": 64,
        "maintenance_work_mem": 1 * MB,
        "effective_cache_size": 8,
        "wal_buffers": 32,
        "min_wal_size": 32 * MB,
        "max_wal_size": 32 * MB,
        "autovacuum_work_mem": 1 * MB,
    }
    for setting, value in ret.items():
        if setting in minimums:
            kb = size_kb(value)
            assert kb >= minimums[setting], (setting, value)
            assert kb <= 2147483647 * 8, (setting, value)
            number, unit = SIZE_RE.match(value).groups()
            # The largest unit that is still whole: no '1024MB', no '2048kB'.
            assert not (unit == "kB" and int(number) >= 1024), value
            assert not (unit == "MB" and int(number) % 1024 == 0), value
        else:
            assert isinstance(value, (int, float, str)) and not isinstance(value, bool)
    assert size_kb(ret["wal_buffers"]) <= 16 * MB
    assert size_kb(ret["work_mem"]) <= 2147483647
    # PGTune's default data size (mid_ram): above RAM, so hdd and dw pay 4.
    assert ret["random_page_cost"] == (4.0 if storage == "hdd" or profile == "dw" else 1.1)
    assert (
        ret["effective_io_concurrency"] == {"hdd": 2, "ssd": 200, "san": 300, "nvme": 1000}[storage]
    )
    assert ret["checkpoint_completion_target"] == 0.9
    parallel = {
        "max_worker_processes",
        "max_parallel_workers_per_gather",
        "max_parallel_workers",
        "max_parallel_maintenance_workers",
    }
    if cpus < 4:
        assert not parallel & set(ret)
    else:
        assert ret["max_worker_processes"] == ret["max_parallel_workers"] == cpus
        assert ret["max_parallel_maintenance_workers"] == min(math.ceil(cpus / 2), 4)
        per_gather = math.ceil(cpus / 2)
        assert ret["max_parallel_workers_per_gather"] == (
            per_gather if profile == "dw" else min(per_gather, 4)
        )


def pgtune_reference(mem_mib, cpus, conns, storage, profile, db_size="mid_ram"):
    """
    Independent transliteration of le0pard/pgtune's selectors
    (configurationSlice.js; Linux, PostgreSQL 18, with its "Total Data Size"
    input dbSize) in kB, formatted with the issue's rounding.
    """
    total = mem_mib * 1024
    conns = conns or {"web": 200, "oltp": 300, "dw": 40, "desktop": 20, "mixed": 100}[profile]
    sb = math.floor(total / (16 if profile == "desktop" else 4))
    ecs = math.floor(total / 4) if profile == "desktop" else math.floor(total * 3 / 4)
    mwm = math.floor(total / (8 if profile == "dw" else 16))
    if mwm >= 8 * GB:
        mwm = 8 * GB
    wal = math.floor(3 * sb / 100)
    if wal > 16 * MB:
        wal = 16 * MB
    if 14 * MB < wal < 16 * MB:
        wal = 16 * MB
    if wal < 32:
        wal = 32
    parallel = []
    if cpus >= 4:
        gather = math.ceil(cpus / 2)
        if profile != "dw" and gather > 4:
            gather = 4
        parallel = [
            ("max_worker_processes", cpus),
            ("max_parallel_workers_per_gather", gather),
            ("max_parallel_workers", cpus),
            ("max_parallel_maintenance_workers", min(math.ceil(cpus / 2), 4)),
        ]
    workers = cpus if parallel else 8
    wm = (total - sb) / ((conns + workers) * 3)
    wm = math.floor(wm / {"dw": 2, "mixed": 2, "desktop": 6}.get(profile, 1))
    if db_size == "less_ram":
        wm = math.floor(wm * 1.3)
    elif db_size == "greater_ram":
        wm = math.floor(wm * 0.9)
    if wm < 4 * MB:
        wm = 4 * MB
    min_wal, max_wal = {
        "web": (1 * GB, 4 * GB),
        "oltp": (2 * GB, 8 * GB),
        "dw": (4 * GB, 16 * GB),
        "desktop": (100 * MB, 2 * GB),
        "mixed": (1 * GB, 4 * GB),
    }[profile]
    ret = {
        "max_connections": conns,
        "shared_buffers": pg_size(sb),
        "effective_cache_size": pg_size(ecs),
        "maintenance_work_mem": pg_size(mwm),
        "checkpoint_completion_target": 0.9,
        "wal_buffers": pg_size(wal),
        "default_statistics_target": 500 if profile == "dw" else 100,
        "random_page_cost": 1.1 if db_size == "less_ram" else (
            4.0 if storage == "hdd" or profile == "dw" else 1.1),
        "effective_io_concurrency": {"hdd": 2, "ssd": 200, "san": 300, "nvme": 1000}[storage],
        "work_mem": pg_size(wm),
        "huge_pages": "try" if sb >= 2 * GB else "off",
        "min_wal_size": pg_size(min_wal),
        "max_wal_size": pg_size(max_wal),
        **dict(parallel),
    }
    if profile in ("web", "oltp", "mixed"):
        ret["jit"] = "off"
    if cpus >= 32:
        ret["autovacuum_max_workers"] = 5
    elif cpus >= 16:
        ret["autovacuum_max_workers"] = 4
    if mwm >= 2 * GB:
        ret["autovacuum_work_mem"] = "2GB"
    if profile == "desktop":
        ret.update(wal_level="minimal", max_wal_senders=0)
    return ret


@pytest.mark.parametrize(("mem", "cpus"), HOSTS)
@pytest.mark.parametrize("profile", ["web", "oltp", "dw", "mixed", "desktop"])
@pytest.mark.parametrize("conns", [None, 50, 500])
def test_pg_tune_profiles_mirror_pgtune(hp, mem, cpus, profile, conns):
    for storage in STORAGE:
        ret = hp._pg_tune(mem, cpus, max_connections=conns, storage=storage, profile=profile)
        assert ret == pgtune_reference(mem, cpus, conns, storage, profile)
        for db_size in ("less_ram", "mid_ram", "greater_ram"):
            ret = hp._pg_tune(mem, cpus, max_connections=conns, storage=storage,
                              profile=profile, db_size=db_size)
            assert ret == pgtune_reference(mem, cpus, conns, storage, profile, db_size)


def test_pg_tune_db_size_pgtunes_examples(hp):
    # The example: a data warehouse larger than RAM on SSD pays 4; the
    # same data fitting in RAM is read from the page cache: 1.1.
    assert hp._pg_tune(16384, 8, profile="dw", db_size="greater_ram")["random_page_cost"] == 4.0
    assert hp._pg_tune(16384, 8, profile="dw", db_size="less_ram")["random_page_cost"] == 1.1
    assert hp._pg_tune(16384, 8, storage="hdd", db_size="less_ram")["random_page_cost"] == 1.1
    web = {size: size_kb(hp._pg_tune(16384, 8, profile="web", db_size=size)["work_mem"])
           for size in ("less_ram", "mid_ram", "greater_ram")}
    assert web["less_ram"] > web["mid_ram"] > web["greater_ram"]
    # PGTune's default is mid_ram, and so is pg_tune's.
    assert hp._pg_tune(16384, 8, profile="dw") == hp._pg_tune(16384, 8, profile="dw",
                                                              db_size="mid_ram")
    # The seed's own work_mem rule does not move with the data size.
    assert {hp._pg_tune(16384, 8, db_size=s)["work_mem"]
            for s in ("less_ram", "mid_ram", "greater_ram")} == {"327MB"}


@pytest.mark.parametrize(
    ("data", "mem", "expected"),
    [
        (0, 2 * GIB, "less_ram"),
        (2 * GIB - 1, 2 * GIB, "less_ram"),
        (2 * GIB, 2 * GIB, "mid_ram"),
        (6 * GIB, 2 * GIB, "mid_ram"),
        (6 * GIB + 1, 2 * GIB, "greater_ram"),
        (10**15, 2 * GIB, "greater_ram"),
    ],
)
def test_pg_db_size_class_is_pgtunes_bands(hp, data, mem, expected):
    assert hp._pg_db_size_class(data, mem) == expected


@pytest.mark.parametrize("data", [-1, 1.5, "12", None, True])
def test_pg_db_size_class_refuses_nonsense(hp, data):
    with pytest.raises(SaltInvocationError, match="data size must be a whole number of bytes"):
        hp._pg_db_size_class(data, 2 * GIB)


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ({"retcode": 0, "stdout": "23456789\n", "stderr": ""}, "less_ram"),
        ({"retcode": 0, "stdout": str(5 * GIB), "stderr": ""}, "mid_ram"),
        ({"retcode": 2, "stdout": "", "stderr": "could not connect"}, None),
    ],
)
def test_pg_db_size_asks_the_local_server(hp, monkeypatch, run, expected):
    calls = []

    def run_all(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return run

    monkeypatch.setattr(hp, "__salt__", {"cmd.run_all": run_all}, raising=False)
    assert hp.pg_db_size(mem_total=2048) == expected
    (cmd, kwargs), = calls
    assert cmd[-1] == hp._PG_DATA_SIZE_QUERY and kwargs["runas"] == "postgres"


def test_pg_tune_work_mem_seed_vs_pgtune(hp):
    # The documented difference: the seed hands out far more per connection.
    seed = size_kb(hp._pg_tune(16384, 8, max_connections=100)["work_mem"])
    web = size_kb(hp._pg_tune(16384, 8, max_connections=100, profile="web")["work_mem"])
    assert seed == 327 * MB
    assert web == rounded_down((16 * GB - 4 * GB) // ((100 + 8) * 3))
    assert seed > 8 * web


def test_pg_tune_huge_memory_single_connection_clamped(hp):
    # 2 x 1TiB for one connection exceeds PostgreSQL's work_mem maximum.
    assert hp._pg_tune(MIB_PER_TIB, 1, max_connections=1)["work_mem"] == "2097151MB"


def test_pg_tune_accepts_cli_strings(hp):
    assert hp._pg_tune("16384", "8", max_connections="100", storage="SSD", profile="Seed") == (
        hp._pg_tune(16384, 8, max_connections=100)
    )
    assert hp._pg_tune(16384.0, 8.0) == hp._pg_tune(16384, 8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mem_mib": 0}, "mem_total must be a positive number, got 0"),
        ({"mem_mib": -1024}, "mem_total must be a positive number, got -1024"),
        ({"mem_mib": "lots"}, "mem_total must be a positive number, got 'lots'"),
        ({"mem_mib": "16GB"}, "mem_total must be a positive number, got '16GB'"),
        ({"mem_mib": True}, "mem_total must be a positive number, got True"),
        ({"mem_mib": float("nan")}, "mem_total must be a positive number"),
        ({"mem_mib": [16384]}, "mem_total must be a positive number"),
        ({"mem_mib": "1" + "0" * 400}, "mem_total must be a positive number"),
        ({"mem_mib": "inf"}, "mem_total must be a positive number, got 'inf'"),
        ({"cpus": 0}, "cpus must be a positive number, got 0"),
        ({"cpus": -2}, "cpus must be a positive number, got -2"),
        ({"cpus": 2.5}, "cpus must be a positive whole number, got 2.5"),
        ({"cpus": "eight"}, "cpus must be a positive number, got 'eight'"),
        ({"max_connections": 0}, "max_connections must be a positive number, got 0"),
        ({"max_connections": 400}, "max_connections must be below 400 with the seed profile"),
        ({"max_connections": "1000"}, "max_connections must be below 400 with the seed profile"),
        ({"storage": "tape"}, "storage must be one of hdd, ssd, san, nvme; got 'tape'"),
        ({"profile": "olap"}, "profile must be one of seed, web, oltp, dw, mixed, desktop"),
        ({"db_size": "huge"}, "db_size must be one of less_ram, mid_ram, greater_ram"),
    ],
)
def test_pg_tune_refuses_nonsense(hp, kwargs, message):
    args = {"mem_mib": 16384, "cpus": 8, **kwargs}
    with pytest.raises(SaltInvocationError, match=re.escape(message)):
        hp._pg_tune(args.pop("mem_mib"), args.pop("cpus"), **args)


def test_pg_tune_connection_limit_is_the_seeds_rule(hp):
    assert hp._pg_tune(16384, 8, max_connections=399)["max_connections"] == 399
    assert hp._pg_tune(16384, 8, max_connections=500, profile="web")["max_connections"] == 500


def test_pg_size_formatting(hp):
    assert hp._pg_size(335544) == "327MB"
    assert hp._pg_size(4 * GB) == "4GB"
    assert hp._pg_size(64) == "64kB"
    assert hp._pg_size(1023) == "1023kB"
    assert hp._pg_size(1024) == "1MB"
    assert hp._pg_size(1536 * MB) == "1536MB"
    assert hp._pg_size(1536 * MB + 1023) == "1536MB"


# ---------------------------------------------------------------------------
# mysql_tune
# ---------------------------------------------------------------------------


#: What MariaDB 10.11 (Debian 12's MySQL) does not accept, or accepts and ignores:
#: innodb_buffer_pool_instances was removed in 10.6.0 (an unknown option stops
#: mariadbd), innodb_buffer_pool_chunk_size deprecated and ignored from 10.11.12.
MARIADB_10_11_REFUSES_OR_IGNORES = {
    "innodb_buffer_pool_instances",
    "innodb_buffer_pool_chunk_size",
    "innodb_page_cleaners",
}


@pytest.mark.parametrize(
    ("mem", "expected"),
    [(512, "409M"), (2048, "1638M"), (6144, "4915M"), (16384, "13107M"),
     (65536, "52428M"), (MIB_PER_TIB, "838860M"), (5, "5M")],
)
def test_mysql_tune_pinned(hp, mem, expected):
    assert hp._mysql_tune(mem) == {"innodb_buffer_pool_size": expected}


def my_mib(value):
    number, unit = re.match(r"^(\d+)([MG])$", value).groups()
    return int(number) * (1024 if unit == "G" else 1)


@pytest.mark.parametrize(
    "mem", sorted({m for m, _ in HOSTS} | {777, 3000, 4612, 5000, 100000, 148763, 500000})
)
def test_mysql_tune_rules(hp, mem):
    ret = hp._mysql_tune(mem)
    assert not set(ret) & MARIADB_10_11_REFUSES_OR_IGNORES, "options MariaDB 10.11 refuses"
    pool = my_mib(ret["innodb_buffer_pool_size"])
    # 80% of RAM rounded down to a whole MiB.
    assert mem * 0.8 - 1 < pool <= mem * 0.8


@pytest.mark.parametrize("bad", [0, -1, "x", None, True])
def test_mysql_tune_refuses_nonsense(hp, bad):
    with pytest.raises(SaltInvocationError, match="mem_total must be a positive number"):
        hp._mysql_tune(bad)


# ---------------------------------------------------------------------------
# uwsgi_tune
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "mem", "roles", "somaxconn", "expected"),
    [
        (1, 512, [], 4096, {"processes": 2, "listen": 128, "max-requests-delta": 1250}),
        (1, 512, ["varnish"], 4096, {"processes": 2, "listen": 128}),
        (1, 1024, [], 4096, {"processes": 4, "listen": 256, "max-requests-delta": 625}),
        (1, 1024, ["varnish"], 4096, {"processes": 4}),
        (8, 16384, ["app"], 4096, {"processes": 32, "listen": 2048, "max-requests-delta": 78}),
        (8, 16384, ["app", "db"], 4096, {"processes": 18, "listen": 1152}),
        (8, 16384, "app,cache", 4096, {"processes": 18}),
        (128, MIB_PER_TIB, [], 4096, {"processes": 512, "listen": 4096, "max-requests-delta": 4}),
        (128, MIB_PER_TIB, [], 128, {"processes": 512, "listen": 128}),
        (128, MIB_PER_TIB, ["db", "cache"], 4096, {"processes": 258}),
        (128, 512, [], 4096, {"processes": 2}),  # memory caps the workers
        (4, 1024, [], 100, {"processes": 4, "listen": 100}),
    ],
)
def test_uwsgi_tune_pinned(hp, cpus, mem, roles, somaxconn, expected):
    ret = hp._uwsgi_tune(cpus, mem, roles=roles, somaxconn=somaxconn)
    assert {k: ret[k] for k in expected} == expected
    assert ret["threads"] == 1
    assert ret["max-requests"] == 5000
    assert ret["harakiri"] == 30
    assert ret["post-buffering"] == 8192
    assert ret["buffer-size"] == 32768


@pytest.mark.parametrize(("mem", "cpus"), HOSTS)
@pytest.mark.parametrize("roles", [[], ["app"], ["app", "cache"], ["varnish"], ["db", "app"]])
@pytest.mark.parametrize("somaxconn", [128, 4096, 65535])
def test_uwsgi_tune_rules(hp, mem, cpus, roles, somaxconn):
    ret = hp._uwsgi_tune(cpus, mem, roles=roles, somaxconn=somaxconn)
    heavy = bool({"cache", "varnish", "db"} & set(roles))
    wanted = 2 * (cpus + 1) if heavy else 4 * cpus
    assert 1 <= ret["processes"] <= wanted
    assert ret["processes"] == wanted or ret["processes"] * 128 <= mem // 2
    assert ret["listen"] <= somaxconn
    assert ret["max-requests-delta"] >= 1
    # Workers recycle at different counts, all within 1.5 x max-requests.
    assert ret["max-requests"] + ret["processes"] * ret["max-requests-delta"] <= 7500 + 256
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in ret.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cpus": 0}, "cpus must be a positive number"),
        ({"cpus": "x"}, "cpus must be a positive number"),
        ({"mem_mib": -5}, "mem_total must be a positive number"),
        ({"roles": 5}, "roles must be a list or a comma-separated string"),
    ],
)
def test_uwsgi_tune_refuses_nonsense(hp, kwargs, message):
    args = {"cpus": 4, "mem_mib": 4096, **kwargs}
    with pytest.raises(SaltInvocationError, match=message):
        hp._uwsgi_tune(args.pop("cpus"), args.pop("mem_mib"), **args)


def test_uwsgi_tune_roles_come_from_the_inventory_not_a_grain(hp, monkeypatch):
    """The roles pillar hpd:roles (the master's inventory) gives the host count; a
    ``roles`` grain, which the minion sets itself, does not."""
    monkeypatch.setattr(hp, "__grains__", {"num_cpus": 8, "mem_total": 16384, "roles": ["app"]})
    monkeypatch.setattr(hp, "__pillar__", {"hpd": {"roles": ["app", "db"]}}, raising=False)
    assert hp.uwsgi_tune()["processes"] == 18  # shared with the database: 2 x (cores + 1)
    monkeypatch.setattr(hp, "__grains__", {"num_cpus": 8, "mem_total": 16384, "roles": ["db"]})
    monkeypatch.setattr(hp, "__pillar__", {"hpd": {"roles": ["app"]}}, raising=False)
    assert hp.uwsgi_tune()["processes"] == 32
    monkeypatch.setattr(hp, "__pillar__", {}, raising=False)
    assert hp.uwsgi_tune()["processes"] == 32, "no inventory: not shared"


# ---------------------------------------------------------------------------
# vitals: pure parts
# ---------------------------------------------------------------------------

StatVFS = namedtuple(
    "StatVFS", "f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_favail"
)
Part = namedtuple("Part", "device mountpoint fstype opts")


def test_cpu_block(hp):
    prev = dict.fromkeys(("user", "nice", "system", "idle", "iowait", "irq", "softirq"), 0.0)
    prev.update(steal=0.0, guest=0.0, guest_nice=0.0)
    cur = dict(prev, user=50.0, system=20.0, idle=20.0, iowait=5.0, steal=5.0, guest=10.0)
    ret = hp._cpu_block(prev, cur, 4, 2.0)
    assert ret["count"] == 4
    assert ret["interval"] == 2.0
    pct = ret["percent"]
    # Guest time is already inside user: the total is 100, not 110.
    assert pct["user"] == 50.0
    assert pct["system"] == 20.0
    assert pct["idle"] == 20.0
    assert pct["iowait"] == 5.0
    assert pct["steal"] == 5.0
    assert pct["busy"] == 75.0
    assert sum(pct[m] for m in hp._CPU_MODES) == pytest.approx(100.0)


def test_cpu_block_no_elapsed_ticks(hp):
    same = {"user": 1.0, "system": 1.0, "idle": 1.0}
    pct = hp._cpu_block(same, same, 1, 0.001)["percent"]
    assert set(pct) == {*hp._CPU_MODES, "busy"}
    assert all(v == 0.0 for v in pct.values())


def test_cpu_block_counter_going_backwards(hp):
    # Linux's iowait can decrease; a negative delta counts as 0.
    prev = {"user": 10.0, "idle": 10.0, "iowait": 5.0}
    cur = {"user": 20.0, "idle": 20.0, "iowait": 4.0}
    pct = hp._cpu_block(prev, cur, 1, 1.0)["percent"]
    assert pct["iowait"] == 0.0
    assert pct["user"] == 50.0


def test_load_block(hp):
    ret = hp._load_block((4.0, 2.0, 1.0), 8)
    assert ret == {
        "1min": 4.0,
        "5min": 2.0,
        "15min": 1.0,
        "per_cpu": {"1min": 0.5, "5min": 0.25, "15min": 0.125},
    }


def test_memory_block(hp):
    ret = hp._memory_block(16 * 2**30, 12 * 2**30, 2 * 2**30, 2**29)
    assert ret == {
        "total": 16 * 2**30,
        "available": 12 * 2**30,
        "used_percent": 25.0,
        "swap_total": 2 * 2**30,
        "swap_used": 2**29,
        "swap_used_percent": 25.0,
    }
    assert hp._memory_block(1024, 1024, 0, 0)["swap_used_percent"] == 0.0


def test_disk_entry(hp):
    st = StatVFS(4096, 4096, 1000, 400, 300, 100, 25, 25)
    assert hp._disk_entry(st) == {
        "total": 4096000,
        "used": 2457600,
        "free": 1228800,
        "used_percent": round(100 * 600 / 900, 2),  # as df: of what users can use
        "inodes_total": 100,
        "inodes_used": 75,
        "inodes_used_percent": 75.0,
    }
    # btrfs reports no inode counts.
    assert hp._disk_entry(StatVFS(4096, 4096, 10, 5, 5, 0, 0, 0))["inodes_used_percent"] == 0.0


def test_net_block_rates(hp):
    prev = {"eth0": (1000, 500, 10, 5, 0, 0, 0, 0), "eth1": (9000, 0, 90, 0, 0, 0, 0, 0)}
    cur = {
        "eth0": (3000, 1500, 30, 15, 1, 0, 2, 0),
        "eth1": (100, 0, 1, 0, 0, 0, 0, 0),  # counters reset
        "eth0.100": (50, 50, 1, 1, 0, 0, 0, 0),  # new interface (VLAN)
    }
    ret = hp._net_block(prev, cur, 2.0)
    assert set(ret) == {"eth0", "eth1", "eth0_100"}
    eth0 = ret["eth0"]
    assert eth0["rx_bytes"] == 3000
    assert eth0["tx_bytes"] == 1500
    assert eth0["rx_bytes_per_s"] == 1000.0
    assert eth0["tx_bytes_per_s"] == 500.0
    assert eth0["rx_packets_per_s"] == 10.0
    assert eth0["tx_packets_per_s"] == 5.0
    assert eth0["rx_errors_per_s"] == 0.5
    assert eth0["rx_drops_per_s"] == 1.0
    assert eth0["tx_drops_per_s"] == 0.0
    assert len(eth0) == 16
    assert ret["eth1"]["rx_bytes_per_s"] == 0.0
    assert ret["eth0_100"]["rx_bytes_per_s"] == 0.0
    assert ret["eth0_100"]["rx_bytes"] == 50


def test_safe_name(hp):
    assert hp._safe_name("/") == "root"
    assert hp._safe_name("/var/lib") == "var_lib"
    assert hp._safe_name("/var/lib/postgresql/16/main") == "var_lib_postgresql_16_main"
    assert hp._safe_name("eth0.100") == "eth0_100"
    assert hp._safe_name("br-1a2b") == "br-1a2b"
    assert hp._safe_name("/mnt/my disk") == "mnt_my_disk"


def test_select_mounts_container(hp):
    physical = frozenset({"ext4", "xfs", "btrfs", "squashfs", "zfs"})
    parts = [
        Part("proc", "/proc", "proc", "rw"),
        Part("overlay", "/", "overlay", "rw"),
        Part("tmpfs", "/dev", "tmpfs", "rw"),
        Part("/dev/sda1", "/etc/resolv.conf", "ext4", "rw"),  # bind-mounted files
        Part("/dev/sda1", "/etc/hostname", "ext4", "rw"),
        Part("/dev/sda1", "/etc/hosts", "ext4", "rw"),
        Part("/dev/sdb1", "/var/lib/postgresql", "xfs", "rw"),
        Part("/dev/sdb1", "/srv/again", "xfs", "rw"),  # same device twice
        Part("/dev/loop3", "/snap/core/1", "squashfs", "ro"),
        Part("tank/data", "/tank/data", "zfs", "rw"),
        Part("server:/export", "/mnt/nfs", "nfs4", "rw"),
    ]
    files = {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}
    ret = hp._select_mounts(parts, physical, isdir=lambda p: p not in files)
    assert ret == (
        ("root", "/"),
        ("var_lib_postgresql", "/var/lib/postgresql"),
        ("tank_data", "/tank/data"),
    )


def test_select_mounts_root_wins_its_device(hp):
    parts = [
        Part("/dev/vda", "/boot/efi", "ext4", "rw"),
        Part("/dev/vda", "/", "ext4", "rw"),
    ]
    ret = hp._select_mounts(parts, frozenset({"ext4"}), isdir=lambda p: True)
    assert ret == (("root", "/"),)


def test_select_mounts_without_proc_filesystems(hp):
    parts = [Part("/dev/sda1", "/", "apfs", "rw"), Part("devfs", "/dev", "devfs", "rw")]
    assert hp._select_mounts(parts, None, isdir=lambda p: True) == (("root", "/"),)


def test_mount_table_read_only_when_it_changes(fresh, monkeypatch):
    fresh._MOUNTS.update(value=None, pid=None, file=None, poll=None)
    first = fresh._real_mounts()
    assert ("root", "/") in first
    calls = []
    real = fresh.psutil.disk_partitions
    monkeypatch.setattr(
        fresh.psutil, "disk_partitions", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    if fresh._MOUNTS["poll"] is not None:  # Linux: the kernel signals changes
        assert fresh._real_mounts() == first
        assert calls == [], "unchanged mount table: not parsed again"
    # A forked child does not trust the parent's descriptor: it looks again.
    monkeypatch.setitem(fresh._MOUNTS, "pid", -1)
    assert fresh._real_mounts() == first
    assert calls == [1]


def test_graphite_lines(hp):
    tree = {"cpu": {"count": 4, "percent": {"busy": 12.5}}, "disk": {"var_lib": {"total": 10}}}
    lines = hp._graphite_lines(tree, "farm.prod.", "web1.example.com", 1700000000.7)
    assert lines == [
        "farm.prod.web1_example_com.cpu.count 4 1700000000\n",
        "farm.prod.web1_example_com.cpu.percent.busy 12.5 1700000000\n",
        "farm.prod.web1_example_com.disk.var_lib.total 10 1700000000\n",
    ]
    assert hp._graphite_lines({"a": {"b": 1}}, "", "db1", 1) == ["db1.a.b 1 1\n"]


def test_virtual_without_psutil(hp, monkeypatch):
    assert hp.__virtual__() == "highperf"
    monkeypatch.setattr(hp, "HAS_PSUTIL", False)
    ok, reason = hp.__virtual__()
    assert ok is False and "psutil" in reason


# ---------------------------------------------------------------------------
# vitals: sampling state (real psutil, module imported directly)
# ---------------------------------------------------------------------------


def assert_vitals_shape(ret, cpu_count=None):
    assert set(ret) == {"load", "cpu", "memory", "disk", "network"}
    leaves = []

    def walk(node, path):
        assert isinstance(node, dict), path
        for key, value in node.items():
            assert isinstance(key, str) and GRAPHITE_KEY_RE.match(key), (path, key)
            if isinstance(value, dict):
                walk(value, (*path, key))
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool), (
                    path,
                    key,
                    value,
                )
                assert math.isfinite(value), (path, key)
                leaves.append(((*path, key), value))

    walk(ret, ())
    assert set(ret["load"]) == {"1min", "5min", "15min", "per_cpu"}
    assert set(ret["load"]["per_cpu"]) == {"1min", "5min", "15min"}
    assert set(ret["cpu"]) == {"count", "interval", "percent"}
    assert set(ret["cpu"]["percent"]) == {
        "busy",
        "user",
        "nice",
        "system",
        "irq",
        "softirq",
        "iowait",
        "steal",
        "idle",
    }
    for value in ret["cpu"]["percent"].values():
        assert 0.0 <= value <= 100.0
    assert ret["cpu"]["interval"] > 0
    if cpu_count:
        assert ret["cpu"]["count"] == cpu_count
    assert set(ret["memory"]) == {
        "total",
        "available",
        "used_percent",
        "swap_total",
        "swap_used",
        "swap_used_percent",
    }
    assert ret["memory"]["total"] > 0
    assert "root" in ret["disk"], "the root filesystem is always reported"
    for entry in ret["disk"].values():
        assert set(entry) == {
            "total",
            "used",
            "free",
            "used_percent",
            "inodes_total",
            "inodes_used",
            "inodes_used_percent",
        }
        assert 0.0 <= entry["used_percent"] <= 100.0
    assert ret["network"], "at least one interface"
    for entry in ret["network"].values():
        assert len(entry) == 16
        for field in ("bytes", "packets", "errors", "drops"):
            for side in ("rx", "tx"):
                assert isinstance(entry[f"{side}_{field}"], int)
                assert entry[f"{side}_{field}_per_s"] >= 0.0
    return leaves


@pytest.fixture
def fresh(hp, tmp_path, monkeypatch):
    """The directly imported module with an empty state and its own cachedir."""
    monkeypatch.setattr(hp, "__opts__", {"cachedir": str(tmp_path)})
    hp._STATE.clear()
    yield hp
    hp._STATE.clear()


@pytest.fixture
def sleeps(monkeypatch):
    """The seconds of every time.sleep called from _modules/highperf.py (which still sleeps)."""
    real_sleep, calls = time.sleep, []

    def recording_sleep(seconds):
        if pathlib.Path(sys._getframe(1).f_code.co_filename).resolve() == MODULE_PATH:
            calls.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    return calls


class FakeClock:
    """time.monotonic and time.sleep for the module: seconds pass when the test says."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def time(self):
        return self.now


@pytest.fixture
def clock(fresh, monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(fresh, "time", fake)
    return fake


def test_vitals_shape_and_first_call_samples_once(fresh, sleeps):
    first = fresh.vitals()
    assert sleeps == [fresh.FIRST_SAMPLE_SECONDS]
    assert_vitals_shape(first)
    assert first["cpu"]["interval"] >= fresh.FIRST_SAMPLE_SECONDS

    for _ in range(5):
        again = fresh.vitals()
    assert sleeps == [fresh.FIRST_SAMPLE_SECONDS], "later calls never sleep"
    assert_vitals_shape(again)
    # Calls faster than MIN_INTERVAL keep the older baseline: the interval grows.
    assert again["cpu"]["interval"] > first["cpu"]["interval"]


def test_vitals_state_survives_a_new_process(fresh, tmp_path, sleeps):
    fresh.vitals()
    saved = json.loads((tmp_path / "highperf" / "vitals.json").read_text())
    assert set(saved) == {"boot_id", "base", "pending"}
    # A forked minion job or a new salt-call starts without the in-memory state.
    fresh._STATE.clear()
    ret = fresh.vitals()
    assert sleeps == [fresh.FIRST_SAMPLE_SECONDS], "the saved sample is the baseline"
    assert ret["cpu"]["interval"] >= fresh.FIRST_SAMPLE_SECONDS


@pytest.mark.parametrize(
    "gaps",
    [
        [1.0, 0.002],  # the back-to-back calls
        [1.25, 0.001, 0.001, 0.5, 0.5, 0.5, 0.001],
        [3, 0.9, 0.2, 0.9, 0.05, 2, 0.999, 0.001],
        [0.125] * 40,
    ],
)
def test_vitals_quick_calls_cover_at_least_min_interval(fresh, clock, gaps):
    minimum = fresh.MIN_INTERVAL_SECONDS
    first = fresh.vitals()["cpu"]["interval"]
    assert first == fresh.FIRST_SAMPLE_SECONDS
    since_first = 0.0
    for gap in gaps:
        clock.now += gap
        since_first += gap
        interval = fresh.vitals()["cpu"]["interval"]
        if since_first < minimum:
            # No sample 1 s old exists yet: measured from the first sample's start.
            assert interval == pytest.approx(since_first + first, abs=1e-3)
        else:
            assert interval >= minimum, (gaps, since_first, interval)
            # The baseline does move on: less than twice the minimum plus the longest gap.
            assert interval < 2 * minimum + max(gaps), (gaps, since_first, interval)
    assert clock.sleeps == [fresh.FIRST_SAMPLE_SECONDS]


def test_vitals_at_a_steady_pace_cover_exactly_the_time_since_the_last_call(fresh, clock):
    fresh.vitals()
    for _ in range(3):
        clock.now += 10
        assert fresh.vitals()["cpu"]["interval"] == 10


def test_push_keeps_its_own_baseline(fresh, clock, tmp_path, carbon, monkeypatch):
    """An operator's calls of vitals between two pushes shorten neither series."""
    monkeypatch.setattr(fresh, "__salt__", {"config.get": lambda key, default=None: default},
                        raising=False)
    fresh.__opts__["id"] = "web1"

    def pushed_interval():
        before = len(carbon.received)
        fresh.push_vitals(host="127.0.0.1", port=carbon.server_address[1], prefix="t")
        lines = carbon.wait_for(before + 1)[before].splitlines()
        return next(float(ln.split()[1]) for ln in lines if ln.startswith("t.web1.cpu.interval "))

    pushed_interval()
    last_push = clock.now
    clock.now += 10
    assert pushed_interval() == 10
    last_push = clock.now
    clock.now += 4
    fresh.vitals()  # the operator, part way through the schedule's interval
    last_call = clock.now
    clock.now += 6
    assert pushed_interval() == clock.now - last_push
    last_push = clock.now
    clock.now += 3
    assert fresh.vitals()["cpu"]["interval"] == clock.now - last_call
    assert sorted(p.name for p in (tmp_path / "highperf").iterdir()) == [
        "push_vitals.json",
        "vitals.json",
    ]
    # The same from the saved files, as the next minion job (a new process) sees them.
    fresh._STATE.clear()
    clock.now += 7
    assert pushed_interval() == clock.now - last_push
    assert clock.sleeps == [fresh.FIRST_SAMPLE_SECONDS] * 2, "one first sample per consumer"


def test_advance_promotes_the_pending_sample_once_it_is_old_enough(hp):
    at = [{"mono": t} for t in (0.0, 0.5, 1.2, 1.6)]
    assert hp._advance(at[0], None, at[1], 1.0) == (at[0], at[1])
    assert hp._advance(at[0], at[1], at[2], 1.0) == (at[0], at[1]), "0.7 s old: kept pending"
    assert hp._advance(at[0], at[1], at[3], 1.0) == (at[1], at[3]), "1.1 s old: the baseline"


def test_vitals_ignores_state_from_another_boot(fresh, tmp_path, sleeps):
    fresh.vitals()
    fresh._STATE.clear()
    path = tmp_path / "highperf" / "vitals.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "boot_id": "another-boot"}))
    fresh.vitals()
    assert sleeps == [fresh.FIRST_SAMPLE_SECONDS] * 2


def test_vitals_unwritable_cachedir_still_works(fresh, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setattr(fresh, "__opts__", {"cachedir": str(blocker)})
    assert_vitals_shape(fresh.vitals())
    assert_vitals_shape(fresh.vitals())


# ---------------------------------------------------------------------------
# Through Salt's loader
# ---------------------------------------------------------------------------


class _CarbonHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.server.received.append(self.rfile.read().decode("utf-8"))


class _Carbon(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _CarbonHandler)
        self.received = []

    def wait_for(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received


@pytest.fixture(scope="module")
def carbon():
    server = _Carbon()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def minion_opts(tmp_path_factory, carbon):
    root = tmp_path_factory.mktemp("minion")
    for name in ("cache", "pki", "sock", "file_roots", "pillar_roots"):
        (root / name).mkdir()
    return local_opts(
        root,
        id="web1.example.com",
        file_roots={"base": [str(root / "file_roots")]},
        pillar_roots={"base": [str(root / "pillar_roots")]},
        highperf={"graphite": {"host": "127.0.0.1", "port": carbon.server_address[1],
                               "prefix": "test.farm", "timeout": 2}},
    )


@pytest.fixture(scope="module")
def loaders(minion_opts):
    return Loaders(minion_opts)


@pytest.fixture
def highperf(loaders):
    try:
        yield loaders.modules.highperf
    finally:
        loaders.reset_state()


def test_loader_vitals(highperf, loaders, sleeps):
    first = highperf.vitals()
    leaves = assert_vitals_shape(first, cpu_count=os.cpu_count())
    assert len(leaves) > 20
    second = highperf.vitals()
    assert len(sleeps) <= 1, "only a first call on a boot sleeps"
    assert_vitals_shape(second, cpu_count=os.cpu_count())


def test_loading_highperf_loads_no_other_module(minion_opts, monkeypatch):
    """A state's `salt['highperf.<fn>']` (a lookup inside a loader's context)
    imports highperf alone: a module-level `__salt__` made the loader import every
    execution module (~0.5 s) on each highstate and each scheduled push."""
    mods = salt.loader.minion_mods(minion_opts)
    loaded = []
    load_module = salt.loader.lazy.LazyLoader._load_module

    def spy(self, name):
        loaded.append(name)
        return load_module(self, name)

    monkeypatch.setattr(salt.loader.lazy.LazyLoader, "_load_module", spy)
    assert mods.run(lambda: mods["highperf.schedule_cron"](60)) == "*/1 * * * * 0"
    assert loaded == ["highperf"]


def test_loader_pg_tune_defaults_from_grains(highperf, loaders, hp):
    grains = loaders.grains
    assert highperf.pg_tune() == highperf.pg_tune(
        mem_total=hp._coarse_mib(grains["mem_total"]), cpus=grains["num_cpus"]
    )
    ret = highperf.pg_tune(mem_total="16384", cpus="8")
    assert ret["shared_buffers"] == "4GB"
    assert ret["work_mem"] == "327MB"


def test_loader_mysql_and_uwsgi(highperf, loaders, hp):
    assert highperf.mysql_tune(mem_total=16384) == {"innodb_buffer_pool_size": "13107M"}
    assert highperf.mysql_tune() == highperf.mysql_tune(
        mem_total=hp._coarse_mib(loaders.grains["mem_total"]))
    ret = highperf.uwsgi_tune(cpus=4, mem_total=8192, roles=["app"])
    assert ret["processes"] == 16
    assert ret["listen"] <= int(pathlib.Path("/proc/sys/net/core/somaxconn").read_text())
    assert highperf.uwsgi_tune(cpus=4, mem_total=8192, roles="app,db")["processes"] == 10


def test_loader_refuses_nonsense(highperf):
    with pytest.raises(SaltInvocationError, match="mem_total must be a positive number"):
        highperf.pg_tune(mem_total=0, cpus=4)
    with pytest.raises(SaltInvocationError, match="cpus must be a positive number"):
        highperf.uwsgi_tune(cpus="many", mem_total=1024)


LINE_RE = re.compile(r"^(\S+) (-?\d+(?:\.\d+)?(?:e[+-]?\d+)?) (\d+)$")


def test_push_vitals_config_defaults(highperf, carbon):
    before = len(carbon.received)
    now = time.time()
    sent = highperf.push_vitals()
    received = carbon.wait_for(before + 1)
    assert len(received) == before + 1, "one connection"
    lines = received[-1].splitlines()
    assert isinstance(sent, int) and sent == len(lines) > 20
    stamps = set()
    for line in lines:
        match = LINE_RE.match(line)
        assert match, line
        path, _, stamp = match.groups()
        parts = path.split(".")
        assert parts[:3] == ["test", "farm", "web1_example_com"], path
        assert parts[3] in {"load", "cpu", "memory", "disk", "network"}, path
        assert all(GRAPHITE_KEY_RE.match(p) for p in parts), path
        stamps.add(int(stamp))
    assert len(stamps) == 1 and abs(stamps.pop() - now) < 5
    assert "test.farm.web1_example_com.disk.root.used_percent" in received[-1]


def test_push_vitals_explicit_arguments(highperf, carbon):
    before = len(carbon.received)
    sent = highperf.push_vitals(
        host="127.0.0.1", port=str(carbon.server_address[1]), prefix="servers"
    )
    lines = carbon.wait_for(before + 1)[-1].splitlines()
    assert sent == len(lines)
    assert all(line.startswith("servers.web1_example_com.") for line in lines)


@pytest.fixture
def module_log(caplog, monkeypatch):
    """
    Records of the loaded module's logger, kept from the root logger: Salt's
    deferred console handler would print them at interpreter exit, after
    pytest has closed the stream.
    """
    names = [n for n in logging.Logger.manager.loggerDict if n.endswith(".module.highperf")]
    assert names, "the loaded module's logger"
    for name in names:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "propagate", False)
        monkeypatch.setattr(logger, "level", logging.DEBUG)
        logger.addHandler(caplog.handler)
    yield caplog
    for name in names:
        logging.getLogger(name).removeHandler(caplog.handler)


def test_push_vitals_carbon_down(highperf, loaders, module_log):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    ret = highperf.push_vitals(host="127.0.0.1", port=closed_port)
    assert isinstance(ret, str)
    assert ret.startswith("ERROR: could not send ")
    assert f"to carbon at 127.0.0.1:{closed_port}" in ret
    assert "refused" in ret.lower()
    assert loaders.context.get("retcode") == 1
    warnings = [r for r in module_log.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, "one line in the minion log"
    assert not warnings[0].exc_info, "no traceback"
    assert str(closed_port) in warnings[0].getMessage()
    # The module keeps working afterwards.
    assert_vitals_shape(highperf.vitals())


def test_push_vitals_bad_port(highperf):
    with pytest.raises(SaltInvocationError, match="port must be"):
        highperf.push_vitals(port=70000)
    with pytest.raises(SaltInvocationError, match="port must be a positive number"):
        highperf.push_vitals(port="carbon")


def test_salt_call_local(tmp_path):
    """The issue's acceptance command, on a bare machine: no master, no /etc/salt."""
    salt_call = pathlib.Path(sys.executable).with_name("salt-call")
    if not salt_call.exists():
        pytest.skip("salt-call is not installed next to this python")
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "minion").write_text(
        f"cachedir: {tmp_path / 'cache'}\n"
        f"pki_dir: {tmp_path / 'pki'}\n"
        f"sock_dir: {tmp_path / 'sock'}\n"
        f"log_file: {tmp_path / 'minion.log'}\n"
        # Its own: a copy synced into the machine's minion cache would win over -m.
        f"extension_modules: {tmp_path / 'extmods'}\n"
        "log_level_logfile: debug\n"
        "file_client: local\n"
    )
    proc = subprocess.run(
        [
            str(salt_call),
            "--local",
            "-c",
            str(config_dir),
            "-m",
            str(REPO / "_modules"),
            "highperf.pg_tune",
            "mem_total=16384",
            "cpus=8",
            "--out=json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ret = json.loads(proc.stdout)["local"]
    assert ret["shared_buffers"] == "4GB"
    assert ret["work_mem"] == "327MB"
    assert ret["effective_cache_size"] == "8GB"
    assert ret["maintenance_work_mem"] == "1GB"
    # The loader logs the file it loaded the module from: this repository's.
    loaded = set(
        re.findall(
            r"<module 'salt\.loaded\.ext\.module\.highperf' from '([^']+)'>",
            (tmp_path / "minion.log").read_text(),
        )
    )
    assert loaded == {str(MODULE_PATH)}


# --------------------------------------------------------------------------- graphite schedule


@pytest.mark.parametrize(
    "interval, cron",
    [(5, "* * * * * */5"), (30, "* * * * * */30"), (60, "*/1 * * * * 0"),
     (300, "*/5 * * * * 0"), (3600, "0 * * * * 0")],
)
def test_schedule_cron_runs_at_wall_clock_multiples(hp, interval, cron):
    assert hp.schedule_cron(interval) == cron


@pytest.mark.parametrize("interval", [7, 45, 90, 7200, 0, -5, "x"])
def test_schedule_cron_refuses_intervals_that_drift_across_slots(hp, interval):
    with pytest.raises(SaltInvocationError, match="interval"):
        hp.schedule_cron(interval)


def test_retentions_put_the_push_interval_first(hp):
    assert hp.retentions(5, "2d", ["5m:30d", "1h:2y"]) == "5s:2d,5m:30d,1h:2y"
    assert hp.retentions("60", "7d", []) == "60s:7d"


@pytest.mark.parametrize("coarser", [["7s:30d"], ["90s:30d"], ["1x:1d"]])
def test_retentions_refuse_a_precision_the_interval_does_not_divide(hp, coarser):
    with pytest.raises(SaltInvocationError, match=coarser[0].split(":")[0]):
        hp.retentions(60, "2d", coarser)


def test_retention_archives_in_whisper_layout(hp):
    assert hp.retention_archives("5s:2d,5m:30d,1h:2y") == [[5, 34560], [300, 8640], [3600, 17520]]
    assert hp.retention_archives("1m:7d") == [[60, 10080]]


@pytest.mark.parametrize("bad", ["5s", "0s:1d", "x:1d", "5s:100", "5s:1d,"])
def test_retention_archives_refuse_what_is_not_precision_duration(hp, bad):
    with pytest.raises(SaltInvocationError, match="duration"):
        hp.retention_archives(bad)


# ---------------------------------------------------------------------------
# cache_tune
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mem", "kinds", "expected"),
    [
        (512, ["memcached"], {"memcached": 230}),
        (512, ["memcached", "redis"], {"memcached": 115, "redis": 115}),
        (512, "redis, memcached", {"memcached": 115, "redis": 115}),
        (1024, "redis", {"redis": 691}),
        (16384, ["memcached"], {"memcached": 12902}),
        (16384, ["memcached", "memcached"], {"memcached": 12902}),
        (300, ["memcached", "redis"], {"memcached": 64, "redis": 64}),
        (512, [], {}),
    ],
)
def test_cache_tune_pinned(hp, mem, kinds, expected):
    assert hp._cache_tune(mem, kinds) == expected


@pytest.mark.parametrize("mem", sorted({m for m, _ in HOSTS} | {640, 3000, 100000, 500000}))
def test_cache_tune_leaves_the_system_its_share(hp, mem):
    both = hp._cache_tune(mem, ["memcached", "redis"])
    alone = hp._cache_tune(mem, ["memcached"])["memcached"]
    system = max(256, mem / 8)
    assert alone == max(64, int((mem - system) * 0.9))
    # Two daemons share what one would get; neither falls below memcached's default.
    assert both["memcached"] == both["redis"] == max(64, int((mem - system) * 0.45))
    if alone > 64:
        assert alone + system < mem


@pytest.mark.parametrize(
    ("mem", "kinds", "match"),
    [(0, ["memcached"], "mem_total must be a positive number"),
     ("lots", ["memcached"], "mem_total must be a positive number"),
     (512, ["memcache"], "kinds must be one of memcached, redis")],
)
def test_cache_tune_refuses_nonsense(hp, mem, kinds, match):
    with pytest.raises(SaltInvocationError, match=match):
        hp._cache_tune(mem, kinds)


def test_loader_cache_tune_defaults_from_grains(highperf, loaders):
    assert highperf.cache_tune() == highperf.cache_tune(mem_total=loaders.grains["mem_total"])
    assert highperf.cache_tune(mem_total="16384", kinds="memcached") == {"memcached": 12902}


# ---------------------------------------------------------------------------
# varnish_tune
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mem", "expected"),
    [(512, 204), (1024, 614), (2048, 1228), (16384, 9830), (300, 64), (64, 64)],
)
def test_varnish_tune_pinned(hp, mem, expected):
    assert hp._varnish_tune(mem) == {"storage_mb": expected}


@pytest.mark.parametrize("mem", sorted({m for m, _ in HOSTS} | {640, 3000, 100000}))
def test_varnish_tune_leaves_the_rest_of_the_host_its_share(hp, mem):
    storage = hp._varnish_tune(mem)["storage_mb"]
    rest = max(256, mem / 4)
    assert storage == max(64, int((mem - rest) * 0.8))
    if storage > 64:
        assert storage + rest < mem


@pytest.mark.parametrize("mem", [0, -1, "lots", None])
def test_varnish_tune_refuses_nonsense(hp, mem):
    with pytest.raises(SaltInvocationError, match="mem_total must be a positive number"):
        hp._varnish_tune(mem)


def test_loader_varnish_tune_defaults_from_grains(highperf, loaders):
    assert highperf.varnish_tune() == highperf.varnish_tune(mem_total=loaders.grains["mem_total"])
    assert highperf.varnish_tune(mem_total="16384") == {"storage_mb": 9830}


@pytest.mark.parametrize("measured, coarse", [
    (15962, 16384), (16384, 16384), (2031, 2048), (2048, 2048), (3790, 3840), (3900, 4096),
    (4000, 4096), (4097, 5120), (100, 256), (7962, 8192)])
def test_the_ram_a_tuning_uses_is_rounded_as_pgtune_is_given_it(hp, measured, coarse):
    assert hp._coarse_mib(measured) == coarse


def test_a_few_mb_of_memtotal_drift_change_no_database_setting(hp, monkeypatch):
    def tuned(mem_total):
        monkeypatch.setattr(hp, "__grains__", {"mem_total": mem_total, "num_cpus": 2},
                            raising=False)
        return hp.pg_tune(), hp.mysql_tune()

    assert tuned(15962) == tuned(15991) == tuned(16384)
    assert tuned(2031) == tuned(2048)
    assert tuned(3900) == tuned(3990) == tuned(4096)  # where nearest-rounding flipped
