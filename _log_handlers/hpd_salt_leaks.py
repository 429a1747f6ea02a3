"""
Keeps Salt's reports of its own unclosed runner clients off the terminal.

Salt 3008 logs, at WARNING, every ``Runner``, ``RunnerClient`` and
``MasterMinion`` garbage-collected without ``destroy()`` (then destroys it).
Salt's own code leaves them so: the ``salt-run`` command never destroys its
``Runner`` (nor the ``MasterMinion`` that stores the job), the ``state``
runner's ``orchestrate`` never destroys its ``MasterMinion``, and
``saltutil.runner`` (an orchestration's ``salt.runner`` states, a template's
``salt['saltutil.runner']``) never destroys its ``RunnerClient``
(saltstack/salt#70174). This tree has no handle on those objects, so every
``salt-run`` ended with these lines. Its own clients are closed (``with
salt.client.get_local_client(...)``).

Loaded by Salt's logging setup in every process of a master configured with
``log_handlers_dirs`` naming this directory (``salt-run``, the master itself),
it adds no handler: it filters exactly those records, from Salt's
``warn_until_close``, on the two loggers that emit them. Any other leak report
still shows.
"""

import logging

#: The loggers Salt reports these leaks on (the modules defining the classes).
LOGGERS = ("salt.runner", "salt.minion")
LEAKED = ("unclosed Runner ", "unclosed RunnerClient ", "unclosed MasterMinion ")


def salt_leak(record):
    """False (drop it) for Salt's report of one of its own runner clients left unclosed."""
    return not (record.funcName == "warn_until_close"
                and record.getMessage().startswith(LEAKED))


def setup_handlers():
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if salt_leak not in logger.filters:
            logger.addFilter(salt_leak)
    return False
