"""hpd_site: the site's settings file, its uWSGI vassal, its worker units and its
releases, from pillar (pure functions)."""

import json

import pytest
from conftest import load_source
from salt.exceptions import SaltInvocationError
from test_hpd import REPO, hpd_module, load

HPD = hpd_module()
SECRET_KEY = "a-real-django-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
PASSWORD = "a-real-database-password-0123456789"
PEERS = {"db": ["db"], "cache": ["cache2", "cache1"], "app": ["app1", "app2"]}
HOSTS = ["10.0.0.21", "app1", "app1.example", "app1"]


SITE = load_source("_modules/hpd_site.py")


def settings(role, **pillar):
    """A role's settings from pillar, with its schema's defaults (as hpd.settings)."""
    return HPD.check(load(REPO / "pillar" / role / "schema.yaml"), pillar, role, "production")


def farm_settings(site=None, db=None, peers=PEERS, cache=None, twemproxy=None, hosts=HOSTS):
    return SITE.django_settings(settings("site", **{"secret_key": SECRET_KEY, **(site or {})}),
                                settings("db", **{"password": PASSWORD, **(db or {})}), peers,
                                settings("cache", **(cache or {})),
                                settings("twemproxy", **(twemproxy or {})), hosts)


def test_the_settings_file_from_default_pillars():
    assert farm_settings(site={"domains": ["www.hpd.test", "hpd.test"]}) == {
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": ["www.hpd.test", "hpd.test", "10.0.0.21", "app1", "app1.example"],
        "CSRF_TRUSTED_ORIGINS": ["https://www.hpd.test", "https://hpd.test"],
        "DATABASES": {"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": "hpd", "USER": "hpd",
            "PASSWORD": PASSWORD, "HOST": "db", "PORT": 5432, "CONN_MAX_AGE": 300,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"connect_timeout": 5, "target_session_attrs": "read-write"}}},
        "CACHES": {"default": {"BACKEND": "hpdexample.cache.FaultTolerantCache",
                               "LOCATION": "127.0.0.1:22121", "KEY_PREFIX": "example"}},
        "SESSION_ENGINE": "django.contrib.sessions.backends.cached_db",
        "STATIC_URL": "/static/",
        "CELERY_BROKER_URL": "redis://cache1:6379/1",
        "SENTRY_DSN": None,
        "ANONYMOUS_MAX_AGE": 60,
    }


def test_pillar_values_reach_the_settings():
    found = farm_settings(
        site={"conn_max_age": 0, "session_engine": "cache", "anonymous_max_age": 5,
              "sentry_dsn": "https://key@sentry.example/3", "static_url": "https://cdn.example/s/",
              "name": "shop", "broker": {"host": "queue1", "port": 6380, "database": 3}},
        db={"name": "shop", "user": "shop"}, peers={**PEERS, "db": ["db2", "db1"]},
        twemproxy={"ports": {"memcached": 23000}})
    assert found["DATABASES"]["default"]["CONN_MAX_AGE"] == 0
    assert found["DATABASES"]["default"]["HOST"] == "db1,db2"
    assert found["DATABASES"]["default"]["NAME"] == "shop"
    assert found["SESSION_ENGINE"] == "django.contrib.sessions.backends.cache"
    assert found["ANONYMOUS_MAX_AGE"] == 5
    assert found["SENTRY_DSN"] == "https://key@sentry.example/3"
    assert found["STATIC_URL"] == "https://cdn.example/s/"
    assert found["CACHES"]["default"]["LOCATION"] == "127.0.0.1:23000"
    assert found["CACHES"]["default"]["KEY_PREFIX"] == "shop"
    assert found["CELERY_BROKER_URL"] == "redis://queue1:6380/3"


@pytest.mark.parametrize("db, replicas, host", [
    (["db"], ["db3", "db2"], "db,db2,db3"),
    # After orch.db_failover: the promoted replica is the env's db host, the
    # fenced old primary a db_replica one.
    (["db2"], ["db"], "db2,db"),
    (["db"], [], "db"),
])
def test_the_database_is_every_db_host_of_the_env_the_primary_first(db, replicas, host):
    """libpq tries the hosts in turn and keeps the one that takes writes: the
    site finds a promoted replica before orch.db_failover repoints it."""
    found = farm_settings(peers={**PEERS, "db": db, "db_replica": replicas})["DATABASES"]
    assert found["default"]["HOST"] == host
    assert found["default"]["OPTIONS"]["target_session_attrs"] == "read-write"
    # A persistent connection that died with the old primary is replaced.
    assert found["default"]["CONN_HEALTH_CHECKS"] is True


def test_the_broker_port_follows_the_cache_roles_redis():
    found = farm_settings(cache={"redis": {"port": 6390}})
    assert found["CELERY_BROKER_URL"] == "redis://cache1:6390/1"


@pytest.mark.parametrize(("args", "key"), [
    ({"site": {"secret_key": None}}, "site:secret_key"),
    ({"db": {"password": None}}, "db:password"),
    ({"db": {"engine": "mysql"}}, "db:engine"),
    ({"peers": {"cache": ["cache1"]}}, "hpd:peers:db"),
    ({"peers": {"db": ["db"]}}, "cache:memcached:enabled"),
    ({"cache": {"memcached": {"enabled": False}}}, "cache:memcached:enabled"),
    ({"cache": {"redis": {"enabled": False}}}, "site:broker:host"),
])
def test_missing_pieces_are_refused_naming_the_key(args, key):
    with pytest.raises(SaltInvocationError, match=key) as err:
        farm_settings(**args)
    assert PASSWORD not in str(err.value) and SECRET_KEY not in str(err.value)


def test_a_broker_host_from_pillar_needs_no_redis_of_the_cache_role():
    found = farm_settings(site={"broker": {"host": "queue1", "port": 6379}},
                          cache={"redis": {"enabled": False}})
    assert found["CELERY_BROKER_URL"] == "redis://queue1:6379/1"


def test_the_file_is_json_with_one_key_per_line_in_order():
    text = SITE.settings_json(settings("site", secret_key=SECRET_KEY),
                              settings("db", password=PASSWORD), PEERS, settings("cache"),
                              settings("twemproxy"), HOSTS)
    assert json.loads(text)["SECRET_KEY"] == SECRET_KEY
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith('  "')]
    assert keys == sorted(keys) and text.endswith("}\n")


def test_the_environment_of_the_sites_processes():
    assert SITE.environment(settings("site", log_level="WARNING"), "/etc/hpd/example.json") == {
        "DJANGO_SETTINGS_MODULE": "hpdexample.settings",
        "HPD_SITE_CONFIG": "/etc/hpd/example.json",
        "DJANGO_LOG_LEVEL": "WARNING"}


TUNE = {"processes": 4, "threads": 2, "listen": 512, "max-requests": 5000,
        "max-requests-delta": 625, "harakiri": 30, "post-buffering": 8192, "buffer-size": 32768}


def test_uwsgi_tuning_takes_the_tune_and_pillar_overrides_win():
    overrides = settings("app", uwsgi={"processes": 3, "harakiri": 60})["uwsgi"]
    assert SITE.uwsgi_tuning(TUNE, overrides, 4096) == {
        "processes": 3, "threads": 2, "listen": 512, "max-requests": 5000,
        "harakiri": 60, "post-buffering": 8192, "buffer-size": 32768,
        "worker-reload-mercy": 5}


@pytest.mark.parametrize("uwsgi, mercy", [
    ({}, 5),                                        # threads: uWSGI cancels them, no wait
    ({"threads": 1, "harakiri": 45}, 45),           # one thread finishes its request
    ({"worker-reload-mercy": 20}, 20),              # the pillar's wins
    ({"threads": 1, "worker-reload-mercy": 7}, 7),
])
def test_a_worker_being_replaced_gets_a_mercy_that_fits_its_threads(uwsgi, mercy):
    overrides = settings("app", uwsgi=uwsgi)["uwsgi"]
    assert SITE.uwsgi_tuning(TUNE, overrides, 4096)["worker-reload-mercy"] == mercy


def test_a_listen_above_somaxconn_is_refused_naming_the_key():
    overrides = settings("app", uwsgi={"listen": 2048})["uwsgi"]
    with pytest.raises(SaltInvocationError, match="app:uwsgi:listen .*somaxconn"):
        SITE.uwsgi_tuning(TUNE, overrides, 1024)
    assert SITE.uwsgi_tuning(TUNE, overrides, 2048)["listen"] == 2048


PATHS = {"current": "/srv/hpd/current", "stats": "/srv/hpd/run/example-stats.sock",
         "reload": "/srv/hpd/run/example.reload", "fifo": "/srv/hpd/run/example.fifo",
         "request_log": "/srv/hpd/log/example-access.log"}


def vassal(site=None, app=None):
    site = settings("site", **(site or {}))
    tuning = SITE.uwsgi_tuning(TUNE, settings("app")["uwsgi"], 4096)
    return SITE.vassal(site, settings("app", **(app or {})), "10.0.0.21", tuning,
                       SITE.environment(site, "/etc/hpd/example.json"), PATHS)


def options(pairs):
    found = {}
    for key, value in pairs:
        found.setdefault(key, []).append(value)
    return found


def test_the_vassal_sets_every_option_the_issue_lists():
    found = options(vassal())
    for key in ("processes", "threads", "thunder-lock", "harakiri", "max-requests",
                "post-buffering", "stats", "auto-procname", "procname-prefix-spaced",
                "log-x-forwarded-for", "req-logger", "logger", "listen"):
        assert key in found, key
    assert found["processes"] == [4] and found["threads"] == [2] and found["listen"] == [512]
    assert found["worker-reload-mercy"] == [5]
    assert found["stats"] == [PATHS["stats"]]
    assert found["procname-prefix-spaced"] == ["example"]
    assert found["http-socket"] == ["10.0.0.21:8000"]
    assert found["logger"] == ["systemd"]
    assert found["req-logger"] == [f"file:logfile={PATHS['request_log']},maxsize=67108864,"
                                   f"backupname={PATHS['request_log']}.1"]
    assert found["env"] == ["DJANGO_LOG_LEVEL=INFO", "DJANGO_SETTINGS_MODULE=hpdexample.settings",
                            "HPD_SITE_CONFIG=/etc/hpd/example.json"]
    assert "max-requests-delta" not in found  # Debian's uWSGI 2.0.21 refuses it


def test_the_vassal_has_the_master_fifo_the_emperors_stop_wakes_it_through():
    """salt/app/files/uwsgi-emperor-stop writes to this FIFO: without it the
    vassal's master notices its workers' exit only at its next 1-s tick."""
    assert options(vassal())["master-fifo"] == [PATHS["fifo"]]


def test_the_vassal_imports_the_code_current_points_to_in_each_new_worker():
    """The lab's measurement (lab-notes): a chain reload serves the new release only
    when the apps load in the workers and the import path, the virtualenv and each
    worker's directory go through `current`; a master chdir'd to the real
    directory would keep the old code."""
    found = options(vassal())
    assert found["lazy-apps"] == ["true"]
    assert found["pythonpath"] == ["/srv/hpd/current"]
    assert found["virtualenv"] == ["/srv/hpd/current/venv"]
    assert found["hook-post-fork"] == ["chdir:/srv/hpd/current"]
    assert found["touch-chain-reload"] == [PATHS["reload"]]
    assert "chdir" not in found


def test_uwsgi_serves_static_files_only_without_a_cdn():
    assert options(vassal())["static-map"] == ["/static/=/srv/hpd/current/collected_static"]
    assert "static-map" not in options(vassal(site={"static_url": "https://cdn.example/"}))


def test_the_vassal_follows_the_app_pillar():
    found = options(vassal(app={"port": 9000, "request_log_max_mb": 1}))
    assert found["http-socket"] == ["10.0.0.21:9000"]
    assert "maxsize=1048576," in found["req-logger"][0]


@pytest.mark.parametrize(("count", "cpus", "wanted"), [
    (None, 2, ["example-worker@1", "example-worker@2"]),
    (None, 0, ["example-worker@1"]),
    (3, 1, ["example-worker@1", "example-worker@2", "example-worker@3"]),
])
def test_worker_units_from_pillar_or_cores(count, cpus, wanted):
    assert SITE.worker_units("example", count, cpus) == (wanted, [])


def test_worker_units_beyond_the_count_are_named_for_stopping():
    wants = "/etc/systemd/system/multi-user.target.wants/"
    enabled = [wants + "example-worker@1.service", wants + "example-worker@3.service",
               wants + "example-worker@10.service", wants + "other-worker@5.service"]
    assert SITE.worker_units("example", 2, 8, enabled) == (
        ["example-worker@1", "example-worker@2"], ["example-worker@10", "example-worker@3"])


SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(("rev", "rid"), [(SHA, "0123456789ab"), ("main", "main"),
                                          ("release/2.1", "release-2.1")])
def test_release_ids(rev, rid):
    assert SITE.release_id(rev) == rid


@pytest.mark.parametrize("rev", ["", "../etc", "-x", None, "a" * 65])
def test_no_release_id_for_a_bad_revision(rev):
    with pytest.raises(SaltInvocationError, match="no release id"):
        SITE.release_id(rev)


def test_the_first_release_is_site_rev():
    assert SITE.release({}, "main") == {"id": "main", "rev": "main"}


def test_a_deploy_gives_the_sha_and_may_name_the_release():
    assert SITE.release({"sha": SHA}, "main") == {"id": "0123456789ab", "rev": SHA}
    assert SITE.release({"sha": SHA, "release": "20260101T000000Z-0123456789ab"}, "main") == {
        "id": "20260101T000000Z-0123456789ab", "rev": SHA}
    assert SITE.release({"release": "main"}, "x") == {"id": "main", "rev": None}


@pytest.mark.parametrize(("deploy", "key"), [
    ({"sha": "main"}, "deploy:sha"),
    ({"sha": SHA[:12]}, "deploy:sha"),
    ({"release": "../../etc"}, "deploy:release"),
    ({"release": 12}, "deploy:release"),
    ({"rev": "main"}, "deploy needs sha"),
    ("main", "deploy must be a mapping"),
])
def test_a_bad_deploy_pillar_is_refused_naming_the_key(deploy, key):
    with pytest.raises(SaltInvocationError, match=key):
        SITE.release(deploy, "main")


def test_releases_with_the_same_requirements_and_python_share_a_virtualenv():
    key = SITE.venv_key("Django==5.2.19\n", "python3.11")
    assert key == SITE.venv_key("Django==5.2.19\n", "python3.11")
    assert key.startswith("python3.11-") and len(key) == len("python3.11-") + 16
    assert key != SITE.venv_key("Django==5.2.20\n", "python3.11")
    assert key != SITE.venv_key("Django==5.2.19\n", "python3.12")


@pytest.mark.parametrize(("url", "path"), [
    ("file:///srv/git/example.git", "/srv/git/example.git"),
    ("/srv/git/example.git", "/srv/git/example.git"),
    ("https://git.example/site.git", None),
    ("git@git.example:site.git", None),
])
def test_local_repositories(url, path):
    assert SITE.local_repository(url) == path
