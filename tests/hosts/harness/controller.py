"""The controller's side of the lab: what a test runs there (ansible-playbook, tbctl, ssh) runs
inside the lab's network namespace and reaches the hosts over ssh with the lab's key, checking
their host keys strictly."""

from __future__ import annotations

from pathlib import Path

from .network import in_namespace

SSH_CONNECT_TIMEOUT_S = 3

# The controller runs commands in the lab's namespace (network.in_namespace); the name the tests
# know it by.
controller_command = in_namespace


def ssh_options(key: Path, known_hosts: Path) -> list[str]:
    return [
        "-i", str(key),
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
        "-o", "LogLevel=ERROR",
    ]


def ansible_env(key: Path, known_hosts: Path, ca_cert: Path, pki_dir: Path) -> dict[str, str]:
    """Environment for ansible-playbook against the lab (run it with controller_command): the
    lab's key, and strict host key checking against the keys the lab generated."""
    return {
        "ANSIBLE_PRIVATE_KEY_FILE": str(key),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": (f"-o UserKnownHostsFile={known_hosts} "
                             "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
                             "-o ControlMaster=auto -o ControlPersist=60s "
                             # A host stopped hard leaves its master connection with no peer:
                             # it gives up within 15 s instead of holding every later task.
                             "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"),
        "TB_LAB_CA": str(ca_cert),
        "TB_LAB_PKI": str(pki_dir),
    }
