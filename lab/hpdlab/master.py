"""The lab's salt-master on the machine: its config, keys, inventory, and the Salt
clients the lab uses (the CLI, and LocalClient/event bus in-process)."""

import json
import logging
import os

import yaml

from hpdlab import cgroups
from hpdlab.util import REPO, VENV, LabError, is_process, run, wait_for

#: The master's file roots: salt/ and served/ (README, "Using the tree with your
#: own master").
FILE_ROOTS = [REPO / "salt", REPO / "served"]


class Master:
    """The master half of a Lab (needs self.name, self.master_dir, self.bridge_address)."""

    def master_config(self, state):
        return {
            "id": f"{self.name}-master",
            "user": "root",
            "root_dir": str(self.master_dir),
            "interface": self.bridge_address(state),
            # An allow list: the states, and served/ (links to what else minions
            # and the master's orchestrations and reactions fetch from salt://).
            # Nothing else of the checkout (pillar data, the lab, the tests, the
            # site) is a file root.
            "file_roots": {"base": [str(p) for p in FILE_ROOTS]},
            "pillar_roots": {"base": [str(REPO / "pillar"), str(self.master_dir / "inventory")]},
            "pillar_raise_on_missing": False,
            "state_output": "changes",
            # Lab hosts share two cores: a busy minion can take seconds to say it
            # is still working, and the CLI must not take that for a dead minion.
            "timeout": 20,
            "gather_job_timeout": 30,
            "log_file": str(self.master_dir / "master.log"),
            "key_logfile": str(self.master_dir / "key.log"),
            "log_level_logfile": "info",
            # The tree's master side (README, "Using the tree with your own
            # master"): its runners, loaded from the checkout itself (never a
            # stale synced copy), reactions, the alert sweep.
            "runner_dirs": [str(REPO / "_runners")],
            # Salt's reports of the runner clients its own code leaves unclosed
            # (the end of every salt-run) kept off the terminal.
            "log_handlers_dirs": [str(REPO / "_log_handlers")],
            "reactor": [
                # Minions sync extension modules when they start, not on every highstate.
                {"salt/minion/*/start": ["salt://reactor/sync_modules.sls",
                                         "salt://reactor/scale.sls"]},
                {"salt/key": ["salt://reactor/scale.sls"]},
                {"salt/beacon/*/hpd_units/*": ["salt://reactor/heal.sls"]},
                *({f"salt/beacon/*/{beacon}/*": ["salt://reactor/alert_observe.sls"]}
                  for beacon in ("load", "memusage", "swapusage", "diskusage", "hpd_port",
                                 "hpd_errors")),
                {"hpd/alert/*": ["salt://reactor/alert_record.sls"]},
            ],
            "schedule": {"hpd-alert-sweep": {"function": "hpd_alert.sweep", "seconds": 10}},
            # hpd_scale.left reads a deleted minion's environment from its cache.
            "preserve_minion_cache": True,
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
        """Write the master's config and inventory; start it unless it runs. Where it
        starts (cgroups or scope) goes into state["master"]; its PID once it has one
        (`record_master_pid`): hosts boot meanwhile."""
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
        mode = state["cgroup_mode"]
        record = state["master"] = {"cgroups": [], "scope": None, "pid": None}
        if mode == "systemd":
            record["scope"] = cgroups.scope_unit(self.name, "master")
            run(cgroups.scope_command(self.name, "master", {}, cmd))
        else:
            dirs = cgroups.host_cgroup_dirs(self.name, "master", {}, mode)
            record["cgroups"] = [str(d) for d in dirs]
            cgroups.make_cgroups(dirs, {}, mode)
            run(cgroups.in_cgroups(dirs, cmd))

    def record_master_pid(self, state):
        wait_for(self.master_pid, 60, "the salt-master to start")
        state.setdefault("master", {})["pid"] = self.master_pid()

    def write_inventory(self, state):
        """The master's inventory: minion id -> roles, env, address (the lab's, or an
        operator's)."""
        inv = self.master_dir / "inventory"
        inv.mkdir(parents=True, exist_ok=True)
        data = {n: {"roles": h["roles"], "env": h["env"], "address": h["address"]}
                for n, h in state["hosts"].items()}
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

    def salt_iter(self, target, fun, timeout=600):
        """Run `fun` on the minions `target` names; yield (minion, return) as each
        return comes in (a caller can act on the first failure while the other
        minions work on)."""
        import salt.client  # slow to import: only where needed

        client = salt.client.LocalClient(mopts=self.salt_opts())
        try:
            for answer in client.cmd_iter(target, fun, timeout=timeout):
                for minion, ret in answer.items():
                    yield minion, ret.get("ret")
        finally:
            client.destroy()

    def salt_opts(self):
        """The client config of the lab's master, for Salt's in-process clients."""
        import salt.config  # slow to import: only where needed

        salt_logs_to(self.master_dir / "client.log")
        return salt.config.client_config(str(self.master_dir / "master"))

    def ping(self, names, timeout=3):
        """The hosts among `names` whose minion answers test.ping within `timeout` s."""
        import salt.client  # slow to import: only where needed

        try:
            client = salt.client.LocalClient(mopts=self.salt_opts())
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


def salt_logs_to(path):
    """Send Salt's log records to `path`, not to the terminal.

    `ping` (status, the waits of `up`, the demo) asks minions that have not answered
    within `timeout` whether they are still busy, giving that request
    gather_job_timeout=1 s; a master busy on two cores can be slower than that,
    and Salt's transport logs the request it then retries at ERROR ("Request timed
    out while waiting for a response. reconnecting."). In-process, Salt holds its
    records in a deferred stderr handler and prints them at exit: the noise at the
    end of `make demo`. Salt's records belong in the lab's client log.
    """
    import salt._logging.impl  # slow to import: only where needed

    salt_log = logging.getLogger("salt")
    if not any(getattr(h, "baseFilename", None) == str(path) for h in salt_log.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        salt_log.addHandler(handler)
        salt_log.setLevel(logging.INFO)
    salt_log.propagate = False
    salt._logging.impl.shutdown_temp_handler()


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
