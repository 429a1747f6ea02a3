"""highperf on the lab's hosts, through the lab's master (synced when the lab comes up)."""

import threading

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


PAYLOAD = 32 * 1024 * 1024  # bytes sent from one lab host to another
PORT = 50007
# Run in the receiving host: accept one connection on its lab address, count what arrives.
RECEIVER = r"""
import socket, sys
with socket.create_server((sys.argv[1], int(sys.argv[2]))) as server:
    server.settimeout(60)
    print("listening", flush=True)
    conn, _ = server.accept()
    conn.settimeout(60)
    total = 0
    while chunk := conn.recv(1 << 20):
        total += len(chunk)
print(total)
"""
# Run in the sending host: connect to the receiver (retrying until it listens), send.
SENDER = r"""
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
        break
    except ConnectionRefusedError:
        assert time.monotonic() < deadline, "the receiver never listened"
        time.sleep(0.1)
with sock:
    block = bytes(1 << 20)
    for _ in range(int(sys.argv[3]) // len(block)):
        sock.sendall(block)
"""


def test_traffic_between_hosts_shows_in_the_receivers_rates(lab, highstate):
    """tens of MiB sent to a host: its host0 rx_bytes_per_s over the interval
    vitals reports covers them (and not much more)."""
    receiver, sender = lab.hosts[0], lab.hosts[1]
    address = lab.state["hosts"][receiver]["address"]
    before = lab.salt(receiver, "highperf.vitals")[receiver]
    received = {}
    thread = threading.Thread(target=lambda: received.update(
        out=lab.exec(receiver, "python3", "-c", RECEIVER, address, str(PORT))))
    thread.start()
    try:
        lab.exec(sender, "python3", "-c", SENDER, address, str(PORT), str(PAYLOAD))
    finally:
        thread.join(timeout=120)
    assert received["out"].stdout.split()[-1] == str(PAYLOAD), received["out"]
    after = lab.salt(receiver, "highperf.vitals")[receiver]

    host0 = after["network"]["host0"]
    assert host0["rx_bytes"] - before["network"]["host0"]["rx_bytes"] >= PAYLOAD
    covered = host0["rx_bytes_per_s"] * after["cpu"]["interval"]
    # Frames carry headers: at least the payload; the rest is the lab's own chatter.
    assert PAYLOAD <= covered <= PAYLOAD * 1.1 + 4 * 1024 * 1024, (covered, after["cpu"])
