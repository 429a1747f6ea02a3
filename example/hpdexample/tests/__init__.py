"""The site's own tests: `manage.py test` (development settings, sqlite)."""

import contextlib
import socket

from django.test import override_settings


@contextlib.contextmanager
def cache_down():
    """The default cache is a FaultTolerantCache on a port that refuses connections
    (bound, never listening) for the block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        location = f"127.0.0.1:{sock.getsockname()[1]}"
        with override_settings(CACHES={"default": {
                "BACKEND": "hpdexample.cache.FaultTolerantCache", "LOCATION": location}}):
            yield location
