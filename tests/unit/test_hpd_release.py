"""Unit tests for ``_modules/hpd_release.py``: revisions resolved against a real
git repository through Salt's git module, the release log, the deploy datapoint
sent to a carbon listener on loopback."""

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import salt.config
from conftest import FILE_ROOTS, load_source
from salt.exceptions import CommandExecutionError, SaltInvocationError
from saltfactories.utils.functional import Loaders
from test_hpd import REPO

WHEN = 1796025327.0  # 2026-11-30T07:55:27Z


def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True, env={**os.environ, "GIT_AUTHOR_NAME": "t",
                                          "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                                          "GIT_COMMITTER_EMAIL": "t@t"}).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A bare repository: branch main (two commits), annotated tag v1 on the first,
    a branch and a tag both named `same`, and a commit no ref reaches."""
    root = tmp_path_factory.mktemp("git")
    work = root / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    commits = {}
    for name in ("first", "second", "loose"):
        git(work, "commit", "-q", "--allow-empty", "-m", name)
        commits[name] = git(work, "rev-parse", "HEAD")
    git(work, "tag", "-a", "-m", "v1", "v1", commits["first"])
    git(work, "branch", "same", commits["first"])
    git(work, "tag", "same", commits["second"])
    git(work, "reset", "-q", "--hard", commits["second"])
    bare = root / "example.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    # The loose commit: in the repository's objects, on no ref.
    subprocess.run(f"git -C {work} pack-objects --revs --stdout <<< {commits['loose']} | "
                   f"git -C {bare} unpack-objects -q", shell=True, check=True,
                   executable="/bin/bash")
    return {"url": f"file://{bare}", **commits,
            "tag_object": git(bare, "rev-parse", "refs/tags/v1")}


def opts_in(directory, pillar=None):
    opts = salt.config.minion_config(None)
    opts.update(file_client="local", file_roots=FILE_ROOTS,
                module_dirs=[str(REPO / "_modules")], cachedir=str(directory / "cache"),
                pki_dir=str(directory / "pki"), id="unit", pillar=pillar or {})
    return opts


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    """The module through Salt's loader (Salt's git module under it), once: a
    loader takes seconds to build."""
    return Loaders(opts_in(tmp_path_factory.mktemp("minion"))).modules.hpd_release


@pytest.fixture(scope="module")
def pure():
    """The module's file imported plainly, for its pure helpers."""
    path = Path(REPO / "_modules" / "hpd_release.py")
    return load_source(path)


def mark_with(tmp_path, pillar):
    return Loaders(opts_in(tmp_path, pillar)).modules.hpd_release.mark("example")


@pytest.mark.parametrize("rev, expected", [
    ("main", "second"), ("refs/heads/main", "second"), ("HEAD", "second"),
    ("v1", "first"),          # an annotated tag: the commit, not the tag object
    ("same", "second"),       # a tag before a branch of the same name, as git picks
    ("refs/heads/same", "first"),
])
def test_refs_resolve_to_their_commit(rel, repo, rev, expected):
    assert rel.resolve(rev, repository=repo["url"], user="root") == repo[expected]
    assert repo["tag_object"] != repo["first"]


def test_a_full_sha_the_repository_has_resolves_even_on_no_ref(rel, repo):
    assert rel.resolve(repo["first"], repository=repo["url"], user="root") == repo["first"]
    assert rel.resolve(repo["loose"], repository=repo["url"], user="root") == repo["loose"]


@pytest.mark.parametrize("rev, message", [
    ("nope", "revision 'nope' is not in file://"),
    ("1234567890" * 4, "revision '1234567890123456789012345678901234567890' is not in"),
    ("4f6a0c2", "is no branch or tag of file://"),
])
def test_a_revision_the_repository_lacks_is_refused_naming_it(rel, repo, rev, message):
    with pytest.raises(CommandExecutionError, match=message):
        rel.resolve(rev, repository=repo["url"], user="root")


def test_an_unreachable_repository_is_an_error(rel, tmp_path):
    with pytest.raises(CommandExecutionError):
        rel.resolve("main", repository=f"file://{tmp_path}/missing.git", user="root")


@pytest.mark.parametrize("rev", ["", "  ", "--upload-pack=touch /tmp/x", None])
def test_bad_revisions_are_refused_before_git_runs(rel, rev):
    with pytest.raises(SaltInvocationError, match="rev must be"):
        rel.resolve(rev, repository="file:///nonexistent")


def test_the_scratch_fetch_leaves_nothing_behind(rel, repo, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    rel.resolve(repo["loose"], repository=repo["url"], user="root")
    with pytest.raises(CommandExecutionError):
        rel.resolve("f" * 40, repository=repo["url"], user="root")
    assert list(scratch.iterdir()) == []


# --- the release log ---------------------------------------------------------


def test_log_line_names_when_what_and_who(pure):
    line = pure._log_line(WHEN, "example", "deploy", "20261130T075527Z-4f6a0c2e9b1d",
                            "4f6a" + "0" * 36, "main", "alice")
    assert line == ("2026-11-30T07:55:27Z example deploy release=20261130T075527Z-4f6a0c2e9b1d "
                    f"sha=4f6a{'0' * 36} rev=main who=alice\n")
    rollback = pure._log_line(WHEN, "example", "rollback", "r0", None, None, None)
    assert rollback == "2026-11-30T07:55:27Z example rollback release=r0\n"


@pytest.mark.parametrize("kwargs, message", [
    ({"action": "switch"}, "action must be one of deploy, rollback"),
    ({"who": "alice\nforged line"}, "who must be one word"),
    ({"rev": "a b"}, "rev must be one word"),
    ({"release": None}, "site and release are required"),
])
def test_log_line_refuses_what_would_break_the_line(pure, kwargs, message):
    args = {"site": "example", "action": "deploy", "release": "r1", "sha": None, "rev": None,
            "who": None, **kwargs}
    with pytest.raises(SaltInvocationError, match=message):
        pure._log_line(WHEN, **args)


def test_log_appends_a_line_per_call(rel, tmp_path):
    path = tmp_path / "releases.log"
    first = rel.log("example", "deploy", "r1", who="alice", path=str(path))
    second = rel.log("example", "rollback", "r0", who="alice", path=str(path))
    lines = path.read_text().splitlines()
    assert lines == [first, second]
    assert lines[0].endswith(" example deploy release=r1 who=alice")
    assert oct(path.stat().st_mode & 0o777) == "0o644"


# --- the deploy datapoint ----------------------------------------------------


def test_carbon_is_the_pillar_host_else_the_monitoring_host(pure):
    carbon = pure._carbon
    assert carbon({"host": "graphite", "port": 2003}, {"monitoring": ["mon"]}) == (
        "graphite", 2003)
    assert carbon({"host": None, "port": 2004}, {"monitoring": ["mon2", "mon1"]}) == (
        "mon1", 2004)
    assert carbon({"host": None, "port": 2003}, {"app": ["app1"]}) is None


@pytest.fixture
def carbon_listener():
    server = socket.create_server(("127.0.0.1", 0))
    received = []

    def accept():
        conn, _ = server.accept()
        with conn:
            received.append(conn.makefile().read())

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], received, thread
    server.close()


def test_mark_sends_the_deploy_datapoint_to_carbon(tmp_path, carbon_listener):
    port, received, thread = carbon_listener
    sent = mark_with(tmp_path, {"hpd": {"env": "dev", "peers": {}},
                                "highperf": {"graphite": {"host": "127.0.0.1", "port": port}}})
    thread.join(10)
    assert received == [sent + "\n"]
    metric, value, stamp = sent.split()
    assert (metric, value) == ("deploys.dev.example", "1") and stamp.isdigit()


def test_mark_without_carbon_sends_nothing_and_says_so(tmp_path):
    got = mark_with(tmp_path, {"hpd": {"env": "dev", "peers": {"app": ["app1"]}}})
    assert got.startswith("no carbon host") and "deploys.dev.example not sent" in got


def test_mark_says_where_it_failed_when_carbon_is_down(tmp_path):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    got = mark_with(tmp_path, {"hpd": {"env": "dev"},
                               "highperf": {"graphite": {"host": "127.0.0.1", "port": port}}})
    assert got.startswith(f"ERROR: could not send deploys.dev.example to carbon at "
                          f"127.0.0.1:{port}")


# --- keep N, the CDN push target -------------------------------------------------------


@pytest.mark.parametrize("keep, protected, removed", [
    (2, set(), ["main", "r2"]),                  # the newest 2 stay
    (2, {"r2"}, ["main"]),                       # the previous release is never removed
    (2, {"main"}, ["r2"]),                       # nor the serving one, wherever it is
    (5, set(), []),
])
def test_prunable_keeps_the_newest_and_the_protected(pure, keep, protected, removed):
    releases = ["main", "r2", "r3", "r4"]
    assert pure._prunable(releases, keep, protected, releases) == removed


@pytest.mark.parametrize("keep, protected, removed", [
    (3, set(), ["r5"]),                 # r5 never served: it goes before main
    (2, set(), ["r5", "main"]),
    (2, {"r5"}, ["main"]),              # protected, even when it never served
    (4, set(), []),
])
def test_prunable_removes_the_releases_that_never_served_first(pure, keep, protected,
                                                               removed):
    releases = ["main", "r4", "r5", "r6"]
    assert pure._prunable(releases, keep, protected, ["main", "r4", "r6"]) == removed


def test_the_release_log_names_the_releases_that_served_in_order(pure):
    text = ("2026-11-30T07:55:27Z example deploy release=r4 sha=" + "a" * 40 + " who=alice\n"
            "2026-11-30T08:10:00Z example deploy release=r6 rev=main who=bob\n"
            "2026-11-30T08:20:00Z example rollback release=r4 who=bob\n")
    assert pure._logged(text) == ["r4", "r6", "r4"]
    assert pure._logged("") == []


@pytest.mark.parametrize("releases, logged, served", [
    (["main", "r4", "r5", "r6"], ["r4", "r6"], ["main", "r4", "r6"]),  # main: a highstate's
    (["main", "r5"], [], ["main", "r5"]),                              # no log: all served
    (["r4", "r5"], ["r4", "gone"], ["r4"]),
])
def test_served_are_the_logged_releases_and_those_made_before_the_log(pure, releases, logged,
                                                                      served):
    assert pure._served(releases, logged) == served


@pytest.mark.parametrize("current, logged, previous", [
    ("r6", ["r4", "r6"], "r4"),            # r5 failed (no line): not where a rollback goes
    ("r4", ["r4", "r6", "r4"], "r6"),      # after a rollback: the release it left
    ("r4", ["r4"], "main"),                # made before the log began: a highstate's
    ("main", [], None),                    # the first release
    ("r6", ["r4", "gone", "r6"], "r4"),    # a logged one since pruned is passed over
])
def test_previous_is_the_last_release_that_served_before_the_current_one(pure, current, logged,
                                                                         previous):
    releases = ["main", "r4", "r5", "r6"]
    assert pure._previous(current, releases, logged) == previous


def test_unused_venvs_are_those_no_release_links_to(pure, tmp_path):
    (tmp_path / "venvs").mkdir()
    for venv in ("python3.11-old", "python3.11-shared", "python3.11-new", "python3.11-partial"):
        (tmp_path / "venvs" / venv).mkdir()
    for release, venv in (("r1", "python3.11-shared"), ("r2", "python3.11-shared"),
                          ("r3", "python3.11-new")):
        (tmp_path / "releases" / release).mkdir(parents=True)
        (tmp_path / "releases" / release / "venv").symlink_to(tmp_path / "venvs" / venv)
    (tmp_path / "releases" / "r4").mkdir()  # a checkout whose venv step has not run
    assert pure._unused_venvs(tmp_path) == ["python3.11-old", "python3.11-partial"]
    assert pure._unused_venvs(tmp_path / "nothing-here") == []


@pytest.mark.parametrize("keep", [0, -1, "5", None])
def test_prunable_refuses_a_bad_keep_naming_the_key(pure, keep):
    with pytest.raises(SaltInvocationError, match="deploy:keep"):
        pure._prunable(["a"], keep, set(), ["a"])


def test_releases_are_ordered_by_when_they_were_made(pure, tmp_path):
    for name, when in (("main", 100), ("20261130T0900Z-a", 200), ("20261130T0800Z-b", 300)):
        (tmp_path / "releases" / name).mkdir(parents=True)
        os.utime(tmp_path / "releases" / name, (when, when))
    (tmp_path / "releases" / "stray-file").write_text("")
    assert pure._releases(str(tmp_path)) == ["main", "20261130T0900Z-a", "20261130T0800Z-b"]
    assert pure._releases(str(tmp_path / "none")) == []


def test_push_target_is_the_sites_static_path_at_the_first_cdn_host(pure):
    cdn = {"push": {"user": "hpd_cdn", "port": 8873}}
    assert pure._push_target(cdn, {"cdn": ["lb2", "lb"]}, "example", "/static/") == (
        "rsync://hpd_cdn@lb:8873/origin/example/static/")
    with pytest.raises(SaltInvocationError, match="hpd:peers:cdn"):
        pure._push_target(cdn, {}, "example", "/static/")
