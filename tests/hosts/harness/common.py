"""What every part of the lab shares: the repository, the cache, errors, logging, commands and
private files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[3]
COMMAND_TIMEOUT_S_DEFAULT = 120
# Labs that can run side by side on one machine, each in its slot (TB_LAB_SLOT, default 0):
# a slot has its own namespace, bridge, subnet, host cgroups, machine names, state directory
# and lock (network, cgroups, lab, locks). Slot 0 is the lab the docs describe
# (inventories/lab.json); scripts/test runs a second lab in slot 1 beside it.
LAB_SLOTS = 2


class LabError(Exception):
    pass


def lab_slot() -> int:
    text = os.environ.get("TB_LAB_SLOT", "0")
    if not text.isdigit() or not 0 <= int(text) < LAB_SLOTS:
        raise LabError(f"TB_LAB_SLOT={text!r}: a lab slot is 0..{LAB_SLOTS - 1}")
    return int(text)


SLOT = lab_slot()
# What names a slot's own things: empty for slot 0, whose names are the documented ones.
SLOT_SUFFIX = "" if SLOT == 0 else str(SLOT)


def cache_dir() -> Path:
    base = os.environ.get("TB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tb-bare-metal"
    )
    return Path(base)


def state_dir_default() -> Path:
    return Path(os.environ.get("TB_LAB_DIR") or cache_dir() / f"lab{SLOT_SUFFIX}")


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S_DEFAULT, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), timeout=timeout_s, text=True, capture_output=True,
                            **kwargs)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))} exited with {result.returncode}:\n"
                       f"{result.stdout}{result.stderr}")
    return result


def make_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Written beside and renamed into place: a reader running at the same time (the chaos
    campaign's readiness monitor reads the inventory a rollout is changing) sees the old file or
    the new one, never half of one. The staged name is the writer's (process and thread): two
    threads writing the same file do not rename each other's."""
    path = Path(path)
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(staged, mode)
    os.replace(staged, path)
