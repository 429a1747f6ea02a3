"""Settings of the example site (DJANGO_SETTINGS_MODULE=hpdexample.settings).

The defaults here hold everywhere; hpdexample/config.py adds the deployment's
(the JSON file HPD_SITE_CONFIG names, over production defaults) or, without it,
local development defaults.
"""

import os
from pathlib import Path

from hpdexample import config

# The directory the code runs from; in the farm that is .../releases/<release id>
# (the real path: `current` is a symlink to it).
BASE_DIR = Path(__file__).resolve().parent.parent
HPD_RELEASE = BASE_DIR.name

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "hpdexample",
]
MIDDLEWARE = [
    "hpdexample.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "hpdexample.urls"
WSGI_APPLICATION = "hpdexample.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
    ]},
}]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/account/"
LOGOUT_REDIRECT_URL = "/"
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
CSRF_TRUSTED_ORIGINS = []

STATIC_URL = "/static/"
STATIC_ROOT = str(BASE_DIR / "collected_static")
STATICFILES_DIRS = [BASE_DIR / "static"]

# Seconds a shared cache (Varnish) may keep the anonymous page.
ANONYMOUS_MAX_AGE = 60
SENTRY_DSN = None

CELERY_BROKER_URL = "memory://"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A job is acknowledged when it is done: a worker stopped mid-job leaves it queued.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# Everything to stderr (uWSGI's and systemd's log), at DJANGO_LOG_LEVEL.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {
        "format": "%(asctime)s %(levelname)s %(name)s [%(process)d] [%(request_id)s] "
                  "%(message)s"}},
    "filters": {"request_id": {"()": "hpdexample.request_id.RequestIdFilter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "filters": ["request_id"]}},
    "root": {"handlers": ["stderr"], "level": config.log_level(os.environ)},
}

_deployment = config.load(os.environ.get("HPD_SITE_CONFIG"), BASE_DIR)
globals().update(_deployment)
config.init_sentry(_deployment.get("SENTRY_DSN"), HPD_RELEASE)
