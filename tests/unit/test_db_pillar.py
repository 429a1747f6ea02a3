"""pillar/db/schema.yaml: the db role's bad values are refused, naming the key."""

import pytest
from salt.exceptions import SaltInvocationError
from test_hpd import REPO, hpd_module, load

SCHEMA = load(REPO / "pillar" / "db" / "schema.yaml")
PASSWORD = "a-real-database-password-0123456789"


@pytest.mark.parametrize(
    ("pillar", "key"),
    [
        ({"max_connections": 5000}, "db:max_connections"),
        ({"max_connections": "many"}, "db:max_connections"),
        ({"postgresql": {"settings": {"shared_buffers": "lots"}}},
         "db:postgresql:settings:shared_buffers"),
        ({"postgresql": {"settings": {"work_mem": 64}}}, "db:postgresql:settings:work_mem"),
        ({"postgresql": {"settings": {"listen_addresses": "*"}}}, "db:postgresql:settings"),
        ({"postgresql": {"settings": {"port": 5433}}}, "db:postgresql:settings"),
        ({"postgresql": {"db_size": "huge"}}, "db:postgresql:db_size"),
        ({"postgresql": {"profile": "olap"}}, "db:postgresql:profile"),
        ({"mysql": {"settings": {"innodb_buffer_pool_size": "lots"}}},
         "db:mysql:settings:innodb_buffer_pool_size"),
        ({"mysql": {"settings": {"bind-address": "0.0.0.0"}}}, "db:mysql:settings"),
        ({"engine": "oracle"}, "db:engine"),
        ({"user": "postgres"}, "db:user"),
        ({"name": "drop table"}, "db:name"),
        ({"listen_address": "0.0.0.0"}, "db:listen_address"),
    ],
)
def test_bad_values_are_refused_naming_the_key(pillar, key):
    with pytest.raises(SaltInvocationError, match=f"{key}: ") as err:
        hpd_module().check(SCHEMA, {"password": PASSWORD, **pillar}, "db", "production")
    assert PASSWORD not in str(err.value)


def test_good_overrides_pass():
    data = {"password": PASSWORD, "max_connections": 200,
            "postgresql": {"profile": "web", "db_size": "greater_ram",
                           "settings": {"shared_buffers": "1GB", "synchronous_commit": "off",
                                        "random_page_cost": 1.5, "jit": False}},
            "mysql": {"settings": {"innodb_buffer_pool_size": "512M"}}}
    assert hpd_module().check(SCHEMA, data, "db", "production")["max_connections"] == 200

