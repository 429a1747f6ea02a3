"""_log_handlers/hpd_salt_leaks.py: Salt's reports of the runner clients its own
code leaves unclosed (saltstack/salt#70174) dropped, and nothing else."""

import logging

import pytest
from conftest import load_source

LEAKS = load_source("_log_handlers/hpd_salt_leaks.py")


def record(logger, func, message):
    return logging.LogRecord(logger, logging.WARNING, "x.py", 1, message, None, None, func)


@pytest.mark.parametrize("logger, message", [
    ("salt.runner", "unclosed Runner <salt.runner.Runner object at 0x7f>; call ``destroy()``"),
    ("salt.runner", "unclosed RunnerClient <salt.runner.RunnerClient object at 0x7f>; call"),
    ("salt.minion", "unclosed MasterMinion <salt.minion.MasterMinion object at 0x7f>; call"),
])
def test_salts_own_leaked_runner_clients_are_dropped(logger, message):
    assert not LEAKS.salt_leak(record(logger, "warn_until_close", message))


@pytest.mark.parametrize("func, message", [
    ("warn_until_close", "unclosed SaltEvent <salt.utils.event.MasterEvent object at 0x7f>"),
    ("run", "unclosed Runner <salt.runner.Runner object at 0x7f>"),
    ("run", "Running in asynchronous mode."),
])
def test_other_records_pass(func, message):
    assert LEAKS.salt_leak(record("salt.runner", func, message))


def test_setup_adds_the_filter_once_and_no_handler():
    assert LEAKS.setup_handlers() is False and LEAKS.setup_handlers() is False
    for name in LEAKS.LOGGERS:
        assert logging.getLogger(name).filters.count(LEAKS.salt_leak) == 1
