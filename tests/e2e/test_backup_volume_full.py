"""A full backup volume on a real host, both ways, through the fault campaign's own fault
(`chaos.faults.Faults.fill_backup_dir`) and judged by its invariant (`full_volume`). Each lab
host's backup directory is a file system of its own (tests/hosts/harness/volumes.py).

- Out of bytes: the agent refuses the backup (tbctl exit 3) before it stops the replica.
- Out of inodes: its free-space check (bytes) passes, so the replica is stopped and the copy
  fails creating its files; the replica runs again, nothing of the backup is left on the volume
  or listed, and once the volume has room again the next backup is made.

    python3 -m pytest tests/e2e/test_backup_volume_full.py
"""

from __future__ import annotations

from chaos import invariants
from chaos.events import EventLog
from chaos.faults import Faults


def test_a_full_backup_volume_refuses_or_fails_cleanly(cluster, tmp_path):
    controller = cluster
    host = controller.host_names[2]
    inventory = str(controller.inventory_path)
    controller.wait_ready()
    events = EventLog(tmp_path / "events.jsonl")
    faults = Faults(controller, events)
    listed = controller.backups(host)
    pid = controller.replica_pid(host)
    assert pid != 0

    faults.fill_backup_dir(host, 0)  # the campaign's first fill: the volume's bytes
    assert controller.replica_pid(host) == pid, "a refused backup stopped the replica"
    faults.fill_backup_dir(host, 0)  # the second: its inodes
    full = [event for event in events.read() if event["event"] == "backup_while_full"]
    assert [event["by"] for event in full] == ["bytes", "inodes"], full
    assert "bytes free" in full[0]["tail"], full[0]
    assert full[1]["rc"] not in (0, 3), full[1]
    assert "No space left" in full[1]["tail"], full[1]
    assert invariants.full_volume(full) == [], full

    # The failed copy came after the stop: the replica was started again, and is ready.
    controller.wait_ready()
    assert controller.replica_pid(host) not in (0, pid)
    assert controller.backups(host) == listed
    # The fault removed its files: with room again, the next backup is made and listed.
    controller.tbctl("backup", "--replica", host, "--inventory", inventory, timeout_s=600)
    after = controller.backups(host)
    assert len(after) == len(listed) + 1, (listed, after)
    events.close()
