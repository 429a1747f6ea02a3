"""The Celery app the workers run: `celery -A hpdexample worker`. Its settings are
the Django settings named CELERY_* (the broker: CELERY_BROKER_URL)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hpdexample.settings")

app = Celery("hpdexample")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
