import logging
import socket
import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.cache import patch_cache_control
from django.views.decorators.cache import cache_control

from hpdexample.cache import get_or_compute
from hpdexample.models import JobRun, Post

logger = logging.getLogger(__name__)


def latest_posts():
    return [{"title": p.title, "body": p.body, "created": p.created}
            for p in Post.objects.all()[:5]]


def index(request):
    """The anonymous page: the same for everyone, so a shared cache may keep it.
    It sets no cookie (it does not touch the session or the CSRF token)."""
    response = render(request, "index.html", {
        "posts": get_or_compute(cache, "index:posts", latest_posts,
                                settings.ANONYMOUS_MAX_AGE),
        "jobs": JobRun.objects.count(),
        "release": settings.HPD_RELEASE,
    })
    patch_cache_control(response, public=True, max_age=settings.ANONYMOUS_MAX_AGE)
    return response


@login_required
@cache_control(private=True)
def account(request):
    return render(request, "account.html", {"release": settings.HPD_RELEASE})


def check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


def check_cache():
    """A value written can be read back (the fault-tolerant cache hides failures,
    so a failed write shows as a miss). A key of its own per check: concurrent
    checks must not overwrite each other's value."""
    key, token = f"health:{socket.gethostname()}:{uuid.uuid4().hex}", "ok"
    cache.set(key, token, 30)
    try:
        return cache.get(key) == token
    finally:
        cache.delete(key)


def health(request):
    """The release this process runs, and whether the database and the cache work:
    200 when the database does, 503 when it does not. A cache failure is reported
    but does not fail the check: the site serves without its cache (a failed get
    is a miss), and a cache outage must not take every app host out of the pool
    at once. No cookie, never cached."""
    body = {"release": settings.HPD_RELEASE}
    for name, check in (("database", check_database), ("cache", check_cache)):
        try:
            body[name] = "ok" if check() else "error"
        except Exception:  # every failure is a failed check, not a 500
            logger.exception("health: the %s check failed", name)
            body[name] = "error"
    response = JsonResponse(body, status=200 if body["database"] == "ok" else 503)
    response["Cache-Control"] = "no-store"
    return response
