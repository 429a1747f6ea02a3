"""The lab: throw-away Debian hosts with real systemd (systemd-nspawn), one
bridge of their own, and a salt-master on the machine that manages them.

The code is the package hpdlab/ (one module per part: spec, base, cgroups, master,
hosts, lab, site, cli); this module is the lab/labctl command and the names the demo,
the benchmarks and the tests use. Everything lives under HPD_LAB_ROOT (default
/var/lib/hpd-lab):

    locks/           one lock file per lab, and "build" (never removed)
    bases/<inputs>/  Debian bookworm rootfs, one per set of inputs; removed once no lab uses it
    apt-archives/    .deb cache filled on the machine (hosts have no route out)
    wheelhouse/      Python wheels filled on the machine
    <lab>/           one running lab: state.json, master/, hosts/<name>/, git/example.git
                     (the example site's repository, at /srv/git/example.git in every host)

The hosts' roles and environment come from the lab spec; the lab writes them into
the master's inventory (pillar is targeted by minion id, never by grain) and
mirrors them as grains for `salt -G`.
"""

import sys

from hpdlab.base import build
from hpdlab.cli import main
from hpdlab.lab import Lab, booted
from hpdlab.site import SITE_SOURCE
from hpdlab.spec import load_spec
from hpdlab.util import LAB_ROOT, REPO, LabError

__all__ = ["LAB_ROOT", "REPO", "SITE_SOURCE", "Lab", "LabError", "booted", "build", "load_spec",
           "main"]

if __name__ == "__main__":
    sys.exit(main())
