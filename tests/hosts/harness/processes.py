"""Processes of the lab seen from this machine: alive or not, a systemd-nspawn or a reused pid."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

def inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def alive(pid: int) -> bool:
    reap(pid)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def is_nspawn(pid: int) -> bool:
    """The pid is still a live systemd-nspawn (pids are reused after a crash)."""
    if not alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(command) and command[0].endswith(b"systemd-nspawn")


def reap(pid: int) -> None:
    """Collects the exit status of a child of this process, if it is one that has exited."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
