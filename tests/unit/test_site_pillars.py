"""pillar/site, pillar/app and pillar/worker: bad values are refused, naming the key
(and never showing the site's secret key)."""

import pytest
from salt.exceptions import SaltInvocationError
from test_hpd import REPO, hpd_module, load

HPD = hpd_module()
SECRET_KEY = "a-real-django-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize(("role", "pillar", "key"), [
    ("site", {"name": "My Site"}, "site:name"),
    ("site", {"domains": "www.hpd.test"}, "site:domains"),
    ("site", {"domains": ["WWW.hpd.test"]}, "site:domains:0"),
    ("site", {"secret_key": "short"}, "site:secret_key"),
    ("site", {"session_engine": "file"}, "site:session_engine"),
    ("site", {"conn_max_age": "forever"}, "site:conn_max_age"),
    ("site", {"anonymous_max_age": -1}, "site:anonymous_max_age"),
    ("site", {"static_url": "static"}, "site:static_url"),
    ("site", {"static_dir": "../static"}, "site:static_dir"),
    ("site", {"sentry_dsn": "sentry.example"}, "site:sentry_dsn"),
    ("site", {"broker": {"database": 16}}, "site:broker:database"),
    ("site", {"broker": {"port": "6379"}}, "site:broker:port"),
    ("site", {"log_level": "LOUD"}, "site:log_level"),
    ("site", {"rev": "--upload-pack=x"}, "site:rev"),
    ("site", {"wsgi_module": "hpdexample.wsgi"}, "site:wsgi_module"),
    ("app", {"port": "eighty"}, "app:port"),
    ("app", {"port": 70000}, "app:port"),
    ("app", {"listen_address": "10.0.0.5"}, "app"),  # the inventory's address
    ("app", {"uwsgi": {"processes": "many"}}, "app:uwsgi:processes"),
    ("app", {"uwsgi": {"threads": 0}}, "app:uwsgi:threads"),
    ("app", {"uwsgi": {"max-requests-delta": 10}}, "app:uwsgi"),
    ("app", {"uwsgi": {"worker-reload-mercy": 0}}, "app:uwsgi:worker-reload-mercy"),
    ("app", {"request_log_max_mb": 0}, "app:request_log_max_mb"),
    ("worker", {"count": "two"}, "worker:count"),
    ("worker", {"count": 0}, "worker:count"),
    ("worker", {"stop_timeout": 1.5}, "worker:stop_timeout"),
])
def test_bad_values_are_refused_naming_the_key(role, pillar, key):
    schema = load(REPO / "pillar" / role / "schema.yaml")
    data = {"secret_key": SECRET_KEY, **pillar} if role == "site" and "secret_key" not in pillar \
        else pillar
    with pytest.raises(SaltInvocationError, match=f"{key}: ") as err:
        HPD.check(schema, data, role, "production")
    assert SECRET_KEY not in str(err.value)


def test_a_dev_only_secret_key_is_refused_outside_dev():
    schema = load(REPO / "pillar" / "site" / "schema.yaml")
    dev = load(REPO / "pillar" / "secrets" / "dev" / "site.sls")["site"]
    HPD.check(schema, dev, "site", "dev")
    with pytest.raises(SaltInvocationError, match="site:secret_key: a dev-only secret"):
        HPD.check(schema, dev, "site", "production")
