"""The Python locks match their inputs, and what is installed comes from them.

A lock whose input changed (a pin moved in setup.cfg or example/requirements.in,
a package added or removed) fails here naming the package: run `make lock`.
"""

import configparser
import hashlib
import subprocess
import sys

import pytest
from hpdlab import base, locks, util
from hpdlab.site import SITE_SOURCE
from test_hpd import REPO


def setup_cfg_requirements():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser["options"]["install_requires"].split()


def input_requirements(path):
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def names(requirements):
    from packaging.requirements import Requirement

    return {locks.canonical(Requirement(r).name) for r in requirements}


LOCKS = {  # lock: (its inputs, where they are written)
    locks.VENV_LOCK: (setup_cfg_requirements(), "setup.cfg install_requires"),
    locks.VENV_BUILD_LOCK: (input_requirements(REPO / "lock/venv-build.in"),
                            "lock/venv-build.in"),
    locks.SITE_LOCK: (input_requirements(locks.SITE_INPUT), "example/requirements.in"),
}


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_the_lock_pins_every_input_and_nothing_else(lock):
    requirements, source = LOCKS[lock]
    pins = locks.read(lock)  # refuses a pin without a hash
    problems = locks.unmet(requirements, pins, source)
    problems += [f"{name}: in the lock, needed by nothing in {source}"
                 for name in locks.unneeded(pins, names(requirements))]
    assert not problems, f"{lock.relative_to(REPO)} is stale (make lock): " + "; ".join(problems)


def test_a_changed_input_fails_naming_the_package():
    """The check above can fail: a moved pin, a new package, a removed one."""
    pins = locks.read(locks.SITE_LOCK)
    requirements = input_requirements(locks.SITE_INPUT)
    moved = [r.replace("Django==5.2.19", "Django==5.2.20") for r in requirements]
    assert moved != requirements
    assert locks.unmet(moved, pins, "requirements.in") == [
        "Django: requirements.in asks for ==5.2.20, the lock has 5.2.19"]
    assert locks.unmet([*requirements, "rich==15.0.0"], pins, "requirements.in") == [
        "rich: in requirements.in, not in the lock"]
    without_celery = [r for r in requirements if not r.startswith("celery")]
    assert {"celery", "kombu", "billiard", "redis"} <= set(
        locks.unneeded(pins, names(without_celery)))


def test_a_pin_without_a_hash_is_refused():
    with pytest.raises(util.LabError, match="no hash for django"):
        locks.parse("Django==5.2.19\n", "requirements.txt")
    with pytest.raises(util.LabError, match="is not `name==version`"):
        locks.parse("Django>=5\n", "requirements.txt")


def test_the_build_lock_agrees_with_the_venv_lock():
    """The venv is installed from both: a package in both has one version."""
    venv, build = locks.read(locks.VENV_LOCK), locks.read(locks.VENV_BUILD_LOCK)
    assert {n: build[n].version for n in build.keys() & venv.keys()} == \
        {n: venv[n].version for n in build.keys() & venv.keys()}


def test_the_hosts_install_the_lock_the_wheelhouse_is_filled_from():
    """One list: the site's repository carries the lock, every host's release
    installs that file, and the wheelhouse is downloaded from it."""
    assert locks.SITE_LOCK == SITE_SOURCE / "requirements.txt"
    sls = (REPO / "salt/site/venv.sls").read_text()
    assert "- requirements: {{ release_dir }}/requirements.txt" in sls
    assert not (REPO / "lab/wheels.txt").exists()


def test_this_venv_is_its_locks():
    """What `make setup` installed: exactly the two locks (and pip itself)."""
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"],
                            capture_output=True, text=True, check=True).stdout
    installed = {}
    for line in freeze.splitlines():
        name, _, version = line.partition("==")
        installed[locks.canonical(name)] = version
    installed.pop("pip")
    expected = {n: p.version for lock in (locks.VENV_BUILD_LOCK, locks.VENV_LOCK)
                for n, p in locks.read(lock).items()}
    assert installed == expected, "rebuild the venv from its locks (make setup)"


class FakeIndex:
    """pip download, as fill_wheelhouse runs it: writes the files it is given."""

    def __init__(self, files):
        self.files, self.commands = files, []

    def __call__(self, cmd, **kw):
        cmd = [str(c) for c in cmd]
        self.commands.append(cmd)
        target = util.LAB_ROOT / "wheelhouse"
        for name, data in self.files.items():
            (target / name).write_bytes(data)


@pytest.fixture
def lab_root(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "LAB_ROOT", tmp_path)
    lock = tmp_path / "requirements.txt"
    good = b"the locked wheel"
    lock.write_text(f"hpdprobe==1.0 \\\n    --hash=sha256:{hashlib.sha256(good).hexdigest()}\n")
    monkeypatch.setattr(locks, "SITE_LOCK", lock)
    return tmp_path, lock, good


def test_the_wheelhouse_is_downloaded_from_the_lock_and_holds_only_it(lab_root, monkeypatch):
    root, lock, good = lab_root
    stale = root / "wheelhouse" / "hpdprobe-0.9-py3-none-any.whl"
    stale.parent.mkdir()
    stale.write_bytes(b"an older lock's wheel")
    index = FakeIndex({"hpdprobe-1.0-py3-none-any.whl": good})
    monkeypatch.setattr(base, "run", index)
    base.fill_wheelhouse()
    [cmd] = index.commands
    assert cmd[1] == "download" and {"--no-deps", "--require-hashes"} <= set(cmd)
    assert cmd[cmd.index("-r") + 1] == str(lock)
    assert sorted(p.name for p in (root / "wheelhouse").iterdir()) == \
        ["hpdprobe-1.0-py3-none-any.whl"]
    base.fill_wheelhouse()  # complete: nothing to download
    assert len(index.commands) == 1


def test_a_wheelhouse_left_incomplete_is_refused_naming_the_package(lab_root, monkeypatch):
    monkeypatch.setattr(base, "run", FakeIndex({"hpdprobe-1.0-py3-none-any.whl": b"other"}))
    with pytest.raises(util.LabError, match="still lacks hpdprobe"):
        base.fill_wheelhouse()
