"""
Unit tests for ``_states/whisper.py`` through Salt's loader, on real whisper
files made and resized by Debian's python3-whisper tools (the Makefile
installs them).
"""

import json
import os
import shutil
import subprocess

import pytest
from conftest import local_opts
from saltfactories.utils.functional import Loaders

OLD, NEW = "5s:1d,5m:30d", "10s:1d,5m:30d"

pytestmark = pytest.mark.skipif(
    not shutil.which("whisper-create"), reason="python3-whisper is not installed (make setup)"
)


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    return Loaders(local_opts(tmp_path_factory.mktemp("minion"), id="mon"))


@pytest.fixture
def resized(loaders):
    try:
        yield loaders.states.whisper.resized
    finally:
        loaders.reset_state()


def whisper_files(directory, names, retentions=OLD):
    paths = []
    for name in names:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["whisper-create", str(path), *retentions.split(",")], check=True, capture_output=True
        )
        subprocess.run(["whisper-update", str(path), "N:1.5"], check=True, capture_output=True)
        paths.append(path)
    return paths


def info(path):
    out = subprocess.run(
        ["whisper-info", "--json", str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def steps(path):
    return [a["secondsPerPoint"] for a in info(path)["archives"]]


def test_resizes_only_files_whose_archives_differ(resized, tmp_path):
    old = whisper_files(tmp_path, ["web1/load/1min.wsp", "web1/cpu/count.wsp"])
    (current,) = whisper_files(tmp_path, ["web2/load/1min.wsp"], retentions=NEW)
    os.chmod(old[0], 0o640)
    untouched = current.stat().st_mtime_ns

    ret = resized(str(tmp_path), retentions=NEW)
    assert ret.result is True, ret.comment
    assert ret.changes == {"resized": sorted(map(str, old)), "retentions": NEW}
    assert [steps(p) for p in old] == [[10, 300]] * 2
    assert current.stat().st_mtime_ns == untouched, "a file at the retentions is left alone"
    assert old[0].stat().st_mode & 0o777 == 0o640, "mode kept"
    assert info(old[1])["aggregationMethod"] == "average"
    assert not list(tmp_path.rglob("*.bak")), "no backups left behind"

    again = resized(str(tmp_path), retentions=NEW)
    assert again.result is True and again.changes == {}, "idempotent"


def test_test_mode_reports_and_changes_nothing(resized, tmp_path):
    (path,) = whisper_files(tmp_path, ["db/load/1min.wsp"])
    ret = resized(str(tmp_path), retentions=NEW, test=True)
    assert ret.result is None
    assert ret.changes == {"resized": [str(path)]}
    assert steps(path) == [5, 300]


def test_nothing_to_do_without_the_directory(resized, tmp_path):
    ret = resized(str(tmp_path / "servers"), retentions=NEW)
    assert ret.result is True and ret.changes == {}


def test_a_broken_file_is_named_and_nothing_changes(resized, tmp_path):
    (good,) = whisper_files(tmp_path, ["a/load/1min.wsp"])
    broken = tmp_path / "b" / "load" / "1min.wsp"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\0\0")
    ret = resized(str(tmp_path), retentions=NEW)
    assert ret.result is False
    assert str(broken) in ret.comment
    assert ret.changes == {}
    assert steps(good) == [5, 300]


def test_retention_archives_are_whispers_own(loaders, tmp_path):
    """highperf.retention_archives lays archives out as whisper-create does."""
    retentions = "5s:2d,5m:30d,1h:2y"
    (path,) = whisper_files(tmp_path, ["x.wsp"], retentions=retentions)
    expected = [[a["secondsPerPoint"], a["points"]] for a in info(path)["archives"]]
    assert loaders.modules.highperf.retention_archives(retentions) == expected
