"""
What the benchmarks share: a command line described by the first paragraph of
the benchmark's docstring with the options every one has (``--keep``,
``--json``), the root check of a run that boots a lab, and the result printed
as JSON or as the benchmark's own report.
"""

import argparse
import json
import os


def parser(doc, lab=None, spec=False):
    """An ArgumentParser for the benchmark whose docstring is ``doc``, with
    ``--keep`` and ``--json``; with ``lab`` (the default lab name and subnet),
    ``--name`` and ``--subnet``; with ``spec``, ``--spec``. The benchmark adds
    its own options."""
    p = argparse.ArgumentParser(description=doc.strip().split("\n\n")[0])
    if spec:
        p.add_argument("--spec", default=None, help="lab spec (default lab/specs/farm.yaml)")
    if lab:
        p.add_argument("--name", default=lab[0], help=f"lab name (default {lab[0]})")
        p.add_argument("--subnet", default=lab[1], help=f"lab subnet (default {lab[1]})")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def main(p, bench, report, argv=None, needs_lab=lambda args: True,
         verdict=lambda result, args: 0):
    """Parse ``argv`` with ``p``; refuse to boot a lab without root; print
    ``bench(args)``'s result as JSON (``--json``) or through ``report(result)``;
    the exit status is ``verdict(result, args)``."""
    args = p.parse_args(argv)
    if needs_lab(args) and os.geteuid() != 0:
        raise SystemExit("the lab needs root")
    result = bench(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return verdict(result, args)
