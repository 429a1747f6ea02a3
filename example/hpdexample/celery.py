"""The Celery app the workers run: `celery -A hpdexample worker`. Its settings are
the Django settings named CELERY_* (the broker: CELERY_BROKER_URL).

Under systemd (the farm's worker units are Type=notify) a worker tells systemd
it is ready once it consumes tasks, so `systemctl restart` returns only then,
and fails when the worker cannot start: a deploy's worker step fails, and rolls
back, instead of leaving workers that crash on the new code. A site of its own
under this tree's worker role does the same (a few lines: `notify_ready`)."""

import os
import socket

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hpdexample.settings")

app = Celery("hpdexample")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def notify_ready(**_):
    """sd_notify(READY=1) on systemd's $NOTIFY_SOCKET, when there is one (an
    abstract socket's name starts with @)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as conn:
        conn.connect("\0" + path[1:] if path.startswith("@") else path)
        conn.sendall(b"READY=1")
