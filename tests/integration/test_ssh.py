"""SSH on every host (salt/ssh, pillar ssh), attacked from another lab host: root
cannot log in, even with its key in root's authorized_keys; nobody logs in with
a password, even an admin whose account has one; a user outside the admin group
cannot log in with its key. The admin pillar names logs in with its key and
sudoes; taken out of pillar, it is locked out. A bad value in pillar is refused
naming the key, and a drop-in that sshd -t refuses is never written: sshd keeps
serving, same process, same configuration.

A small lab is enough: lab/specs/pair.yaml (the attacks come from app1)."""

import json

import pytest
from conftest import settled

pytestmark = pytest.mark.lab

ADMIN = "opsadm"
DROPIN = "/etc/ssh/sshd_config.d/00-hpd.conf"
ASKPASS = "/root/hpd-test-askpass"
PASSWORD = "guessable-Passw0rd"


@pytest.fixture(scope="module")
def hosts(lab, highstate):
    """(the host the attacks come from, the host they go to), the former with a key
    pair (and a script that types a password for ssh)."""
    target = settled(lab, highstate, "cache")
    client = "app1" if "app1" in lab.hosts else next(h for h in lab.hosts if h != target)
    lab.exec(client, "sh", "-c", "test -f /root/.ssh/id_ed25519 || "
             "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 </dev/null; "
             f"printf '#!/bin/sh\\necho {PASSWORD}\\n' >{ASKPASS}; chmod 700 {ASKPASS}")
    return client, target


def public_key(lab, client):
    return lab.exec(client, "cat", "/root/.ssh/id_ed25519.pub").stdout.strip()


def ssh(lab, client, target, user, command, *options, port=22):
    """ssh from `client` to `user`@`target` with root's key, no prompt; the
    CompletedProcess."""
    return lab.exec(client, "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
                    "-p", str(port), *options, f"{user}@{target}", command, check=False)


def password_login(lab, client, target, user):
    """A password login (the password typed by ssh's askpass), no key."""
    return lab.exec(client, "env", f"SSH_ASKPASS={ASKPASS}", "SSH_ASKPASS_REQUIRE=force",
                    "DISPLAY=none", "setsid", "ssh", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
                    "-o", "PreferredAuthentications=password,keyboard-interactive",
                    "-o", "PubkeyAuthentication=no", f"{user}@{target}", "id -un", check=False)


def apply_ssh(lab, host, pillar):
    """state.apply ssh on `host` with `pillar`: {state id: result} or the errors."""
    return lab.salt(host, "state.apply", "ssh", f"pillar={json.dumps(pillar)}")[host]


def refused(result):
    return result.returncode == 255 and "Permission denied" in result.stderr


def sshd_now(lab, host):
    """(sshd's main PID, the drop-in's text)."""
    pid = lab.exec(host, "systemctl", "show", "-p", "MainPID", "--value", "ssh").stdout.strip()
    return pid, lab.exec(host, "cat", DROPIN).stdout


def test_sshd_runs_with_the_farms_policy(lab, hosts):
    _, target = hosts
    effective = lab.exec(target, "sshd", "-T").stdout.splitlines()
    for line in ("permitrootlogin no", "passwordauthentication no",
                 "kbdinteractiveauthentication no", "allowgroups hpd-admin", "port 22"):
        assert line in effective, line


def test_root_cannot_log_in_even_with_its_key(lab, hosts):
    client, target = hosts
    lab.exec(target, "sh", "-c", "install -d -m 700 /root/.ssh && "
             f"echo '{public_key(lab, client)}' >/root/.ssh/authorized_keys")
    result = ssh(lab, client, target, "root", "id -un")
    assert refused(result), result


def test_a_user_outside_the_admin_group_cannot_log_in_with_its_key(lab, hosts):
    client, target = hosts
    lab.exec(target, "sh", "-c", "id mallory || useradd -m -s /bin/bash mallory; "
             "install -d -o mallory -m 700 /home/mallory/.ssh && "
             f"echo '{public_key(lab, client)}' >/home/mallory/.ssh/authorized_keys")
    result = ssh(lab, client, target, "mallory", "id -un")
    assert refused(result), result


def test_the_admin_logs_in_with_its_key_and_sudoes(lab, hosts):
    client, target = hosts
    admins = {ADMIN: {"keys": [public_key(lab, client)]}}
    results = apply_ssh(lab, target, {"ssh": {"admins": admins}})
    assert isinstance(results, dict), results
    assert all(r["result"] is True for r in results.values()), results
    result = ssh(lab, client, target, ADMIN, "id -un; sudo -n id -un")
    assert result.returncode == 0, result
    assert result.stdout.split() == [ADMIN, "root"]


def test_nobody_logs_in_with_a_password_not_even_an_admin(lab, hosts):
    client, target = hosts
    lab.exec(target, "sh", "-c", f"echo '{ADMIN}:{PASSWORD}' | chpasswd")
    result = password_login(lab, client, target, ADMIN)
    assert result.returncode == 255, result
    assert "Permission denied (publickey)." in result.stderr, result


def test_an_admin_taken_out_of_pillar_is_locked_out(lab, hosts):
    client, target = hosts
    results = apply_ssh(lab, target, {})
    assert all(r["result"] is True for r in results.values()), results
    result = ssh(lab, client, target, ADMIN, "id -un")
    assert refused(result), result
    sudo = lab.exec(target, "sudo", "-l", "-U", ADMIN).stdout
    assert "not allowed" in sudo, sudo


def test_a_bad_pillar_value_is_refused_and_sshd_keeps_serving(lab, hosts):
    client, target = hosts
    before = sshd_now(lab, target)
    errors = apply_ssh(lab, target, {"ssh": {"port": "abc"}})
    assert isinstance(errors, list), f"states ran despite a bad pillar: {errors}"
    assert any("pillar ssh is invalid: ssh:port: 'abc' is not of type 'integer'" in e
               for e in errors), errors
    assert sshd_now(lab, target) == before
    assert refused(ssh(lab, client, target, "root", "true")), "sshd does not answer on 22"


def test_a_dropin_sshd_refuses_is_not_written_and_a_good_one_is_reloaded(lab, hosts):
    client, target = hosts
    before = sshd_now(lab, target)
    # A configuration that sshd -t refuses, whatever the drop-in says (a
    # hand-edited file beside it): the new drop-in (port 2222) is not written,
    # sshd is not reloaded.
    broken = "/etc/ssh/sshd_config.d/zz-local.conf"
    lab.exec(target, "sh", "-c", f"echo 'PermitRootLogin maybe' >{broken}")
    try:
        results = apply_ssh(lab, target, {"ssh": {"port": 2222}})
        dropin = results["file_|-ssh-server-dropin-managed_|-" + DROPIN + "_|-managed"]
        assert dropin["result"] is False, dropin
        assert "check_cmd execution failed" in dropin["comment"], dropin
        assert sshd_now(lab, target) == before
        assert refused(ssh(lab, client, target, "root", "true")), "sshd does not answer on 22"
    finally:
        lab.exec(target, "rm", "-f", broken)
    # The same change with a sound configuration: written, sshd reloaded (the
    # same process), listening on the new port only.
    results = apply_ssh(lab, target, {"ssh": {"port": 2222}})
    assert all(r["result"] is True for r in results.values()), results
    pid, text = sshd_now(lab, target)
    assert pid == before[0] and "Port 2222" in text
    assert refused(ssh(lab, client, target, "root", "true", port=2222))
    assert "Connection refused" in ssh(lab, client, target, "root", "true").stderr
    results = apply_ssh(lab, target, {})
    assert all(r["result"] is True for r in results.values()), results
    assert refused(ssh(lab, client, target, "root", "true"))
