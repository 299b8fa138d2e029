"""Each lab host's backup directory is a file system of its own, as a production backup volume
is: an ext4 image, loop-mounted on this machine and bound into the host at the agent's backup
directory. A fault can then fill it (ENOSPC for the agent) without filling this machine's disk,
and it outlives a hard restart of its host as a disk does. The image is sparse: it takes only the
blocks its backups use."""

from __future__ import annotations

import time
from pathlib import Path

from .common import LabError, run

# The role's default `tb_agent_backup_dir` (ansible/roles/tb_agent/defaults/main.yml); the lab
# inventory does not change it.
BACKUP_DIR = "/var/lib/tb-backups"
# Room for every backup of a 30-minute campaign (tens of MB each, compressed), never allocated.
VOLUME_BYTES = 16 * 2**30
# Few inodes (a backup takes about five), so that a fault can also exhaust them in a moment: a
# volume out of inodes has bytes free, so a backup passes the agent's free-space check and
# fails when it creates its files, after the replica stopped.
VOLUME_INODES = 4096
MOUNT_NAME = "backups"
UNMOUNT_ATTEMPTS = 10


def mountpoint(root: Path) -> Path:
    """Where the volume of the host whose root filesystem is `root` is mounted on this machine."""
    return root.parent / MOUNT_NAME


def create(root: Path) -> Path:
    """A fresh, empty volume for the host whose root filesystem is `root`, mounted. No
    `lost+found` (the agent's listing would ignore it, but an operator reading the directory
    should see only backups); no blocks reserved for root (the agent does not run as root)."""
    image = root.parent / "backups.img"
    with open(image, "wb") as file:
        file.truncate(VOLUME_BYTES)
    run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", str(VOLUME_INODES), str(image)], timeout_s=60)
    target = mountpoint(root)
    target.mkdir(mode=0o700)
    run(["mount", "-o", "loop", str(image), str(target)], timeout_s=60)
    (target / "lost+found").rmdir()
    return target


def nspawn_bind(root: Path) -> str:
    """The systemd-nspawn argument that puts the volume at the host's backup directory."""
    return f"--bind={mountpoint(root)}:{BACKUP_DIR}"


def unmount_all(hosts_dir: Path) -> None:
    """Unmounts every host's volume under `hosts_dir` (also a crashed run's), once the hosts'
    processes are gone; the loop device goes with the mount (`mount -o loop` sets autoclear)."""
    prefix = str(hosts_dir) + "/"

    def mounted() -> list[str]:
        return [target for target in _mounts()
                if target.startswith(prefix) and Path(target).name == MOUNT_NAME]

    for attempt in range(UNMOUNT_ATTEMPTS):
        left = mounted()
        if not left:
            return
        for target in left:
            run(["umount", target], timeout_s=60, check=False)
        time.sleep(0.5 * attempt)
    if mounted():
        raise LabError(f"cannot unmount the lab's backup volumes: {mounted()}")


def _mounts() -> list[str]:
    # /proc/mounts escapes blanks in paths as \040; the lab's paths have none.
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
