import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

PASSWORD_VARIABLE = "HPD_USER_PASSWORD"


class Command(BaseCommand):
    help = (f"Make USERNAME a user (or update it) with the password in the environment "
            f"variable {PASSWORD_VARIABLE} (never on the command line).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--superuser", action="store_true",
                            help="with staff and superuser rights")

    def handle(self, username, superuser, **options):
        password = os.environ.get(PASSWORD_VARIABLE)
        if not password:
            raise CommandError(f"set the password in the environment variable {PASSWORD_VARIABLE}")
        user, created = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = user.is_superuser = superuser
        user.save()
        self.stdout.write(f"{'created' if created else 'updated'} user {username}")
