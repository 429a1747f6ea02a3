"""The posts a new site starts with, so its front page shows something."""

from django.db import migrations

POSTS = [
    ("Hello from the farm",
     "This page came from the database through the cache, and Varnish keeps a copy."),
    ("Built by Salt", "Every host of this farm was set up by one highstate."),
    ("Zero-downtime deploys", "A new release is switched in behind the load balancer."),
]


def add_posts(apps, schema_editor):
    Post = apps.get_model("hpdexample", "Post")
    Post.objects.bulk_create(Post(title=t, body=b) for t, b in POSTS)


def remove_posts(apps, schema_editor):
    apps.get_model("hpdexample", "Post").objects.filter(title__in=[t for t, _ in POSTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("hpdexample", "0001_initial")]

    operations = [migrations.RunPython(add_posts, remove_posts)]
