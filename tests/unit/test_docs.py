"""
What the documentation says matches the repository: the make targets and
files it names exist, and the vitals facts it states are the code's.
"""

import pathlib
import re

import pytest
from conftest import load_source

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = sorted(
    p for p in [*REPO.glob("*.md"), *REPO.glob("*/README.md"), REPO / "setup.cfg"] if p.is_file()
)
TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))


@pytest.fixture(scope="module")
def hp():
    return load_source(REPO / "_modules/highperf.py")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_make_targets_named_exist(doc):
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", doc.read_text()))
    assert named <= TARGETS, f"{doc.relative_to(REPO)}: no make target {named - TARGETS}"


#: Files the documentation names on purpose that are not in the repository.
NOT_IN_REPO = {"inventory.yaml",  # the lab writes it; in production the operator keeps it
               "db_primary.yaml"}  # orch.db_failover writes it beside inventory.yaml
#: Where a relative name in the documentation may be rooted (salt:// and pillar roots).
ROOTS = [REPO, REPO / "salt", REPO / "pillar", REPO / "_modules"]
FILE_RE = re.compile(r"(?<![\w./<>{,:-])(\w[\w./-]*\.(?:md|py|sls|yaml|jinja|cfg|txt))(?![\w.])")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_files_named_exist(doc):
    """Files named in backquotes or parentheses, like `salt/common/vitals.sls`."""
    missing = sorted(
        name
        for name in set(FILE_RE.findall(doc.read_text())) - NOT_IN_REPO
        if not any((root / name).exists() for root in [doc.parent, *ROOTS])
    )
    assert not missing, f"{doc.relative_to(REPO)}: not in the repository: {missing}"


def test_readme_states_the_first_sample_and_metric_paths(hp):
    readme = (REPO / "README.md").read_text()
    first = re.search(
        r"first call on a\s+boot, which has no earlier sample and\s+measures over ([0-9.]+) s",
        readme,
    )
    assert first and float(first.group(1)) == hp.FIRST_SAMPLE_SECONDS
    example = re.search(r"\(`([^`]+)` -> `([^`]+)`\)", readme)
    assert example, "the README shows how a minion id with dots becomes a metric path"
    minion_id, path = example.groups()
    line = hp._graphite_lines({"load": {"1min": 0.5}}, "servers", minion_id, 0)[0]
    assert line.split()[0] == path


def test_every_test_module_has_a_name_of_its_own():
    """`make test` collects tests/unit and tests/integration in one run, each
    directory a rootdir-relative import path: two modules of the same name stop
    the collection."""
    names = [p.name for p in (REPO / "tests").glob("*/test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
