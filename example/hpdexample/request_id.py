"""The request id: the load balancer (haproxy) stamps each request with
`X-Request-ID` (a client's own is replaced there); Varnish passes it on. Every
log line the site writes while it answers carries it (`[<id>]`, logging filter
`request_id`), and the response returns it, so one id follows a request through
haproxy's, uWSGI's and the site's logs.

A value that is not an id as haproxy makes them (a request that did not come
through it, a forged header) is logged as `-`: no client text in the logs."""

import contextvars
import logging
import re

#: What haproxy's unique-id-format (a UUID) makes, with room for other stampers.
ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_current = contextvars.ContextVar("request_id", default="-")


def current():
    """The id of the request being answered, or `-`."""
    return _current.get()


class RequestIdMiddleware:
    """First in MIDDLEWARE: every later middleware, the view and Django's own
    error logging run with the id set."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        value = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = value if ID.fullmatch(value) else "-"
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        if request_id != "-":
            response["X-Request-ID"] = request_id
        return response


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (`-` outside a request)."""

    def filter(self, record):
        record.request_id = _current.get()
        return True
