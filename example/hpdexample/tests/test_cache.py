import threading
import time

from django.core.cache import cache, caches
from django.test import SimpleTestCase, override_settings

from hpdexample.cache import DEFAULT_OPTIONS, FaultTolerantCache, get_or_compute
from hpdexample.tests import cache_down


class FaultTolerantCacheTests(SimpleTestCase):
    def test_a_failed_read_is_a_miss_and_is_logged(self):
        with cache_down(), self.assertLogs("hpdexample.cache", "WARNING") as logs:
            self.assertEqual(cache.get("k", "default"), "default")
            self.assertEqual(cache.get_many(["a", "b"]), {})
            self.assertFalse(cache.has_key("k"))
            self.assertEqual(cache.get_or_set("k", 42), 42)
        self.assertIn("cache get 'k' failed", logs.output[0])

    def test_a_failed_write_is_dropped_and_is_logged(self):
        with cache_down(), self.assertLogs("hpdexample.cache", "WARNING") as logs:
            self.assertIsNone(cache.set("k", 1))
            self.assertEqual(sorted(cache.set_many({"a": 1, "b": 2})), ["a", "b"])
            self.assertFalse(cache.add("k", 1))
            self.assertFalse(cache.touch("k"))
            self.assertFalse(cache.delete("k"))
            self.assertIsNone(cache.delete_many(["a"]))
            self.assertIsNone(cache.clear())
        self.assertIn("cache set 'k' failed", logs.output[0])

    def test_timeouts_are_short_unless_the_settings_say_otherwise(self):
        backend = FaultTolerantCache("127.0.0.1:22121", {"OPTIONS": {"timeout": 2}})
        self.assertEqual(backend._options["connect_timeout"], DEFAULT_OPTIONS["connect_timeout"])
        self.assertEqual(backend._options["timeout"], 2)


@override_settings(CACHES={"default": {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "stampede"}})
class StampedeTests(SimpleTestCase):
    def setUp(self):
        self.cache = caches["default"]
        self.cache.clear()
        self.calls = 0

    def compute(self, delay=0):
        self.calls += 1
        time.sleep(delay)
        return f"value {self.calls}"

    def test_computes_once_then_serves_the_cached_value_while_fresh(self):
        self.assertEqual(get_or_compute(self.cache, "k", self.compute, 60), "value 1")
        self.assertEqual(get_or_compute(self.cache, "k", self.compute, 60), "value 1")
        self.assertEqual(self.calls, 1)

    def test_a_stale_value_is_served_while_another_request_refreshes_it(self):
        get_or_compute(self.cache, "k", self.compute, 0)
        self.assertTrue(self.cache.add("k:refresh", 1))  # another request is at it
        self.assertEqual(get_or_compute(self.cache, "k", self.compute, 0), "value 1")
        self.assertEqual(self.calls, 1)

    def test_a_stale_value_is_refreshed_by_the_request_that_wins_the_lock(self):
        get_or_compute(self.cache, "k", self.compute, 0)
        self.assertEqual(get_or_compute(self.cache, "k", self.compute, 0), "value 2")
        self.assertIsNone(self.cache.get("k:refresh"))  # the next refresh may start

    def test_many_requests_at_expiry_compute_it_once(self):
        get_or_compute(self.cache, "k", self.compute, 0)
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            get_or_compute(self.cache, "k", lambda: self.compute(0.3), 60))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(self.calls, 2)  # the first fill and one refresh
        self.assertEqual(len(results), 8)
        self.assertEqual(set(results) - {"value 1"}, {"value 2"})
