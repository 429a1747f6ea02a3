import os
import socket
import tempfile
from io import StringIO
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.template.loader import render_to_string
from django.test import TestCase, override_settings

from hpdexample.celery import app as celery_app
from hpdexample.config import PRODUCTION
from hpdexample.models import JobRun


def run(*args, **kwargs):
    out = StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


class Generate500Tests(TestCase):
    def test_writes_the_500_page_self_contained(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "500.html"
            run("generate_500_html", str(path))
            html = path.read_text()
            self.assertEqual(path.stat().st_mode & 0o777, 0o644)
        self.assertEqual(html, render_to_string("500.html"))
        self.assertIn("<style>", html)
        for outside in ("<link", "src=", settings.STATIC_URL, "{%", "{{"):
            self.assertNotIn(outside, html)

    def test_a_missing_directory_is_an_error(self):
        with self.assertRaisesMessage(CommandError, "/nonexistent is not a directory"):
            run("generate_500_html", "/nonexistent/500.html")


class EnqueueJobTests(TestCase):
    def test_the_job_writes_a_row_naming_its_host_and_release(self):
        # Development settings run tasks eagerly, as a worker would.
        out = run("enqueue_job", "--token", "t-1", "--wait", "5")
        self.assertEqual(out.splitlines()[0], "t-1")
        job = JobRun.objects.get(token="t-1")
        self.assertEqual((job.host, job.release), (socket.gethostname(), settings.HPD_RELEASE))

    def test_a_job_no_worker_runs_is_an_error_after_the_wait(self):
        celery_app.conf.task_always_eager = False  # to the broker (memory://), no worker
        try:
            with self.assertRaisesMessage(CommandError, "no worker finished job t-2 within"):
                run("enqueue_job", "--token", "t-2", "--wait", "0.5")
        finally:
            celery_app.conf.task_always_eager = True
        self.assertFalse(JobRun.objects.filter(token="t-2").exists())

    def test_a_redelivered_job_leaves_one_row(self):
        run("enqueue_job", "--token", "t-3")
        run("enqueue_job", "--token", "t-3")
        self.assertEqual(JobRun.objects.filter(token="t-3").count(), 1)


class EnsureUserTests(TestCase):
    def test_makes_the_user_then_updates_its_password(self):
        with mock.patch.dict(os.environ, {"HPD_USER_PASSWORD": "first-password"}):
            self.assertIn("created user bob", run("ensure_user", "bob"))
        with mock.patch.dict(os.environ, {"HPD_USER_PASSWORD": "second-password"}):
            self.assertIn("updated user bob", run("ensure_user", "bob", "--superuser"))
        self.assertIsNone(authenticate(username="bob", password="first-password"))
        user = authenticate(username="bob", password="second-password")
        self.assertTrue(user.is_superuser)

    def test_without_a_password_in_the_environment_nothing_is_made(self):
        with mock.patch.dict(os.environ, clear=True):
            with self.assertRaisesMessage(CommandError, "HPD_USER_PASSWORD"):
                run("ensure_user", "carol")


class CollectStaticTests(TestCase):
    def test_production_storage_writes_hashed_names_with_gzip_and_brotli_beside(self):
        with tempfile.TemporaryDirectory() as tmp, \
                override_settings(STATIC_ROOT=tmp, STORAGES=PRODUCTION["STORAGES"]):
            run("collectstatic", "--noinput")
            names = {p.name for p in (Path(tmp) / "hpdexample").iterdir()}
        for kind in ("css", "js"):
            hashed = [n for n in names if n.startswith("site.") and n.endswith("." + kind)
                      and n != f"site.{kind}"]
            self.assertEqual(len(hashed), 1, names)
            self.assertTrue({hashed[0] + ".gz", hashed[0] + ".br"} <= names, names)


class WorkerReadyTests(TestCase):
    """The worker tells systemd (Type=notify units) it is ready."""

    def test_ready_goes_to_systemds_socket_and_nowhere_without_one(self):
        from hpdexample.celery import notify_ready

        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "notify")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
                systemd.bind(path)
                systemd.settimeout(5)
                with mock.patch.dict(os.environ, {"NOTIFY_SOCKET": path}):
                    notify_ready(sender=None)
                self.assertEqual(systemd.recv(64), b"READY=1")
            with mock.patch.dict(os.environ, {}, clear=True):
                notify_ready(sender=None)  # not under systemd: nothing to tell
