"""The hosts: an overlay on the base each, their config, booting them in their own
cgroup, entering them, and the machine limits a number of hosts needs."""

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from hpdlab import cgroups, site
from hpdlab.master import write_key_pair
from hpdlab.util import VENV, LabError, is_process, log, run, wait_for

HOST_DEBS = "/var/cache/hpd/debs"
HOST_WHEELHOUSE = "/var/cache/hpd/wheelhouse"
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
# Each host's systemd takes inotify instances and watches of the machine's root user
# (measured: with max_user_instances at 128, a 50-host lab booted 14 hosts; the
# others logged "Failed to create control group inotify object: Too many open
# files"). Short of what the hosts need, the lab raises a limit to the value of
# LXD's production setup guide, as LXD does.
INOTIFY_BASE = {"max_user_instances": 128, "max_user_watches": 65536, "max_queued_events": 16384}
INOTIFY_PER_HOST = {"max_user_instances": 16, "max_user_watches": 8192, "max_queued_events": 0}
LXD_PRODUCTION = {"max_user_instances": 1048576, "max_user_watches": 1048576,
                  "max_queued_events": 1048576}
# Lines of a host's console log that say why it did not come up; harmless noise
# (measured on this machine) left out.
FAILURE = re.compile(r"(?i)\b(fail\w*|error|cannot|can't|too many|freezing)\b")
NOISE = re.compile(r"Failed to create symlink /sys/fs/cgroup|Attempted to remove disk file system")


def raise_machine_limits(hosts, proc_sys=Path("/proc/sys")):
    """Raise the inotify limits short of what `hosts` hosts need; [(key, old, new)]."""
    changed = []
    for key, base in INOTIFY_BASE.items():
        path = proc_sys / "fs/inotify" / key
        current = int(path.read_text())
        if current < base + INOTIFY_PER_HOST[key] * hosts:
            path.write_text(str(LXD_PRODUCTION[key]))
            changed.append((f"fs.inotify.{key}", current, LXD_PRODUCTION[key]))
    for key, old, new in changed:
        log(f"raised {key} from {old} to {new} for {hosts} hosts (LXD's production setup)")
    return changed


def boot_failure(console_log):
    """The last line of a host's console log that says what went wrong, or None."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", console_log)
    lines = [line.strip() for line in text.splitlines()
             if FAILURE.search(line) and not NOISE.search(line)]
    return lines[-1] if lines else None


class Hosts:
    """The host half of a Lab (needs self.name, self.dir, self.bridge, self.master_dir,
    self.site_repo)."""

    def host_dir(self, name):
        return self.dir / "hosts" / name

    def prepare_host(self, state, name, base, archives, wheelhouse):
        """Mount the host's overlay on `base` (recorded) and write its config; its
        nspawn command."""
        host = state["hosts"][name]
        hd = self.host_dir(name)
        root = hd / "root"
        for d in ("upper", "work", "root"):
            (hd / d).mkdir(parents=True, exist_ok=True)
        host["base"], host["mounts"] = str(base), [str(root)]
        self.save(state)
        if not os.path.ismount(root):
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={base},upperdir={hd / 'upper'},workdir={hd / 'work'}", root])
        (root / "etc/hostname").write_text(name + "\n")
        (root / "etc/machine-id").write_text("")
        self.write_hosts_file(state, root)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(HOST_APT_SOURCES)
        (root / "etc/gitconfig").write_text(site.HOST_GITCONFIG)
        network = root / "etc/systemd/network/10-host0.network"
        network.write_text(NETWORK_FILE.format(
            address=host["address"], prefix=ipaddress.ip_network(state["subnet"]).prefixlen))
        self.write_minion_config(state, name, root)
        self.seed_minion_key(name, root, accepted=not host.get("added"))
        return [
            # The machine name (unique across labs) names the host-side veth.
            "systemd-nspawn", "-D", root, "-M", f"{self.name}-{name}", "--register=no",
            "--keep-unit",
            "--resolv-conf=off", "--timezone=off", "-b", "--console=passive",
            f"--network-bridge={self.bridge}",
            f"--bind-ro={VENV}",
            f"--bind-ro={archives}:{HOST_DEBS}",
            f"--bind-ro={wheelhouse}:{HOST_WHEELHOUSE}",
            f"--bind-ro={self.site_repo}:{site.HOST_GIT}",
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
        # when the lab or an operator says so, not in every highstate.
        conf = {"id": name, "master": self.bridge_address(state), "grains": grains,
                "log_level_logfile": "info", "autoload_dynamic_modules": False}
        d = root / "etc/salt/minion.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / "lab.conf").write_text("# Written by lab/labctl.\n" + yaml.safe_dump(conf))

    def seed_minion_key(self, name, root, accepted=True):
        """Make the host's key pair and hand its public key to the master before the
        host boots: accepted (the lab's own hosts), or pending as if the minion had
        sent it (a host added to a running lab: `accept_key` accepts it through
        salt-key, as an operator would, and the master's reactor provisions it)."""
        pki = root / "etc/salt/pki/minion"
        write_key_pair(pki, "minion")
        key = self.master_dir / "etc/salt/pki/master" / (
            "minions" if accepted else "minions_pre") / name
        key.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pki / "minion.pub", key)
        shutil.copy(self.master_dir / "etc/salt/pki/master/master.pub", pki / "minion_master.pub")

    def accept_key(self, name):
        """Accept the host's pending key with salt-key (the master's reactor then
        provisions the host when its minion starts)."""
        run([*self.salt_cmd("salt-key"), "-a", name, "-y"], capture_output=True)

    def delete_key(self, name):
        """Delete the host's key with salt-key (the master's reactor then takes it
        out of the pools), if the master has one."""
        pki = self.master_dir / "etc/salt/pki/master"
        if any((pki / d / name).exists() for d in ("minions", "minions_pre", "minions_denied")):
            run([*self.salt_cmd("salt-key"), "-d", name, "-y"], capture_output=True)

    def start_host(self, state, name, cmd):
        """Start the host's nspawn in its own cgroups (or scope), recorded in its entry."""
        host = state["hosts"][name]
        mode = state["cgroup_mode"]
        if mode == "systemd":
            host["scope"] = cgroups.scope_unit(self.name, name)
            self.save(state)
            cmd = cgroups.scope_command(self.name, name, host, cmd)
        else:
            dirs = cgroups.host_cgroup_dirs(self.name, name, host, mode)
            host["cgroups"] = [str(d) for d in dirs]
            self.save(state)
            cgroups.make_cgroups(dirs, host, mode)
            cmd = cgroups.in_cgroups(dirs, cmd)
        with open(self.host_dir(name) / "nspawn.log", "ab") as logf:
            proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        host["pid"] = proc.pid
        self.save(state)
        # The PID is nspawn's once the command before it (systemd-run, the cgroup
        # shell) has exec'd it; `down` stops only nspawn processes.
        wait_for(lambda: proc.poll() is not None or is_process(proc.pid, "systemd-nspawn"), 10,
                 f"host {name}'s systemd-nspawn to start")
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

    def host_failure(self, state, name):
        """Why host `name` is not up, from its own console log (None: no sign yet)."""
        try:
            console = (self.host_dir(name) / "nspawn.log").read_text(errors="replace")
        except OSError:
            console = ""
        reason = boot_failure(console)
        pid = state["hosts"][name].get("pid")
        if not pid or not is_process(pid, "systemd-nspawn"):
            last = [line.strip() for line in console.splitlines() if line.strip()]
            return f"exited ({reason or (last[-1] if last else 'an empty log')})"
        return reason

    def exec_in(self, state, name, cmd, **kw):
        """Run `cmd` in host `name`: its namespaces and its cgroups (nsenter enters
        namespaces only; without its cgroups the command escapes the host's limits)."""
        pid = self.host_init_pid(state, name)
        if pid is None:
            raise LabError(f"host {name} is not running")
        env = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME=/root", "LANG=C.UTF-8", "TERM=" + os.environ.get("TERM", "dumb")]
        groups = [Path(g) for g in state["hosts"][name].get("cgroups", [])]
        return run(cgroups.in_cgroups(groups, ["nsenter", "-t", pid, "-a", *env, *cmd]), **kw)

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
