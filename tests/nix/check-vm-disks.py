#!/usr/bin/env python3
"""The NixOS VM tests' root disks hold what each test writes (the arithmetic, checked).

    check-vm-disks.py VM_TESTS_JSON AGENT_EFFECTIVE_CONFIG_JSON DATA_FILE_BYTES

VM_TESTS_JSON is tests/nix/vm-test-scripts.nix's output: each node's virtualisation.diskSize
and memorySize as nixpkgs' own option declarations make them (transcribed under
tests/nix/nixpkgs/: unset, the disk is 1024 MiB). The agent's effective config (tb-agent
check-config --print-effective) of a VM replica gives the readiness floor (health.free_bytes_min,
free_percent_min) and a backup's margin (backup.free_margin_bytes); DATA_FILE_BYTES is the size of
a data file freshly formatted by the tested tigerbeetle.

qemu-vm.nix makes the root disk an ext4 image of diskSize MiB; with the host's store mounted over
9p and its writable layer in tmpfs, the root disk holds /var: the data file, the backups, the
journal. A replica VM must, after bootstrap, stay ready (free space above the floor); a replica
that a test backs up must pass the agent's free-space precheck (the data file's size plus the
margin) and stay ready with the backup written (bounded by the data file's size); a replica that a
test recovers writes a whole new data file. Assumptions, named: ext4's defaults (5% reserved
for root, inode tables 256 B per 16 KiB = 1.5625%, a journal of at most 128 MiB), the OS's own
files and logs at most BASE_MIB, and the data file growing by at most GROWTH_MIB in a test.
"""

from __future__ import annotations

import json
import re
import sys

MIB = 1 << 20
BASE_MIB = 512
GROWTH_MIB = 64
EXT4_RESERVED = 0.05
EXT4_INODE_TABLES = 256 / 16384
EXT4_JOURNAL_MIB = 128


def replicas_named(script: str, command: str) -> set[str]:
    """replicaN for each `tbctl <command> ... --replica N` in a test script."""
    return {f"replica{n}" for n in re.findall(rf"tbctl {command}\b[^\n\"]*--replica (\d+)", script)}


def budget(disk_mib: int, data_bytes: int, agent: dict, backs_up: bool, recovers: bool) -> list[str]:
    size = disk_mib * MIB
    fs_size = size * (1 - EXT4_INODE_TABLES) - EXT4_JOURNAL_MIB * MIB
    available0 = fs_size - size * EXT4_RESERVED - BASE_MIB * MIB
    data = data_bytes + GROWTH_MIB * MIB
    floor = max(agent["health"]["free_bytes_min"], agent["health"]["free_percent_min"] / 100 * fs_size)
    problems = []
    available = available0 - data
    if available < floor:
        problems.append(f"with its data file ({data / MIB:.0f} MiB) {available / MIB:.0f} MiB stay free, "
                        f"below the readiness floor of {floor / MIB:.0f} MiB")
    if backs_up:
        needed = data + agent["backup"]["free_margin_bytes"]
        if available < needed:
            problems.append(f"a backup needs {needed / MIB:.0f} MiB free (data file plus margin), "
                            f"{available / MIB:.0f} MiB are")
        elif available - data < floor:
            problems.append(f"after a backup {(available - data) / MIB:.0f} MiB stay free, below the "
                            f"readiness floor of {floor / MIB:.0f} MiB")
    if recovers and available0 < data:
        problems.append(f"recover writes a {data / MIB:.0f} MiB data file, {available0 / MIB:.0f} MiB are free")
    return problems


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    with open(sys.argv[1]) as file:
        tests = json.load(file)
    with open(sys.argv[2]) as file:
        agent = json.load(file)
    data_bytes = int(sys.argv[3])
    problems, checked = [], 0
    for check, test in sorted(tests.items()):
        backups = replicas_named(test["testScript"], "backup")
        recovers = replicas_named(test["testScript"], "recover")
        for node, virtualisation in sorted(test["virtualisation"].items()):
            checked += 1
            disk = virtualisation["diskSize"]
            if not node.startswith("replica"):
                if disk * MIB * (1 - EXT4_RESERVED - EXT4_INODE_TABLES) - EXT4_JOURNAL_MIB * MIB < BASE_MIB * MIB:
                    problems.append(f"{check}/{node}: {disk} MiB cannot hold the OS's {BASE_MIB} MiB")
                continue
            for problem in budget(disk, data_bytes, agent, node in backups, node in recovers):
                problems.append(f"{check}/{node}: virtualisation.diskSize = {disk} MiB: {problem}")
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"   {checked} VM nodes in {len(tests)} tests: each root disk holds its data file, backups and "
          f"recover with the agent's free-space floor kept (data file {data_bytes / MIB:.1f} MiB)")


if __name__ == "__main__":
    main()
