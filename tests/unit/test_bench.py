"""benchmarks/bench.py: the command line, root check and output every benchmark shares."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench  # noqa: E402

DOC = """
What it measures, in a sentence.

    python benchmarks/x.py [--keep] [--json]
"""


def run(argv, euid=0, needs_lab=lambda args: True, verdict=lambda r, a: 0, monkeypatch=None):
    monkeypatch.setattr(bench.os, "geteuid", lambda: euid)
    p = bench.parser(DOC)
    p.add_argument("--n", type=int, default=3)
    ran = []
    code = bench.main(p, lambda args: ran.append(args) or {"n": args.n, "keep": args.keep},
                      lambda r: print(f"report n={r['n']}"), argv, needs_lab, verdict)
    return code, ran


def test_the_description_is_the_docstrings_first_paragraph():
    assert bench.parser(DOC).description == "What it measures, in a sentence."


def test_json_or_the_benchmarks_report(monkeypatch, capsys):
    assert run(["--n", "5", "--keep"], monkeypatch=monkeypatch)[0] == 0
    assert capsys.readouterr().out == "report n=5\n"
    run(["--json"], monkeypatch=monkeypatch)
    assert json.loads(capsys.readouterr().out) == {"n": 3, "keep": False}


def test_a_lab_run_needs_root_and_runs_nothing_without_it(monkeypatch):
    with pytest.raises(SystemExit, match="the lab needs root"):
        run([], euid=1000, monkeypatch=monkeypatch)
    code, ran = run([], euid=1000, needs_lab=lambda args: False, monkeypatch=monkeypatch)
    assert code == 0 and len(ran) == 1


def test_the_exit_status_is_the_verdicts(monkeypatch, capsys):
    code, _ = run(["--json"], verdict=lambda r, a: int(r["n"] > 2), monkeypatch=monkeypatch)
    assert code == 1
