"""The lab serves the example site as a git repository: every host clones
file:///srv/git/example.git (any user, read-only) and sees each published revision."""

import uuid

import pytest
from hpdlab import site

URL = f"file://{site.HOST_GIT}"


@pytest.fixture(scope="module")
def host(lab):
    """An app host (the hosts that deploy the site) with git."""
    name = lab.hosts_with("app")[0]
    installed = lab.salt(name, "pkg.install", "git", "refresh=True")[name]
    assert isinstance(installed, dict) and ("git" in installed or installed == {}), installed
    return name


def as_nobody(lab, host, script, check=True):
    return lab.exec(host, "runuser", "-u", "nobody", "--", "sh", "-ec", f"cd /tmp && {script}",
                    check=check)


def test_a_host_clones_the_published_tree_as_any_user(lab, host):
    sha = lab.publish_site()  # example/ as it is now (main's head when unchanged)
    clone = f"/tmp/example-{uuid.uuid4().hex[:8]}"
    try:
        out = as_nobody(lab, host, f"git clone -q {URL} {clone} && git -C {clone} rev-parse "
                        f"HEAD HEAD^{{tree}} && cat {clone}/requirements.txt")
        head, tree, *requirements = out.stdout.splitlines()
        assert head == sha
        assert tree == site.git(lab.lab.site_repo, "rev-parse", f"{sha}^{{tree}}")
        assert requirements == (site.SITE_SOURCE / "requirements.txt").read_text().splitlines()
    finally:
        lab.exec(host, "rm", "-rf", clone)


def test_a_new_revision_reaches_the_hosts_at_once_and_they_cannot_write(lab, host):
    """Published on a branch of its own, so main (what the farm deploys) stays put."""
    main = site.head(lab.lab.site_repo)
    marker, branch = uuid.uuid4().hex, "test-site-repo"
    revision = lab.publish_site(changes={"REVISION": marker}, branch=branch)
    try:
        out = as_nobody(lab, host, f"git ls-remote {URL} refs/heads/{branch} refs/heads/main")
        assert sorted(out.stdout.split()) == sorted(
            [revision, f"refs/heads/{branch}", main, "refs/heads/main"])
        shown = lab.exec(host, "git", f"--git-dir={site.HOST_GIT}", "show",
                         f"{revision}:REVISION")
        assert shown.stdout == marker
        write = lab.exec(host, "touch", f"{site.HOST_GIT}/written-by-a-host", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
    finally:
        site.git(lab.lab.site_repo, "update-ref", "-d", f"refs/heads/{branch}")
