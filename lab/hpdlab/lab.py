"""A lab: its state, `up` and `down`.

    LAB_ROOT/<lab>/state.json   what `up` made: the bridge, veths, cgroups (or
                                scopes), the master's PID and each host's PID,
                                cgroups and overlay mount, and the base it uses
    LAB_ROOT/<lab>/master/      the master's root_dir (config, keys, inventory, logs)
    LAB_ROOT/<lab>/hosts/<h>/   a host's overlay (upper, work, root) and nspawn.log
    LAB_ROOT/<lab>/git/         the example site's repository (hpdlab/site.py)

`down` removes exactly what the state records, carries on through every step,
and reports every error at the end.
"""

import contextlib
import ipaddress
import json
import shutil
import signal
import time
from pathlib import Path

from hpdlab import base, cgroups, hosts, site, util
from hpdlab.master import Master
from hpdlab.util import LabError, is_alive, is_process, kill_quietly, log, run, timed_out, wait_for


def boot_timeout(n):
    """Seconds `n` hosts get to boot and start their minions (they share 2 cores)
    while none of them moves on: on a machine loaded by other work, a lab that
    keeps moving is slow, not stuck. Measured: 10 hosts' module syncs (the
    reactor's saltutil.sync_all at each minion's start) took 4 minutes at load 90."""
    return 120 + 20 * n


class Stall:
    """Whether `timeout` seconds passed since the last progress (`moved`)."""

    def __init__(self, timeout, clock=time.monotonic):
        self.timeout, self.clock = timeout, clock
        self.moved()

    def moved(self):
        self.last = self.clock()

    def over(self):
        return self.clock() - self.last > self.timeout


#: Seconds between the pings that find the minions which started before the
#: lab listened to the master's events: each ping is a job on every host still
#: waiting, and on a loaded machine a ping every 5 s was most of the jobs the
#: starting minions ran (45 each in 3 minutes, while their syncs crawled).
PING_EVERY = 30

#: Seconds the master's reactor gets to provision an added host (its highstate).
PROVISION_TIMEOUT = 1800


def answer_timeout(n):
    """Seconds `n` started minions get to answer test.ping, all told."""
    return 30 + 3 * n


def wait_answers(ping, names, timeout):
    """Ping the hosts among `names` that have not answered yet until all have, or
    `timeout` s have passed. `ping(names)` returns those that answered."""
    waiting = set(names)
    deadline = time.monotonic() + timeout
    while waiting:
        answered = ping(sorted(waiting))
        waiting -= answered
        if waiting and time.monotonic() > deadline:
            raise timed_out(timeout, "every minion to answer test.ping",
                            dict.fromkeys(waiting, "not answering"))
        if waiting and not answered:
            time.sleep(1)


class Lab(Master, hosts.Hosts):
    def __init__(self, name):
        self.name = name
        self.dir = util.LAB_ROOT / name
        self.state_file = self.dir / "state.json"
        self.master_dir = self.dir / "master"
        self.site_repo = self.dir / "git" / "example.git"

    # state ------------------------------------------------------------------
    def load(self):
        if not self.state_file.exists():
            return None
        return json.loads(self.state_file.read_text())

    def save(self, state):
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.rename(self.state_file)

    def locked(self):
        """Hold the lab's lock: one labctl at a time changes a lab."""
        return util.locked(self.name)

    @property
    def bridge(self):
        return f"{self.name}-br0"

    def bridge_address(self, state):
        return str(ipaddress.ip_network(state["subnet"]).network_address + 1)

    def make_bridge(self, state):
        prefix = ipaddress.ip_network(state["subnet"]).prefixlen
        state["bridge"] = self.bridge
        self.save(state)
        if run(["ip", "link", "show", self.bridge], check=False, capture_output=True).returncode:
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{self.bridge_address(state)}/{prefix}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])

    # up ----------------------------------------------------------------------
    def up(self, spec, extra=None):
        """Boot the hosts of `spec` (plus `extra`, name -> entry) that are not running
        yet. Each host is recorded as it starts; on an error, what this call
        started is stopped again."""
        stale = self.load()
        if stale and not self.master_pid() and not any(
                self.host_init_pid(stale, n) for n in stale["hosts"]):
            log(f"lab {self.name} was left behind by processes that are gone: removing it first")
            self.down()
        state = self.load()
        fresh = state is None
        if fresh:
            mode = cgroups.cgroup_mode()
            state = {"name": self.name, "subnet": spec["subnet"], "hosts": {}, "master": {},
                     "cgroup_mode": mode, "bridge": None, "veths": [],
                     "cgroups": [str(t) for t in cgroups.lab_cgroup_tops(self.name, mode).values()]}
        if state["subnet"] != spec["subnet"]:
            raise LabError(f"lab {self.name} runs on {state['subnet']}; `down` it first")
        for name, entry in {**spec["hosts"], **(extra or {})}.items():
            state["hosts"].setdefault(name, entry)
        for name in extra or {}:
            # Added to a running lab: its key goes through salt-key and the master's
            # reactor provisions it (`wait_ready` waits for that).
            state["hosts"][name]["added"] = True
        taken = {}
        for name, host in state["hosts"].items():
            if host["address"] in taken:
                raise LabError(f"hosts {taken[host['address']]} and {name} share {host['address']}")
            taken[host["address"]] = name
        hosts.raise_machine_limits(len(state["hosts"]))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save(state)
        self.publish_site()
        started = []
        try:
            with base.built() as (base_dir, archives, wheelhouse):
                todo = [n for n in state["hosts"] if self.host_init_pid(state, n) is None]
                for name in todo:  # recorded before the build lock is let go
                    state["hosts"][name]["base"] = str(base_dir)
                self.save(state)
            self.make_bridge(state)
            self.start_master(state)
            self.save(state)
            for name in state["hosts"]:
                if name in todo:
                    started.append(name)
                    cmd = self.prepare_host(state, name, base_dir, archives, wheelhouse)
                    if state["hosts"][name].get("added"):
                        self.accept_key(name)
                    self.start_host(state, name, cmd)
                else:
                    self.write_hosts_file(state, self.host_dir(name) / "root")
            self.record_master_pid(state)
            self.save(state)
            self.wait_ready(state, started)
            state["veths"] = bridge_ports(self.bridge)
            self.save(state)
        except BaseException:
            log("up failed: stopping what it started")
            try:
                if fresh:
                    self.down()
                else:
                    self.remove(state, started, whole_lab=False)
            except LabError as exc:
                log(str(exc))
            raise
        return state, started

    def publish_site(self, tree_dir=site.SITE_SOURCE, changes=None, branch=site.BRANCH):
        """Commit `tree_dir` (default example/), with `changes` ({path: text, or None
        to remove it}), on `branch` of the site repository when it differs from the
        branch head; the branch's sha."""
        sha = site.publish(self.site_repo, tree_dir, changes, branch)
        log(f"example site: {branch} is {sha[:12]}")
        return sha

    def wait_ready(self, state, started):
        """Wait until the `started` hosts' minions have started, then until every
        host's minion answers and its systemd is up. A host that failed to boot is
        reported with the reason its own log gives."""
        import salt.utils.event  # slow to import: only where needed

        names = sorted(state["hosts"])
        timeout = boot_timeout(len(started))
        t0 = time.monotonic()
        opts = self.salt_opts()
        waiting = dict.fromkeys(started, "minion not started")
        # Hosts added to a running lab are provisioned by the master's reactor.
        joining = {n: "not provisioned" for n in started if state["hosts"][n].get("added")}
        # Hosts already running (a kept lab) and minions found by a ping rather than
        # by their events may hold older extension modules: synced at the end.
        unsynced = set(names) - set(started)
        # A minion announces itself on the master's event bus (salt/minion/<id>/start),
        # then the master's reactor syncs its extension modules (highstates don't):
        # listening beats polling with test.ping, which forks a job on every minion
        # while the others are still starting. Minions that started before we
        # listened are found by an occasional ping.
        bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        stall = Stall(timeout)
        try:
            last_check = time.monotonic()
            while waiting:
                before = dict(waiting)
                event = bus.get_event(wait=1, full=True)
                name = minion_event(event)
                if name in waiting and event["tag"].endswith("/start"):
                    waiting[name] = "modules not synced"
                elif name in waiting and event["data"].get("fun") == "saltutil.sync_all":
                    waiting.pop(name)
                if waiting and time.monotonic() - last_check > PING_EVERY:
                    self.check_boots(state, waiting)
                    for n in self.ping(sorted(waiting), timeout=2):
                        waiting.pop(n)
                        unsynced.add(n)
                    last_check = time.monotonic()
                if waiting != before:
                    stall.moved()
                elif stall.over():
                    self.check_boots(state, waiting)
                    raise timed_out(timeout, "every minion to start (no minion moved on "
                                    "meanwhile)", waiting)
            wait_answers(lambda ns: self.ping(ns, timeout=10), names, answer_timeout(len(names)))
            waiting = dict.fromkeys(names, "unknown")

            def booted():
                for n in list(waiting):
                    waiting[n] = self.system_state(state, n)
                    if waiting[n] in ("running", "degraded"):
                        del waiting[n]
                return not waiting

            wait_for(booted, timeout, "systemd in every host", waiting)
            if unsynced:
                self.salt_json("-L", ",".join(sorted(unsynced)), "saltutil.sync_all")
            log(f"{len(names)} host(s) with systemd running and their minion answering "
                f"after {time.monotonic() - t0:.1f}s")
            for name, outcome in wait_scaled(bus, "joined", joining, PROVISION_TIMEOUT).items():
                log(f"{name} provisioned by the master's reactor: {outcome}")
        finally:
            bus.destroy()

    def retire(self, state, name):
        """Stop host `name`, drop it from the inventory, delete its key, and wait
        for the master's reactor to have taken it out of the pools."""
        import salt.utils.event  # slow to import: only where needed

        opts = self.salt_opts()
        bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        try:
            self.remove(state, [name], whole_lab=False)
            return wait_scaled(bus, "left", {name: "pools not updated"}, PROVISION_TIMEOUT)
        finally:
            bus.destroy()

    def check_boots(self, state, waiting):
        """Say why hosts in `waiting` did not start, from their logs; fail at once on
        a host whose nspawn has exited."""
        for n in waiting:
            reason = self.host_failure(state, n)
            if reason and reason.startswith("exited"):
                raise LabError(f"host {n} failed to boot: {reason}")
            if reason:
                waiting[n] = f"minion not started; its log says: {reason}"

    # down --------------------------------------------------------------------
    def down(self):
        """Remove everything `up` recorded: processes, cgroups or scopes, mounts,
        veths, the bridge, the lab's directory. Carries on through every step;
        raises LabError with every error at the end."""
        state = self.load() or {"hosts": {}}
        self.remove(state, list(state["hosts"]), whole_lab=True)

    def remove(self, state, names, whole_lab):
        """Stop and remove the hosts `names` (and with `whole_lab` the master and the
        lab's own parts)."""
        errors = []

        def step(what, func, *args, **kw):
            try:
                func(*args, **kw)
            except Exception as exc:  # noqa: BLE001 -- every step runs; errors are reported
                errors.append(f"{what}: {exc}")

        entries = [state["hosts"][n] for n in names]
        master = state.get("master") or {}
        parts = entries + ([master] if whole_lab else [])
        pids = [h["pid"] for h in entries
                if h.get("pid") and is_process(h["pid"], "systemd-nspawn")]
        if whole_lab:
            pids += [p for p in {master.get("pid"), self.master_pid()}
                     if p and is_process(p, "salt-master")]
        for pid in pids:
            step(f"stop pid {pid}", kill_quietly, pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(is_alive(p) for p in pids):
            time.sleep(0.2)
        for pid in pids:
            if is_alive(pid):
                log(f"pid {pid} did not stop within 30s of SIGTERM: killing it")
                kill_quietly(pid)
        for part in parts:
            if part.get("scope"):
                step(f"stop {part['scope']}", run, ["systemctl", "stop", part["scope"]],
                     capture_output=True)
            for group in part.get("cgroups", []):
                step(f"remove cgroup {group}", remove_cgroup, group)
        mounts = [m for h in entries for m in h.get("mounts", [])]
        if whole_lab:
            mounts += util.lab_mounts(self.dir)
        mounted = {point for point, _, _ in util.mountinfo()}
        for mount in sorted(set(mounts) & mounted, key=len, reverse=True):
            step(f"unmount {mount}", run, ["umount", "-l", mount], capture_output=True)
        if whole_lab:
            for group in state.get("cgroups", []):
                step(f"remove cgroup {group}", remove_cgroup, group)
            bridge = state.get("bridge", self.bridge)
            links = set(state.get("veths", []))
            if bridge:
                step("list the bridge's ports", lambda: links.update(bridge_ports(bridge)))
            for link in sorted(links) + ([bridge] if bridge else []):
                if run(["ip", "link", "show", link], check=False, capture_output=True).returncode:
                    continue  # a veth goes with its host's namespace
                step(f"delete link {link}", run, ["ip", "link", "del", link], capture_output=True)
            step(f"remove {self.dir}", remove_dir, self.dir)
        else:
            for n in names:
                step(f"remove {self.host_dir(n)}", remove_dir, self.host_dir(n))
                del state["hosts"][n]
            step("save the state", self.save, state)
            step("rewrite the inventory", self.write_inventory, state)
            # After the inventory: the master's reactor re-highstates the pools.
            for n in names:
                step(f"delete the key of {n}", self.delete_key, n)
        if errors:
            raise LabError(f"{len(errors)} step(s) of removing lab {self.name} failed:\n  "
                           + "\n  ".join(errors))


def wait_scaled(bus, what, waiting, timeout):
    """Wait for the master's `hpd/scale/<what>/<host>` event of each host in
    `waiting` (hpd_scale's reactions); {host: a summary}. A host whose
    provisioning failed (or whose pools did not update) is an error."""
    done, failed = {}, []
    deadline = time.monotonic() + timeout
    while waiting:
        if time.monotonic() > deadline:
            raise timed_out(timeout, f"the master's reactor ({what})", waiting)
        event = bus.get_event(wait=1, full=True)
        parts = event["tag"].split("/") if event else []
        if parts[:3] != ["hpd", "scale", what] or parts[3] not in waiting:
            continue
        name, data = parts[3], event["data"]
        del waiting[name]
        done[name] = scale_summary(data)
        if not data.get("result"):
            failed.append(f"{name}: {done[name]}")
    if failed:
        raise LabError(f"the master's reactor ({what}) failed: " + "; ".join(failed))
    return done


def scale_summary(data):
    """One line of an hpd/scale event: states failed and changed per host."""
    parts = []
    for key in ("highstate", "followers"):
        for host, outcome in sorted((data.get(key) or {}).items()):
            if "error" in outcome:
                parts.append(f"{host}: {outcome['error']}")
            else:
                failed = f", failed {outcome['failed']}" if outcome["failed"] else ""
                parts.append(f"{host} highstated ({outcome['changed']} changed{failed})")
    return "; ".join(parts) or "no host to highstate"


def minion_event(event):
    """The minion a master event is from: `salt/minion/<id>/start` or a job's
    return `salt/job/<jid>/ret/<id>`; None for any other event."""
    parts = event["tag"].split("/") if event else []
    if parts[:2] == ["salt", "minion"] and len(parts) == 4:
        return parts[2]
    if parts[:2] == ["salt", "job"] and len(parts) == 5 and parts[3] == "ret":
        return parts[4]
    return None


def remove_cgroup(group):
    """Kill what is left in `group` (ours: the lab made it), wait, and remove it."""
    top = Path(group)
    for pid in cgroups.cgroup_pids(top):
        kill_quietly(pid)
    wait_for(lambda: not cgroups.cgroup_pids(top), 15, f"processes in {top} to exit")
    cgroups.remove_cgroup_tree(top)


def remove_dir(path):
    if path.exists():
        shutil.rmtree(path)


def bridge_ports(bridge):
    out = run(["ip", "-j", "link", "show", "master", bridge], check=False, capture_output=True,
              text=True)
    return [link["ifname"] for link in json.loads(out.stdout or "[]")]


@contextlib.contextmanager
def booted(lab, spec, keep=False):
    """The lab of `spec` up for the block; taken down after it unless it was up
    before or `keep` (a benchmark leaves the machine as it found it)."""
    with lab.locked():
        was_up = lab.load() is not None
        state, _ = lab.up(spec)
    try:
        yield state
    finally:
        if not (keep or was_up):
            with lab.locked():
                lab.down()
