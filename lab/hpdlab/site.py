"""The example site as a git repository the hosts clone.

    LAB_ROOT/<lab>/git/example.git   a bare repository, bound read-only into every
                                     host at /srv/git/example.git (clone it as
                                     file:///srv/git/example.git, as any user)

`publish` commits a directory's tree on a branch (`main` unless told) when it
differs from the branch head. Author, committer, date and message are fixed, so
the same tree on the same head always makes the same commit (the same sha in
every lab).
"""

import os
import subprocess
import tempfile
from pathlib import Path

from hpdlab.util import REPO, LabError, run

SITE_SOURCE = REPO / "example"
HOST_GIT = "/srv/git/example.git"
BRANCH = "main"
# The repository belongs to root on the machine, and git refuses to read a
# repository another user owns (measured: "detected dubious ownership" when the
# app user cloned it), so every host's git trusts this one.
HOST_GITCONFIG = f"""# Written by lab/labctl: the example site's repository, bound in read-only.
[safe]
\tdirectory = {HOST_GIT}
"""
IDENTITY = {
    "GIT_AUTHOR_NAME": "hpd lab", "GIT_AUTHOR_EMAIL": "lab@hpd.test",
    "GIT_COMMITTER_NAME": "hpd lab", "GIT_COMMITTER_EMAIL": "lab@hpd.test",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}


def git(repo, *args, env=None, **kw):
    """Run git on the bare repository `repo`; its stripped stdout. The machine's and
    the user's git config stay out of it (they could change what a commit holds)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "LC_ALL": "C"}
    out = run(["git", f"--git-dir={repo}", *args], env={**base, **(env or {})},
              capture_output=True, text=True, **kw)
    return out.stdout.strip()


def init(repo):
    """Make the bare repository `repo` unless it exists."""
    repo = Path(repo)
    if not (repo / "HEAD").exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        run(["git", "init", "-q", "--bare", f"--initial-branch={BRANCH}", repo],
            capture_output=True)
    return repo


def head(repo, branch=BRANCH):
    """The sha of `branch`, or None before its first publish."""
    try:
        return git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}")
    except subprocess.CalledProcessError:
        return None


def publish(repo, tree_dir, changes=None, branch=BRANCH):
    """Commit the files of `tree_dir` (less what its .gitignore leaves out), with
    `changes` ({path in the tree: new text, or None to remove it}) on top, on
    `branch` when they differ from its head's tree; the branch's sha either way."""
    tree_dir = Path(tree_dir)
    if not tree_dir.is_dir():
        raise LabError(f"cannot publish {tree_dir}: not a directory")
    repo = init(repo)
    with tempfile.TemporaryDirectory() as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(tree_dir)}
        git(repo, "add", "-A", env=index)
        for path, text in sorted((changes or {}).items()):
            if text is None:
                git(repo, "update-index", "--force-remove", "--", path, env=index)
                continue
            listed = git(repo, "ls-files", "-s", "--", path, env=index)
            mode = listed.split()[0] if listed else "100644"
            blob = git(repo, "hash-object", "-w", "--stdin", input=text)
            git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=index)
        tree = git(repo, "write-tree", env=index)
    parent = head(repo, branch)
    if parent and git(repo, "rev-parse", f"{parent}^{{tree}}") == tree:
        return parent
    message = "Publish the example site" + (
        f" with changes to {', '.join(sorted(changes))}" if changes else "")
    commit = git(repo, "commit-tree", tree, *(["-p", parent] if parent else []),
                 "-m", message, env=IDENTITY)
    # Moves the branch only from the head read above: a concurrent publish fails here.
    git(repo, "update-ref", f"refs/heads/{branch}", commit, parent or "0" * 40)
    return commit
