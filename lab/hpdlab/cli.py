"""The command line of the lab (lab/labctl)."""

import argparse
import ipaddress
import os
import sys
import time

from hpdlab import base, util
from hpdlab.lab import Lab
from hpdlab.spec import host_entry, load_spec
from hpdlab.util import LabError, log


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


def parse_size_args(args):
    entry = {"address": args.address, "roles": args.roles.split(",") if args.roles else [],
             "env": args.env}
    if args.memory:
        entry["memory"] = args.memory
    if args.cpus:
        entry["cpus"] = args.cpus
    return entry


def cmd_add(args):
    lab, _ = current_lab(args)
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
        # The one host: not the hosts of a spec the running lab was not booted from.
        lab.up({"subnet": state["subnet"], "hosts": {}}, extra)
    cmd_status(args)


def cmd_remove(args):
    lab, _ = current_lab(args)
    with lab.locked():
        state = lab.load()
        if state is None or args.host not in state["hosts"]:
            raise LabError(f"no host {args.host} in lab {lab.name}")
        outcome = lab.retire(state, args.host)
    log(f"{args.host} removed (host stopped, out of the inventory, key deleted); "
        f"the master's reactor: {outcome[args.host]}")
    cmd_status(args)


def cmd_build(args):
    """Build (or check) the base rootfs, the archive cache and the wheelhouse."""
    base.build()
    log(f"base, archives and wheelhouse are ready in {util.LAB_ROOT}")


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
    parser = argparse.ArgumentParser(
        prog="labctl", description="throw-away Debian hosts with real systemd, managed by "
        "a salt-master on the machine")
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
    add = sub.add_parser("add", help="boot one more host, put it in the inventory and accept "
                         "its key (the master's reactor highstates it)")
    add.add_argument("host")
    add.add_argument("--roles", default="")
    add.add_argument("--env", default="dev")
    add.add_argument("--address", type=int, help="host number in the subnet (default: free)")
    add.add_argument("--memory", type=int, help="MiB")
    add.add_argument("--cpus", type=int)
    remove = sub.add_parser("remove", help="stop a host, drop it from the inventory and "
                            "delete its key")
    remove.add_argument("host")
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
                   "add": cmd_add, "remove": cmd_remove, "exec": cmd_exec}[args.command]
        return handler(args) or 0
    except LabError as exc:
        log(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
