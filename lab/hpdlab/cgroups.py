"""A cgroup per host (and one for the master), with the host's memory and CPU limits.

Where the groups are depends on the machine (`cgroup_mode`). `up` records the
groups (or systemd scopes) it made in the lab's state, and `down` removes exactly
those: nothing here depends on the cgroup of the process that calls it.
"""

from pathlib import Path

from hpdlab.util import LabError, is_alive

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Hierarchies a host joins in hybrid mode: tracking (name=systemd, the cgroup2 at
# unified/), and the v1 controllers for its limits.
HYBRID = ("systemd", "unified", "memory", "cpu")


def cgroup_mode():
    """How hosts get their own cgroup here.

    systemd: the machine's PID 1 is systemd; each host runs in a transient scope.
    v2:      a pure cgroup v2 hierarchy without systemd; the lab makes the groups.
    hybrid:  v1 controllers plus name=systemd and a cgroup2 at unified/ (this VM).
    """
    if Path("/run/systemd/system").is_dir():
        return "systemd"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return "v2"
    return "hybrid"


def scope_unit(lab, name):
    """The transient scope of host (or master) `name` of `lab` in systemd mode."""
    return f"hpd-lab-{lab}-{name}.scope"


def scope_command(lab, name, host, cmd):
    """`cmd` wrapped to run in its own scope with the host's limits (systemd mode)."""
    props = []
    if host.get("memory"):
        props += ["-p", f"MemoryMax={host['memory']}M"]
    if host.get("cpus"):
        props += ["-p", f"CPUQuota={host['cpus'] * 100}%"]
    return ["systemd-run", "--scope", "-q", f"--unit={scope_unit(lab, name)}", *props, "--",
            *cmd]


def lab_cgroup_tops(lab, mode):
    """{hierarchy: the lab's own cgroup in it} (none in systemd mode)."""
    if mode == "systemd":
        return {}
    hierarchies = {"unified": CGROUP_ROOT} if mode == "v2" else {
        h: CGROUP_ROOT / h for h in HYBRID}
    return {h: root / f"hpd-lab-{lab}" for h, root in hierarchies.items()}


def host_cgroup_dirs(lab, name, host, mode):
    """The cgroup directories a host's nspawn starts in: tracking, plus limits if sized."""
    tops = lab_cgroup_tops(lab, mode)
    if not host.get("memory"):
        tops.pop("memory", None)
    if not host.get("cpus"):
        tops.pop("cpu", None)
    return [top / name for top in tops.values()]


def make_cgroups(dirs, host, mode):
    """Make `dirs` and write the host's limits into those that take them."""
    if mode == "v2":
        enable_v2_controllers(dirs)
    memory, cpus = host.get("memory"), host.get("cpus")
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
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
    for d in dirs:
        for p in reversed([q for q in d.parents if q == CGROUP_ROOT or CGROUP_ROOT in q.parents]):
            try:
                (p / "cgroup.subtree_control").write_text("+memory +cpu")
            except OSError as exc:
                raise LabError(f"cannot enable memory/cpu controllers in {p}: {exc}") from exc


#: Writes its own PID into the cgroup.procs of each directory before "--", then
#: execs the command after it (which inherits the groups).
JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 125; shift; done; ' \
              'shift; exec "$@"'


def in_cgroups(dirs, cmd):
    """`cmd`, run in the cgroups `dirs`: a shell joins them, then execs `cmd`.

    Not a preexec_fn: with one, Python runs its at-fork handlers in the child, and
    Salt's drop the connections of the process's open Salt clients (`wait_ready`'s
    event bus) there; Salt then prints each as an unclosed transport, with the
    traceback of where it was opened, on the terminal the child shares.
    """
    return ["sh", "-c", JOIN_SCRIPT, "sh", *(str(d) for d in dirs), "--", *(str(c) for c in cmd)]


def cgroup_pids(top):
    """Live processes in `top` and the groups below it."""
    pids = set()
    if top.is_dir():
        for procs in top.rglob("cgroup.procs"):
            pids.update(int(p) for p in procs.read_text().split())
    return {p for p in pids if is_alive(p)}


def remove_cgroup_tree(top):
    """rmdir `top` and the groups below it (nspawn's payload/, supervisor/), deepest first."""
    if not top.is_dir():
        return
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        d.rmdir()
    top.rmdir()
