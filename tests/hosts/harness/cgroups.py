"""Each host in a cgroup of its own: `--keep-unit` puts a container's units under nspawn's own
cgroup, and hosts started from one cgroup would share one tree (a unit of the same name on two
hosts would be one cgroup directory; see the package's traps)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .common import SLOT_SUFFIX, LabError, log

# Each host's cgroup (in each systemd hierarchy) is this prefix and its name; a slot's prefix
# matches no other slot's hosts.
HOST_CGROUP_PREFIX = f"tb-lab{SLOT_SUFFIX}-"


def systemd_cgroup_parents() -> list[Path]:
    """This process's cgroup in each hierarchy a container's systemd tracks units in: the
    unified (cgroup2) one and, on a legacy or hybrid host, the v1 `name=systemd` one."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path
    parents = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        mount_root, mount_point, fs_type, options = fields[3], fields[4], tail[0], tail[2]
        if fs_type == "cgroup2":
            key = ""
        elif fs_type == "cgroup" and "name=systemd" in options.split(","):
            key = "name=systemd"
        else:
            continue
        if key not in own:
            continue
        if mount_root != "/":
            raise LabError(f"cgroup hierarchy at {mount_point} is mounted from {mount_root}, "
                           "not its root: cannot place the lab's hosts in their own cgroups")
        parents.append(Path(mount_point) / own[key].lstrip("/"))
    return parents


def host_cgroup_dirs(name: str) -> list[Path]:
    return [parent / f"{HOST_CGROUP_PREFIX}{name}" for parent in systemd_cgroup_parents()]


def host_cgroups() -> list[Path]:
    """Every lab host's cgroup on this machine, of this run or an earlier one."""
    return [path for parent in systemd_cgroup_parents()
            for path in parent.glob(f"{HOST_CGROUP_PREFIX}*")]


def enter_cgroups(dirs: Sequence[Path]) -> None:
    """Runs in the forked child before exec: moves it (so nspawn) into the host's cgroups."""
    for path in dirs:
        (path / "cgroup.procs").write_text("0\n")


def procs(path: Path) -> list[int]:
    """Every process in the cgroup tree at `path` (none when it does not exist)."""
    pids = []
    for directory, _, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                pids += [int(pid) for pid in Path(directory, "cgroup.procs").read_text().split()]
            except OSError:
                continue
    return pids


def remove_cgroup_tree(path: Path) -> None:
    """Deepest first: a cgroup directory goes only once it has no children and no processes.
    What cannot go (a process not yet reaped) is reused by the next host of that name."""
    if not path.is_dir():
        return
    for directory, _, _ in sorted(os.walk(path), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(directory)
        except OSError as error:
            log(f"down: cgroup {directory} left: {error}")
            return
