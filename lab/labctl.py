"""The lab: throw-away Debian hosts with real systemd (systemd-nspawn), one
bridge of their own, and a salt-master on the machine that manages them.

Everything lives under HPD_LAB_ROOT (default /var/lib/hpd-lab):

    base/            Debian bookworm rootfs, built once, rebuilt when its inputs change
    apt-archives/    .deb cache filled on the machine (hosts have no route out)
    wheelhouse/      Python wheels filled on the machine
    <lab>/           one running lab: state.json, master/, hosts/<name>/

The hosts' roles and environment come from the lab spec; the lab writes them into
the master's inventory (pillar is targeted by minion id, never by grain) and
mirrors them as grains for `salt -G`.
"""

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("HPD_VENV", "/opt/hpd-salt/venv"))
LAB_ROOT = Path(os.environ.get("HPD_LAB_ROOT", "/var/lib/hpd-lab"))
DEFAULT_SPEC = REPO / "lab" / "specs" / "farm.yaml"
SUITE = "bookworm"
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "iproute2", "python3", "ca-certificates"]
HOST_DEBS = "/var/cache/hpd/debs"
HOST_WHEELHOUSE = "/var/cache/hpd/wheelhouse"
MINION_UNIT = f"""[Unit]
Description=The Salt minion (hpd lab)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=all
KillMode=process
ExecStart={VENV}/bin/salt-minion -c /etc/salt
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
# Hosts take Debian packages from the archive cache, bound in as a flat repository.
HOST_APT_SOURCES = f"""# Written by lab/labctl: lab hosts have no route out.
Types: deb
URIs: file:{HOST_DEBS}
Suites: ./
Trusted: yes
"""
NETWORK_FILE = """[Match]
Name=host0

[Network]
Address={address}/{prefix}
LinkLocalAddressing=no
IPv6AcceptRA=no
"""


class LabError(Exception):
    """A lab operation that cannot go on; the message says why."""


def log(msg):
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run([str(c) for c in cmd], **kw)


# --------------------------------------------------------------------------- spec


def load_spec(path=None, name=None, subnet=None):
    """Read a lab spec and return it normalised (addresses as strings, sizes ints).

    `name` and `subnet` override the spec's, so a second lab of the same spec (the
    tests') can run beside the first (the demo's).
    """
    path = Path(path or DEFAULT_SPEC)
    spec = yaml.safe_load(path.read_text())
    subnet = ipaddress.ip_network(subnet or spec.get("subnet", "10.77.0.0/24"))
    if subnet.overlaps(ipaddress.ip_network("192.0.2.0/24")):
        raise LabError(f"subnet {subnet} overlaps the machine's network 192.0.2.0/24")
    hosts = {host: host_entry(subnet, host, entry) for host, entry in spec["hosts"].items()}
    name = name or spec["name"]
    if not name.isalnum() or len(name) > 8:
        raise LabError(f"lab name {name!r}: at most 8 letters and digits (it names the bridge)")
    return {"name": name, "subnet": str(subnet), "hosts": hosts}


def host_entry(subnet, name, host):
    subnet = ipaddress.ip_network(subnet)
    address = subnet.network_address + int(host["address"])
    if address not in subnet or int(host["address"]) < 2:
        raise LabError(f"host {name}: address {host['address']} is not a host number in {subnet}")
    entry = {
        "address": str(address),
        "roles": sorted(host.get("roles", [])),
        "env": host.get("env", "dev"),
        "memory": host.get("memory"),
        "cpus": host.get("cpus"),
    }
    if entry["env"] not in ("dev", "staging", "production"):
        raise LabError(f"host {name}: env must be dev, staging or production")
    return entry


# --------------------------------------------------------------------------- base


def apt_mirror():
    """The Debian mirror this machine uses (its apt sources), unless HPD_LAB_MIRROR says."""
    if os.environ.get("HPD_LAB_MIRROR"):
        return os.environ["HPD_LAB_MIRROR"]
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        if line.startswith("deb ") and "security" not in line:
            return line.split()[1]
    raise LabError("no Debian mirror found in /etc/apt; set HPD_LAB_MIRROR")


def fingerprint(*parts):
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:16]


def base_inputs():
    return fingerprint(SUITE, apt_mirror(), BASE_PACKAGES, MINION_UNIT, apt_sources())


def apt_sources():
    return "".join(p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")))


def stamp_ok(stamp, inputs):
    return stamp.exists() and stamp.read_text().strip() == inputs


class chroot_network:
    """Lend the machine's resolv.conf to a chroot while apt fetches into it."""

    def __init__(self, root):
        self.resolv = Path(root) / "etc" / "resolv.conf"

    def __enter__(self):
        self.resolv.unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", self.resolv)

    def __exit__(self, *exc):
        self.resolv.unlink(missing_ok=True)
        self.resolv.write_text("")


def build():
    """Build (or check) the base rootfs, the archive cache and the wheelhouse:
    (base, archives, wheelhouse), each rebuilt only when its inputs changed."""
    inputs = base_inputs()
    base = build_base(inputs)
    return base, fill_archives(base, inputs), fill_wheelhouse()


def build_base(inputs):
    """Build the base rootfs unless the one on disk was built from the same `inputs`."""
    base, stamp = LAB_ROOT / "base", LAB_ROOT / "base.inputs"
    if base.is_dir() and stamp_ok(stamp, inputs):
        return base
    log(f"building the {SUITE} base rootfs (debootstrap, about a minute)")
    tmp = LAB_ROOT / "base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
         SUITE, tmp, apt_mirror()], stdout=subprocess.DEVNULL)
    (tmp / "etc/apt/sources.list").unlink(missing_ok=True)
    for source in Path("/etc/apt/sources.list.d").glob("*.sources"):
        shutil.copy(source, tmp / "etc/apt/sources.list.d" / source.name)
    with chroot_network(tmp):
        run(["chroot", tmp, "apt-get", "update", "-qq"])
    unit = tmp / "etc/systemd/system/salt-minion.service"
    unit.write_text(MINION_UNIT)
    wants = tmp / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "salt-minion.service").symlink_to("/etc/systemd/system/salt-minion.service")
    run(["chroot", tmp, "systemctl", "enable", "-q", "systemd-networkd",
         "systemd-networkd-wait-online"])
    run(["chroot", tmp, "systemctl", "mask", "-q", "apt-daily.timer",
         "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer"])
    (tmp / "etc/machine-id").write_text("")
    # Packages the hosts install later come from the archive cache bound in.
    (tmp / "etc/apt/apt.conf.d/10-hpd-lab").write_text(
        'APT::Install-Recommends "false";\nAcquire::Languages "none";\n')
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    stamp.write_text(inputs + "\n")
    return base


def fill_archives(base, base_inputs):
    """Download lab/packages.txt (and what it needs) into the archive cache and index it."""
    archives, stamp = LAB_ROOT / "apt-archives", LAB_ROOT / "apt-archives.inputs"
    packages = read_list(REPO / "lab" / "packages.txt")
    inputs = fingerprint(base_inputs, packages)
    if stamp_ok(stamp, inputs):
        return archives
    log(f"downloading {len(packages)} Debian packages and their dependencies")
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    target = base / "var/cache/apt/archives"
    run(["mount", "--bind", archives, target])
    try:
        with chroot_network(base):
            run(["chroot", base, "apt-get", "install", "-qq", "--download-only", "-y",
                 *packages], stdout=subprocess.DEVNULL)
    finally:
        run(["umount", target])
    for index, verb in (("Packages", "packages"), ("Release", "release")):
        with open(archives / index, "w") as out:
            run(["apt-ftparchive", verb, "."], cwd=archives, stdout=out)
    stamp.write_text(inputs + "\n")
    return archives


def fill_wheelhouse():
    """Download lab/wheels.txt into the wheelhouse (hosts install with --no-index)."""
    wheelhouse, stamp = LAB_ROOT / "wheelhouse", LAB_ROOT / "wheelhouse.inputs"
    wheels = read_list(REPO / "lab" / "wheels.txt")
    inputs = fingerprint(wheels)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    if stamp_ok(stamp, inputs):
        return wheelhouse
    if wheels:
        log(f"downloading {len(wheels)} Python packages into the wheelhouse")
        run([VENV / "bin/pip", "download", "-q", "--only-binary=:all:", "-d", wheelhouse,
             *wheels])
    stamp.write_text(inputs + "\n")
    return wheelhouse


def read_list(path):
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


# --------------------------------------------------------------------------- cgroups


def cgroup_mode():
    """How hosts get their own cgroup here.

    systemd: the machine's PID 1 is systemd; each host runs in a transient scope.
    v2:      a pure cgroup v2 hierarchy without systemd; the lab makes the groups.
    hybrid:  v1 controllers plus name=systemd and a cgroup2 at unified/ (this VM).
    """
    if Path("/run/systemd/system").is_dir():
        return "systemd"
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2"
    return "hybrid"


def own_cgroups():
    """{hierarchy directory: this process's cgroup path in it} for the ones the lab uses."""
    mine = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mine[controllers] = path
    return mine


def lab_cgroup_tops(lab, mode):
    """{hierarchy: the lab's own cgroup in it}, below labctl's own cgroup (none in systemd mode)."""
    mine = own_cgroups()
    if mode == "systemd":
        return {}
    if mode == "v2":
        return {"unified": Path("/sys/fs/cgroup" + mine[""]) / f"hpd-lab-{lab}"}
    return {h: Path(f"/sys/fs/cgroup/{h}" + mine[key]) / f"hpd-lab-{lab}"
            for h, key in (("systemd", "name=systemd"), ("unified", ""), ("memory", "memory"),
                           ("cpu", "cpu"))}


def host_cgroup_dirs(lab, name, host, mode):
    """The cgroup directories a host's nspawn starts in: tracking, plus limits if sized."""
    tops = lab_cgroup_tops(lab, mode)
    if not host.get("memory"):
        tops.pop("memory", None)
    if not host.get("cpus"):
        tops.pop("cpu", None)
    return [top / name for top in tops.values()]


def make_cgroups(dirs, host):
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        memory, cpus = host.get("memory"), host.get("cpus")
        if (d / "memory.max").exists() and memory:
            (d / "memory.max").write_text(str(memory * 2**20))
        if (d / "cpu.max").exists() and cpus:
            (d / "cpu.max").write_text(f"{cpus * 100000} 100000")
        if (d / "memory.limit_in_bytes").exists() and memory:
            (d / "memory.limit_in_bytes").write_text(str(memory * 2**20))
        if (d / "cpu.cfs_quota_us").exists() and cpus:
            (d / "cpu.cfs_period_us").write_text("100000")
            (d / "cpu.cfs_quota_us").write_text(str(cpus * 100000))


def enable_v2_controllers(dirs):
    """cgroup v2: memory and cpu must be enabled in every parent of a limited group."""
    root = Path("/sys/fs/cgroup")
    for d in dirs:
        for p in reversed([q for q in d.parents if q == root or root in q.parents]):
            try:
                (p / "cgroup.subtree_control").write_text("+memory +cpu")
            except OSError as exc:
                raise LabError(f"cannot enable memory/cpu controllers in {p}: {exc}") from exc


def remove_cgroup_tree(top):
    if not top.is_dir():
        return
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        d.rmdir()
    top.rmdir()


def cgroup_pids(top):
    pids = set()
    if top.is_dir():
        for procs in top.rglob("cgroup.procs"):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


# --------------------------------------------------------------------------- the lab


class Lab:
    def __init__(self, name):
        self.name = name
        self.dir = LAB_ROOT / name
        self.state_file = self.dir / "state.json"
        self.master_dir = self.dir / "master"

    # state ------------------------------------------------------------------
    def load(self):
        if not self.state_file.exists():
            return None
        return json.loads(self.state_file.read_text())

    def save(self, state):
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.rename(self.state_file)

    @contextlib.contextmanager
    def locked(self):
        """Hold the lab's lock: one labctl at a time changes a lab."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @property
    def bridge(self):
        return f"{self.name}-br0"

    def bridge_address(self, state):
        return str(ipaddress.ip_network(state["subnet"]).network_address + 1)

    # network -----------------------------------------------------------------
    def make_bridge(self, state):
        prefix = ipaddress.ip_network(state["subnet"]).prefixlen
        if run(["ip", "link", "show", self.bridge], check=False, capture_output=True).returncode:
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{self.bridge_address(state)}/{prefix}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])

    # master ------------------------------------------------------------------
    def master_config(self, state):
        # The repo root is a file root (salt://orch, salt://pillar/<role>/schema.yaml);
        # pillar data, the lab and the tests are not for minions.
        ignore = f"^({re.escape(str(REPO))}/)?(pillar/.*\\.sls|lab|tests|\\.git|\\.ci)($|/)"
        return {
            "id": f"{self.name}-master",
            "user": "root",
            "root_dir": str(self.master_dir),
            "interface": self.bridge_address(state),
            "file_roots": {"base": [str(REPO / "salt"), str(REPO)]},
            "pillar_roots": {"base": [str(REPO / "pillar"), str(self.master_dir / "inventory")]},
            "file_ignore_regex": [ignore],
            "pillar_raise_on_missing": False,
            "state_output": "changes",
            # Lab hosts share two cores: a busy minion can take seconds to say it
            # is still working, and the CLI must not take that for a dead minion.
            "timeout": 20,
            "gather_job_timeout": 30,
            "log_file": str(self.master_dir / "master.log"),
            "key_logfile": str(self.master_dir / "key.log"),
            "log_level_logfile": "info",
            # Minions sync extension modules when they start, not on every highstate.
            "reactor": [{"salt/minion/*/start": ["salt://reactor/sync_modules.sls"]}],
        }

    @property
    def master_pidfile(self):
        return self.master_dir / "var/run/salt-master.pid"

    def master_pid(self):
        try:
            pid = int(self.master_pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if is_process(pid, "salt-master") else None

    def start_master(self, state):
        conf = self.master_dir / "master"
        self.master_dir.mkdir(parents=True, exist_ok=True)
        config = self.master_config(state)
        conf.write_text(yaml.safe_dump(config, sort_keys=True))
        self.write_inventory(state)
        if self.master_pid():
            return
        # The master's keys are made here, so hosts can boot (trusting this key)
        # while the master starts.
        pki = self.master_dir / "etc/salt/pki/master"
        write_key_pair(pki, config["id"])
        for ext in ("pem", "pub"):
            if not (pki / f"master.{ext}").exists():
                (pki / f"master.{ext}").symlink_to(pki / f"{config['id']}.{ext}")
        cmd = [VENV / "bin/salt-master", "-c", self.master_dir, "-d", "--log-level=quiet"]
        mode = cgroup_mode()
        if mode == "systemd":
            run(["systemd-run", "--scope", "-q", f"--unit=hpd-lab-{self.name}-master", *cmd])
        else:
            dirs = host_cgroup_dirs(self.name, "master", {}, mode)
            make_cgroups(dirs, {})
            run(cmd, preexec_fn=lambda: join_cgroups(dirs))

    def write_inventory(self, state):
        """The master's inventory: minion id -> roles, env (the lab's, or an operator's)."""
        inv = self.master_dir / "inventory"
        inv.mkdir(parents=True, exist_ok=True)
        data = {n: {"roles": h["roles"], "env": h["env"]} for n, h in state["hosts"].items()}
        tmp = inv / "inventory.yaml.tmp"
        tmp.write_text("# Written by lab/labctl from the lab spec.\n" + yaml.safe_dump(data))
        tmp.rename(inv / "inventory.yaml")

    def salt_cmd(self, program="salt"):
        return [str(VENV / "bin" / program), "-c", str(self.master_dir)]

    def salt_json(self, *args, program="salt", timeout=600):
        """Run the salt CLI against the lab's master; the parsed JSON it prints.

        The CLI waits up to `timeout` seconds for every minion's return before it
        asks a minion whether it is still busy: lab hosts share two cores, and a
        minion deep in dpkg can be slow to answer that question.
        """
        out = run([*self.salt_cmd(program), "-t", timeout, *args, "--out=json", "--static"],
                  check=False, capture_output=True, text=True, timeout=timeout + 60)
        try:
            return json.loads(out.stdout)
        except json.JSONDecodeError:
            raise LabError(f"{program} {' '.join(args)} printed no JSON (rc {out.returncode}):"
                           f"\n{out.stdout}\n{out.stderr}") from None

    # hosts -------------------------------------------------------------------
    def host_dir(self, name):
        return self.dir / "hosts" / name

    def prepare_host(self, state, name, base, archives, wheelhouse):
        host = state["hosts"][name]
        hd = self.host_dir(name)
        root = hd / "root"
        for d in ("upper", "work", "root"):
            (hd / d).mkdir(parents=True, exist_ok=True)
        if not os.path.ismount(root):
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={base},upperdir={hd / 'upper'},workdir={hd / 'work'}", root])
        (root / "etc/hostname").write_text(name + "\n")
        (root / "etc/machine-id").write_text("")
        self.write_hosts_file(state, root)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(HOST_APT_SOURCES)
        network = root / "etc/systemd/network/10-host0.network"
        network.write_text(NETWORK_FILE.format(
            address=host["address"], prefix=ipaddress.ip_network(state["subnet"]).prefixlen))
        self.write_minion_config(state, name, root)
        self.seed_minion_key(name, root)
        return [
            # The machine name (unique across labs) names the host-side veth.
            "systemd-nspawn", "-D", root, "-M", f"{self.name}-{name}", "--register=no",
            "--keep-unit",
            "--resolv-conf=off", "--timezone=off", "-b", "--console=passive",
            f"--network-bridge={self.bridge}",
            f"--bind-ro={VENV}",
            f"--bind-ro={archives}:{HOST_DEBS}",
            f"--bind-ro={wheelhouse}:{HOST_WHEELHOUSE}",
        ]

    def write_hosts_file(self, state, root):
        lines = ["127.0.0.1\tlocalhost", f"{self.bridge_address(state)}\tsalt {self.name}-master"]
        lines += [f"{h['address']}\t{n}" for n, h in sorted(state["hosts"].items())]
        (root / "etc/hosts").write_text("\n".join(lines) + "\n")

    def write_minion_config(self, state, name, root):
        host = state["hosts"][name]
        grains = {"roles": host["roles"], "env": host["env"]}
        if host.get("memory"):
            grains["mem_total"] = host["memory"]
        if host.get("cpus"):
            grains["num_cpus"] = host["cpus"]
        # Extension modules sync when the minion starts (the master's reactor) and
        # when the harness or an operator says so, not in every highstate.
        conf = {"id": name, "master": self.bridge_address(state), "grains": grains,
                "log_level_logfile": "info", "autoload_dynamic_modules": False}
        d = root / "etc/salt/minion.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / "lab.conf").write_text("# Written by lab/labctl.\n" + yaml.safe_dump(conf))

    def seed_minion_key(self, name, root):
        """Make the host's key pair and accept it on the master before the host boots."""
        pki = root / "etc/salt/pki/minion"
        write_key_pair(pki, "minion")
        accepted = self.master_dir / "etc/salt/pki/master/minions" / name
        accepted.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pki / "minion.pub", accepted)
        shutil.copy(self.master_dir / "etc/salt/pki/master/master.pub", pki / "minion_master.pub")

    def start_host(self, state, name, cmd):
        host = state["hosts"][name]
        logf = open(self.host_dir(name) / "nspawn.log", "ab")
        mode = cgroup_mode()
        if mode == "systemd":
            props = []
            if host.get("memory"):
                props += ["-p", f"MemoryMax={host['memory']}M"]
            if host.get("cpus"):
                props += ["-p", f"CPUQuota={host['cpus'] * 100}%"]
            cmd = ["systemd-run", "--scope", "-q", f"--unit=hpd-lab-{self.name}-{name}",
                   *props, "--", *cmd]
            preexec = os.setsid
        else:
            dirs = host_cgroup_dirs(self.name, name, host, mode)
            if mode == "v2":
                enable_v2_controllers(dirs)
            make_cgroups(dirs, host)

            def preexec():
                join_cgroups(dirs)
                os.setsid()
        proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, preexec_fn=preexec)
        host["pid"] = proc.pid
        return proc.pid

    def host_init_pid(self, state, name):
        """The PID (machine namespace) of the host's systemd."""
        pid = state["hosts"][name].get("pid")
        if not pid or not is_process(pid, "systemd-nspawn"):
            return None
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                if is_process(int(child), "systemd"):
                    return int(child)
        return None

    def exec_in(self, state, name, cmd, **kw):
        pid = self.host_init_pid(state, name)
        if pid is None:
            raise LabError(f"host {name} is not running")
        env = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME=/root", "LANG=C.UTF-8", "TERM=" + os.environ.get("TERM", "dumb")]
        return run(["nsenter", "-t", pid, "-a", *env, *cmd], **kw)

    def system_state(self, state, name):
        try:
            out = self.exec_in(state, name, ["systemctl", "is-system-running"], check=False,
                               capture_output=True, text=True, timeout=10)
        except (LabError, subprocess.TimeoutExpired):
            return "down"
        return out.stdout.strip() or "unknown"

    def minion_state(self, state, name):
        try:
            out = self.exec_in(state, name, ["systemctl", "is-active", "salt-minion"],
                               check=False, capture_output=True, text=True, timeout=10)
        except (LabError, subprocess.TimeoutExpired):
            return "down"
        return out.stdout.strip()

    def ping(self, names, timeout=3):
        """The hosts among `names` whose minion answers test.ping within `timeout` s."""
        import salt.client  # slow to import: only where needed

        try:
            client = salt.client.LocalClient(str(self.master_dir / "master"))
        except Exception:  # no master (yet): nobody answers
            return set()
        try:
            answers = client.cmd(names, "test.ping", tgt_type="list", timeout=timeout,
                                 gather_job_timeout=1)
        except Exception:  # the master is starting, or went away: nobody answers
            return set()
        finally:
            client.destroy()
        return {n for n, ok in answers.items() if ok is True}

    def wait_ready(self, state, started, timeout=180):
        """Wait until the `started` hosts' minions have started, then until every
        host's minion answers and its systemd is up."""
        import salt.config  # slow to import: only where needed
        import salt.utils.event

        t0 = time.monotonic()
        wait_for(self.master_pid, 60, "the salt-master to start")
        opts = salt.config.client_config(str(self.master_dir / "master"))
        names = sorted(state["hosts"])
        waiting = {n: "minion not started" for n in started}
        # A minion announces itself on the master's event bus (salt/minion/<id>/start):
        # listening beats polling with test.ping, which forks a job on every minion
        # while the others are still starting. Minions that started before we
        # listened are found by an occasional ping.
        bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        try:
            last_ping = time.monotonic()
            while waiting:
                event = bus.get_event(wait=1, tag="salt/minion/", full=True)
                if event and event["tag"].endswith("/start"):
                    waiting.pop(event["tag"].split("/")[2], None)
                if waiting and time.monotonic() - last_ping > 5:
                    for n in self.ping(sorted(waiting), timeout=2):
                        waiting.pop(n)
                    last_ping = time.monotonic()
                if time.monotonic() - t0 > timeout:
                    raise timed_out(timeout, "every minion to start", waiting)
        finally:
            bus.destroy()
        waiting.update({n: "not answering test.ping" for n in names})
        for n in self.ping(names, timeout=10):
            waiting.pop(n)
        if waiting:
            raise timed_out(10, "every minion to answer test.ping", waiting)
        waiting.update({n: "unknown" for n in names})

        def booted():
            for n in list(waiting):
                waiting[n] = self.system_state(state, n)
                if waiting[n] in ("running", "degraded"):
                    del waiting[n]
            return not waiting

        wait_for(booted, timeout, "systemd in every host", waiting)
        log(f"{len(names)} host(s) with systemd running and their minion answering "
            f"after {time.monotonic() - t0:.1f}s")

    # operations ----------------------------------------------------------------
    def up(self, spec, extra=None):
        """Boot the hosts of `spec` (plus `extra`, name -> entry) that are not running yet."""
        base, archives, wheelhouse = build()
        self.dir.mkdir(parents=True, exist_ok=True)
        stale = self.load()
        if stale and not self.master_pid() and not any(
                self.host_init_pid(stale, n) for n in stale["hosts"]):
            log(f"lab {self.name} was left behind by processes that are gone: removing it first")
            self.down()
            self.dir.mkdir(parents=True, exist_ok=True)
        state = self.load() or {"name": self.name, "subnet": spec["subnet"], "hosts": {},
                                "cgroup_mode": cgroup_mode()}
        if state["subnet"] != spec["subnet"]:
            raise LabError(f"lab {self.name} runs on {state['subnet']}; `down` it first")
        for name, entry in {**spec["hosts"], **(extra or {})}.items():
            state["hosts"].setdefault(name, entry)
        taken = {}
        for name, host in state["hosts"].items():
            if host["address"] in taken:
                raise LabError(f"hosts {taken[host['address']]} and {name} share {host['address']}")
            taken[host["address"]] = name
        self.save(state)
        self.make_bridge(state)
        self.start_master(state)
        started = []
        for name in state["hosts"]:
            if self.host_init_pid(state, name) is None:
                cmd = self.prepare_host(state, name, base, archives, wheelhouse)
                self.start_host(state, name, cmd)
                started.append(name)
            else:
                self.write_hosts_file(state, self.host_dir(name) / "root")
        self.save(state)
        self.wait_ready(state, started)
        return state, started

    def down(self):
        state = self.load() or {"hosts": {}}
        pids = [h["pid"] for h in state["hosts"].values()
                if h.get("pid") and is_process(h["pid"], "systemd-nspawn")]
        veths = bridge_ports(self.bridge)
        master = self.master_pid()
        for pid in pids + ([master] if master else []):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(is_alive(p) for p in pids + [master or 0]):
            time.sleep(0.2)
        mode = state.get("cgroup_mode", cgroup_mode())
        if mode == "systemd":
            run(["systemctl", "stop", f"hpd-lab-{self.name}-*.scope"], check=False)
        tops = lab_cgroup_tops(self.name, mode).values()
        for top in tops:
            for pid in cgroup_pids(top):  # anything left in the lab's own cgroups is ours
                kill_quietly(pid)
        for top in tops:
            wait_for(lambda t=top: not cgroup_pids(t), 15, f"processes in {top} to exit")
            remove_cgroup_tree(top)
        for mount in reversed(lab_mounts(self.dir)):
            run(["umount", "-l", mount], check=False)
        for veth in veths:  # gone with their host's namespace, unless something went wrong
            run(["ip", "link", "del", veth], check=False, capture_output=True)
        run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def write_key_pair(pki, name):
    """A Salt RSA key pair `name`.pem/.pub in `pki`, unless it is there already."""
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (pki / f"{name}.pem").exists():
        return
    import salt.crypt  # slow to import: only where needed

    private, public = salt.crypt.gen_keys(2048)
    for key, text in ((f"{name}.pem", private), (f"{name}.pub", public)):
        fd = os.open(pki / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(text)


def bridge_ports(bridge):
    out = run(["ip", "-j", "link", "show", "master", bridge], check=False, capture_output=True,
              text=True)
    return [link["ifname"] for link in json.loads(out.stdout or "[]")]


def join_cgroups(dirs):
    for d in dirs:
        (d / "cgroup.procs").write_text(str(os.getpid()))


def is_alive(pid):
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


def is_process(pid, program):
    """True when `pid` runs `program` (guards against a PID reused by something else)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return False
    return is_alive(pid) and any(os.path.basename(w.decode()) == program for w in words[:2])


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def lab_mounts(directory):
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(directory) or point.startswith(str(directory) + "/"):
            mounts.append(point)
    return mounts


def timed_out(timeout, what, pending=None):
    """The error for a wait that ran out, saying what was still `pending` (a dict)."""
    still = ", ".join(f"{k}: {v}" for k, v in sorted((pending or {}).items()))
    return LabError(f"timed out after {timeout}s waiting for {what}"
                    + (f" ({still})" if still else ""))


def wait_for(predicate, timeout, what, pending=None):
    """Poll `predicate` until true; on time-out, say what was still `pending`."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise timed_out(timeout, what, pending)
        time.sleep(0.3)


def parse_size_args(args):
    entry = {"address": args.address, "roles": args.roles.split(",") if args.roles else [],
             "env": args.env}
    if args.memory:
        entry["memory"] = args.memory
    if args.cpus:
        entry["cpus"] = args.cpus
    return entry


# --------------------------------------------------------------------------- CLI


def current_lab(args):
    spec = load_spec(args.spec, args.name, args.subnet)
    return Lab(spec["name"]), spec


def cmd_up(args):
    lab, spec = current_lab(args)
    t0 = time.monotonic()
    with lab.locked():
        state, started = lab.up(spec)
    log(f"{len(started)} host(s) booted, {len(state['hosts'])} answering, "
        f"in {time.monotonic() - t0:.1f}s")
    cmd_status(args)


def cmd_add(args):
    lab, spec = current_lab(args)
    with lab.locked():
        state = lab.load()
        if state is None:
            raise LabError(f"lab {lab.name} is not up")
        if args.host in state["hosts"]:
            raise LabError(f"host {args.host} exists")
        if args.address is None:
            used = {int(ipaddress.ip_address(h["address"])) for h in state["hosts"].values()}
            net = ipaddress.ip_network(state["subnet"])
            args.address = next(n for n in range(100, 250)
                                if int(net.network_address) + n not in used)
        extra = {args.host: host_entry(state["subnet"], args.host, parse_size_args(args))}
        lab.up(spec, extra)
    cmd_status(args)


def cmd_build(args):
    """Build (or check) the base rootfs, the archive cache and the wheelhouse."""
    build()
    log(f"base, archives and wheelhouse are ready in {LAB_ROOT}")


def cmd_down(args):
    lab, _ = current_lab(args)
    with lab.locked():
        lab.down()
    log(f"lab {lab.name} is down")


def cmd_status(args):
    lab, _ = current_lab(args)
    state = lab.load()
    if state is None:
        print(f"lab {lab.name} is down")
        return 3
    up = lab.ping(list(state["hosts"]))
    rows = [("HOST", "ADDRESS", "ENV", "ROLES", "SYSTEMD", "MINION")]
    for name, h in sorted(state["hosts"].items()):
        rows.append((name, h["address"], h["env"], ",".join(["common", *h["roles"]]),
                     lab.system_state(state, name),
                     "answering" if name in up else lab.minion_state(state, name)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"master: {lab.bridge_address(state)} (config {lab.master_dir}/master), "
          f"cgroups: {state['cgroup_mode']}")
    return 0


def cmd_exec(args):
    lab, _ = current_lab(args)
    state = lab.load() or {"hosts": {}}
    if args.host not in state["hosts"]:
        raise LabError(f"no host {args.host} in lab {lab.name}")
    return lab.exec_in(state, args.host, strip_dashes(args.cmd), check=False).returncode


def cmd_salt(args, program):
    lab, _ = current_lab(args)
    os.execv(lab.salt_cmd(program)[0], lab.salt_cmd(program) + strip_dashes(args.args))


def strip_dashes(argv):
    return argv[1:] if argv and argv[0] == "--" else argv


def main(argv=None):
    parser = argparse.ArgumentParser(prog="labctl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=os.environ.get("HPD_LAB_SPEC"),
                        help="lab spec (default lab/specs/farm.yaml, or $HPD_LAB_SPEC)")
    parser.add_argument("--name", default=os.environ.get("HPD_LAB_NAME"),
                        help="lab name instead of the spec's (or $HPD_LAB_NAME)")
    parser.add_argument("--subnet", default=os.environ.get("HPD_LAB_SUBNET"),
                        help="lab subnet instead of the spec's (or $HPD_LAB_SUBNET)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the base rootfs, archive cache and wheelhouse")
    sub.add_parser("up", help="build what is missing and boot the spec's hosts")
    sub.add_parser("down", help="remove every process, mount, cgroup and link of the lab")
    sub.add_parser("status", help="hosts, addresses, roles, systemd and minion state")
    add = sub.add_parser("add", help="boot one more host and put it in the inventory")
    add.add_argument("host")
    add.add_argument("--roles", default="")
    add.add_argument("--env", default="dev")
    add.add_argument("--address", type=int, help="host number in the subnet (default: free)")
    add.add_argument("--memory", type=int, help="MiB")
    add.add_argument("--cpus", type=int)
    ex = sub.add_parser("exec", help="run a command inside a host")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    for program in ("salt", "salt-run", "salt-key"):
        p = sub.add_parser(program, help=f"run {program} against the lab's master")
        p.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command in ("salt", "salt-run", "salt-key"):
            return cmd_salt(args, args.command)
        handler = {"build": cmd_build, "up": cmd_up, "down": cmd_down, "status": cmd_status,
                   "add": cmd_add, "exec": cmd_exec}[args.command]
        return handler(args) or 0
    except LabError as exc:
        log(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
