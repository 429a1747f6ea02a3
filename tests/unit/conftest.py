"""What unit tests share: Salt minion options for a loader or a renderer without a
master, and a file of the tree imported as a plain module."""

import importlib.util
from pathlib import Path

import salt.config

REPO = Path(__file__).resolve().parents[2]
#: The master's file roots (lab/hpdlab/master.py, the README): the states and
#: served/, so a test that renders from salt:// sees what minions see.
FILE_ROOTS = {"base": [str(REPO / "salt"), str(REPO / "served")]}


def local_opts(root, **overrides):
    """Salt's minion options for a unit test: no master (``file_client: local``),
    every directory Salt writes below ``root`` (extension modules too, so no
    stale synced copy under /var/cache/salt is loaded), the repository's
    ``_modules`` and ``_states``; ``overrides`` on top."""
    opts = salt.config.minion_config(None)
    opts.update(
        id="unit",
        file_client="local",
        cachedir=str(root / "cache"),
        pki_dir=str(root / "pki"),
        sock_dir=str(root / "sock"),
        extension_modules=str(root / "cache" / "extmods"),
        module_dirs=[str(REPO / "_modules")],
        states_dirs=[str(REPO / "_states")],
    )
    opts.update(overrides)
    return opts


def load_source(path):
    """The tree's file at ``path`` (relative to the repository) imported as a
    plain module, without Salt's loader: for its pure functions, or with the
    dunders (``__salt__``, ``__opts__``...) a test sets itself. A new module
    object on each call."""
    spec = importlib.util.spec_from_file_location(f"{Path(path).stem}_under_test", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
