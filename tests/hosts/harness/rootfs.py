"""The hosts' root filesystem: Debian from `debootstrap`, built once per package list and cached;
each host boots a copy."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .common import LabError, cache_dir, log, make_private_dir, run

# The rootfs package list. Hosts have no route to any package mirror, so everything the
# playbooks use on a host (python3-apt for Ansible's apt module, nftables, time sync, curl for
# debugging) must be in the image. Changing this list changes the cache key.
ROOTFS_SUITE = "bookworm"
ROOTFS_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-timesyncd",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "nftables",
    "iproute2",
    "iputils-ping",
    "procps",
    "ca-certificates",
    "curl",
    "sudo",
    "libcap2-bin",
)

DEBOOTSTRAP_TIMEOUT_S = 1800


def rootfs_path() -> Path:
    key = hashlib.sha256("\n".join((ROOTFS_SUITE, *ROOTFS_PACKAGES)).encode()).hexdigest()[:16]
    return cache_dir() / f"rootfs-{ROOTFS_SUITE}-{key}"


def rootfs_build() -> Path:
    """The cached rootfs, built (about 3 minutes, once) if missing; built in a temp dir and
    renamed into place, so a crash never leaves a half-built rootfs under the final name."""
    final = rootfs_path()
    if (final / "etc" / "os-release").exists():
        return final
    make_private_dir(cache_dir())
    with open(cache_dir() / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "etc" / "os-release").exists():
            return final
        if shutil.which("debootstrap") is None:
            raise LabError("debootstrap is missing: run scripts/deps")
        for stale in cache_dir().glob(f"{final.name}.tmp-*"):
            shutil.rmtree(stale)
        work = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=cache_dir()))
        log(f"debootstrap {ROOTFS_SUITE} into {work} (a few minutes, once)")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
             ROOTFS_SUITE, str(work)], timeout_s=DEBOOTSTRAP_TIMEOUT_S)
        # Per-host identity is added by each copy; the image must carry none.
        for key in (work / "etc" / "ssh").glob("ssh_host_*"):
            key.unlink()
        (work / "etc" / "machine-id").write_text("")
        dbus_id = work / "var" / "lib" / "dbus" / "machine-id"
        if dbus_id.exists() or dbus_id.is_symlink():
            dbus_id.unlink()
        run(["chroot", str(work), "systemctl", "enable", "systemd-networkd.service",
             "ssh.service"])
        # Units that need hardware or a console a container lacks only slow the boot down.
        run(["chroot", str(work), "systemctl", "mask", "getty@tty1.service",
             "serial-getty@.service", "console-getty.service", "apt-daily.timer",
             "apt-daily-upgrade.timer"])
        (work / "etc" / "ssh" / "sshd_config.d" / "10-lab.conf").write_text(
            "# Lab hosts: key authentication only, one ed25519 host key per host.\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
        )
        os.chmod(work, 0o755)
        os.rename(work, final)
        log(f"rootfs ready: {final}")
        return final
