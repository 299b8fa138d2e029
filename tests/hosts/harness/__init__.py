"""A lab of real Linux hosts for end-to-end tests: Debian bookworm, systemd as PID 1, sshd.

Each host is a copy of one cached `debootstrap` root filesystem booted with `systemd-nspawn
--boot`, attached to a bridge inside a network namespace that this module creates. The
controller side of a test (ansible-playbook, tbctl, curl) runs inside the same namespace
(`Lab.controller_command`) and reaches the hosts at static addresses; nothing in the lab has a
route anywhere else, so no lab traffic can leave the namespace.

Only one lab exists on a machine at a time (its addresses are the committed
`inventories/lab.json`); a lock file serializes `up` and `down`. Everything the lab creates is
recorded under the state directory and removed by `down`, which `up` also runs first, so a
crashed run's leftovers (machines, namespace, host copies) are cleaned at the next `up`.

Traps (all verified on a Debian bookworm machine without systemd as its PID 1):
- `ip netns exec` remounts /sys, which breaks nspawn; enter the namespace with
  `nsenter --net=/var/run/netns/NAME` instead.
- `machinectl` needs registration with systemd-machined; with `--register=no` a machine is
  stopped by signalling its nspawn process (SIGTERM asks its systemd for an orderly poweroff).
- nspawn's container gets `80-container-host0.network` (DHCP) from systemd-networkd; the lab's
  static-address file must sort before it (`10-host0.network`).
- The container needs CAP_IPC_LOCK to mlock TigerBeetle's memory: it bypasses RLIMIT_MEMLOCK,
  which shows as `VmLck` in `/proc/PID/status`.
- `--keep-unit` puts the container's units under nspawn's own cgroup (`<cgroup>/payload`). Started
  from the same cgroup, all hosts would share one tree: a unit of the same name on two hosts is
  one cgroup directory, and one host's systemd removing it while another starts a process there
  fails that start (`status=219/CGROUP`, seen with a firewall unit started on three hosts at
  once). Each nspawn therefore starts in a cgroup of its own (`host_cgroup_dirs`).

The package, by concern: `rootfs` (the cached image), `network` (namespace, bridge, partitions),
`pki` (ssh keys, the lab CA and host certificates), `cgroups` (a cgroup per host), `processes`,
`controller` (commands on the controller's side: nsenter, ssh, Ansible's environment), `lab`
(hosts' lifecycle), `inventory` (inventories/lab.json), `locks` (the machine-wide heavy lock) and
`wait` (the deadline-polling wait every Python test uses). The names below are what tests import.
"""

from .cgroups import HOST_CGROUP_PREFIX, host_cgroup_dirs
from .common import (COMMAND_TIMEOUT_S_DEFAULT, REPO, LabError, cache_dir, log, make_private_dir,
                     run, state_dir_default, write_private)
from .controller import SSH_CONNECT_TIMEOUT_S
from .inventory import (AGENT_PORT, AGENT_TLS_DIR, CLUSTER_ID, INVENTORY_PATH,
                        INVENTORY_REPLICA_COUNT, LAB_CACHE_GRID, REPLICA_PORT, inventory,
                        inventory_text)
from .lab import BOOT_TIMEOUT_S, STOP_TIMEOUT_S, Host, Lab, running_lab
from .locks import HEAVY_LOCK_PATH, heavy_lock, heavy_lock_held_by_ancestor
from .network import (BRIDGE, CONTROLLER_ADDRESS, HOST_COUNT_MAX, NETNS, NETNS_PATH, NFT_TABLE,
                      SUBNET, host_address, host_name)
from .processes import alive, is_nspawn
from .rootfs import ROOTFS_PACKAGES, ROOTFS_SUITE, rootfs_build, rootfs_path
from .wait import TimedOut, poll, wait_for

__all__ = [
    "AGENT_PORT", "AGENT_TLS_DIR", "BOOT_TIMEOUT_S", "BRIDGE", "CLUSTER_ID",
    "COMMAND_TIMEOUT_S_DEFAULT", "CONTROLLER_ADDRESS", "HEAVY_LOCK_PATH", "HOST_CGROUP_PREFIX",
    "HOST_COUNT_MAX", "INVENTORY_PATH", "INVENTORY_REPLICA_COUNT", "LAB_CACHE_GRID", "NETNS",
    "NETNS_PATH", "NFT_TABLE", "REPLICA_PORT", "REPO", "ROOTFS_PACKAGES", "ROOTFS_SUITE",
    "SSH_CONNECT_TIMEOUT_S", "STOP_TIMEOUT_S", "SUBNET", "Host", "Lab", "LabError", "TimedOut",
    "alive", "cache_dir", "heavy_lock", "heavy_lock_held_by_ancestor", "host_address",
    "host_cgroup_dirs", "host_name", "inventory", "inventory_text", "is_nspawn", "log",
    "make_private_dir", "poll", "rootfs_build", "rootfs_path", "run", "running_lab",
    "state_dir_default", "wait_for", "write_private",
]
