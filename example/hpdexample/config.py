"""Where the settings come from: the deployment's JSON file, or local defaults.

HPD_SITE_CONFIG names a JSON object whose keys are settings (upper case); they go
over the production defaults below. Without it the site runs with local
development defaults (sqlite, the local-memory cache, DEBUG), so `manage.py
test` runs anywhere. Bad input is refused naming the key, before anything runs.
"""

import json
import logging

from django.core.exceptions import ImproperlyConfigured

# Production: what `manage.py check --deploy` asks for. TLS ends at the load
# balancer, which says so in X-Forwarded-Proto; /health/ answers plain HTTP (the
# load balancer's and uWSGI's own checks).
PRODUCTION = {
    "DEBUG": False,
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "SECURE_SSL_REDIRECT": True,
    "SECURE_REDIRECT_EXEMPT": [r"^health/$"],
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    # Hashed names (cacheable forever) plus .gz and .br next to each file, for a
    # web server that serves precompressed files.
    "STORAGES": {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {
            "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    },
}
# The keys a production file must give: there is no safe default for them.
REQUIRED = ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASES", "CACHES")


def development(base_dir):
    """Local defaults: nothing to set up, nothing to reach."""
    return {
        "DEBUG": True,
        "SECRET_KEY": "django-insecure-dev-only-not-for-any-deployment",
        "ALLOWED_HOSTS": ["localhost", "127.0.0.1", "[::1]"],
        "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3",
                                  "NAME": str(base_dir / "db.sqlite3")}},
        "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        # Tasks run in the process that sends them (no broker to run).
        "CELERY_TASK_ALWAYS_EAGER": True,
    }


def _is_str_list(value):
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_backend_map(value):
    return (isinstance(value, dict) and "default" in value
            and all(isinstance(v, dict) and isinstance(v.get("ENGINE", v.get("BACKEND")), str)
                    for v in value.values()))


# The keys the farm writes, and what their values must be.
CHECKS = {
    "SECRET_KEY": (lambda v: isinstance(v, str) and len(v) >= 50, "a string of 50+ characters"),
    "ALLOWED_HOSTS": (lambda v: _is_str_list(v) and v != [], "a non-empty list of strings"),
    "CSRF_TRUSTED_ORIGINS": (_is_str_list, "a list of strings"),
    "DATABASES": (_is_backend_map, "an object with 'default', each entry naming its ENGINE"),
    "CACHES": (_is_backend_map, "an object with 'default', each entry naming its BACKEND"),
    "SESSION_ENGINE": (lambda v: isinstance(v, str), "a string"),
    "STATIC_URL": (lambda v: isinstance(v, str) and v.endswith("/"), "a string ending in /"),
    "STATIC_ROOT": (lambda v: isinstance(v, str) and v.startswith("/"), "an absolute path"),
    "CELERY_BROKER_URL": (lambda v: isinstance(v, str), "a string"),
    "SENTRY_DSN": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "ANONYMOUS_MAX_AGE": (lambda v: type(v) is int and v >= 0, "an integer >= 0"),
    "DEBUG": (lambda v: isinstance(v, bool), "true or false"),
}


def read(path):
    """The settings in the JSON file `path`, checked."""
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"HPD_SITE_CONFIG {path}: cannot read it: {exc}") from exc
    if not isinstance(values, dict):
        raise ImproperlyConfigured(f"HPD_SITE_CONFIG {path}: not a JSON object")
    for key, value in values.items():
        if not (key.isupper() and key.replace("_", "").isalnum()):
            raise ImproperlyConfigured(
                f"HPD_SITE_CONFIG {path}: {key!r} is not a setting name (upper case)")
        check, expected = CHECKS.get(key, (lambda v: True, ""))
        if not check(value):
            shown = "" if key == "SECRET_KEY" else f", not {value!r}"  # a secret stays out
            raise ImproperlyConfigured(f"HPD_SITE_CONFIG {path}: {key} must be {expected}{shown}")
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise ImproperlyConfigured(f"HPD_SITE_CONFIG {path}: missing {', '.join(missing)}")
    return values


def load(path, base_dir):
    """The settings of this deployment: the file's over the production defaults
    when `path` is given, else the development defaults."""
    if not path:
        return development(base_dir)
    values = {**PRODUCTION, **read(path)}
    # Persistent connections (CONN_MAX_AGE) are checked before a request reuses
    # them, so a database restart costs no failed request.
    for database in values["DATABASES"].values():
        database.setdefault("CONN_HEALTH_CHECKS", True)
    return values


def log_level(environ):
    """The log level DJANGO_LOG_LEVEL names (default INFO)."""
    level = environ.get("DJANGO_LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ImproperlyConfigured(
            f"DJANGO_LOG_LEVEL={level!r}: not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return level


def init_sentry(dsn, release):
    """Report errors to Sentry when a DSN is given (sentry-sdk finds Django and
    Celery by itself); no personal data is sent."""
    if not dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(dsn=dsn, release=release, send_default_pii=False)
    return True
