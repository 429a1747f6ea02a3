import time
import uuid

from django.core.management.base import BaseCommand, CommandError

from hpdexample.models import JobRun
from hpdexample.tasks import record_job


class Command(BaseCommand):
    help = ("Send the workers a job (hpdexample.tasks.record_job) and print its token; the "
            "worker that runs it writes a row with that token to hpdexample_jobrun.")

    def add_arguments(self, parser):
        parser.add_argument("--token", default=None, help="the job's token (default: random)")
        parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                            help="wait this long for a worker to finish the job; "
                            "fail if none did")

    def handle(self, token, wait, **options):
        token = token or uuid.uuid4().hex
        record_job.delay(token)
        self.stdout.write(token)
        if not wait:
            return
        deadline = time.monotonic() + wait
        while not (run := JobRun.objects.filter(token=token).first()):
            if time.monotonic() > deadline:
                raise CommandError(f"no worker finished job {token} within {wait:g}s")
            time.sleep(0.2)
        self.stdout.write(f"done on {run.host} by release {run.release}")
