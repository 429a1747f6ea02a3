"""salt/app/files/uwsgi-emperor-stop, uwsgi-emperor.service's ExecStop, run
against a real process that waits like the uWSGI emperor in its stop: in
1-s sleeps that only a handled signal cuts short."""

import os
import signal
import subprocess
import sys
import time

from test_hpd import REPO

SCRIPT = REPO / "salt" / "app" / "files" / "uwsgi-emperor-stop"

# Exits 0.3 s after SIGQUIT, looking only after each 1-s wait or a signal
# (SIGWINCH wakes it, as the emperor's handler does); prints the wake-ups. The
# handlers only take note; a signal cuts the wait short through the wakeup fd
# (a handler that raised could do so outside the wait, and kill it).
EMPEROR = r"""
import os, select, signal, time

wakes, quit_at = 0, None

def on_quit(*_):
    global quit_at
    quit_at = time.monotonic()

def on_winch(*_):
    global wakes
    wakes += 1

woken, wake = os.pipe()
os.set_blocking(wake, False)
signal.set_wakeup_fd(wake)
signal.signal(signal.SIGQUIT, on_quit)
signal.signal(signal.SIGWINCH, on_winch)
print("ready", flush=True)
while quit_at is None or time.monotonic() - quit_at < 0.3:
    if select.select([woken], [], [], 1)[0]:
        os.read(woken, 4096)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH, signal.SIGQUIT})
print(wakes, flush=True)
"""


def emperor():
    proc = subprocess.Popen([sys.executable, "-c", EMPEROR], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def fifo(tmp_path):
    path = tmp_path / "site.fifo"
    os.mkfifo(path, 0o600)
    return path, os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def stop(env, *fifos, main=None):
    """(the script's exit code, its seconds). ``main``: the emperor, reaped as
    systemd reaps its main process (a zombie still answers kill -0)."""
    t0 = time.monotonic()
    script = subprocess.Popen(["/bin/sh", str(SCRIPT), *map(str, fifos)], env=env)
    if main is not None:
        main.wait(timeout=20)
    code = script.wait(timeout=20)
    return code, time.monotonic() - t0


def test_the_stop_signals_the_emperor_and_wakes_it_and_the_masters_until_it_exits(tmp_path):
    proc = emperor()
    path, reader = fifo(tmp_path)
    try:
        code, took = stop({"PATH": os.environ["PATH"], "MAINPID": str(proc.pid)}, path,
                          main=proc)
        assert (code, proc.returncode) == (0, 0)
        # 0.3 s of its own; left to its 1-s sleeps it would take 1 s or more.
        assert 0.3 <= took < 0.9, took
        assert int(proc.stdout.readline()) >= 3  # woken every few hundredths of a second
        poked = os.read(reader, 4096)
        assert poked and set(poked) == {ord("\n")}  # no command, only wake-ups
    finally:
        os.close(reader)
        proc.kill()
        proc.wait()


def test_without_a_main_process_the_stop_does_nothing(tmp_path):
    """The emperor was killed (systemd's restart path): MAINPID is unset, and
    systemd kills what is left of the unit."""
    bystander = emperor()
    path, reader = fifo(tmp_path)
    try:
        code, took = stop({"PATH": os.environ["PATH"]}, path)
        assert (code, took < 0.5) == (0, True)
        assert bystander.poll() is None
        try:
            assert os.read(reader, 4096) == b""
        except BlockingIOError:
            pass  # nothing written: what the test wants
    finally:
        os.close(reader)
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()
