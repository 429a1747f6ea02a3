import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase

from hpdexample import config

SITE = Path(settings.BASE_DIR)
FARM = {
    "SECRET_KEY": "s" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz",
    "ALLOWED_HOSTS": ["www.hpd.test", "app1"],
    "CSRF_TRUSTED_ORIGINS": ["https://www.hpd.test"],
    "DATABASES": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "hpd",
                              "HOST": "db", "CONN_MAX_AGE": 300}},
    "CACHES": {"default": {"BACKEND": "hpdexample.cache.FaultTolerantCache",
                           "LOCATION": "127.0.0.1:22121"}},
    "SESSION_ENGINE": "django.contrib.sessions.backends.cache",
    "STATIC_URL": "https://static.hpd.test/static/",
    "STATIC_ROOT": "/srv/hpd/static/example",
    "CELERY_BROKER_URL": "redis://cache1:6379/0",
    "SENTRY_DSN": None,
    "ANONYMOUS_MAX_AGE": 120,
}


class ConfigTests(SimpleTestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.dir)

    def write(self, values):
        path = self.dir / "site.json"
        path.write_text(values if isinstance(values, str) else json.dumps(values))
        return str(path)

    def test_without_a_file_the_development_defaults(self):
        values = config.load(None, SITE)
        self.assertTrue(values["DEBUG"])
        self.assertEqual(values["DATABASES"]["default"]["ENGINE"], "django.db.backends.sqlite3")

    def test_the_files_keys_go_over_the_production_defaults(self):
        values = config.load(self.write(FARM), SITE)
        self.assertFalse(values["DEBUG"])
        self.assertTrue(values["SECURE_SSL_REDIRECT"])
        self.assertEqual(values["SECURE_PROXY_SSL_HEADER"], ("HTTP_X_FORWARDED_PROTO", "https"))
        self.assertEqual(values["ANONYMOUS_MAX_AGE"], 120)
        self.assertEqual(values["STATIC_URL"], FARM["STATIC_URL"])
        self.assertTrue(values["DATABASES"]["default"]["CONN_HEALTH_CHECKS"])
        self.assertEqual(values["DATABASES"]["default"]["CONN_MAX_AGE"], 300)
        override = config.load(self.write({**FARM, "SECURE_HSTS_SECONDS": 60}), SITE)
        self.assertEqual(override["SECURE_HSTS_SECONDS"], 60)

    def test_a_missing_key_is_named(self):
        values = {k: v for k, v in FARM.items() if k not in ("SECRET_KEY", "CACHES")}
        with self.assertRaisesMessage(ImproperlyConfigured, "missing SECRET_KEY, CACHES"):
            config.load(self.write(values), SITE)

    def test_a_value_of_the_wrong_type_is_named(self):
        for key, bad in (("ANONYMOUS_MAX_AGE", "60"), ("ANONYMOUS_MAX_AGE", True),
                         ("ALLOWED_HOSTS", "www.hpd.test"), ("ALLOWED_HOSTS", []),
                         ("DATABASES", {"other": {}}), ("STATIC_ROOT", "relative/dir"),
                         ("SENTRY_DSN", 1)):
            with self.subTest(key=key, bad=bad), \
                    self.assertRaisesRegex(ImproperlyConfigured, f": {key} must be "):
                config.load(self.write({**FARM, key: bad}), SITE)

    def test_a_bad_secret_key_is_named_but_not_shown(self):
        with self.assertRaises(ImproperlyConfigured) as caught:
            config.load(self.write({**FARM, "SECRET_KEY": "too-short-secret"}), SITE)
        self.assertIn("SECRET_KEY must be", str(caught.exception))
        self.assertNotIn("too-short-secret", str(caught.exception))

    def test_a_key_that_is_not_a_setting_name_is_refused(self):
        with self.assertRaisesMessage(ImproperlyConfigured, "'secret_key' is not a setting"):
            config.load(self.write({**FARM, "secret_key": "x"}), SITE)

    def test_a_file_that_is_not_a_json_object_is_refused(self):
        for text, error in (("{", "cannot read it"), ("[]", "not a JSON object")):
            with self.subTest(text=text), self.assertRaisesMessage(ImproperlyConfigured, error):
                config.load(self.write(text), SITE)
        with self.assertRaisesMessage(ImproperlyConfigured, "cannot read it"):
            config.load(str(self.dir / "absent.json"), SITE)

    def test_the_log_level_comes_from_the_environment(self):
        self.assertEqual(config.log_level({}), "INFO")
        self.assertEqual(config.log_level({"DJANGO_LOG_LEVEL": "warning"}), "WARNING")
        with self.assertRaisesMessage(ImproperlyConfigured, "DJANGO_LOG_LEVEL='LOUD'"):
            config.log_level({"DJANGO_LOG_LEVEL": "loud"})


PRINT_SETTINGS = """
import json, django
django.setup()
import sentry_sdk
from django.conf import settings
client = sentry_sdk.get_client()
print(json.dumps({"release": settings.HPD_RELEASE, "debug": settings.DEBUG,
                  "redirect": settings.SECURE_SSL_REDIRECT,
                  "level": settings.LOGGING["root"]["level"],
                  "sentry": client.dsn if client.is_active() else None,
                  "sentry_release": client.options.get("release")}))
"""


class SettingsModuleTests(SimpleTestCase):
    """The settings module itself, loaded in a fresh Python as uWSGI would."""

    def settings_in(self, site, **environ):
        """The settings imported from `site` through the import path (as uWSGI's
        pythonpath does), from another directory (a cwd is always a real path)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("HPD_SITE_CONFIG", "DJANGO_LOG_LEVEL")}
        env.update(DJANGO_SETTINGS_MODULE="hpdexample.settings", PYTHONPATH=str(site),
                   **environ)
        out = subprocess.run([sys.executable, "-c", PRINT_SETTINGS], cwd="/", env=env,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def test_the_release_is_the_real_directory_and_the_file_makes_it_production(self):
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp)
        release = tmp / "releases" / "20260101-0000-abc1234"
        shutil.copytree(SITE, release, ignore=shutil.ignore_patterns("*.sqlite3", "__pycache__"))
        (tmp / "current").symlink_to(release)
        (tmp / "site.json").write_text(json.dumps(
            {**FARM, "SENTRY_DSN": "https://public@127.0.0.1:9/1"}))
        found = self.settings_in(tmp / "current", HPD_SITE_CONFIG=str(tmp / "site.json"),
                                 DJANGO_LOG_LEVEL="warning")
        self.assertEqual(found, {"release": "20260101-0000-abc1234", "debug": False,
                                 "redirect": True, "level": "WARNING",
                                 "sentry": "https://public@127.0.0.1:9/1",
                                 "sentry_release": "20260101-0000-abc1234"})

    def test_without_the_file_development_and_no_sentry(self):
        found = self.settings_in(SITE)
        self.assertEqual((found["debug"], found["redirect"], found["sentry"]),
                         (True, False, None))
