"""The lab harness itself, on real hosts: boot, ssh, systemd as PID 1 with CAP_IPC_LOCK,
reachability from the controller, a partition and its healing, a host stopped hard and
booted again, and a teardown that leaves nothing behind.

Run (root, about a minute once the rootfs is cached):
    flock /tmp/tb-heavy.lock python3 -m pytest -q tests/hosts/test_lab.py
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

import harness

HOST_COUNT = 3
CAP_IPC_LOCK_BIT = 14


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # A private state dir for keys, certificates and host copies. The namespace and the
    # addresses are machine-wide (one lab at a time): run under /tmp/tb-heavy.lock.
    with harness.running_lab(HOST_COUNT, tmp_path_factory.mktemp("lab")) as lab:
        hosts = lab.hosts()
        yield lab
    # After teardown: no machine, no namespace, no host copy.
    assert not harness.NETNS_PATH.exists()
    assert lab._lab_pids() == []
    assert not lab.hosts_dir.exists()
    for host in hosts:
        assert not harness.is_nspawn(host.nspawn_pid), host
        for path in harness.host_cgroup_dirs(host.name):
            assert not path.exists(), path


def test_hosts_boot_with_ssh_and_systemd(lab):
    hosts = lab.hosts()
    assert [h.name for h in hosts] == ["tb-0", "tb-1", "tb-2"]
    for host in hosts:
        assert lab.exec(host.name, "hostname").stdout.strip() == host.name
        assert lab.exec(host.name, "cat /proc/1/comm").stdout.strip() == "systemd"
        # `is-system-running` is "running" or "degraded" (a unit that needs hardware); either
        # way systemd finished booting and manages units.
        state = lab.exec(host.name, "systemctl is-system-running --wait", check=False)
        assert state.stdout.strip() in ("running", "degraded"), state
        assert lab.exec(host.name, "systemctl is-active ssh").stdout.strip() == "active"
        capabilities = lab.exec(host.name, "grep CapBnd /proc/1/status").stdout.split()[1]
        assert int(capabilities, 16) & (1 << CAP_IPC_LOCK_BIT), capabilities
        address = lab.exec(host.name, "ip -4 -o addr show host0").stdout
        assert f"{host.address}/24" in address, address


def test_hosts_are_distinct(lab):
    machine_ids = {lab.exec(h.name, "cat /etc/machine-id").stdout.strip() for h in lab.hosts()}
    assert len(machine_ids) == HOST_COUNT
    host_keys = {Path(h.root, "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]
                 for h in lab.hosts()}
    assert len(host_keys) == HOST_COUNT
    # Filesystems are separate: a file written on one host is absent on the others.
    lab.exec("tb-0", "echo only-here > /root/marker")
    assert lab.exec("tb-1", "test -e /root/marker", check=False).returncode == 1
    # So are the backup volumes: each host's backup directory is an ext4 file system of its own.
    assert lab.exec("tb-0", "findmnt -n -o FSTYPE /var/lib/tb-backups").stdout.strip() == "ext4"
    lab.exec("tb-0", "echo only-here > /var/lib/tb-backups/marker")
    assert lab.exec("tb-1", "test -e /var/lib/tb-backups/marker", check=False).returncode == 1
    lab.exec("tb-0", "rm /var/lib/tb-backups/marker")


SAME_UNIT_STARTS = 40


def test_hosts_run_same_named_units_independently(lab):
    """Each host's units live in a cgroup tree of its own: starting a unit of the same name on
    every host at once, over and over, never fails. With one tree shared by all hosts (nspawn
    started from one cgroup) about 1 start in 20 failed with status=219/CGROUP."""
    unit = "/run/systemd/system/tb-lab-oneshot.service"
    script = (f"printf '[Service]\\nType=oneshot\\nRemainAfterExit=yes\\nExecStart=/bin/true\\n' "
              f"> {unit} && systemctl daemon-reload && fails=0; "
              f"for i in $(seq {SAME_UNIT_STARTS}); do systemctl stop tb-lab-oneshot; "
              "systemctl reset-failed tb-lab-oneshot 2>/dev/null; "
              "systemctl start tb-lab-oneshot || fails=$((fails+1)); done; "
              f"rm {unit}; systemctl daemon-reload; echo $fails")
    argv = {h.name: lab.controller_command(lab.ssh_command(h.name, script)) for h in lab.hosts()}
    processes = {name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for name, command in argv.items()}
    failures = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, (name, stdout, stderr)
        failures[name] = int(stdout.split()[-1])
    assert failures == {h.name: 0 for h in lab.hosts()}, failures


def test_secrets_are_private(lab):
    for path in (lab.ssh_key_path, lab.pki_dir / "ca.key", Path(lab.hosts()[0].tls_key)):
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert path.parent.stat().st_mode & 0o777 == 0o700, path.parent
    host = lab.hosts()[0]
    assert lab.exec(host.name, "stat -c %a /root/.ssh /root/.ssh/authorized_keys").stdout \
        .split() == ["700", "600"]


def test_certificates_verify_against_the_lab_ca(lab):
    for host in lab.hosts():
        subprocess.run(["openssl", "verify", "-CAfile", str(lab.ca_cert_path), host.tls_cert],
                       check=True, capture_output=True)
        text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                               host.tls_cert], check=True, capture_output=True,
                              text=True).stdout
        assert f"IP Address:{host.address}" in text, text


def test_controller_reaches_hosts_and_hosts_reach_each_other(lab):
    for host in lab.hosts():
        lab.run_controller(["ping", "-c1", "-W2", host.address])
    # The lab namespace has no route anywhere else.
    routes = lab.run_controller(["ip", "-4", "route", "show"]).stdout
    assert "default" not in routes, routes
    assert "default" not in lab.exec("tb-0", "ip -4 route show").stdout
    lab.exec("tb-0", f"ping -c1 -W2 {lab.host('tb-1').address}")


def test_partition_and_heal(lab):
    target = lab.host("tb-1")
    lab.partition("tb-1")
    try:
        assert lab.partitioned() == [target.address]
        unreachable = lab.run_controller(["ping", "-c1", "-W1", target.address], check=False)
        assert unreachable.returncode != 0
        assert lab.exec("tb-1", "true", check=False, timeout_s=30).returncode != 0
        # Host to host traffic through the bridge is dropped too; the others still talk.
        assert lab.exec("tb-0", f"ping -c1 -W1 {target.address}", check=False).returncode != 0
        lab.exec("tb-0", f"ping -c1 -W1 {lab.host('tb-2').address}")
    finally:
        lab.heal("tb-1")
    assert lab.partitioned() == []
    lab.run_controller(["ping", "-c1", "-W2", target.address])
    assert lab.exec("tb-1", "hostname").stdout.strip() == "tb-1"


def test_hard_restart(lab):
    """A host stopped hard (every process SIGKILLed, no shutdown) boots again on the same root:
    what it wrote to disk is there, what lived in its /run (a tmpfs of the boot) is gone, its
    systemd is a new PID 1 with a new boot's units, and the others never noticed."""
    before = lab.host("tb-1")
    lab.exec("tb-1", "echo kept >/var/tmp/hard-restart && echo gone >/run/hard-restart && "
                     "echo kept >/var/lib/tb-backups/hard-restart")
    started_before = lab.exec("tb-1", "systemctl show --property=ActiveEnterTimestampMonotonic "
                                      "ssh.service").stdout.strip()
    neighbour_pid = lab.exec("tb-0", "systemctl show --property=MainPID --value ssh").stdout
    after = lab.hard_restart("tb-1", down_s=1)
    assert after.nspawn_pid != before.nspawn_pid
    assert harness.is_nspawn(after.nspawn_pid)
    assert lab.host("tb-1") == after
    assert not harness.is_nspawn(before.nspawn_pid)
    assert lab.exec("tb-1", "cat /var/tmp/hard-restart").stdout.strip() == "kept"
    # The backup volume, like a disk, is there again (harness/volumes.py).
    assert lab.exec("tb-1", "cat /var/lib/tb-backups/hard-restart && "
                            "rm /var/lib/tb-backups/hard-restart").stdout.strip() == "kept"
    assert lab.exec("tb-1", "test -e /run/hard-restart", check=False).returncode == 1
    state = lab.exec("tb-1", "systemctl is-system-running --wait", check=False)
    assert state.stdout.strip() in ("running", "degraded"), state
    assert lab.exec("tb-1", "systemctl show --property=ActiveEnterTimestampMonotonic "
                            "ssh.service").stdout.strip() != started_before
    assert lab.exec("tb-0", "systemctl show --property=MainPID --value ssh").stdout == \
        neighbour_pid
    lab.exec("tb-0", f"ping -c1 -W2 {after.address}")


def test_committed_inventory_is_current():
    assert harness.INVENTORY_PATH.read_text() == harness.inventory_text(), \
        "inventories/lab.json is stale: run tests/hosts/lab inventory"
    inventory = json.loads(harness.INVENTORY_PATH.read_text())
    hosts = inventory["all"]["hosts"]
    assert [hosts[name]["ansible_host"] for name in sorted(hosts)] == \
        [str(harness.host_address(i)) for i in range(harness.INVENTORY_REPLICA_COUNT)]
    assert os.path.exists(harness.INVENTORY_PATH)
