"""The lab's logic that runs without a lab: locks, apt sources, bases in use,
state recording, `down` carrying on, machine limits, boot failures, waits."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hpdlab import base, cgroups, hosts, lab, site, util


@pytest.fixture
def lab_root(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "LAB_ROOT", tmp_path / "root")
    return tmp_path / "root"


# --------------------------------------------------------------------------- locks


def _hold(root, name, ready, release):
    util.LAB_ROOT = root
    with util.locked(name):
        ready.set()
        release.wait(10)


def test_lock_files_survive_the_lab_dir_being_removed(lab_root):
    """A waiter and a newcomer lock the same file, even after `down` removed the lab."""
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(lab_root, "t", ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        lab.Lab("t").dir.mkdir(parents=True, exist_ok=True)
        lab.remove_dir(lab.Lab("t").dir)  # what `down` does at its end
        import fcntl

        fd = os.open(lab_root / "locks" / "t.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        assert not any(lab.Lab("t").dir.glob(".lock")), "the lock is outside the lab's dir"
    finally:
        release.set()
        holder.join(10)


def test_build_holds_one_lock_across_the_build(lab_root, monkeypatch):
    """While one build runs (here: stuck in debootstrap), another waits for it."""
    seen = []
    monkeypatch.setattr(base, "base_apt_sources", lambda: "sources")
    monkeypatch.setattr(base, "apt_mirror", lambda: "http://mirror")

    def build_base(inputs, sources):
        import fcntl

        fd = os.open(lab_root / "locks" / "build.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("unlocked")
        except BlockingIOError:
            seen.append("locked")
        os.close(fd)
        return lab_root / "bases" / inputs

    monkeypatch.setattr(base, "build_base", build_base)
    monkeypatch.setattr(base, "fill_archives", lambda b, i: lab_root / "apt-archives")
    monkeypatch.setattr(base, "fill_wheelhouse", lambda: lab_root / "wheelhouse")
    monkeypatch.setattr(base, "built_with", lambda b, a: "versions")
    monkeypatch.setattr(util, "mountinfo", lambda: [])
    base.build()
    assert seen == ["locked"]


def test_the_build_says_which_debian_versions_the_lab_has(tmp_path, monkeypatch):
    """Debian's packages are not locked (bookworm's stable archive and its
    security fixes): `labctl build` prints the versions it holds."""
    root, archives = tmp_path / "base", tmp_path / "archives"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    archives.mkdir()
    (root / "var/lib/dpkg/status").write_text(
        "Package: systemd\nStatus: install ok installed\nVersion: 252.39-1~deb12u2\n\n"
        "Package: bash\nVersion: 5.2.15-2+b7\n")
    (root / "etc/apt/sources.list.d/debian.sources").write_text(DEB822)
    (archives / "Packages").write_text("Package: haproxy\nVersion: 2.6.12-1+deb12u4\n"
                                       "Filename: ./haproxy.deb\n\nPackage: libfoo\n"
                                       "Version: 1\n")
    monkeypatch.setattr(base, "BASE_PACKAGES", ["systemd"])
    monkeypatch.setattr(base, "read_list", lambda path: ["haproxy", "varnish"])
    line = base.built_with(root, archives)
    assert line.startswith("Debian packages (bookworm, bookworm-updates, bookworm-security; "
                           "the archive cache of 20")
    assert line.endswith("): systemd 252.39-1~deb12u2, haproxy 2.6.12-1+deb12u4")


# --------------------------------------------------------------------------- apt sources

NETINST = """#deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 NETINST]/ bookworm main
deb http://ftp.fr.debian.org/debian/ bookworm main non-free-firmware
deb-src http://ftp.fr.debian.org/debian/ bookworm main non-free-firmware

deb http://security.debian.org/debian-security bookworm-security main non-free-firmware
deb [arch=amd64] http://ftp.fr.debian.org/debian/ bookworm-updates main non-free-firmware
"""
DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def apt_etc(tmp_path, sources_list=None, deb822=None):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if sources_list is not None:
        (etc / "sources.list").write_text(sources_list)
    if deb822 is not None:
        (etc / "sources.list.d" / "debian.sources").write_text(deb822)
    return etc


@pytest.mark.parametrize("layout, mirror, security", [
    ({"sources_list": NETINST}, "http://ftp.fr.debian.org/debian/",
     "http://security.debian.org/debian-security"),
    ({"deb822": DEB822}, "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"),
])
def test_base_sources_come_from_the_machines_mirror_whatever_its_format(
        tmp_path, monkeypatch, layout, mirror, security):
    monkeypatch.delenv("HPD_LAB_MIRROR", raising=False)
    entries = base.machine_apt_sources(apt_etc(tmp_path, **layout))
    text = base.base_apt_sources(entries)
    stanzas = [s for s in text.split("\n\n")]
    assert f"URIs: {mirror}\nSuites: bookworm bookworm-updates\n" in stanzas[0]
    assert f"URIs: {security}\nSuites: bookworm-security\n" in stanzas[1]
    assert "cdrom" not in text and "deb-src" not in text


def test_a_machine_without_updates_or_security_gets_the_mirror_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("HPD_LAB_MIRROR", raising=False)
    etc = apt_etc(tmp_path, "deb http://m.example/debian bookworm main\n")
    entries = base.machine_apt_sources(etc)
    text = base.base_apt_sources(entries)
    assert "Suites: bookworm\n" in text and "security" not in text and "updates" not in text


def test_no_mirror_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HPD_LAB_MIRROR", raising=False)
    with pytest.raises(util.LabError, match="HPD_LAB_MIRROR"):
        base.base_apt_sources(base.machine_apt_sources(apt_etc(tmp_path, "")))


def test_packages_download_after_an_update_in_a_throwaway_overlay(lab_root, monkeypatch):
    """fill_archives runs `apt-get update` before the download, and never in the base."""
    commands = []
    monkeypatch.setattr(base, "run", lambda cmd, **kw: commands.append([str(c) for c in cmd]))
    monkeypatch.setattr(base, "chroot_network", lambda root: _paths(root))
    monkeypatch.setattr(util, "mountinfo", lambda: [])
    b = lab_root / "bases" / "x"
    b.mkdir(parents=True)
    base.fill_archives(b, "inputs")
    chroots = [c for c in commands if c[0] == "chroot"]
    assert [c[2:4] for c in chroots] == [["apt-get", "update"], ["apt-get", "install"]]
    assert all(c[1] != str(b) for c in chroots), "apt ran in the base itself"
    overlay = next(c for c in commands if c[:3] == ["mount", "-t", "overlay"])
    assert f"lowerdir={b}," in overlay[5] and overlay[6] == chroots[0][1]


# --------------------------------------------------------------------------- bases


def test_old_bases_go_only_when_no_lab_uses_them(lab_root, monkeypatch):
    bases = {n: lab_root / "bases" / n for n in ("new", "mounted", "recorded", "unused")}
    for b in bases.values():
        b.mkdir(parents=True)
    (lab_root / "base").mkdir()  # where the base lived before
    (lab_root / "lab1").mkdir()
    (lab_root / "lab1" / "state.json").write_text(json.dumps(
        {"hosts": {"h": {"base": str(bases["recorded"])}}}))
    monkeypatch.setattr(util, "mountinfo", lambda: [
        ("/x/root", "overlay", f"rw,lowerdir={bases['mounted']},upperdir=/x/u,workdir=/x/w")])
    base.remove_unused_bases(keep=bases["new"])
    assert sorted(p.name for p in (lab_root / "bases").iterdir()) == ["mounted", "new", "recorded"]
    assert not (lab_root / "base").exists()


# --------------------------------------------------------------------------- cgroups


def test_systemd_mode_runs_each_host_in_its_named_scope_with_its_limits():
    """systemd cgroup mode cannot be exercised here (PID 1 is not systemd): its command."""
    cmd = cgroups.scope_command("hpd", "db", {"memory": 512, "cpus": 2}, ["systemd-nspawn", "-b"])
    assert cmd == ["systemd-run", "--scope", "-q", "--unit=hpd-lab-hpd-db.scope",
                   "-p", "MemoryMax=512M", "-p", "CPUQuota=200%", "--", "systemd-nspawn", "-b"]
    assert cgroups.lab_cgroup_tops("hpd", "systemd") == {}


def test_lab_cgroups_do_not_depend_on_the_callers_cgroup(monkeypatch):
    first = cgroups.lab_cgroup_tops("t", "hybrid")
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "0::/elsewhere\n")
    assert cgroups.lab_cgroup_tops("t", "hybrid") == first
    assert first["memory"] == Path("/sys/fs/cgroup/memory/hpd-lab-t")


def test_a_command_in_cgroups_joins_each_group_itself_then_runs(tmp_path):
    """The command (not Python in the forked child) writes its PID into every group."""
    groups = [tmp_path / "memory", tmp_path / "with space"]
    for g in groups:
        g.mkdir()
        (g / "cgroup.procs").write_text("")
    out = subprocess.run(cgroups.in_cgroups(groups, ["sh", "-c", "echo $$; echo \"$1\"", "x",
                                                     "an argument"]),
                         capture_output=True, text=True, check=True)
    pid, arg = out.stdout.splitlines()
    assert [(g / "cgroup.procs").read_text().strip() for g in groups] == [pid, pid]
    assert arg == "an argument"


def test_a_group_that_cannot_be_joined_stops_the_command(tmp_path):
    out = subprocess.run(cgroups.in_cgroups([tmp_path / "gone"], ["echo", "ran"]),
                         capture_output=True, text=True)
    assert out.returncode == 125 and "ran" not in out.stdout


# --------------------------------------------------------------------------- up / down


class FakeLab(lab.Lab):
    """A Lab whose hosts are plain processes (started by the real start_host) and
    whose master and bridge are left out; the third host fails to prepare."""

    recorded = None
    site_head = None

    def master_pid(self):
        return None

    def host_init_pid(self, state, name):
        return None

    def make_bridge(self, state):
        state["bridge"] = None

    def start_master(self, state):
        state["master"] = {}

    def record_master_pid(self, state):
        pass

    def prepare_host(self, state, name, base_dir, archives, wheelhouse):
        self.host_dir(name).mkdir(parents=True, exist_ok=True)
        if name == "a":
            FakeLab.site_head = site.head(self.site_repo)
        if name == "c":
            FakeLab.recorded = json.loads(self.state_file.read_text())["hosts"]
            raise util.LabError(f"{name} would not boot")
        return [fake_nspawn(self.dir.parent), "60"]

    def wait_ready(self, state, started):
        raise AssertionError("not reached")


def fake_nspawn(directory):
    """A program named systemd-nspawn (a sleep), as `down` checks a PID's program."""
    exe = directory / "systemd-nspawn"
    if not exe.exists():
        exe.symlink_to("/bin/sleep")
    return exe


@pytest.fixture
def failed_up(lab_root, monkeypatch):
    """`up` of FakeLab's three hosts, which fails at the third."""
    monkeypatch.setattr(hosts, "raise_machine_limits", lambda n: [])
    monkeypatch.setattr(base, "built", lambda: _paths(lab_root))
    monkeypatch.setattr(cgroups, "cgroup_mode", lambda: "hybrid")
    monkeypatch.setattr(cgroups, "lab_cgroup_tops", lambda name, mode: {})
    monkeypatch.setattr(lab, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1))
    spec = {"subnet": "10.90.0.0/24", "hosts": {
        n: {"address": f"10.90.0.{i + 10}", "roles": [], "env": "dev"}
        for i, n in enumerate(("a", "b", "c"))}}
    with pytest.raises(util.LabError, match="c would not boot"):
        FakeLab("t").up(spec)


def test_up_records_each_host_as_it_starts_and_stops_them_on_error(lab_root, failed_up):
    pids = [FakeLab.recorded[n].get("pid") for n in ("a", "b")]
    assert all(pids), FakeLab.recorded  # in the state file while the next host started
    assert not any(util.is_alive(p) for p in pids)  # stopped by up's clean-up
    assert not (lab_root / "t").exists()


def test_up_publishes_the_example_site_before_any_host_starts(tmp_path, failed_up):
    """Hosts bind the repository in, so main holds example/ before the first boots."""
    assert FakeLab.site_head == site.publish(tmp_path / "same.git", site.SITE_SOURCE)


class _paths:
    def __init__(self, root):
        self.root = root

    def __enter__(self):
        return self.root / "bases" / "b", self.root / "apt-archives", self.root / "wheelhouse"

    def __exit__(self, *exc):
        return False


def test_down_carries_on_through_every_step_and_reports_all_errors(lab_root, monkeypatch):
    commands = []

    def run(cmd, **kw):
        commands.append([str(c) for c in cmd])
        if cmd == ["ip", "link", "del", "t-br0"]:
            raise subprocess.CalledProcessError(1, cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(lab, "run", run)
    monkeypatch.setattr(lab, "bridge_ports", lambda bridge: ["vb-t-a"])
    t = lab.Lab("t")
    t.dir.mkdir(parents=True)
    busy = lab_root / "cg" / "busy"  # rmdir fails: a file in it
    busy.mkdir(parents=True)
    (busy / "stray").write_text("")
    alive = subprocess.Popen([fake_nspawn(lab_root), "60"])
    vanished = subprocess.Popen(["true"])
    vanished.wait()
    t.save({"name": "t", "subnet": "10.90.0.0/24", "cgroup_mode": "hybrid", "bridge": "t-br0",
            "veths": [], "master": {"pid": vanished.pid, "cgroups": [str(busy)]},
            "cgroups": [str(lab_root / "cg" / "gone")],
            "hosts": {"a": {"pid": vanished.pid, "cgroups": [str(busy)]},
                      "b": {"pid": alive.pid, "cgroups": []}}})
    with pytest.raises(util.LabError) as err:
        t.down()
    assert alive.wait(timeout=40) == -signal.SIGTERM
    assert str(err.value).count(f"remove cgroup {busy}") == 2, err.value
    assert ["ip", "link", "del", "vb-t-a"] in commands
    assert ["ip", "link", "del", "t-br0"] in commands
    assert "delete link t-br0" in str(err.value)  # failed, reported, and still went on
    assert not t.dir.exists()


def test_down_exits_non_zero_when_a_step_failed(lab_root, monkeypatch, capsys):
    from hpdlab import cli

    def down(self):
        raise util.LabError("1 step(s) of removing lab t failed:\n  unmount /x: busy")

    monkeypatch.setattr(lab.Lab, "down", down)
    assert cli.main(["--name", "t", "--subnet", "10.90.0.0/24", "down"]) == 2
    assert "unmount /x: busy" in capsys.readouterr().err


# --------------------------------------------------------------------------- hosts


def fake_proc_sys(tmp_path, **values):
    d = tmp_path / "sys" / "fs" / "inotify"
    d.mkdir(parents=True)
    for key, value in values.items():
        (d / key).write_text(f"{value}\n")
    return tmp_path / "sys"


def test_inotify_limits_are_raised_for_many_hosts_to_lxds_values(tmp_path, capsys):
    proc = fake_proc_sys(tmp_path, max_user_instances=128, max_user_watches=192536,
                         max_queued_events=16384)
    changed = hosts.raise_machine_limits(50, proc)
    assert changed == [("fs.inotify.max_user_instances", 128, 1048576),
                       ("fs.inotify.max_user_watches", 192536, 1048576)]
    assert (proc / "fs/inotify/max_user_instances").read_text() == "1048576"
    assert "raised fs.inotify.max_user_instances from 128 to 1048576" in capsys.readouterr().err


def test_inotify_limits_that_suffice_are_left_alone(tmp_path):
    proc = fake_proc_sys(tmp_path, max_user_instances=8192, max_user_watches=1048576,
                         max_queued_events=16384)
    assert hosts.raise_machine_limits(7, proc) == []
    assert (proc / "fs/inotify/max_user_instances").read_text() == "8192\n"


def test_a_host_that_fails_to_boot_is_reported_with_its_log(lab_root):
    t = lab.Lab("t")
    t.host_dir("h").mkdir(parents=True)
    (t.host_dir("h") / "nspawn.log").write_text(
        "Spawning container t-h on /var/lib/hpd-lab/t/hosts/h/root.\n"
        "Failed to create symlink /sys/fs/cgroup/net_cls: File exists\n"
        "\x1b[0;1;31mFailed to create control group inotify object: Too many open files\x1b[0m\n"
        "\x1b[0;1;31mFreezing execution.\x1b[0m\n")
    waiting = {"h": "minion not started"}
    with pytest.raises(util.LabError, match="host h failed to boot: exited "
                       r"\(Freezing execution.\)"):
        t.check_boots({"hosts": {"h": {}}}, waiting)
    assert hosts.boot_failure((t.host_dir("h") / "nspawn.log").read_text().replace(
        "Freezing execution.", "")) == (
        "Failed to create control group inotify object: Too many open files")


def test_a_running_host_that_logged_a_failure_says_so_while_waiting(lab_root, monkeypatch):
    t = lab.Lab("t")
    t.host_dir("h").mkdir(parents=True)
    (t.host_dir("h") / "nspawn.log").write_text(
        "Failed to create control group inotify object: Too many open files\n")
    monkeypatch.setattr(hosts, "is_process", lambda pid, program: True)
    waiting = {"h": "minion not started"}
    t.check_boots({"hosts": {"h": {"pid": 1}}}, waiting)
    assert waiting == {"h": "minion not started; its log says: Failed to create control group "
                            "inotify object: Too many open files"}


def test_waiting_for_answers_keeps_asking_until_every_minion_answered(monkeypatch):
    """50 running minions answering a few at a time, as on 2 busy cores, all count."""
    names = [f"h{i}" for i in range(50)]
    calls = []

    def ping(asked):
        calls.append(len(asked))
        return set(asked[:7])

    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("slept although minions answered"))
    lab.wait_answers(ping, names, lab.answer_timeout(len(names)))
    assert calls == [50, 43, 36, 29, 22, 15, 8, 1]
    assert lab.answer_timeout(50) > lab.answer_timeout(7) >= 30
    assert lab.boot_timeout(50) > lab.boot_timeout(7)


def test_waiting_for_answers_times_out_naming_the_silent(monkeypatch):
    clock = iter(range(0, 1000, 20))
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(time, "sleep", lambda s: None)
    with pytest.raises(util.LabError, match="h2: not answering"):
        lab.wait_answers(lambda asked: {"h1"} & set(asked), ["h1", "h2"], 30)


# --------------------------------------------------------------------------- benchmarks


class RecordingLab:
    def __init__(self, up_before):
        self.calls, self.state = [], {"hosts": {}} if up_before else None

    def locked(self):
        return _paths(Path("/"))

    def load(self):
        return self.state

    def up(self, spec):
        self.calls.append("up")
        return {"hosts": {}}, []

    def down(self):
        self.calls.append("down")


@pytest.mark.parametrize("up_before, keep, calls", [
    (False, False, ["up", "down"]),
    (False, True, ["up"]),
    (True, False, ["up"]),
])
def test_a_benchmark_leaves_the_lab_as_it_found_it(up_before, keep, calls):
    recording = RecordingLab(up_before)
    with lab.booted(recording, {}, keep=keep):
        pass
    assert recording.calls == calls


# --------------------------------------------------------------------------- Salt's logging


def test_salt_client_noise_goes_to_the_lab_log_not_the_terminal(tmp_path):
    """A request that timed out and was retried is logged by Salt at ERROR; in-process,
    Salt's deferred handler printed it at exit (the end of `make demo`)."""
    code = (
        "import logging, sys\n"
        f"sys.path.insert(0, {str(util.REPO / 'lab')!r})\n"
        "import salt.client\n"
        "from hpdlab import master\n"
        f"master.salt_logs_to({str(tmp_path / 'client.log')!r})\n"
        "logging.getLogger('salt.transport.zeromq').error("
        "'Request timed out while waiting for a response. reconnecting.')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stderr == ""
    assert "Request timed out" in (tmp_path / "client.log").read_text()


@pytest.mark.parametrize("tag, data, minion", [
    ("salt/minion/app1/start", {}, "app1"),
    ("salt/job/20261130052233123456/ret/app1", {"fun": "saltutil.sync_all"}, "app1"),
    ("salt/job/20261130052233123456/new", {}, None),
    ("salt/auth", {}, None),
    ("salt/beacon/app1/hpd_units/nginx", {}, None),
])
def test_up_knows_which_minion_an_event_is_from(tag, data, minion):
    assert lab.minion_event({"tag": tag, "data": data}) == minion


def test_up_ignores_a_wait_without_event():
    assert lab.minion_event(None) is None


def test_the_boot_wait_runs_out_only_when_nothing_moves():
    """A lab on a loaded machine boots slowly but keeps moving: the wait for its
    minions counts from the last host that moved on, not from the start."""
    now = [0.0]
    stall = lab.Stall(220, clock=lambda: now[0])
    for _ in range(10):  # 10 hosts, one moving on every 200 s: 2000 s in all
        now[0] += 200
        assert not stall.over()
        stall.moved()
    now[0] += 221
    assert stall.over()
