"""What the lab benchmarks share: their command line and how they report."""

import argparse
import json
import os


def parser(doc, lab=None):
    """A command line described by the second paragraph of the benchmark's `doc`,
    with --keep and --json; with `lab` (its default name and subnet) --name and
    --subnet too."""
    parsed = argparse.ArgumentParser(description=doc.split("\n\n")[1])
    if lab:
        parsed.add_argument("--name", default=lab[0], help=f"lab name (default {lab[0]})")
        parsed.add_argument("--subnet", default=lab[1], help=f"lab subnet (default {lab[1]})")
    parsed.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parsed.add_argument("--json", action="store_true", help="print the results as JSON")
    return parsed


def report(args, bench, show):
    """Run `bench()` (the lab needs root) and print its results: as JSON with
    --json, else with `show(results)`."""
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root")
    results = bench()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        show(results)
    return 0
