"""The example site (example/) in a virtualenv made as the app hosts make theirs:
Debian's python3, its lock (requirements.txt, with hashes) from the lab's
wheelhouse (`make setup` fills it), nothing from the network. Runs the site's
own tests and Django's deployment check."""

import json
import os
import re
import shutil
import signal
import subprocess

import pytest
from hpdlab import locks, util
from hpdlab.site import SITE_SOURCE

SAMPLE_CONFIG = {  # the shape of the file the app role writes
    "SECRET_KEY": "sample-only-" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
    "ALLOWED_HOSTS": ["www.hpd.test", "app1", "10.79.0.21"],
    "CSRF_TRUSTED_ORIGINS": ["https://www.hpd.test"],
    "DATABASES": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "hpd",
                              "USER": "hpd", "PASSWORD": "sample", "HOST": "db",
                              "PORT": 5432, "CONN_MAX_AGE": 300}},
    "CACHES": {"default": {"BACKEND": "hpdexample.cache.FaultTolerantCache",
                           "LOCATION": "127.0.0.1:22121"}},
    "SESSION_ENGINE": "django.contrib.sessions.backends.cached_db",
    "STATIC_URL": "https://www.hpd.test/static/",
    "CELERY_BROKER_URL": "redis://cache1:6379/0",
    "SENTRY_DSN": None,
    "ANONYMOUS_MAX_AGE": 60,
}


@pytest.fixture(scope="session")
def site_python(tmp_path_factory):
    wheelhouse = util.LAB_ROOT / "wheelhouse"
    if not any(wheelhouse.glob("*.whl")):
        pytest.fail(f"no wheels in {wheelhouse}: `make setup` (lab/labctl build) fills it")
    venv = tmp_path_factory.mktemp("site") / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
    subprocess.run([venv / "bin/pip", "install", "-q", "--disable-pip-version-check",
                    "--no-index", "--find-links", wheelhouse, "--require-hashes",
                    "-r", SITE_SOURCE / "requirements.txt"], check=True)
    yield venv / "bin/python"
    shutil.rmtree(venv)  # 100 MB that pytest would keep for three runs


def site_env(config=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPD_", "DJANGO_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", DJANGO_LOG_LEVEL="ERROR")
    if config:
        env["HPD_SITE_CONFIG"] = str(config)
    return env


def write_config(tmp_path, local=False, **values):
    """The site's settings file in `tmp_path`; with `local`, a database and a cache
    that need no server (sqlite in `tmp_path`, the local-memory cache)."""
    if local:
        values = {"DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3",
                                            "NAME": str(tmp_path / "db.sqlite3")}},
                  "CACHES": {"default": {
                      "BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
                  **values}
    path = tmp_path / "site.json"
    path.write_text(json.dumps({**SAMPLE_CONFIG, "STATIC_ROOT": str(tmp_path / "static"),
                                **values}))
    return path


def manage(python, *args, config=None):
    return subprocess.run([python, "manage.py", *args], cwd=SITE_SOURCE, env=site_env(config),
                          capture_output=True, text=True, timeout=300)


def test_the_site_installs_exactly_its_lock_and_the_wheelhouse_holds_it(site_python):
    pins = {name: pin.version for name, pin in locks.read(locks.SITE_LOCK).items()}
    freeze = subprocess.run([site_python, "-m", "pip", "freeze", "--all",
                             "--exclude", "pip", "--exclude", "setuptools"],
                            capture_output=True, text=True, check=True).stdout
    installed = dict(line.split("==") for line in freeze.splitlines())
    assert {locks.canonical(n): v for n, v in installed.items()} == pins
    wheels = dict(locks.wheel_name(p) for p in (util.LAB_ROOT / "wheelhouse").glob("*.whl"))
    assert wheels == pins


def test_the_sites_own_tests_pass(site_python):
    out = manage(site_python, "test", "--noinput")
    assert out.returncode == 0, out.stderr[-6000:]
    assert re.search(r"Ran [1-9]\d* tests", out.stderr)


def test_the_migrations_match_the_models(site_python, tmp_path):
    out = manage(site_python, "makemigrations", "--check", "--dry-run",
                 config=write_config(tmp_path, local=True))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_deployment_check_passes_with_the_farms_settings(site_python, tmp_path):
    out = manage(site_python, "check", "--deploy", "--fail-level", "WARNING",
                 config=write_config(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_deployment_check_fails_on_development_settings(site_python):
    """The check above can fail: without the file, DEBUG and the dev key are found."""
    out = manage(site_python, "check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode != 0
    assert "security.W018" in out.stderr  # DEBUG
    assert "security.W009" in out.stderr  # SECRET_KEY


def test_a_worker_runs_the_job_the_command_enqueues(site_python, tmp_path):
    """A real Celery worker of the site's app; the broker is kombu's file-system
    transport here (redis in the farm), the database sqlite."""
    queue = tmp_path / "queue"
    queue.mkdir()
    config = write_config(tmp_path, local=True, CELERY_BROKER_URL="filesystem://",
                          CELERY_BROKER_TRANSPORT_OPTIONS={
                              "data_folder_in": str(queue), "data_folder_out": str(queue),
                              "control_folder": str(tmp_path / "control")})
    assert manage(site_python, "migrate", "-v0", config=config).returncode == 0
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(
            [site_python, "-m", "celery", "-A", "hpdexample", "worker", "--pool", "solo"],
            cwd=SITE_SOURCE, env=site_env(config), stdout=log, stderr=subprocess.STDOUT)
    try:
        out = manage(site_python, "enqueue_job", "--token", "job-1", "--wait", "60",
                     config=config)
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert out.returncode == 0, out.stderr + (tmp_path / "worker.log").read_text()
    assert out.stdout.splitlines() == ["job-1", f"done on {os.uname().nodename} by release "
                                       f"{SITE_SOURCE.name}"]
