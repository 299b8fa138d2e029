"""The machine-wide lock for heavy work (replicas, hosts, builds): one lab, one cluster of
replicas at a time on a machine. A lab in another slot (TB_LAB_SLOT) takes that slot's own lock:
only scripts/test runs one, when it knows the machine has room for both."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .common import SLOT_SUFFIX, log

HEAVY_LOCK_PATH = Path(f"/tmp/tb-heavy{SLOT_SUFFIX and '-lab' + SLOT_SUFFIX}.lock")


def heavy_lock_held_by_ancestor() -> bool:
    """An ancestor of this process (`flock /tmp/tb-heavy.lock pytest ...`) holds the lock."""
    try:
        inode = os.stat(HEAVY_LOCK_PATH).st_ino
    except OSError:
        return False
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and \
                fields[5].rsplit(":", 1)[-1] == str(inode):
            holders.add(int(fields[4]))
    pid = os.getpid()
    while pid > 1:
        if pid in holders:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


@contextlib.contextmanager
def heavy_lock() -> Iterator[None]:
    """Holds /tmp/tb-heavy.lock for the block, unless an ancestor already holds it; either way
    sets TB_HEAVY_LOCK_HELD=1 so the build scripts this process runs do not wait on it."""
    if os.environ.get("TB_HEAVY_LOCK_HELD") == "1" or heavy_lock_held_by_ancestor():
        os.environ["TB_HEAVY_LOCK_HELD"] = "1"
        yield
        return
    with open(HEAVY_LOCK_PATH, "a") as lock:
        log(f"waiting for {HEAVY_LOCK_PATH}")
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.environ["TB_HEAVY_LOCK_HELD"] = "1"
        try:
            yield
        finally:
            del os.environ["TB_HEAVY_LOCK_HELD"]
