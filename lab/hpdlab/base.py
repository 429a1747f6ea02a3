"""What every host is made from: the base rootfs, the archive cache, the wheelhouse.

    LAB_ROOT/bases/<inputs>/   one Debian rootfs per set of inputs (suite, mirror,
                               packages, minion unit, apt sources); hosts mount it
                               read-only as their overlay's lower layer
    LAB_ROOT/apt-archives/     .deb cache filled on the machine (hosts have no route out)
    LAB_ROOT/wheelhouse/       the site's locked wheels (example/requirements.txt),
                               downloaded on the machine

One lock ("build") covers building, filling and removing bases. A base that
changed goes into a new directory; an old one is removed once no lab uses it (no
lab's state names it and no overlay has it as its lower layer). Nothing writes into
a base once it is built: package downloads run in a throw-away overlay over it.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from hpdlab import locks, util
from hpdlab.util import REPO, VENV, LabError, fingerprint, locked, log, read_list, run

SUITE = "bookworm"
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "iproute2", "python3", "ca-certificates"]
MINION_UNIT = f"""[Unit]
Description=The Salt minion (hpd lab)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=all
KillMode=process
ExecStart={VENV}/bin/salt-minion -c /etc/salt
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
APT_SOURCE = """Types: deb
URIs: {uri}
Suites: {suites}
Components: main
"""


# --------------------------------------------------------------------------- apt sources


def machine_apt_sources(etc=Path("/etc/apt")):
    """[(uri, suite)] of the machine's `deb` sources, whatever their format:
    classic one-line (sources.list, sources.list.d/*.list) or deb822 (*.sources)."""
    entries = []
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], words[2]))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line[:1].isspace() and not line.startswith("#"):
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled") != "no":
                entries += [(uri, suite) for uri in fields.get("uris", "").split()
                            for suite in fields.get("suites", "").split()]
    return [(uri, suite) for uri, suite in entries if not uri.startswith("cdrom:")]


def apt_mirror(entries=None):
    """The Debian mirror this machine uses (its apt sources), unless HPD_LAB_MIRROR says."""
    if os.environ.get("HPD_LAB_MIRROR"):
        return os.environ["HPD_LAB_MIRROR"]
    for uri, suite in machine_apt_sources() if entries is None else entries:
        if not suite.endswith("-security") and "security" not in uri:
            return uri
    raise LabError("no Debian mirror found in /etc/apt; set HPD_LAB_MIRROR")


def base_apt_sources(entries=None):
    """The base's own apt sources (deb822): the machine's mirror for SUITE, plus
    SUITE-updates and the security archive when the machine uses them."""
    entries = machine_apt_sources() if entries is None else entries
    suites = [SUITE]
    if any(suite.endswith("-updates") for _, suite in entries):
        suites.append(f"{SUITE}-updates")
    text = APT_SOURCE.format(uri=apt_mirror(entries), suites=" ".join(suites))
    security = [uri for uri, suite in entries if suite.endswith("-security")]
    if security:
        text += "\n" + APT_SOURCE.format(uri=security[0], suites=f"{SUITE}-security")
    return "# Written by lab/labctl from the machine's apt sources.\n" + text


# --------------------------------------------------------------------------- build


@contextlib.contextmanager
def built():
    """Build what is missing and yield (base, archives, wheelhouse) while holding the
    build lock: the caller records the base it uses before anyone may remove it."""
    with locked("build"):
        sources = base_apt_sources()
        inputs = fingerprint(SUITE, apt_mirror(), BASE_PACKAGES, MINION_UNIT, sources)
        base = build_base(inputs, sources)
        yield base, fill_archives(base, inputs), fill_wheelhouse()
        remove_unused_bases(keep=base)


def build():
    """Build (or check) the base rootfs, the archive cache and the wheelhouse, and
    log the Debian versions they hold."""
    with built() as paths:
        base, archives, _ = paths
        log(built_with(base, archives))
        return paths


class chroot_network:
    """Lend the machine's resolv.conf to a chroot while apt fetches into it."""

    def __init__(self, root):
        self.resolv = Path(root) / "etc" / "resolv.conf"

    def __enter__(self):
        self.resolv.unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", self.resolv)

    def __exit__(self, *exc):
        self.resolv.unlink(missing_ok=True)
        self.resolv.write_text("")


def build_base(inputs, sources):
    """The base rootfs built from `inputs` (a directory named after them)."""
    base = util.LAB_ROOT / "bases" / inputs
    if base.is_dir():
        return base
    log(f"building the {SUITE} base rootfs (debootstrap, about a minute)")
    tmp = base.with_name(inputs + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
         SUITE, tmp, apt_mirror()], stdout=subprocess.DEVNULL)
    (tmp / "etc/apt/sources.list").unlink(missing_ok=True)
    (tmp / "etc/apt/sources.list.d/debian.sources").write_text(sources)
    with chroot_network(tmp):
        run(["chroot", tmp, "apt-get", "update", "-qq"])
    unit = tmp / "etc/systemd/system/salt-minion.service"
    unit.write_text(MINION_UNIT)
    wants = tmp / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "salt-minion.service").symlink_to("/etc/systemd/system/salt-minion.service")
    run(["chroot", tmp, "systemctl", "enable", "-q", "systemd-networkd",
         "systemd-networkd-wait-online"])
    run(["chroot", tmp, "systemctl", "mask", "-q", "apt-daily.timer",
         "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer"])
    (tmp / "etc/machine-id").write_text("")
    # Packages the hosts install later come from the archive cache bound in.
    (tmp / "etc/apt/apt.conf.d/10-hpd-lab").write_text(
        'APT::Install-Recommends "false";\nAcquire::Languages "none";\n')
    tmp.rename(base)
    return base


def fill_archives(base, base_inputs):
    """Download lab/packages.txt (and what it needs) into the archive cache and index it.

    apt runs in a throw-away overlay over the base, after an `apt-get update`: the
    lists are current, and the base (the lower layer of running hosts) is not written.
    """
    archives, stamp = util.LAB_ROOT / "apt-archives", util.LAB_ROOT / "apt-archives.inputs"
    packages = read_list(REPO / "lab" / "packages.txt")
    inputs = fingerprint(base_inputs, packages)
    if stamp.exists() and stamp.read_text().strip() == inputs:
        return archives
    log(f"downloading {len(packages)} Debian packages and their dependencies")
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    scratch = util.LAB_ROOT / "download.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    root = scratch / "root"
    for d in ("upper", "work", "root"):
        (scratch / d).mkdir(parents=True)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={base},upperdir={scratch / 'upper'},workdir={scratch / 'work'}", root])
    try:
        run(["mount", "--bind", archives, root / "var/cache/apt/archives"])
        with chroot_network(root):
            run(["chroot", root, "apt-get", "update", "-qq"])
            run(["chroot", root, "apt-get", "install", "-qq", "--download-only", "-y",
                 *packages], stdout=subprocess.DEVNULL)
    finally:
        for point in reversed(util.lab_mounts(root)):
            run(["umount", point])
        shutil.rmtree(scratch)
    for index, verb in (("Packages", "packages"), ("Release", "release")):
        with open(archives / f"{index}.tmp", "w") as out:
            run(["apt-ftparchive", verb, "."], cwd=archives, stdout=out)
        (archives / f"{index}.tmp").rename(archives / index)
    stamp.write_text(inputs + "\n")
    return archives


def fill_wheelhouse():
    """The wheelhouse holds exactly the site's lock (example/requirements.txt, the
    file the hosts install): what is missing is downloaded from the lock itself,
    with --no-deps --require-hashes, so nothing is resolved here; a file the lock
    does not allow (an older lock's) is removed."""
    wheelhouse = util.LAB_ROOT / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    (util.LAB_ROOT / "wheelhouse.inputs").unlink(missing_ok=True)  # the old stamp
    pins = locks.read(locks.SITE_LOCK)
    missing, stale = locks.wheelhouse_status(pins, wheelhouse)
    for path in stale:
        path.unlink()
    if missing:
        log(f"downloading {len(missing)} of the site's {len(pins)} locked Python packages "
            "into the wheelhouse")
        # -qq: this machine's pip config warns about each extra index that lacks one.
        run([VENV / "bin/pip", "download", "-qq", "--disable-pip-version-check",
             "--no-deps", "--require-hashes", "--only-binary=:all:", "-d", wheelhouse,
             "-r", locks.SITE_LOCK])
        missing, _ = locks.wheelhouse_status(pins, wheelhouse)
        if missing:
            raise LabError(f"the wheelhouse {wheelhouse} still lacks {', '.join(missing)} "
                           f"after pip download -r {locks.SITE_LOCK}")
    return wheelhouse


def package_versions(index_text, names):
    """{name: version} of `names` in a Debian package index (an archive's Packages
    file, or dpkg's status file: the same stanzas)."""
    found = {}
    for stanza in re.split(r"\n\s*\n", index_text):
        fields = dict(re.findall(r"^(Package|Version): (\S+)$", stanza, re.M))
        if fields.get("Package") in names and "Version" in fields:
            found[fields["Package"]] = fields["Version"]
    return found


def built_with(base, archives):
    """One line: the Debian suites, the day the archive cache was filled, and the
    version of each package the base and lab/packages.txt name. The lab's Debian
    packages are bookworm's as the mirror had them that day (its -updates and
    -security too): Debian's stable archive, which changes only by security and
    point-release fixes; the cache is filled again when lab/packages.txt or the
    base's inputs change (or the cache is deleted)."""
    names = [*BASE_PACKAGES, *read_list(REPO / "lab" / "packages.txt")]
    index = archives / "Packages"
    versions = {**package_versions((base / "var/lib/dpkg/status").read_text(), names),
                **package_versions(index.read_text(), names)}
    day = time.strftime("%Y-%m-%d", time.gmtime(index.stat().st_mtime))
    sources = (base / "etc/apt/sources.list.d/debian.sources").read_text()
    suites = ", ".join(" ".join(re.findall(r"^Suites: (.*)$", sources, re.M)).split())
    listed = ", ".join(f"{n} {versions[n]}" for n in names if n in versions)
    return f"Debian packages ({suites}; the archive cache of {day}): {listed}"


# --------------------------------------------------------------------------- old bases


def bases_in_use():
    """Bases a lab uses: named in a lab's state, or the lower layer of a mounted overlay."""
    used = set()
    for state_file in util.LAB_ROOT.glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            used.update(h["base"] for h in state.get("hosts", {}).values() if h.get("base"))
    for _, fstype, options in util.mountinfo():
        for option in options.split(",") if fstype == "overlay" else ():
            if option.startswith("lowerdir="):
                used.update(option.removeprefix("lowerdir=").split(":"))
    return used


def remove_unused_bases(keep):
    """Remove every base but `keep` that no lab uses (call with the build lock held).
    `base/` is where the base lived before each had a directory of its own."""
    old = [b for b in util.LAB_ROOT.glob("bases/*") if b != keep]
    legacy = util.LAB_ROOT / "base"
    used = bases_in_use()
    for base in old + ([legacy] if legacy.is_dir() else []):
        if str(base) not in used:
            log(f"removing {base}: no lab uses it")
            shutil.rmtree(base)
            if base == legacy:
                (util.LAB_ROOT / "base.inputs").unlink(missing_ok=True)
