"""highperf on the lab's hosts, through the lab's master (synced when the lab comes up)."""

import pytest

pytestmark = pytest.mark.lab


def leaves(tree, path=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key), value


def test_vitals_is_a_tree_of_numbers_on_every_host(lab, highstate):
    returned = lab.salt("*", "highperf.vitals")
    assert sorted(returned) == lab.hosts
    for host, tree in returned.items():
        assert isinstance(tree, dict), f"{host}: {tree}"
        assert set(tree) == {"load", "cpu", "memory", "disk", "network"}, host
        bad = [p for p, v in leaves(tree) if isinstance(v, bool) or not isinstance(v, int | float)]
        assert not bad, f"{host}: non-numeric leaves {bad}"
        assert "root" in tree["disk"] and "host0" in tree["network"], host
        assert "rx_bytes_per_s" in tree["network"]["host0"], host


def test_tuning_follows_the_size_the_lab_gave_the_host(lab, highstate):
    db = next(n for n, h in lab.state["hosts"].items() if "db" in h["roles"])
    size = lab.state["hosts"][db]
    tune = lab.salt(db, "highperf.pg_tune")[db]
    assert tune["shared_buffers"] == f"{size['memory'] // 4}MB"  # the seed: 25% of the RAM
    explicit = lab.salt(db, "highperf.pg_tune", f"mem_total={size['memory']}",
                        f"cpus={size['cpus']}")[db]
    assert tune == explicit
