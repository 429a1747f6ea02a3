"""What every part of the lab uses: paths, the error type, locks, processes, waits."""

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("HPD_VENV", "/opt/hpd-salt/venv"))
# Everything the lab makes lives here (see lab/labctl.py). Read as `util.LAB_ROOT`
# at call time, so a test can point it elsewhere.
LAB_ROOT = Path(os.environ.get("HPD_LAB_ROOT", "/var/lib/hpd-lab"))


class LabError(Exception):
    """A lab operation that cannot go on; the message says why."""


def log(msg):
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def fingerprint(*parts):
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked(name):
    """Hold the lock `name` (a lab's name, or "build"). Lock files live in
    LAB_ROOT/locks, which nothing removes: a waiter and a newcomer always lock the
    same file."""
    locks = LAB_ROOT / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_alive(pid):
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def is_process(pid, program):
    """True when `pid` runs `program` (guards against a PID reused by something else)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return False
    return is_alive(pid) and any(os.path.basename(w.decode()) == program for w in words[:2])


def kill_quietly(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def timed_out(timeout, what, pending=None):
    """The error for a wait that ran out, saying what was still `pending` (a dict)."""
    still = ", ".join(f"{k}: {v}" for k, v in sorted((pending or {}).items()))
    return LabError(f"timed out after {timeout:.0f}s waiting for {what}"
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


def mountinfo():
    """The machine's mounts: [(mount point, file system type, super options)]."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        found.append((fields[4].replace("\\040", " "), fields[sep + 1], fields[sep + 3]))
    return found


def lab_mounts(directory):
    """Mount points at or below `directory`, parents first."""
    d = str(directory)
    return [p for p, _, _ in mountinfo() if p == d or p.startswith(d + "/")]


def read_list(path):
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]
