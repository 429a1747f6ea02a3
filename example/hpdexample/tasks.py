"""The background job the workers run."""

import socket

from celery import shared_task
from django.conf import settings

from hpdexample.models import JobRun


@shared_task
def record_job(token):
    """Record that a worker ran the job `token`: which host, which release. Running
    it twice (a redelivered job) leaves one row."""
    JobRun.objects.update_or_create(
        token=token, defaults={"release": settings.HPD_RELEASE, "host": socket.gethostname()})
    return token
