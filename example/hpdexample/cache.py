"""The cache: a memcached backend that never fails a request, and stampede
protection for data many requests read at once.

In the farm the site reaches memcached through the app host's local twemproxy:

    CACHES = {"default": {"BACKEND": "hpdexample.cache.FaultTolerantCache",
                          "LOCATION": "127.0.0.1:22121"}}
"""

import logging
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.memcached import PyMemcacheCache
from pymemcache.exceptions import MemcacheError

logger = logging.getLogger(__name__)

# A cache that is down or slow costs each request at most these (seconds); a server
# that failed is tried again after dead_timeout. OPTIONS in CACHES win.
DEFAULT_OPTIONS = {"connect_timeout": 0.25, "timeout": 0.5, "dead_timeout": 10, "no_delay": True}
ERRORS = (OSError, MemcacheError)


class FaultTolerantCache(PyMemcacheCache):
    """Django's PyMemcacheCache, but a cache that fails is a cache that misses: a
    failed read returns the default (a miss), a failed write is dropped; both are
    logged (logger hpdexample.cache, WARNING)."""

    def __init__(self, server, params):
        super().__init__(server, {**params,
                                  "OPTIONS": {**DEFAULT_OPTIONS, **params.get("OPTIONS", {})}})

    def _tolerant(self, operation, key, failed, call, *args):
        try:
            return call(*args)
        except ERRORS as exc:
            logger.warning("cache %s %r failed, going on without the cache: %s: %s",
                           operation, key, type(exc).__name__, exc)
            return failed

    def get(self, key, default=None, version=None):
        return self._tolerant("get", key, default, super().get, key, default, version)

    def get_many(self, keys, version=None):
        return self._tolerant("get_many", list(keys), {}, super().get_many, keys, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._tolerant("set", key, None, super().set, key, value, timeout, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._tolerant("set_many", list(data), list(data), super().set_many, data,
                              timeout, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._tolerant("add", key, False, super().add, key, value, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._tolerant("touch", key, False, super().touch, key, timeout, version)

    def delete(self, key, version=None):
        return self._tolerant("delete", key, False, super().delete, key, version)

    def delete_many(self, keys, version=None):
        return self._tolerant("delete_many", list(keys), None, super().delete_many, keys,
                              version)

    def clear(self):
        return self._tolerant("clear", "*", None, super().clear)


def get_or_compute(cache, key, compute, timeout, keep_stale=300, lock_timeout=30):
    """`compute()`'s value, cached under `key` for `timeout` seconds, without a
    stampede when it expires: the value is kept `keep_stale` seconds longer, and
    once it is stale the one request that wins a lock (cache.add) computes it
    again while the others get the stale value. With nothing cached (a cold or
    failed cache) each request computes it."""
    now = time.time()
    entry = cache.get(key)
    lock = f"{key}:refresh"
    if entry is not None:
        value, fresh_until = entry
        if now < fresh_until or not cache.add(lock, 1, lock_timeout):
            return value
    value = compute()
    cache.set(key, (value, now + timeout), timeout + keep_stale)
    if entry is not None:
        cache.delete(lock)
    return value
