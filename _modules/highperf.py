"""
Server vital signs and starting-point tuning for the hpd-salt server farm.

One function per question, pure data out:

``highperf.vitals``
    load, CPU, memory, disk and network vital signs as one tree whose every
    leaf is a number.
``highperf.push_vitals``
    send ``highperf.vitals`` to Graphite (carbon's plaintext protocol).
``highperf.pg_tune``
    ``postgresql.conf`` settings for this host: the seed's rules, or one of
    PGTune's workload profiles.
``highperf.mysql_tune``
    the InnoDB buffer pool size (80% of RAM) for MariaDB 10.11.
``highperf.uwsgi_tune``
    uWSGI worker settings for a Django app server.
``highperf.cache_tune``
    memory for memcached and redis on a cache host.
``highperf.varnish_tune``
    the size of Varnish's cache storage on a Varnish host.

:depends: psutil
:platform: Linux (``vitals`` works wherever psutil does; the tuning functions
    are pure arithmetic and run anywhere)

Every function also runs on a machine with no master:

.. code-block:: bash

    salt-call --local -m _modules highperf.pg_tune mem_total=16384 cpus=8 --out=json

Configuration (minion config, grains or pillar, read with ``config.get``):

.. code-block:: yaml

    highperf:
      graphite:
        host: graphite.example.com   # default: localhost
        port: 2003                   # carbon plaintext listener, default 2003
        prefix: servers              # default: servers
        timeout: 5                   # seconds, default 5

The computations are plain functions of plain numbers (the ``_``-prefixed
helpers below); the public functions only read grains, config and the kernel,
then call them. That is what the unit tests pin.
"""

import json
import logging
import math
import os
import re
import select
import socket
import tempfile
import threading
import time

from salt.exceptions import SaltInvocationError

try:
    import psutil

    HAS_PSUTIL = True
except ImportError:  # pragma: no cover - exercised only without psutil
    HAS_PSUTIL = False

log = logging.getLogger(__name__)

__virtualname__ = "highperf"

# Injected by Salt's loader when the module is loaded (it overwrites these);
# declared here so the module can also be imported directly (unit tests, linters).
# Never `__salt__`: the loader compares a declared global with the one it injects,
# and comparing a dict with `__salt__` (a lazy loader) imports every execution
# module, about 0.5 s in each process that loads highperf.
__opts__ = {}
__grains__ = {}
__pillar__ = {}
__context__ = {}


def __virtual__():
    """
    Load wherever psutil is importable (the tuning functions need nothing,
    but ``vitals`` and ``push_vitals`` need psutil).
    """
    if not HAS_PSUTIL:
        return (False, "The highperf execution module requires the psutil Python library")
    return __virtualname__


# ---------------------------------------------------------------------------
# Input validation (shared by every public function)
# ---------------------------------------------------------------------------


def _number(name, value, integer=False):
    """
    Return ``value`` as a positive finite int/float, accepting numeric strings
    the way Salt's CLI passes them ("16384"); refuse anything else with a
    message naming the argument.
    """
    original = value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise SaltInvocationError(
                    f"{name} must be a positive number, got {original!r}"
                ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SaltInvocationError(f"{name} must be a positive number, got {original!r}")
    try:
        sane = math.isfinite(value) and value > 0
    except OverflowError:  # an int too large for a float
        sane = False
    if not sane:
        raise SaltInvocationError(f"{name} must be a positive number, got {original!r}")
    if integer:
        if value != int(value):
            raise SaltInvocationError(f"{name} must be a positive whole number, got {original!r}")
        value = int(value)
    return value


def _choice(name, value, choices):
    """
    Return ``value`` lower-cased if it is one of ``choices``, else refuse it.
    """
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise SaltInvocationError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _grain_default(name, value, grain, integer=False):
    """
    ``value`` if given, else the grain; validated either way.
    """
    if value is None:
        value = __grains__.get(grain)
        if value is None:
            raise SaltInvocationError(f"{name} was not given and the '{grain}' grain is not set")
    return _number(name, value, integer=integer)


def _coarse_mib(mib):
    """
    The RAM a tuning is computed from, ``mib`` (MemTotal as measured) rounded
    up the way an operator would give it to PGTune: to a whole GiB above 4 GiB,
    below that to 256 MiB (at least 256). MemTotal is a little under the RAM a
    host has (the kernel keeps some), so the host sits just under a step, never
    at one: a kernel that reserves a few MB more after an upgrade or a reboot
    changes no setting, and so queues no restart. ``15962`` -> ``16384``,
    ``2031`` -> ``2048``, ``3790`` -> ``3840``.
    """
    step = 1024 if mib > 4096 else 256
    return max(256, math.ceil(mib / step) * step)


def _host_mib(mem_total):
    """``mem_total`` when given (as is), else the ``mem_total`` grain, coarsely
    (:func:`_coarse_mib`)."""
    if mem_total is not None:
        return _number("mem_total", mem_total)
    return _coarse_mib(_grain_default("mem_total", None, "mem_total"))


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

PG_PROFILES = ("seed", "web", "oltp", "dw", "mixed", "desktop")
PG_STORAGE = ("hdd", "ssd", "san", "nvme")
#: PGTune's "Total Data Size" input: the databases' size against RAM.
PG_DB_SIZES = ("less_ram", "mid_ram", "greater_ram")
#: PGTune's upper bound of mid_ram: data up to this many times RAM.
PG_MID_RAM_FACTOR = 3
#: PGTune's work_mem factor by data size (more when the data fits in RAM, less
#: when the OS cache is under pressure).
_PG_DB_SIZE_WORK_MEM = {"less_ram": 1.3, "mid_ram": 1.0, "greater_ram": 0.9}

_MB = 1024  # kB per MB
_GB = 1024 * 1024  # kB per GB
_PG_INT_MAX = 2147483647

#: The seed refuses this many connections or more.
SEED_MAX_CONNECTIONS_LIMIT = 400
#: max_connections when none is given: PostgreSQL's own default for seed,
#: PGTune's per-profile defaults for the others.
PG_DEFAULT_CONNECTIONS = {
    "seed": 100,
    "web": 200,
    "oltp": 300,
    "dw": 40,
    "desktop": 20,
    "mixed": 100,
}
#: (min_wal_size, max_wal_size) in kB, PGTune's table; seed uses web's.
_PG_WAL_SIZE = {
    "seed": (1 * _GB, 4 * _GB),
    "web": (1 * _GB, 4 * _GB),
    "oltp": (2 * _GB, 8 * _GB),
    "dw": (4 * _GB, 16 * _GB),
    "desktop": (100 * _MB, 2 * _GB),
    "mixed": (1 * _GB, 4 * _GB),
}
_PG_EFFECTIVE_IO_CONCURRENCY = {"hdd": 2, "ssd": 200, "san": 300, "nvme": 1000}
#: PostgreSQL's accepted range for each memory setting, in kB (64-bit Linux,
#: 8kB blocks, 16MB WAL segments); results are clamped into it.
PG_LIMITS_KB = {
    "shared_buffers": (128, (_PG_INT_MAX // 2) * 8),
    "effective_cache_size": (8, _PG_INT_MAX * 8),
    "maintenance_work_mem": (1 * _MB, _PG_INT_MAX),
    "autovacuum_work_mem": (1 * _MB, _PG_INT_MAX),
    "work_mem": (64, _PG_INT_MAX),
    "wal_buffers": (32, 16 * _MB),
    "min_wal_size": (32 * _MB, _PG_INT_MAX),
    "max_wal_size": (32 * _MB, _PG_INT_MAX),
}


def _pg_size(kb):
    """
    Format a size in kB as a postgresql.conf value, rounded down to a whole
    unit: below 1MB in kB, otherwise whole MB, written in GB when it is a whole
    number of GB. ``335544`` -> ``'327MB'``, ``4194304`` -> ``'4GB'``,
    ``64`` -> ``'64kB'``, ``1572864`` -> ``'1536MB'``.
    """
    kb = int(kb)
    if kb < _MB:
        return f"{kb}kB"
    mb = kb // _MB
    if mb % 1024 == 0:
        return f"{mb // 1024}GB"
    return f"{mb}MB"


def _pg_clamp(setting, kb):
    low, high = PG_LIMITS_KB[setting]
    return max(low, min(high, int(kb)))


def _pg_wal_buffers(shared_buffers_kb):
    """
    PGTune / PostgreSQL 9.1 auto-tuning: 3% of shared_buffers, at most 16MB,
    snapped up to 16MB when above 14MB, at least 32kB.
    """
    value = (3 * shared_buffers_kb) // 100
    value = min(value, 16 * _MB)
    if 14 * _MB < value < 16 * _MB:
        value = 16 * _MB
    return max(value, 32)


def _pg_parallel(cpus, profile):
    """
    PGTune's parallel settings; none below 4 CPUs (PostgreSQL's defaults stay).
    """
    if cpus < 4:
        return {}
    per_gather = math.ceil(cpus / 2)
    if profile != "dw":
        per_gather = min(per_gather, 4)
    return {
        "max_worker_processes": cpus,
        "max_parallel_workers_per_gather": per_gather,
        "max_parallel_workers": cpus,
        "max_parallel_maintenance_workers": min(math.ceil(cpus / 2), 4),
    }


def _pg_random_page_cost(storage, profile, db_size):
    """
    PGTune's random_page_cost: 1.1 when the data fits in RAM (reads come from
    the page cache), else 4 on hdd, and 4 for dw (index scans over data larger
    than RAM lose to sequential scans even on SSD), else 1.1.
    """
    if db_size == "less_ram":
        return 1.1
    if storage == "hdd" or profile == "dw":
        return 4.0
    return 1.1


def _pg_db_size_class(data_bytes, mem_bytes):
    """
    PGTune's data size input for databases of ``data_bytes`` on a host with
    ``mem_bytes`` of RAM: ``less_ram`` below RAM, ``mid_ram`` up to
    3 x RAM, ``greater_ram`` above.
    """
    if isinstance(data_bytes, bool) or not isinstance(data_bytes, int) or data_bytes < 0:
        raise SaltInvocationError(f"data size must be a whole number of bytes, got {data_bytes!r}")
    mem_bytes = _number("mem_total", mem_bytes)
    if data_bytes < mem_bytes:
        return "less_ram"
    if data_bytes <= PG_MID_RAM_FACTOR * mem_bytes:
        return "mid_ram"
    return "greater_ram"


def _pg_tune(mem_mib, cpus, max_connections=None, storage="ssd", profile="seed",
             db_size="mid_ram"):
    """
    Pure computation behind :func:`pg_tune`: plain numbers in, a dict of
    postgresql.conf settings out. Arguments are validated the same way.
    """
    mem_mib = _number("mem_total", mem_mib)
    cpus = _number("cpus", cpus, integer=True)
    storage = _choice("storage", storage, PG_STORAGE)
    profile = _choice("profile", profile, PG_PROFILES)
    db_size = _choice("db_size", db_size, PG_DB_SIZES)
    if max_connections is None:
        conns = PG_DEFAULT_CONNECTIONS[profile]
    else:
        conns = _number("max_connections", max_connections, integer=True)
    if profile == "seed" and conns >= SEED_MAX_CONNECTIONS_LIMIT:
        raise SaltInvocationError(
            f"max_connections must be below {SEED_MAX_CONNECTIONS_LIMIT} with the seed "
            f"profile, got {conns}: put a connection pooler (pgbouncer) in front of "
            "PostgreSQL instead of raising it"
        )

    mem_kb = int(mem_mib * 1024)
    parallel = _pg_parallel(cpus, profile)
    min_wal, max_wal = _PG_WAL_SIZE[profile]

    if profile == "seed":
        shared_buffers = min(mem_kb // 4, 8 * _GB)
        effective_cache_size = mem_kb // 2
        maintenance_work_mem = mem_kb // 16
        work_mem = (2 * mem_kb) // conns
    else:
        shared_buffers = mem_kb // (16 if profile == "desktop" else 4)
        effective_cache_size = mem_kb // 4 if profile == "desktop" else (mem_kb * 3) // 4
        maintenance_work_mem = min(mem_kb // (8 if profile == "dw" else 16), 8 * _GB)
        # (RAM - shared_buffers) / ((max_connections + worker processes) * 3),
        # halved for dw/mixed, a sixth for desktop, at least 4MB.
        workers = parallel.get("max_worker_processes", 8)
        divisor = (conns + workers) * 3 * {"dw": 2, "mixed": 2, "desktop": 6}.get(profile, 1)
        work_mem = math.floor(((mem_kb - shared_buffers) // divisor)
                              * _PG_DB_SIZE_WORK_MEM[db_size])
        work_mem = max(work_mem, 4 * _MB)

    shared_buffers = _pg_clamp("shared_buffers", shared_buffers)
    ret = {
        "max_connections": conns,
        "shared_buffers": _pg_size(shared_buffers),
        "effective_cache_size": _pg_size(_pg_clamp("effective_cache_size", effective_cache_size)),
        "maintenance_work_mem": _pg_size(_pg_clamp("maintenance_work_mem", maintenance_work_mem)),
        "checkpoint_completion_target": 0.9,
        "wal_buffers": _pg_size(_pg_clamp("wal_buffers", _pg_wal_buffers(shared_buffers))),
    }
    if profile != "seed":
        ret["default_statistics_target"] = 500 if profile == "dw" else 100
    ret["random_page_cost"] = _pg_random_page_cost(storage, profile, db_size)
    ret["effective_io_concurrency"] = _PG_EFFECTIVE_IO_CONCURRENCY[storage]
    ret["work_mem"] = _pg_size(_pg_clamp("work_mem", work_mem))
    if profile != "seed":
        ret["huge_pages"] = "try" if shared_buffers >= 2 * _GB else "off"
    ret["min_wal_size"] = _pg_size(_pg_clamp("min_wal_size", min_wal))
    ret["max_wal_size"] = _pg_size(_pg_clamp("max_wal_size", max_wal))
    ret.update(parallel)
    if profile in ("web", "oltp", "mixed"):
        ret["jit"] = "off"
    if profile != "seed":
        if cpus >= 32:
            ret["autovacuum_max_workers"] = 5
        elif cpus >= 16:
            ret["autovacuum_max_workers"] = 4
        if maintenance_work_mem >= 2 * _GB:
            ret["autovacuum_work_mem"] = _pg_size(2 * _GB)
    if profile == "desktop":
        ret["wal_level"] = "minimal"
        ret["max_wal_senders"] = 0
    return ret


def pg_tune(mem_total=None, cpus=None, max_connections=None, storage="ssd", profile="seed",
            db_size="mid_ram"):
    """
    Return postgresql.conf settings sized for this host.

    Memory sizes are postgresql.conf strings with units (``'4GB'``,
    ``'327MB'``, ``'64kB'``), rounded *down* to a whole unit (whole MB from
    1MB up, shown as GB when exact) and clamped into PostgreSQL's accepted
    range (``shared_buffers`` >= 128kB, ``work_mem`` >= 64kB,
    ``maintenance_work_mem`` >= 1MB, ``wal_buffers`` 32kB..16MB, ...). Counts
    and ratios are numbers; ``huge_pages``/``jit``/``wal_level`` are strings.

    mem_total
        RAM in MiB. Default: the ``mem_total`` grain, rounded up to
        256 MiB (a whole GiB above 4 GiB) so that drift changes nothing.

    cpus
        CPU count. Default: the ``num_cpus`` grain.

    max_connections
        Default: 100 for ``seed`` (PostgreSQL's default), PGTune's per-profile
        default otherwise (web 200, oltp 300, dw 40, desktop 20, mixed 100).
        The seed profile refuses 400 or more.

    storage
        ``ssd`` (default), ``hdd``, ``san`` or ``nvme``: sets
        ``random_page_cost`` (hdd 4, others 1.1) and
        ``effective_io_concurrency`` (hdd 2, ssd 200, san 300, nvme 1000).

    profile
        ``seed`` (default) or one of PGTune's workloads ``web``, ``oltp``,
        ``dw``, ``mixed``, ``desktop``.

    db_size
        PGTune's "Total Data Size", the databases against RAM: ``less_ram``,
        ``mid_ram`` (1x to 3x RAM, PGTune's default) or ``greater_ram``.
        :func:`pg_db_size` measures it on a running server. Data that fits in
        RAM gets ``random_page_cost`` 1.1 on any storage and 30% more
        ``work_mem``; above it ``random_page_cost`` is 4 for hdd and for the
        dw profile (index scans over data larger than RAM lose to sequential
        scans, even on SSD), and ``greater_ram`` takes 10% off ``work_mem``.
        The work_mem factors apply to PGTune's profiles, not to the seed's
        rule.

    The memory rules side by side (RAM = mem_total, conns = max_connections,
    workers = cpus when cpus >= 4 else 8, PostgreSQL's default
    ``max_worker_processes``):

    ====================  ================  ========================================
    setting               seed              PGTune web / oltp / dw / mixed (desktop)
    ====================  ================  ========================================
    shared_buffers        RAM/4, max 8GB    RAM/4 (desktop RAM/16), no cap
    effective_cache_size  RAM/2             3*RAM/4 (desktop RAM/4)
    maintenance_work_mem  RAM/16            RAM/16 (dw RAM/8), max 8GB
    work_mem              2*RAM/conns       (RAM - shared_buffers) /
                                            ((conns + workers) * 3),
                                            /2 for dw and mixed, /6 desktop,
                                            at least 4MB
    max_connections       < 400             any
    ====================  ================  ========================================

    Every profile, seed included, also gets PGTune's CPU, storage and WAL
    settings: ``checkpoint_completion_target`` 0.9; ``wal_buffers`` 3% of
    shared_buffers (32kB..16MB, snapped to 16MB above 14MB);
    ``random_page_cost`` by storage, profile and data size,
    ``effective_io_concurrency`` by storage;
    ``min_wal_size``/``max_wal_size`` (seed and web 1GB/4GB, oltp 2GB/8GB, dw
    4GB/16GB, mixed 1GB/4GB, desktop 100MB/2GB); and with 4 CPUs or more
    ``max_worker_processes`` = ``max_parallel_workers`` = cpus,
    ``max_parallel_workers_per_gather`` = ceil(cpus/2) (at most 4 except dw)
    and ``max_parallel_maintenance_workers`` = ceil(cpus/2) at most 4 (below 4
    CPUs PostgreSQL's defaults are kept, as PGTune does). The PGTune profiles
    add ``default_statistics_target`` (dw 500, else 100), ``huge_pages``
    (``try`` from 2GB of shared_buffers), ``jit = off`` (web, oltp, mixed),
    ``autovacuum_max_workers`` (4 from 16 CPUs, 5 from 32),
    ``autovacuum_work_mem = 2GB`` when maintenance_work_mem reaches 2GB, and
    for desktop ``wal_level = minimal``/``max_wal_senders = 0``.

    The PGTune formulas mirror le0pard/pgtune
    (``src/features/configuration/configurationSlice.js``, Linux, PostgreSQL
    12 or later); PGTune prints sizes in exact kB where this function rounds
    down to whole MB. Version-specific extras (``wal_compression``) are left
    out.

    **work_mem: seed or PGTune?** The seed gives every connection
    ``2*RAM/conns``: on 16GB and 100 connections that is 327MB per sort or
    hash, so a handful of concurrent large sorts run in memory. It assumes
    only a few connections sort at once (Django's short queries, a pooler
    in front); if many do, the sum can exceed RAM and the OOM killer ends
    PostgreSQL backends. PGTune assumes the worst: each connection and
    worker may use three work_mem allocations at once, after shared_buffers
    is taken, so the total stays within RAM (37MB in the same case, web
    profile on 8 CPUs). Pick seed for few connections running reports or
    large sorts that should not spill to disk; pick a PGTune profile when
    connections are many and memory must stay predictable.

    CLI Example:

    .. code-block:: bash

        salt '*' highperf.pg_tune
        salt 'db*' highperf.pg_tune profile=oltp storage=hdd
        salt-call --local highperf.pg_tune mem_total=16384 cpus=8 max_connections=200
    """
    mem_mib = _host_mib(mem_total)
    cpus = _grain_default("cpus", cpus, "num_cpus", integer=True)
    return _pg_tune(
        mem_mib, cpus, max_connections=max_connections, storage=storage, profile=profile,
        db_size=db_size,
    )


#: The size of every database of the local cluster, in bytes.
_PG_DATA_SIZE_QUERY = "SELECT sum(pg_database_size(oid))::bigint FROM pg_database"


def pg_db_size(mem_total=None):
    """
    PGTune's data size input (``less_ram``, ``mid_ram``, ``greater_ram``: see
    :func:`pg_tune`) measured, not guessed: the size of every database of the
    local PostgreSQL (``pg_database_size``, summed) against this host's RAM, so
    the tuning follows the data as it grows. ``None`` when no server answers
    on the local socket (before the first install): the caller keeps its
    default.

    mem_total
        RAM in MiB. Default: the ``mem_total`` grain.

    CLI Example:

    .. code-block:: bash

        salt db highperf.pg_db_size
    """
    mem_mib = _grain_default("mem_total", mem_total, "mem_total")
    try:
        out = __salt__["cmd.run_all"](
            ["psql", "-XAtqc", _PG_DATA_SIZE_QUERY], runas="postgres",
            python_shell=False, ignore_retcode=True, output_loglevel="quiet",
        )
    except Exception as exc:  # noqa: BLE001 - no psql or no postgres user yet
        log.debug("highperf.pg_db_size: no local PostgreSQL: %s", exc)
        return None
    if out["retcode"] != 0 or not out["stdout"].strip().isdigit():
        log.debug("highperf.pg_db_size: no local PostgreSQL: %s", out["stderr"])
        return None
    return _pg_db_size_class(int(out["stdout"].strip()), int(mem_mib * 1024 * 1024))


# ---------------------------------------------------------------------------
# MySQL
# ---------------------------------------------------------------------------

#: MariaDB's smallest innodb_buffer_pool_size, in MiB (MySQL's is 5MiB too).
MYSQL_MIN_POOL_MIB = 5


def _my_size(mib):
    """my.cnf size: whole MiB, written in G when exact."""
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


def _mysql_tune(mem_mib):
    """
    Pure computation behind :func:`mysql_tune`.
    """
    mem_mib = _number("mem_total", mem_mib)
    pool = max(int(mem_mib * 1024) * 4 // 5 // 1024, MYSQL_MIN_POOL_MIB)
    return {"innodb_buffer_pool_size": _my_size(pool)}


def mysql_tune(mem_total=None):
    """
    Return my.cnf InnoDB settings for this host's MySQL, which on Debian 12 is
    MariaDB 10.11: only options that server accepts.

    ``innodb_buffer_pool_size`` is 80% of RAM (the seed's rule), rounded down
    to a whole MiB; a my.cnf string (``'13107M'``, ``'12G'``).

    Left out on purpose: ``innodb_buffer_pool_instances`` (MariaDB runs one
    buffer pool since 10.5 and removed the option in 10.6: an unknown option
    stops ``mariadbd``) and ``innodb_buffer_pool_chunk_size`` (deprecated and
    ignored since 10.11.12, MDEV-29445, which sizes the pool in 1MiB steps;
    Debian 12 ships a later 10.11).

    mem_total
        RAM in MiB. Default: the ``mem_total`` grain, rounded up to
        256 MiB (a whole GiB above 4 GiB) so that drift changes nothing.

    CLI Example:

    .. code-block:: bash

        salt 'db*' highperf.mysql_tune
        salt-call --local highperf.mysql_tune mem_total=16384
    """
    return _mysql_tune(_host_mib(mem_total))


# ---------------------------------------------------------------------------
# uWSGI
# ---------------------------------------------------------------------------

#: Roles (pillar ``hpd:roles``, the inventory's) that make a host "shared": processes
#: drop from 4 x cores to 2 x (cores + 1).
UWSGI_HEAVY_ROLES = frozenset(
    {"cache", "varnish", "db", "database", "memcached", "redis", "postgres", "postgresql", "mysql"}
)
#: Resident memory budgeted per worker process (MiB), and the share of RAM the
#: app server may take; together they cap processes on small-memory hosts.
UWSGI_WORKER_MIB = 128
UWSGI_RAM_SHARE = 0.5
#: One thread per worker. Debian 12's uWSGI (2.0.21; upstream changed it in
#: 2.0.25) stops a worker of several threads, in a chain reload or a recycle,
#: by cancelling and joining its other threads from the signal handler: measured
#: in the lab, 30 chain reloads under two clients, 4 of them hung a worker until
#: its master killed it (worker-reload-mercy), failing the requests in it (8 of
#: 23,572); single-threaded workers finish their request and exit: 0 of 24,748.
UWSGI_THREADS = 1
UWSGI_MAX_REQUESTS = 5000
UWSGI_HARAKIRI = 30
UWSGI_POST_BUFFERING = 8192
UWSGI_BUFFER_SIZE = 32768
#: Backlog per worker thread, before clamping to somaxconn.
UWSGI_LISTEN_PER_THREAD = 64
#: somaxconn assumed when the kernel's value cannot be read.
DEFAULT_SOMAXCONN = 128


def _roles(roles):
    if roles is None:
        return []
    if isinstance(roles, str):
        return [r.strip().lower() for r in roles.split(",") if r.strip()]
    if isinstance(roles, (list, tuple, set, frozenset)):
        return [str(r).strip().lower() for r in roles]
    raise SaltInvocationError(f"roles must be a list or a comma-separated string, got {roles!r}")


def _uwsgi_tune(cpus, mem_mib, roles=None, somaxconn=DEFAULT_SOMAXCONN):
    """
    Pure computation behind :func:`uwsgi_tune`.
    """
    cpus = _number("cpus", cpus, integer=True)
    mem_mib = _number("mem_total", mem_mib)
    somaxconn = _number("somaxconn", somaxconn, integer=True)
    shared = bool(UWSGI_HEAVY_ROLES.intersection(_roles(roles)))
    processes = 2 * (cpus + 1) if shared else 4 * cpus
    processes = max(1, min(processes, int(mem_mib * UWSGI_RAM_SHARE) // UWSGI_WORKER_MIB))
    listen = min(somaxconn, max(128, UWSGI_LISTEN_PER_THREAD * processes * UWSGI_THREADS))
    return {
        "processes": processes,
        "threads": UWSGI_THREADS,
        "listen": listen,
        "max-requests": UWSGI_MAX_REQUESTS,
        "max-requests-delta": max(1, UWSGI_MAX_REQUESTS // (2 * processes)),
        "harakiri": UWSGI_HARAKIRI,
        "post-buffering": UWSGI_POST_BUFFERING,
        "buffer-size": UWSGI_BUFFER_SIZE,
    }


def _somaxconn():
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return DEFAULT_SOMAXCONN


def uwsgi_tune(cpus=None, mem_total=None, roles=None):
    """
    Return uWSGI settings for a Django app server on this host: a starting
    point to measure from, not a final answer. Keys are uWSGI option names.

    ``processes``
        4 x cores, or 2 x (cores + 1) when the host also holds a heavy role (cache,
        varnish, db; also memcached, redis, postgres(ql), mysql, database),
        capped so that ``processes x 128MiB`` fits in half the RAM (at least 1).
    ``threads``
        1: a worker of several threads drops the requests in it when a chain
        reload stops it, in Debian 12's uWSGI (see ``UWSGI_THREADS``); the
        processes take the concurrency threads would have given.
    ``listen``
        socket backlog: 64 per worker thread, at least 128, never above the
        kernel's ``net.core.somaxconn`` (uWSGI refuses to start above it).
    ``max-requests`` / ``max-requests-delta``
        recycle a worker after 5000 requests, plus ``worker_id x delta`` so
        workers do not all recycle at once (spread over half the interval).
    ``harakiri``
        30 s: kill a worker stuck on one request.
    ``post-buffering``
        8192: buffer request bodies above 8KB before Django reads them.
    ``buffer-size``
        32768: room for large headers and cookies (uWSGI's 4096 default
        rejects them).

    cpus
        Default: the ``num_cpus`` grain.

    mem_total
        RAM in MiB. Default: the ``mem_total`` grain.

    roles
        List (or comma-separated string) of the host's roles. Default: pillar
        ``hpd:roles``, the roles the master's inventory gives this minion (a
        ``roles`` grain is the minion's own claim and is not read).

    CLI Example:

    .. code-block:: bash

        salt 'app*' highperf.uwsgi_tune
        salt-call --local highperf.uwsgi_tune cpus=8 mem_total=16384 roles=app,cache
    """
    cpus = _grain_default("cpus", cpus, "num_cpus", integer=True)
    mem_mib = _grain_default("mem_total", mem_total, "mem_total")
    if roles is None:
        roles = __pillar__.get("hpd", {}).get("roles", [])
    return _uwsgi_tune(cpus, mem_mib, roles=roles, somaxconn=_somaxconn())


# ---------------------------------------------------------------------------
# Cache servers (memcached, redis)
# ---------------------------------------------------------------------------

#: RAM left to the system (kernel, page cache, the minion, sshd) on a cache host:
#: an eighth of it, at least this many MiB.
CACHE_SYSTEM_MIB = 256
#: memcached's -m and redis's maxmemory count the data only; connection buffers,
#: the hash table and allocator slack come on top: this share of the rest is given.
CACHE_DATA_SHARE = 0.9
#: memcached's own default -m, the least a daemon is given.
CACHE_MIN_MIB = 64
CACHE_KINDS = ("memcached", "redis")


def _cache_tune(mem_mib, kinds):
    """
    Pure computation behind :func:`cache_tune`.
    """
    mem_mib = _number("mem_total", mem_mib)
    kinds = sorted({_choice("kinds", kind, CACHE_KINDS) for kind in _roles(kinds)})
    if not kinds:
        return {}
    system = max(CACHE_SYSTEM_MIB, mem_mib / 8)
    each = (mem_mib - system) * CACHE_DATA_SHARE / len(kinds)
    return {kind: max(CACHE_MIN_MIB, int(each)) for kind in kinds}


def cache_tune(mem_total=None, kinds=CACHE_KINDS):
    """
    Return the memory (MiB) each cache daemon of this host may fill with data:
    memcached's ``-m``, redis's ``maxmemory``, as ``{'memcached': 230}``.

    The host's RAM less what the system keeps (an eighth, at least 256 MiB),
    90% of that (the daemons' own overhead comes on top of the data), shared
    evenly by the daemons that run; each gets at least 64 MiB (memcached's
    default). A starting point: the cache role's pillar overrides it.

    mem_total
        RAM in MiB. Default: the ``mem_total`` grain.

    kinds
        The daemons the host runs, a list or a comma-separated string of
        ``memcached`` and ``redis``. Default: both.

    CLI Example:

    .. code-block:: bash

        salt 'cache*' highperf.cache_tune
        salt-call --local highperf.cache_tune mem_total=16384 kinds=memcached
    """
    return _cache_tune(_grain_default("mem_total", mem_total, "mem_total"), kinds)


# ---------------------------------------------------------------------------
# Varnish
# ---------------------------------------------------------------------------

#: RAM left to the rest of a Varnish host: the kernel, haproxy beside it, the
#: minion, and Varnish's own overhead outside its storage (worker threads' stacks
#: and workspaces, Transient storage for passed responses): a quarter of the RAM,
#: at least this many MiB.
VARNISH_SYSTEM_MIB = 256
#: malloc storage counts object bodies and headers; Varnish's per-object overhead
#: (about 1 KiB each) comes on top: this share of the rest is given.
VARNISH_STORAGE_SHARE = 0.8
#: The least storage worth running a cache with (Varnish's own default is 256).
VARNISH_MIN_MIB = 64


def _varnish_tune(mem_mib):
    """
    Pure computation behind :func:`varnish_tune`.
    """
    mem_mib = _number("mem_total", mem_mib)
    system = max(VARNISH_SYSTEM_MIB, mem_mib / 4)
    return {"storage_mb": max(VARNISH_MIN_MIB, int((mem_mib - system) * VARNISH_STORAGE_SHARE))}


def varnish_tune(mem_total=None):
    """
    Return the size of Varnish's cache storage on this host (``-s
    malloc,<storage_mb>m``) as ``{'storage_mb': 204}``.

    The host's RAM less what the rest keeps (a quarter, at least 256 MiB: the
    system, haproxy beside Varnish, Varnish's threads and Transient storage),
    80% of that (each object costs about 1 KiB more than its bytes), at least
    64 MiB. A starting point: the varnish role's pillar overrides it.

    mem_total
        RAM in MiB. Default: the ``mem_total`` grain.

    CLI Example:

    .. code-block:: bash

        salt lb highperf.varnish_tune
        salt-call --local highperf.varnish_tune mem_total=16384
    """
    return _varnish_tune(_grain_default("mem_total", mem_total, "mem_total"))


# ---------------------------------------------------------------------------
# Vital signs
# ---------------------------------------------------------------------------

#: Length of the one-off sample taken when no previous sample exists.
FIRST_SAMPLE_SECONDS = 0.25
#: The baseline for rates moves forward only once it is this old, so calls in
#: quick succession report over at least this long instead of jiffy noise.
MIN_INTERVAL_SECONDS = 1.0

_NET_FIELDS = (
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_drops",
    "tx_drops",
)
_RATE_FIELDS = tuple(f"{field}_per_s" for field in _NET_FIELDS)
_CPU_MODES = ("user", "nice", "system", "irq", "softirq", "iowait", "steal", "idle")
#: Read-only image filesystems: always 100% full, never worth sizing.
_IMAGE_FSTYPES = frozenset({"squashfs", "iso9660", "erofs", "udf"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_LOCK = threading.Lock()
_STATE = {}  # per consumer: pid, path, boot_id, base and pending samples
_MOUNTS = {"value": None, "pid": None, "file": None, "poll": None}
_MOUNTS_LOCK = threading.Lock()
_FSTYPES = {"physical": None, "known": frozenset()}
_NAMES = {}
_BOOT_ID = []


def _safe_name(name):
    """
    Graphite-safe path component: ``'/'`` -> ``'root'``, ``'/var/lib'`` ->
    ``'var_lib'``, ``'eth0.100'`` -> ``'eth0_100'``.
    """
    cached = _NAMES.get(name)
    if cached is None:
        stripped = name.strip("/")
        cached = _UNSAFE.sub("_", stripped) if stripped else "root"
        _NAMES[name] = cached
    return cached


def _load_block(loadavg, cpu_count):
    one, five, fifteen = loadavg
    return {
        "1min": one,
        "5min": five,
        "15min": fifteen,
        "per_cpu": {
            "1min": round(one / cpu_count, 4),
            "5min": round(five / cpu_count, 4),
            "15min": round(fifteen / cpu_count, 4),
        },
    }


def _cpu_block(prev, cur, cpu_count, interval):
    """
    CPU percentages from two ``psutil.cpu_times()`` samples given as dicts
    (psutil's semantics: guest time is already in user/nice; busy excludes
    idle and iowait; negative field deltas count as 0).
    """
    deltas = {k: max(0.0, cur[k] - prev.get(k, cur[k])) for k in cur}
    total = sum(deltas.values()) - deltas.get("guest", 0.0) - deltas.get("guest_nice", 0.0)
    percent = {}
    if total > 0:
        for mode in _CPU_MODES:
            percent[mode] = round(min(100.0, 100.0 * deltas.get(mode, 0.0) / total), 2)
        busy = total - deltas.get("idle", 0.0) - deltas.get("iowait", 0.0)
        percent["busy"] = round(min(100.0, max(0.0, 100.0 * busy / total)), 2)
    else:
        percent = dict.fromkeys((*_CPU_MODES, "busy"), 0.0)
    return {"count": cpu_count, "interval": round(interval, 3), "percent": percent}


def _memory_block(total, available, swap_total, swap_used):
    return {
        "total": total,
        "available": available,
        "used_percent": round(100.0 * (total - available) / total, 2) if total else 0.0,
        "swap_total": swap_total,
        "swap_used": swap_used,
        "swap_used_percent": round(100.0 * swap_used / swap_total, 2) if swap_total else 0.0,
    }


def _disk_entry(st):
    """
    Usage of one filesystem from an ``os.statvfs`` result, with psutil's
    (and df's) definitions: used percent is of the space users can use.
    """
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    usable = used + free
    inodes_used = st.f_files - st.f_ffree
    return {
        "total": total,
        "used": used,
        "free": free,
        "used_percent": round(100.0 * used / usable, 2) if usable else 0.0,
        "inodes_total": st.f_files,
        "inodes_used": inodes_used,
        "inodes_used_percent": round(100.0 * inodes_used / st.f_files, 2) if st.f_files else 0.0,
    }


def _net_block(prev, cur, interval):
    """
    Per-interface counters and per-second rates from two samples of
    ``{nic: (rx_bytes, tx_bytes, rx_packets, tx_packets, rx_errors, tx_errors,
    rx_drops, tx_drops)}``. A counter that went backwards (interface reset)
    or an interface seen for the first time has rate 0.
    """
    ret = {}
    for nic, counters in cur.items():
        before = prev.get(nic) or counters
        entry = dict(zip(_NET_FIELDS, counters, strict=True))
        if interval > 0:
            rates = [
                round((new - old) / interval, 3) if new > old else 0.0
                for new, old in zip(counters, before, strict=True)
            ]
        else:
            rates = [0.0] * len(_NET_FIELDS)
        entry.update(zip(_RATE_FIELDS, rates, strict=True))
        ret[_safe_name(nic)] = entry
    return ret


def _physical_fstypes(refresh=False):
    """
    Filesystem types backed by a device (not ``nodev`` in
    /proc/filesystems), plus zfs; None where /proc/filesystems is missing.
    """
    if _FSTYPES["physical"] is None or refresh:
        physical, known = set(), set()
        try:
            with open("/proc/filesystems", encoding="ascii") as fh:
                for line in fh:
                    nodev, _, fstype = line.rstrip("\n").partition("\t")
                    known.add(fstype)
                    if not nodev or fstype == "zfs":
                        physical.add(fstype)
        except OSError:
            return None
        _FSTYPES["physical"], _FSTYPES["known"] = frozenset(physical), frozenset(known)
    return _FSTYPES["physical"]


def _select_mounts(partitions, physical, isdir=os.path.isdir):
    """
    Real mounted filesystems from ``psutil.disk_partitions(all=True)``:
    device-backed types (``physical``; any ``/dev/...`` device when that is
    None), always the root ``/`` (overlay in containers), no read-only image
    filesystems, no bind-mounted files, one mount per device (``/`` wins, then
    the first mounted). Returns ``((safe_name, mountpoint), ...)``.
    """
    ordered = sorted(enumerate(partitions), key=lambda ip: (ip[1].mountpoint != "/", ip[0]))
    seen_devices, names, ret = set(), set(), []
    for _, part in ordered:
        if part.mountpoint != "/":
            if part.fstype in _IMAGE_FSTYPES:
                continue
            if physical is None:
                if not part.device.startswith("/"):
                    continue
            elif part.fstype not in physical:
                continue
            if not isdir(part.mountpoint):
                continue
        if part.device in seen_devices:
            continue
        seen_devices.add(part.device)
        name = _safe_name(part.mountpoint)
        while name in names:
            name += "_"
        names.add(name)
        ret.append((name, part.mountpoint))
    return tuple(ret)


def _mounts_changed():
    """
    False only when the kernel says the mount table is unchanged since this
    process last read it: /proc/self/mounts is pollable, a mount or unmount
    raises POLLPRI on it until it is read again (proc(5)). Re-reads it when
    it has changed, so the next change is signalled too.
    """
    pid = os.getpid()
    if _MOUNTS["pid"] == pid:
        if _MOUNTS["poll"] is None:
            return True  # no pollable mount table here: always re-read
        if not _MOUNTS["poll"].poll(0):
            return False
        try:
            _MOUNTS["file"].seek(0)
            _MOUNTS["file"].read()
        except OSError:
            _MOUNTS["poll"] = None
        return True
    # First look in this process. A descriptor inherited through fork belongs
    # to the parent: reading it would consume the parent's events.
    _MOUNTS.update(pid=pid, file=None, poll=None)
    try:
        fh = open("/proc/self/mounts", "rb", buffering=0)  # noqa: SIM115 - kept open
        fh.read()
        poller = select.poll()
        poller.register(fh.fileno(), select.POLLPRI | select.POLLERR)
        _MOUNTS.update(file=fh, poll=poller)
    except (OSError, AttributeError):  # no /proc, or no poll() (Windows)
        pass
    return True


def _real_mounts():
    with _MOUNTS_LOCK:
        if _mounts_changed() or _MOUNTS["value"] is None:
            partitions = psutil.disk_partitions(all=True)
            physical = _physical_fstypes()
            if physical is not None and any(p.fstype not in _FSTYPES["known"] for p in partitions):
                physical = _physical_fstypes(refresh=True)
            _MOUNTS["value"] = _select_mounts(partitions, physical)
        return _MOUNTS["value"]


def _disk_block():
    ret = {}
    for name, mountpoint in _real_mounts():
        try:
            ret[name] = _disk_entry(os.statvfs(mountpoint))
        except OSError as exc:
            log.debug("highperf: cannot statvfs %s: %s", mountpoint, exc)
    return ret


def _counters():
    """One sample of the counters rates are computed from."""
    net = {
        nic: (
            c.bytes_recv,
            c.bytes_sent,
            c.packets_recv,
            c.packets_sent,
            c.errin,
            c.errout,
            c.dropin,
            c.dropout,
        )
        for nic, c in psutil.net_io_counters(pernic=True, nowrap=False).items()
    }
    return {"mono": time.monotonic(), "cpu": psutil.cpu_times()._asdict(), "net": net}


def _boot_id():
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
                _BOOT_ID.append(fh.read().strip())
        except OSError:
            _BOOT_ID.append(str(psutil.boot_time()))
    return _BOOT_ID[0]


def _state_path(consumer):
    # .get only: truth-testing the loader's opts walks every key.
    cachedir = __opts__.get("cachedir")
    return os.path.join(cachedir, "highperf", f"{consumer}.json") if cachedir else None


def _sample(data):
    """A saved counter sample, checked; ValueError, TypeError or KeyError if malformed."""
    net = {k: tuple(int(x) for x in v) for k, v in data["net"].items()}
    if any(len(v) != len(_NET_FIELDS) for v in net.values()):
        raise ValueError("a network sample of the wrong length")
    return {
        "mono": float(data["mono"]),
        "cpu": {k: float(v) for k, v in data["cpu"].items()},
        "net": net,
    }


def _load_state(path, boot_id):
    """
    A consumer's baseline and pending samples saved by another process (a
    forked minion job, an earlier salt-call), if from this boot and well formed.
    """
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        if state.get("boot_id") != boot_id:
            return None
        pending = state["pending"]
        return {
            "base": _sample(state["base"]),
            "pending": None if pending is None else _sample(pending),
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _save_state(path, state):
    if not path:
        return
    tmp = None
    try:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".vitals.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({k: state[k] for k in ("boot_id", "base", "pending")}, fh)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError) as exc:
        log.debug("highperf: cannot save the vitals samples to %s: %s", path, exc)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _advance(base, pending, cur, min_interval):
    """
    The samples to keep after measuring ``cur``: ``(baseline, pending)``.
    ``pending`` is the oldest sample taken since the baseline; it becomes the
    baseline once ``min_interval`` old. So a baseline that has moved is always
    at least ``min_interval`` old, and a consumer called every N seconds
    (N >= ``min_interval``) measures exactly the time since its previous call.
    """
    if pending is not None and cur["mono"] - pending["mono"] >= min_interval:
        base, pending = pending, None
    return base, cur if pending is None else pending


def _sample_pair(consumer):
    """
    Return (baseline, current) counter samples of ``consumer``: each consumer
    (``vitals``, ``push_vitals``) keeps its own, so the schedule's series is
    continuous whatever else calls ``vitals``. The samples are kept in memory
    (the loader keeps the module alive) and in the minion cachedir (minion
    jobs run in forked processes, salt-call in new ones); only when neither
    exists is a short sample taken, once.
    """
    with _LOCK:
        pid, boot_id = os.getpid(), _boot_id()
        path = _state_path(consumer)
        kept = _STATE.get(consumer)
        if not kept or kept["pid"] != pid or kept["path"] != path:
            kept = _load_state(path, boot_id)
        cur = _counters()
        newest = kept and (kept["pending"] or kept["base"])
        if not newest or cur["mono"] < newest["mono"]:
            base, pending = cur, None
            time.sleep(FIRST_SAMPLE_SECONDS)
            cur = _counters()
        else:
            base, pending = kept["base"], kept["pending"]
        base, pending = _advance(base, pending, cur, MIN_INTERVAL_SECONDS)
        state = {"pid": pid, "path": path, "boot_id": boot_id, "base": base, "pending": pending}
        if not kept or kept["base"] is not base or kept["pending"] is not pending:
            _save_state(path, state)
        _STATE[consumer] = state
        return base, cur


def _vitals(consumer):
    prev, cur = _sample_pair(consumer)
    interval = cur["mono"] - prev["mono"]
    cpu_count = psutil.cpu_count() or 1
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        "load": _load_block(psutil.getloadavg(), cpu_count),
        "cpu": _cpu_block(prev["cpu"], cur["cpu"], cpu_count, interval),
        "memory": _memory_block(vm.total, vm.available, swap.total, swap.used),
        "disk": _disk_block(),
        "network": _net_block(prev["net"], cur["net"], interval),
    }


def vitals():
    """
    Return this server's vital signs as one tree whose every leaf is a number
    (bytes, counts, percent, per-second rates; never a string with a unit).

    ``load``
        ``1min``, ``5min``, ``15min`` load averages and ``per_cpu``: each
        divided by the CPU count (above 1.0 means a run queue).
    ``cpu``
        ``count``; ``interval``: seconds the percentages cover; ``percent``:
        ``busy`` (everything but idle and iowait) and per mode ``user``,
        ``nice``, ``system``, ``irq``, ``softirq``, ``iowait``, ``steal``,
        ``idle``.
    ``memory``
        ``total`` and ``available`` bytes, ``used_percent`` (``(total -
        available) / total``, as psutil), ``swap_total``, ``swap_used``
        bytes, ``swap_used_percent``.
    ``disk``
        per real mounted filesystem (device-backed, plus ``/`` even on
        overlay, one entry per device, no read-only images), keyed by mount
        point (``/`` -> ``root``, ``/var/lib`` -> ``var_lib``): ``total``,
        ``used``, ``free`` bytes, ``used_percent`` (of the space usable by
        non-root, as ``df``), ``inodes_total``, ``inodes_used``,
        ``inodes_used_percent``.
    ``network``
        per interface (dots as ``_``): ``rx_``/``tx_`` ``bytes``,
        ``packets``, ``errors``, ``drops`` counters and each as a
        ``..._per_s`` rate (0 for an interface first seen, or whose counters
        were reset).

    Percentages and rates cover the time since the previous call, and never
    less than 1 s (``MIN_INTERVAL_SECONDS``): when calls come faster, the
    older sample stays the baseline until the newer one is 1 s old. The one
    exception is the very first call on a boot, which has no earlier sample:
    it measures over a 0.25 s sample (``FIRST_SAMPLE_SECONDS``, the only
    sleep), and calls in the second after it measure from that sample's
    start. The samples are kept in memory and in
    ``<cachedir>/highperf/vitals.json``, so they carry across minion jobs
    (forked processes) and ``salt-call`` runs on the same boot.
    :func:`push_vitals` keeps its own in ``push_vitals.json``: a call of
    ``vitals`` never shortens what the next push covers. The mount table is
    parsed again only when the kernel signals a mount or unmount.

    CLI Example:

    .. code-block:: bash

        salt '*' highperf.vitals
        salt-call --local -m _modules highperf.vitals --out=json
    """
    return _vitals("vitals")


# ---------------------------------------------------------------------------
# Graphite
# ---------------------------------------------------------------------------


def _flatten(tree, path=()):
    """Yield ``(path tuple, number)`` for every leaf of a vitals tree."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, (*path, key))
        else:
            yield (*path, key), value


def _graphite_lines(tree, prefix, minion_id, timestamp):
    """
    Carbon plaintext lines ``<prefix>.<minion id, dots as _>.<group>.<...>
    <value> <timestamp>``, one per leaf.
    """
    head = [p for p in str(prefix or "").strip(".").split(".") if p]
    head.append(_UNSAFE.sub("_", str(minion_id)))
    base = ".".join(head)
    lines = []
    for path, value in _flatten(tree):
        text = repr(value) if isinstance(value, float) else str(int(value))
        lines.append(f"{base}.{'.'.join(path)} {text} {int(timestamp)}\n")
    return lines


def push_vitals(host=None, port=None, prefix=None):
    """
    Send :func:`vitals` to Graphite and return the number of datapoints sent.
    Its rates and percentages cover the time since the previous push (its own
    baseline, whatever else calls ``vitals``), and ``cpu.interval`` says how
    long that was.

    Each leaf becomes ``<prefix>.<minion id, dots as _>.<group>.<...>``
    (for example ``servers.web1_example_com.cpu.percent.busy``), all sent
    in one connection to carbon's plaintext listener, stamped with the same
    time.

    If carbon is down or unreachable the function logs one warning, returns
    an ``ERROR: ...`` string saying where it tried and why it failed, and
    sets a non-zero return code; nothing is raised and the minion carries on.

    host
        Default: ``highperf:graphite:host`` (``config.get``: minion config,
        grains, pillar), else ``localhost``.

    port
        Default: ``highperf:graphite:port``, else 2003.

    prefix
        Default: ``highperf:graphite:prefix``, else ``servers``.

    CLI Example:

    .. code-block:: bash

        salt '*' highperf.push_vitals
        salt '*' highperf.push_vitals host=graphite.example.com port=2003 prefix=farm
    """
    config_get = __salt__["config.get"]
    if host is None:
        host = config_get("highperf:graphite:host", "localhost")
    if port is None:
        port = config_get("highperf:graphite:port", 2003)
    if prefix is None:
        prefix = config_get("highperf:graphite:prefix", "servers")
    timeout = _number("timeout", config_get("highperf:graphite:timeout", 5))
    port = _number("port", port, integer=True)
    if port > 65535:
        raise SaltInvocationError(f"port must be between 1 and 65535, got {port}")
    if not host or not isinstance(host, str):
        raise SaltInvocationError(f"host must be a host name or address, got {host!r}")

    minion_id = __opts__.get("id") or __grains__.get("id") or socket.gethostname()
    # Stamped when the push starts: a push slowed down by a loaded host still
    # lands in the slot it was scheduled for.
    started = time.time()
    lines = _graphite_lines(_vitals("push_vitals"), prefix, minion_id, started)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall("".join(lines).encode("utf-8"))
    except OSError as exc:
        message = (
            f"ERROR: could not send {len(lines)} datapoints to carbon at "
            f"{host}:{port}: {exc.strerror or exc}"
        )
        log.warning("highperf.push_vitals: %s", message.removeprefix("ERROR: "))
        __context__["retcode"] = 1
        return message
    return len(lines)


# --------------------------------------------------------------------------- graphite schedule


def _schedule_cron(interval):
    if interval < 60 and 60 % interval == 0:
        return f"* * * * * */{interval}"
    if interval % 60 == 0 and 3600 % interval == 0:
        return f"*/{interval // 60} * * * * 0" if interval < 3600 else "0 * * * * 0"
    raise SaltInvocationError(
        f"interval must divide a minute, or be whole minutes that divide an hour, got {interval}"
    )


def schedule_cron(interval):
    """
    The Salt schedule ``cron`` expression (seconds last) that runs a job every
    ``interval`` seconds at wall-clock multiples of it, so each push of
    :func:`push_vitals` lands just after its whisper slot starts and fills
    exactly that slot (a ``seconds:`` job starts at a random phase and, near a
    slot boundary, leaves one slot empty and writes the next twice).

    CLI Example:

    .. code-block:: bash

        salt '*' highperf.schedule_cron 10
    """
    return _schedule_cron(_number("interval", interval, integer=True))


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(spec):
    spec = str(spec)
    if spec[-1:] in _UNIT_SECONDS and spec[:-1].isdigit():
        return int(spec[:-1]) * _UNIT_SECONDS[spec[-1]]
    if spec.isdigit():
        return int(spec)
    raise SaltInvocationError(f"{spec!r} is not a duration like 10s, 5m, 30d")


def _retentions(interval, finest, coarser):
    archives = [f"{interval}s:{finest}", *coarser]
    for archive in coarser:
        precision = archive.split(":")[0]
        if _seconds(precision) % interval:
            raise SaltInvocationError(
                f"coarser retention {archive}: {precision} is not a multiple of the "
                f"push interval ({interval}s)"
            )
    return ",".join(archives)


def retentions(interval, finest, coarser):
    """
    Carbon ``retentions`` for the vitals: the finest archive at the push
    ``interval`` (seconds) kept for ``finest``, then the ``coarser`` archives
    (``precision:duration``), each precision a multiple of the interval.

    CLI Example:

    .. code-block:: bash

        salt '*' highperf.retentions 10 2d '["5m:30d", "1h:2y"]'
    """
    return _retentions(_number("interval", interval, integer=True), finest, list(coarser))


def retention_archives(retentions):
    """
    The archives a carbon ``retentions`` string (``precision:duration``
    with units, comma-separated) gives a whisper file, as whisper lays them
    out: ``[[seconds per point, points], ...]``.

    CLI Example:

    .. code-block:: bash

        salt '*' highperf.retention_archives 10s:2d,5m:30d
    """
    archives = []
    for archive in str(retentions).split(","):
        precision, _, duration = archive.strip().partition(":")
        step = _seconds(precision)
        if not step or not duration[-1:].isalpha():
            raise SaltInvocationError(
                f"retentions: {archive!r} is not precision:duration with units, like 10s:2d"
            )
        archives.append([step, _seconds(duration) // step])
    return archives
