"""
Whisper files (Graphite's carbon) at the retentions carbon is configured with.

Carbon applies ``storage-schemas.conf`` only when it creates a file: after a
change of retentions (for the vitals: pillar ``highperf:graphite:interval``)
the files it already has keep the old archives, and new points land in the
wrong slots. ``whisper.resized`` rewrites those files with ``whisper-resize``
(Debian's ``python3-whisper``), keeping their points, owner and mode.

.. code-block:: yaml

    monitoring-carbon-vitals-resized:
      whisper.resized:
        - name: /var/lib/graphite/whisper/servers
        - retentions: 10s:2d,5m:30d,1h:2y
"""

import os
import struct

__virtualname__ = "whisper"

# Injected by Salt's loader; declared for direct imports (unit tests, linters).
__opts__ = {}
__salt__ = {}

#: whisper's file header: aggregation type, max retention, xFilesFactor,
#: archive count; then per archive: offset, seconds per point, points.
_METADATA = struct.Struct("!2LfL")
_ARCHIVE = struct.Struct("!3L")
RESIZE = "/usr/bin/whisper-resize"


def __virtual__():
    return __virtualname__


def _archives(path):
    """[(seconds per point, points), ...] from a whisper file's header."""
    with open(path, "rb") as fh:
        count = _METADATA.unpack(fh.read(_METADATA.size))[3]
        return [tuple(_ARCHIVE.unpack(fh.read(_ARCHIVE.size))[1:]) for _ in range(count)]


def _stale(directory, wanted):
    """
    The whisper files under ``directory`` whose archives are not ``wanted``,
    and those whose header cannot be read (``path: reason``).
    """
    stale, unreadable = [], []
    for root, _, files in os.walk(directory):
        for name in files:
            if name.endswith(".wsp"):
                path = os.path.join(root, name)
                try:
                    if _archives(path) != wanted:
                        stale.append(path)
                except (OSError, struct.error) as exc:
                    unreadable.append(f"{path}: not a whisper file ({exc})")
    return sorted(stale), sorted(unreadable)


def resized(name, retentions):
    """
    Every whisper file under the directory ``name`` has the archives of
    ``retentions`` (carbon's ``storage-schemas.conf`` syntax with units,
    e.g. ``10s:2d,5m:30d,1h:2y``). Files that already have them are left
    alone; the others are rewritten by ``whisper-resize`` (their points
    aggregated into the new archives), owner and mode kept. A missing
    directory (carbon has written nothing yet) needs no change.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    wanted = [tuple(a) for a in __salt__["highperf.retention_archives"](retentions)]
    stale, failed = _stale(name, wanted) if os.path.isdir(name) else ([], [])
    if failed:
        ret["result"] = False
        ret["comment"] = "\n".join(failed)
        return ret
    if not stale:
        ret["comment"] = f"Every whisper file under {name} has the retentions {retentions}"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{len(stale)} whisper files under {name} would be resized to {retentions}"
        ret["changes"] = {"resized": stale}
        return ret
    done = []
    for path in stale:
        st = os.stat(path)
        out = __salt__["cmd.run_all"](
            [RESIZE, "--nobackup", path, *retentions.split(",")], python_shell=False
        )
        if out["retcode"]:
            failed.append(f"{path}: {out['stderr'].strip() or out['stdout'].strip()}")
            continue
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, st.st_mode & 0o7777)
        done.append(path)
    if done:
        ret["changes"] = {"resized": done, "retentions": retentions}
    if failed:
        ret["result"] = False
        ret["comment"] = "whisper-resize failed:\n" + "\n".join(failed)
    else:
        ret["comment"] = f"Resized {len(done)} whisper files under {name} to {retentions}"
    return ret
