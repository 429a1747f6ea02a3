import sys
from pathlib import Path

# Tests import the lab's library (lab/labctl.py) and the integration fixtures.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))


def pytest_unconfigure(config):
    """Salt holds log records back until its logging is set up, and writes them at
    exit to a stderr pytest has closed by then (a "Logging error" traceback). Hand
    them to the handlers there are now instead."""
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()
