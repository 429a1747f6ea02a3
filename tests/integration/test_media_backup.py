"""User uploads on the lab: the backup host pulls app1's media directory and
snapshots it with restic by its timer's service; a file deleted after a
snapshot and an overwritten file's older version come back byte-identical by
one command (hpd_backup.media_restore); retention keeps what pillar
backup:media:keep says; the app hosts' rsync module is read-only and admits
the backup host only. Builds on the shared first highstate."""

import base64
import hashlib
import json
import os
import time

import pytest
from conftest import settled

pytestmark = pytest.mark.lab

MEDIA = "/srv/hpd/media"
CONFIG = "/etc/hpd/media-backup.json"


@pytest.fixture(scope="module")
def backup(lab, highstate):
    return settled(lab, highstate, "backup")


@pytest.fixture(scope="module")
def app(lab, highstate):
    return settled(lab, highstate, "app")


@pytest.fixture
def uploads(lab, app):
    """A directory of app's media directory, removed afterwards."""
    lab.exec(app, "install", "-d", "-o", "hpd", "-g", "hpd", f"{MEDIA}/probe")
    yield "probe"
    lab.exec(app, "rm", "-rf", f"{MEDIA}/probe")


def put(lab, host, path, data):
    """Write ``data`` (bytes) to ``path`` on ``host`` as the app user; its sha256."""
    lab.exec(host, "runuser", "-u", "hpd", "--", "sh", "-c",
             f"echo {base64.b64encode(data).decode()} | base64 -d > {path}")
    return hashlib.sha256(data).hexdigest()


def sha256(lab, host, path):
    return lab.exec(host, "sha256sum", path).stdout.split()[0]


def snapshot(lab, backup):
    """The timer's service, run now."""
    lab.exec(backup, "systemctl", "start", "hpd-backup-media.service")


def restore(lab, backup, *args):
    """salt -I hpd:roles:backup hpd_backup.media_restore ...: its return."""
    return lab.salt("-I", "hpd:roles:backup", "hpd_backup.media_restore", *args)[backup]


def snapshots(lab, backup, host):
    return lab.salt(backup, "hpd_backup.media_snapshots", host)[backup]


def test_a_deleted_file_and_an_overwritten_files_older_version_are_restored(lab, backup, app,
                                                                            uploads):
    assert lab.exec(backup, "systemctl", "is-active", "hpd-backup-media.timer").stdout.strip() \
        == "active"
    deleted, overwritten = f"{uploads}/deleted.bin", f"{uploads}/photo.jpg"
    kept = put(lab, app, f"{MEDIA}/{deleted}", os.urandom(3000))
    first = put(lab, app, f"{MEDIA}/{overwritten}", os.urandom(2000))
    snapshot(lab, backup)
    time.sleep(1.1)  # `between` (whole seconds) is after the first snapshot
    between = lab.exec(backup, "date", "-u", "--iso-8601=seconds").stdout.strip()
    time.sleep(1.1)
    lab.exec(app, "rm", f"{MEDIA}/{deleted}")
    second = put(lab, app, f"{MEDIA}/{overwritten}", os.urandom(2500))
    snapshot(lab, backup)

    # The latest snapshot no longer has the deleted file: the command says so.
    refused = restore(lab, backup, f"host={app}", f"path={deleted}", "snapshot=latest")
    assert isinstance(refused, str) and f"{deleted}: not in snapshot" in refused, refused

    done = restore(lab, backup, f"host={app}", f"path={deleted}", f"snapshot=before={between}")
    assert isinstance(done, dict) and done["path"] == deleted, done
    assert sha256(lab, app, f"{MEDIA}/{deleted}") == kept
    assert lab.exec(app, "stat", "-c", "%U", f"{MEDIA}/{deleted}").stdout.strip() == "hpd"

    restore(lab, backup, f"host={app}", f"path={overwritten}", f"snapshot=before={between}")
    assert sha256(lab, app, f"{MEDIA}/{overwritten}") == first
    restore(lab, backup, f"host={app}", f"path={uploads}", "snapshot=latest")
    assert sha256(lab, app, f"{MEDIA}/{overwritten}") == second


def keep_last(lab, backup):
    """Pillar backup:media:keep:last as the backup host has it."""
    return json.loads(lab.exec(backup, "cat", CONFIG).stdout)["keep"]["last"]


def test_retention_keeps_what_the_pillar_says(lab, backup, app):
    """All snapshots of this run are of one day: keep last N wins over the
    daily/weekly/monthly ones (each keeps the newest, already among them)."""
    last = keep_last(lab, backup)
    assert last >= 1
    for _ in range(last + 1 - len(snapshots(lab, backup, app))):
        snapshot(lab, backup)
    before = snapshots(lab, backup, app)
    snapshot(lab, backup)
    after = snapshots(lab, backup, app)
    assert len(after) == last, after
    assert after[:-1] == before[len(before) - last + 1:]  # the newest kept
    # pruned: restic's repository check finds no unreferenced data either
    lab.exec(backup, "env", "RESTIC_REPOSITORY=/var/backups/hpd/media/repo",
             "RESTIC_PASSWORD_FILE=/etc/hpd/media-restic.password", "restic", "check")


def test_the_media_module_is_read_only_and_admits_the_backup_host_only(lab, backup, app):
    other = next(n for n, h in sorted(lab.state["hosts"].items())
                 if "app" in h["roles"] and n != app)
    url = f"rsync://hpd_media@{app}/media/"
    with_password = ["rsync", "--password-file=/etc/hpd/media-rsync.password"]
    assert lab.exec(backup, *with_password, url).stdout.strip()  # listed
    push = lab.exec(backup, *with_password, CONFIG, url, check=False)
    assert push.returncode != 0 and "read only" in push.stderr, push.stderr
    # Another app host, with the right password (its own copy), is refused:
    # rsyncd hides the module from it.
    pull = lab.exec(other, "sh", "-c",
                    f"RSYNC_PASSWORD=$(cut -d: -f2- /etc/rsyncd.secrets) rsync {url}", check=False)
    assert pull.returncode != 0 and "Unknown module 'media'" in pull.stderr, pull.stderr


def test_an_unreachable_app_host_fails_the_run_and_the_others_get_their_snapshot(lab, backup):
    first, second = sorted(n for n, h in lab.state["hosts"].items() if "app" in h["roles"])[:2]
    counts = {h: len(snapshots(lab, backup, h)) for h in (first, second)}
    # Disabled, not just stopped: the master's reactor starts a stopped service.
    lab.exec(first, "systemctl", "disable", "--now", "rsync")
    try:
        run = lab.exec(backup, "systemctl", "start", "hpd-backup-media.service", check=False)
    finally:
        lab.exec(first, "systemctl", "enable", "--now", "rsync")
    assert run.returncode != 0
    run_id = lab.exec(backup, "systemctl", "show", "-p", "InvocationID", "--value",
                      "hpd-backup-media.service").stdout.strip()
    log = lab.exec(backup, "journalctl", f"_SYSTEMD_INVOCATION_ID={run_id}", "--no-pager").stdout
    assert f"no snapshot of {first}: " in log and f"(taken: {second})" in log, log
    assert len(snapshots(lab, backup, first)) == counts[first]
    assert len(snapshots(lab, backup, second)) == min(counts[second] + 1, keep_last(lab, backup))
