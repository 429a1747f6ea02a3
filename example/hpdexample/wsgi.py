"""The WSGI application uWSGI serves (module hpdexample.wsgi, callable `application`)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hpdexample.settings")

application = get_wsgi_application()
