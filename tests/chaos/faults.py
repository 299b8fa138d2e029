"""Faults on the lab hosts, each bounded: injected, held for its duration, healed. Every fault
records when it began and ended (unix ms), and which replica it took away from the cluster, so
the invariants can tell what the faults took down from what the tools did."""

from __future__ import annotations

import json
import shlex
import time
from typing import Callable

import labctl
from harness import volumes
from .events import EventLog
from .schedule import Step

REPLICA_UNIT = "tigerbeetle.service"
AGENT_UNIT = "tb-agent.service"
# The nftables table of a one-way partition: a table of its own, so the roles' firewall (its
# own table) is untouched and a heal deletes exactly what the fault added.
CHAOS_TABLE = "tb_chaos"
RECOVER_ATTEMPTS = 5
# A recover refused while another operation holds the lease is tried again until then.
RECOVER_DEADLINE_S = 600
RECOVER_RETRY_S = 20
# The files that fill a host's backup volume: root's, in the backup directory itself (the agent
# ignores names that are not backup ids), removed by the heal. The last is a directory of empty
# files that takes every free inode.
FILL_FILES = (f"{volumes.BACKUP_DIR}/chaos-fill", f"{volumes.BACKUP_DIR}/chaos-fill-rest",
              f"{volumes.BACKUP_DIR}/chaos-fill-inodes")
# Creates empty files until the volume has no inode left (ENOSPC), on the host, then frees two:
# a backup takes them before it stops the replica (its `.partial-*` directory and the stop
# marker, agent/daemon/src/backup), so the copy's first file, made after the stop, has none.
FILL_INODES_PY = ("import os, sys\n"
                  "os.mkdir(sys.argv[1])\n"
                  "for n in range(1 << 20):\n"
                  "    try:\n"
                  "        open(os.path.join(sys.argv[1], str(n)), 'x').close()\n"
                  "    except OSError:\n"
                  "        break\n"
                  "for m in range(max(n - 2, 0), n):\n"
                  "    os.remove(os.path.join(sys.argv[1], str(m)))\n")
# Left free by fallocate, for the extent tree it writes; dd then takes what is left.
FILL_MARGIN_BYTES = 4 * 2**20
BACKUP_WHILE_FULL_TIMEOUT_S = 300


def unix_ms() -> int:
    return int(time.time() * 1000)


class Faults:
    def __init__(self, controller: labctl.Controller, events: EventLog):
        self.controller = controller
        self.lab = controller.lab
        self.events = events
        self.active: set[str] = set()
        self.fills = 0

    def host(self, step: Step) -> str:
        return self.controller.host_names[step.host]

    def run(self, step: Step) -> None:
        inject: dict[str, Callable[[str, float], bool]] = {
            "kill_replica": self.kill_replica,
            "stop_replica": self.stop_replica,
            "kill_agent": self.kill_agent,
            "partition": self.partition,
            "partition_oneway": self.partition_oneway,
            "lose_data_file": self.lose_data_file,
            "stop_host": self.stop_host,
            "fill_backup_dir": self.fill_backup_dir,
        }
        host = self.host(step)
        began = unix_ms()
        self.events.write("fault_begin", kind=step.kind, host=host, planned_s=step.duration_s)
        try:
            took_replica = inject[step.kind](host, step.duration_s)
        finally:
            self.events.write("fault_end", kind=step.kind, host=host, began_ms=began)
        # A fault that takes the replica away from the cluster (down, frozen, cut off) is a
        # "down" interval for the promise that the tools never take a second one down.
        if took_replica:
            self.events.write("replica_unavailable", host=host, cause=step.kind,
                              began_ms=began, ended_ms=unix_ms())

    def kill_replica(self, host: str, _: float) -> bool:
        # systemd restarts it (Restart=on-failure); the down interval is what Timeline sees.
        self.lab.exec(host, f"systemctl kill --signal=SIGKILL --kill-whom=main {REPLICA_UNIT}",
                      check=False)
        return False

    def kill_agent(self, host: str, _: float) -> bool:
        self.lab.exec(host, f"systemctl kill --signal=SIGKILL --kill-whom=main {AGENT_UNIT}",
                      check=False)
        return False

    def stop_replica(self, host: str, seconds: float) -> bool:
        pid = self.controller.replica_pid(host)
        if pid == 0:
            return False
        self.lab.exec(host, f"kill -STOP {pid}", check=False)
        try:
            time.sleep(seconds)
        finally:
            self.lab.exec(host, f"kill -CONT {pid}", check=False)
        return True

    def partition(self, host: str, seconds: float) -> bool:
        self.lab.partition(host)
        try:
            time.sleep(seconds)
        finally:
            self.lab.heal(host)
        return True

    def partition_oneway(self, host: str, seconds: float) -> bool:
        """The host's packets to its peers are dropped; theirs still arrive. The controller
        (ssh, the client) is not cut off, so the heal reaches the host."""
        peers = [self.lab.host(name).address for name in self.controller.host_names
                 if name != host]
        rule = (f"nft add table inet {CHAOS_TABLE} && "
                f"nft add chain inet {CHAOS_TABLE} out '{{ type filter hook output priority 0; }}' && "
                f"nft add rule inet {CHAOS_TABLE} out ip daddr '{{ {', '.join(peers)} }}' drop")
        # Inside the try: a rule that fails halfway (the table made, the chain not) is removed
        # too, instead of cutting the host off for the rest of the campaign.
        try:
            self.lab.exec(host, rule)
            time.sleep(seconds)
        finally:
            self.lab.exec(host, f"nft delete table inet {CHAOS_TABLE}", check=False)
        return True

    def stop_host(self, host: str, seconds: float) -> bool:
        """The host's container stopped hard (every process SIGKILLed, no shutdown), down for
        `seconds`, then booted: its units start as at any boot (the firewall, the agent, the
        replica on its data file). Not power loss: the page cache survives (harness.Lab)."""
        self.lab.hard_restart(host, down_s=seconds)
        return True

    def lose_data_file(self, host: str, _: float) -> bool:
        """The replica dies with its data file (a lost disk), then comes back the only way it may:
        recover.yml (`tigerbeetle recover`, never `format`). Held until recover.yml returns; a
        refused recover (another operation holds the lease) is retried, as an operator would."""
        index = self.controller.host_names.index(host)
        data_file = f"/var/lib/tigerbeetle/0_{index}.tigerbeetle"
        self.lab.exec(host, f"systemctl kill --signal=SIGKILL --kill-whom=main {REPLICA_UNIT}; "
                            f"rm -f {data_file}", check=False)
        deadline = time.monotonic() + RECOVER_DEADLINE_S
        for attempt in range(RECOVER_ATTEMPTS):
            if time.monotonic() > deadline:
                break
            run = self.controller.playbook(
                "recover.yml", "-e", json.dumps({"tigerbeetle_recover_hosts": [host]}),
                check=False, timeout_s=900)
            self.events.write("recover_playbook", host=host, attempt=attempt, rc=run.returncode,
                              tail=run.tail(20) if run.returncode else "")
            if run.returncode == 0:
                break
            time.sleep(RECOVER_RETRY_S)
        return True

    def fill_backup_dir(self, host: str, seconds: float) -> bool:
        """The host's backup volume full (tests/hosts/harness/volumes.py), then a backup of the
        host's replica asked for, as an operator or the schedule would while nobody has noticed.
        Alternately (the campaign's first fill, third, ...) its bytes are taken, which the agent
        must refuse before it stops the replica, and its inodes, which its free-space check
        cannot see: that backup must fail after the stop and still leave the replica running
        again, the lease free and nothing of itself behind. The invariants judge those; the
        outcome and the volume's contents afterwards are in the event log (`backup_while_full`).
        Held for `seconds`, then the files are removed."""
        self.fills += 1
        by = "bytes" if self.fills % 2 else "inodes"
        directory = volumes.BACKUP_DIR
        fill, rest, inodes = FILL_FILES
        fill_command = (
            f"avail=$(df --output=avail -B1 {directory} | tail -n 1) && "
            f"fallocate -l $(( avail - {FILL_MARGIN_BYTES} )) {fill} && "
            f"{{ dd if=/dev/zero of={rest} bs=64k status=none || true; }}" if by == "bytes"
            else f"python3 -c {shlex.quote(FILL_INODES_PY)} {inodes}")
        try:
            self.lab.exec(host, fill_command)
            began = time.monotonic()
            result = self.controller.tbctl("backup", "--replica", host, "--inventory",
                                           str(self.controller.inventory_path), check=False,
                                           timeout_s=BACKUP_WHILE_FULL_TIMEOUT_S)
            volume = self.lab.exec(host, f"ls -A {directory}", check=False).stdout.split()
            self.events.write("backup_while_full", host=host, by=by, rc=result.returncode,
                              tail=(result.stdout + result.stderr)[-2000:], volume=volume)
            time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        finally:
            self.lab.exec(host, f"rm -rf {' '.join(FILL_FILES)}", check=False)
        return False

    def heal_all(self) -> None:
        """Whatever a crashed runner left: partitions, the chaos table, frozen replicas."""
        for host in self.controller.host_names:
            self.lab.heal(host)
            self.lab.exec(host, f"rm -rf {' '.join(FILL_FILES)}; "
                                f"nft delete table inet {CHAOS_TABLE} 2>/dev/null; "
                                f"pid=$(systemctl show --property=MainPID --value {REPLICA_UNIT}); "
                                "[ \"$pid\" != 0 ] && kill -CONT \"$pid\"; true", check=False)
