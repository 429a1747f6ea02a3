import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.template.loader import render_to_string


class Command(BaseCommand):
    help = ("Write the rendered 500 page (templates/500.html: self-contained HTML, inline "
            "CSS) to PATH, for a cache or proxy to serve when the site cannot answer.")

    def add_arguments(self, parser):
        parser.add_argument("path", help="the file to write (its directory must exist)")

    def handle(self, path, **options):
        html = render_to_string("500.html")
        target = Path(path)
        if not target.parent.is_dir():
            raise CommandError(f"{target.parent} is not a directory")
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(html)
        tmp.chmod(0o644)
        os.replace(tmp, target)  # readers see the old page or the new, never half
        self.stdout.write(f"wrote {target} ({len(html)} bytes)")
