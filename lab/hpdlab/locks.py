"""The project's Python locks, read: which packages, versions and files they allow.

    lock/venv.txt             the project's venv: setup.cfg's install_requires and
                              what they need
    lock/venv-build.txt       what the venv's source-only packages need to build
    example/requirements.txt  the site: the lab's wheelhouse and every host's
                              virtualenv (the site's repository carries it)

Each is written by `make lock` (uv pip compile --generate-hashes) in pip's
requirements format: `name==version`, then its files' `--hash=sha256:...`, then
`# via` lines naming what needs it. pip installs them with --require-hashes.
"""

import hashlib
import re
from pathlib import Path
from typing import NamedTuple

from hpdlab.util import REPO, LabError

VENV_LOCK = REPO / "lock" / "venv.txt"
VENV_BUILD_LOCK = REPO / "lock" / "venv-build.txt"
SITE_LOCK = REPO / "example" / "requirements.txt"
SITE_INPUT = REPO / "example" / "requirements.in"

_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


class Pin(NamedTuple):
    version: str
    hashes: frozenset  # sha256 hex digests of the files the lock allows
    via: tuple  # what needs it, as the lock's `# via` lines say


def canonical(name):
    """A package name as the index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(text, source="lock"):
    """{canonical name: Pin} of a lock's text; a line that is not `name==version`
    with hashes is refused, naming it."""
    pins, name = {}, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        comment = line.startswith("#")
        if comment and name and raw.startswith("    #"):
            via = line.lstrip("#").strip().removeprefix("via").strip()
            if via:
                pins[name] = pins[name]._replace(via=(*pins[name].via, via))
            continue
        if not line or comment:
            continue
        if line.startswith("--hash="):
            digest = _HASH.fullmatch(line.rstrip("\\ "))
            if name is None or not digest:
                raise LabError(f"{source}:{number}: {line!r} is not a sha256 hash of a pin")
            pins[name] = pins[name]._replace(hashes=pins[name].hashes | {digest.group(1)})
            continue
        match = _PIN.match(line)
        if not match:
            raise LabError(f"{source}:{number}: {line!r} is not `name==version`")
        name = canonical(match[1])
        pins[name] = Pin(match[2], frozenset(), ())
    unhashed = sorted(n for n, p in pins.items() if not p.hashes)
    if unhashed:
        raise LabError(f"{source}: no hash for {', '.join(unhashed)}")
    return pins


def read(path):
    path = Path(path)
    return parse(path.read_text(), source=path.relative_to(REPO) if path.is_relative_to(REPO)
                 else path)


def unmet(requirements, pins, source):
    """One line per requirement (PEP 508 strings) the pins do not satisfy, each
    naming the package; [] when all are met."""
    from packaging.requirements import Requirement

    problems = []
    for text in requirements:
        req = Requirement(text)
        pin = pins.get(canonical(req.name))
        if pin is None:
            problems.append(f"{req.name}: in {source}, not in the lock")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req.name}: {source} asks for {req.specifier}, "
                            f"the lock has {pin.version}")
    return problems


def unneeded(pins, inputs):
    """Locked packages that neither the inputs (canonical names) nor another locked
    package need any more (a `# via` that names none of them): left over from an
    input that was removed."""
    needed, changed = set(inputs) & set(pins), True
    while changed:
        changed = False
        for name, pin in pins.items():
            if name not in needed and any(canonical(v) in needed for v in pin.via):
                needed.add(name)
                changed = True
    return sorted(set(pins) - needed)


def wheel_name(filename):
    """(canonical name, version) of a wheel's file name."""
    name, version = Path(filename).name.split("-")[:2]
    return canonical(name), version


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheelhouse_status(pins, wheelhouse):
    """(missing, stale): the locked packages with no file in `wheelhouse` whose
    hash the lock allows, and the files there that the lock does not allow."""
    allowed = {digest for pin in pins.values() for digest in pin.hashes}
    present, stale = set(), []
    for path in sorted(Path(wheelhouse).glob("*")):
        if path.is_file() and sha256(path) in allowed:
            present.add(wheel_name(path)[0])
        elif path.is_file():
            stale.append(path)
    return sorted(set(pins) - present), stale
