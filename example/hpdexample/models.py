"""The site's data: posts the anonymous page lists, and the jobs the workers ran."""

from django.db import models
from django.utils import timezone


class Post(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return self.title


class JobRun(models.Model):
    """One row per job a worker finished (table hpdexample_jobrun)."""

    token = models.CharField(max_length=64, unique=True)
    release = models.CharField(max_length=200)
    host = models.CharField(max_length=200)
    finished = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.token} on {self.host} ({self.release})"
