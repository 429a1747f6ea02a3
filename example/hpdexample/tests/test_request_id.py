import logging
from io import StringIO

from django.conf import settings
from django.http import HttpResponse
from django.test import RequestFactory, TestCase

from hpdexample import request_id

ID = "5f0c2a4e-1b7d-4c58-9a31-2e6f0d8b7c10"


class RequestIdTests(TestCase):
    def test_the_response_returns_the_load_balancers_id(self):
        response = self.client.get("/health/", HTTP_X_REQUEST_ID=ID)
        self.assertEqual(response["X-Request-ID"], ID)

    def test_an_id_that_is_not_one_is_neither_logged_nor_returned(self):
        for forged in ("a b", "x" * 200, "id\nINFO forged line", ""):
            response = self.client.get("/health/", HTTP_X_REQUEST_ID=forged)
            self.assertNotIn("X-Request-ID", response)

    def test_every_log_line_of_a_request_carries_its_id(self):
        """The site's own formatter, as settings.LOGGING configures it."""
        stream = StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"]))
        handler.addFilter(request_id.RequestIdFilter())
        logger = logging.getLogger("hpdexample.tests.request_id")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
        def view(request):
            logger.warning("in the view")
            return HttpResponse("ok")

        try:
            request_id.RequestIdMiddleware(view)(RequestFactory().get("/",
                                                                      HTTP_X_REQUEST_ID=ID))
            logger.warning("outside")
        finally:
            logger.removeHandler(handler)
        lines = stream.getvalue().splitlines()
        self.assertIn(f"[{ID}] in the view", lines[0])
        self.assertIn("[-] outside", lines[1])
        self.assertEqual(request_id.current(), "-")
