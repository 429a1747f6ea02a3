"""The lab's repository of the example site: what `publish` commits, and when."""

import subprocess

import pytest
from hpdlab import site, util


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg/mod.py").write_text("A = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / ".gitignore").write_text("*.pyc\n/local.db\n")
    (src / "pkg/mod.pyc").write_bytes(b"\0")
    (src / "local.db").write_text("data")
    return src


def files(repo, rev="main"):
    """{path: (mode, text)} of the commit `rev`."""
    out = {}
    for line in site.git(repo, "ls-tree", "-r", rev).splitlines():
        meta, path = line.split("\t")
        mode, _, blob = meta.split()
        out[path] = (mode, site.git(repo, "cat-file", "blob", blob))
    return out


def test_publishes_the_tree_less_what_its_gitignore_leaves_out(tmp_path, tree):
    repo = tmp_path / "example.git"
    sha = site.publish(repo, tree)
    assert site.head(repo) == sha
    assert files(repo) == {".gitignore": ("100644", "*.pyc\n/local.db"),
                           "pkg/mod.py": ("100644", "A = 1"),
                           "run.sh": ("100755", "#!/bin/sh")}


def test_the_same_tree_is_the_same_commit_and_no_new_one(tmp_path, tree):
    first = site.publish(tmp_path / "a.git", tree)
    assert site.publish(tmp_path / "a.git", tree) == first
    assert site.git(tmp_path / "a.git", "rev-list", "--count", "main") == "1"
    (tree / "local.db").write_text("changed, but ignored")
    assert site.publish(tmp_path / "a.git", tree) == first
    # another lab, another day: the same sha
    assert site.publish(tmp_path / "b.git", tree) == first


def test_a_changed_tree_is_a_new_commit_on_top(tmp_path, tree):
    repo = tmp_path / "example.git"
    first = site.publish(repo, tree)
    (tree / "pkg/mod.py").write_text("A = 2\n")
    second = site.publish(repo, tree)
    assert second != first
    assert site.git(repo, "rev-parse", "main^") == first
    assert files(repo)["pkg/mod.py"] == ("100644", "A = 2")
    assert files(repo, first)["pkg/mod.py"] == ("100644", "A = 1")


def test_changes_go_on_top_of_the_tree_without_touching_it(tmp_path, tree):
    repo = tmp_path / "example.git"
    site.publish(repo, tree)
    sha = site.publish(repo, tree, {"pkg/mod.py": "A = 3\n", "pkg/new.py": "B = 1\n",
                                    "run.sh": "#!/bin/sh\nexit 0\n", ".gitignore": None})
    assert files(repo, sha) == {"pkg/mod.py": ("100644", "A = 3"),
                                "pkg/new.py": ("100644", "B = 1"),
                                "run.sh": ("100755", "#!/bin/sh\nexit 0")}
    assert (tree / "pkg/mod.py").read_text() == "A = 1\n"
    assert not (tree / "pkg/new.py").exists()
    # publishing the plain tree again is a new revision (back to A = 1)
    assert files(repo, site.publish(repo, tree))["pkg/mod.py"] == ("100644", "A = 1")


def test_a_revision_on_another_branch_leaves_main_alone(tmp_path, tree):
    repo = tmp_path / "example.git"
    main = site.publish(repo, tree)
    other = site.publish(repo, tree, {"pkg/mod.py": "A = 4\n"}, branch="rev-b")
    assert site.head(repo) == main
    assert site.head(repo, "rev-b") == other
    assert files(repo, "rev-b")["pkg/mod.py"] == ("100644", "A = 4")


def test_a_missing_directory_is_refused_and_changes_nothing(tmp_path, tree):
    repo = tmp_path / "example.git"
    sha = site.publish(repo, tree)
    with pytest.raises(util.LabError, match="cannot publish .*absent: not a directory"):
        site.publish(repo, tmp_path / "absent")
    assert site.head(repo) == sha


def test_main_moves_only_from_the_head_publish_read(tmp_path, tree, monkeypatch):
    """Two publishes at once: the one that finds main moved fails, main stays."""
    repo = tmp_path / "example.git"
    first = site.publish(repo, tree)
    (tree / "pkg/mod.py").write_text("A = 2\n")
    other = site.publish(repo, tree)
    monkeypatch.setattr(site, "head", lambda repo, branch: first)  # read before `other` landed
    (tree / "pkg/mod.py").write_text("A = 3\n")
    with pytest.raises(subprocess.CalledProcessError):
        site.publish(repo, tree)
    monkeypatch.undo()
    assert site.head(repo) == other


def test_the_example_site_publishes_without_local_files(tmp_path):
    repo = tmp_path / "example.git"
    published = files(repo, site.publish(repo, site.SITE_SOURCE))
    assert published["manage.py"][0] == "100755"
    assert {"requirements.txt", "hpdexample/settings.py", "templates/500.html"} <= set(published)
    assert not [p for p in published if "__pycache__" in p or p.endswith(".sqlite3")]


def test_every_host_trusts_the_repository_it_is_given():
    assert f"directory = {site.HOST_GIT}" in site.HOST_GITCONFIG
