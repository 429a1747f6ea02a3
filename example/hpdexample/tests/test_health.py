from unittest import mock

from django.conf import settings
from django.db import OperationalError, connection
from django.test import TestCase, override_settings

from hpdexample import config, views
from hpdexample.tests import cache_down


class HealthTests(TestCase):
    def test_200_with_the_release_when_database_and_cache_work(self):
        response = self.client.get("/health/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(),
                         {"release": settings.HPD_RELEASE, "database": "ok", "cache": "ok"})
        self.assertEqual(response["Cache-Control"], "no-store")
        self.assertEqual(dict(response.cookies), {})

    def test_concurrent_checks_do_not_overwrite_each_others_value(self):
        """Another check runs between this check's write and its read."""
        real_get = views.cache.get
        calls = []

        def outer_get(key, *args, **kwargs):
            if not calls:
                calls.append(key)
                self.assertTrue(views.check_cache())
            return real_get(key, *args, **kwargs)

        with mock.patch.object(views.cache, "get", side_effect=outer_get):
            self.assertTrue(views.check_cache())
        self.assertEqual(len(calls), 1)

    def test_a_cache_outage_is_reported_but_keeps_the_host_in_the_pool(self):
        with cache_down(), self.assertLogs("hpdexample.cache", "WARNING"):
            response = self.client.get("/health/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["cache"], "error")
        self.assertEqual(response.json()["database"], "ok")

    def test_503_when_the_database_is_down(self):
        broken = mock.patch.object(connection, "cursor",
                                   side_effect=OperationalError("connection refused"))
        with broken, self.assertLogs("hpdexample.views", "ERROR"):
            response = self.client.get("/health/")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json(), {"release": settings.HPD_RELEASE,
                                           "database": "error", "cache": "ok"})

    @override_settings(SECURE_SSL_REDIRECT=True,
                       SECURE_REDIRECT_EXEMPT=config.PRODUCTION["SECURE_REDIRECT_EXEMPT"],
                       SECURE_PROXY_SSL_HEADER=config.PRODUCTION["SECURE_PROXY_SSL_HEADER"])
    def test_answers_plain_http_where_every_other_page_redirects_to_https(self):
        self.assertEqual(self.client.get("/health/").status_code, 200)
        response = self.client.get("/")
        self.assertEqual(response.status_code, 301)
        self.assertEqual(response["Location"], "https://testserver/")
        proxied = self.client.get("/", headers={"x-forwarded-proto": "https"})
        self.assertEqual(proxied.status_code, 200)
