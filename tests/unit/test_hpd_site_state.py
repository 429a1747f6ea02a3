"""_states/hpd_site.py through Salt's loader: a release's virtualenv is built once
per requirements.txt (with Debian's python3 -m venv and pip, from a local
wheelhouse only) and shared by every release with the same requirements."""

import getpass
import hashlib
import io
import os
import subprocess
import zipfile

import pytest
import salt.config
from saltfactories.utils.functional import Loaders
from test_hpd import REPO

PYTHON = "/usr/bin/python3"


@pytest.fixture
def loaders(tmp_path):
    opts = salt.config.minion_config(None)
    opts.update(id="app1", file_client="local", cachedir=str(tmp_path / "cache"),
                pki_dir=str(tmp_path / "pki"), sock_dir=str(tmp_path / "sock"),
                extension_modules=str(tmp_path / "cache" / "extmods"),
                module_dirs=[str(REPO / "_modules")], states_dirs=[str(REPO / "_states")])
    loaders = Loaders(opts)
    yield loaders
    loaders.reset_state()


def wheel_bytes(name, version="1.0"):
    """A pure-Python wheel of one module, `name`: the same bytes every time."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{dist}/RECORD"] = "".join(f"{m},,\n" for m in [*files, f"{dist}/RECORD"])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(zipfile.ZipInfo(member, date_time=(2000, 1, 1, 0, 0, 0)), text)
    return out.getvalue()


def make_wheel(wheelhouse, name, version="1.0"):
    path = wheelhouse / f"{name}-{version}-py3-none-any.whl"
    path.write_bytes(wheel_bytes(name, version))
    return path


def pin(name, version="1.0"):
    """The lock's line for that wheel: its version and its file's hash."""
    digest = hashlib.sha256(wheel_bytes(name, version)).hexdigest()
    return f"{name}=={version} --hash=sha256:{digest}\n"


class Site:
    """A host's release layout in tmp_path: releases/, venvs/ and a wheelhouse."""

    def __init__(self, root, loaders):
        self.root, self.state = root, loaders.states.hpd_site.venv_linked
        self.wheelhouse = root / "wheelhouse"
        self.wheelhouse.mkdir()
        (root / "venvs").mkdir()

    def release(self, name, requirements):
        path = self.root / "releases" / name
        path.mkdir(parents=True)
        (path / "requirements.txt").write_text(requirements)
        return path

    def link(self, release, **kwargs):
        return self.state(name=str(release / "venv"),
                          requirements=str(release / "requirements.txt"),
                          venvs=str(self.root / "venvs"), find_links=str(self.wheelhouse),
                          user=getpass.getuser(), python=PYTHON, **kwargs)

    def venvs(self):
        return sorted(p.name for p in (self.root / "venvs").iterdir())


@pytest.fixture
def site(tmp_path, loaders):
    return Site(tmp_path, loaders)


def imports(release, module):
    return subprocess.run([release / "venv/bin/python", "-c", f"import {module}"],
                          capture_output=True).returncode == 0


def test_a_release_without_new_requirements_reuses_the_virtualenv(site):
    wheel = make_wheel(site.wheelhouse, "hpdprobe")
    first = site.release("a", pin("hpdprobe"))
    ret = site.link(first)
    assert ret["result"] is True, ret["comment"]
    assert set(ret["changes"]) == {"venv", "link"}
    [venv] = site.venvs()
    assert venv.startswith("python3.") and os.readlink(first / "venv").endswith(f"/venvs/{venv}")
    assert imports(first, "hpdprobe")
    built = (site.root / "venvs" / venv / "bin/python").lstat().st_ino

    wheel.unlink()  # a second install could not find the package any more
    second = site.release("b", pin("hpdprobe"))
    ret = site.link(second)
    assert ret["result"] is True, ret["comment"]
    assert set(ret["changes"]) == {"link"}
    assert site.venvs() == [venv]
    assert (site.root / "venvs" / venv / "bin/python").lstat().st_ino == built
    assert imports(second, "hpdprobe")

    ret = site.link(second)
    assert ret["result"] is True and ret["changes"] == {}

    # New requirements: a virtualenv of their own; the first stays for its releases.
    make_wheel(site.wheelhouse, "hpdother")
    third = site.release("c", pin("hpdother"))
    ret = site.link(third)
    assert ret["result"] is True and set(ret["changes"]) == {"venv", "link"}
    assert len(site.venvs()) == 2 and venv in site.venvs()
    assert imports(third, "hpdother") and not imports(third, "hpdprobe")


def test_a_dry_run_changes_nothing(site, loaders):
    release = site.release("a", pin("hpdprobe"))
    loaders.opts["test"] = True
    try:
        ret = site.link(release)
    finally:
        loaders.opts["test"] = False
    assert ret["result"] is None and set(ret["changes"]) == {"venv", "link"}
    assert site.venvs() == [] and not os.path.lexists(release / "venv")


def test_a_failed_install_leaves_no_complete_virtualenv_and_is_built_again(site):
    release = site.release("a", pin("hpdprobe"))
    ret = site.link(release)  # the wheelhouse does not have it
    assert ret["result"] is False and "hpdprobe" in ret["comment"], ret
    assert ret["changes"] == {} and not os.path.lexists(release / "venv")
    assert site.venvs() == []  # nothing left of it
    make_wheel(site.wheelhouse, "hpdprobe")
    ret = site.link(release)
    assert ret["result"] is True, ret["comment"]
    assert set(ret["changes"]) == {"venv", "link"} and imports(release, "hpdprobe")


def test_a_release_without_requirements_fails_naming_the_file(site):
    release = site.release("a", "")
    (release / "requirements.txt").unlink()
    ret = site.link(release)
    assert ret["result"] is False
    assert ret["comment"].startswith(f"cannot read {release / 'requirements.txt'}")


def test_requirements_without_hashes_are_refused(site):
    """Only a lock installs: a bare pin could take any file of that version."""
    make_wheel(site.wheelhouse, "hpdprobe")
    release = site.release("a", "hpdprobe==1.0\n")
    ret = site.link(release)
    assert ret["result"] is False and "--hash" in ret["comment"], ret
    assert ret["changes"] == {} and not os.path.lexists(release / "venv")


def test_a_wheel_that_is_not_the_locked_file_is_refused(site):
    """The same name and version, other bytes (a tampered or rebuilt wheel)."""
    make_wheel(site.wheelhouse, "hpdprobe").write_bytes(wheel_bytes("hpdprobe", "1.0") + b"x")
    ret = site.link(site.release("a", pin("hpdprobe")))
    assert ret["result"] is False and "do not match the hashes" in ret["comment"].lower()
