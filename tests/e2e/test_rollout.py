"""End-to-end test 2: rollout.yml with a config change while a client writes transfers.

No client request fails; each replica restarts exactly once, in inventory order with the
primary last (so the rollout costs exactly one view change), never two down at once; each host's scheduled backups (its backup timer) are paused while it is changed, and
only then. The rollout holds the cluster's maintenance lease throughout: a scheduled backup
fired on another host meanwhile waits for it (the rollout never meets a 409) and runs after. The
timeline is recorded in target/e2e/rollout.json.

    python3 -m pytest tests/e2e/test_rollout.py
"""

from __future__ import annotations

import json
import threading
import time

import harness
import labctl

CLIENT_SECONDS_MAX = 900
BACKUP_SERVICE = "tb-agent-backup.service"
LEASE_WAIT_S = 300


class BackupDuringRollout(threading.Thread):
    """Once the rollout holds the maintenance lease, fires `host`'s scheduled backup."""

    def __init__(self, controller, host: str):
        super().__init__(daemon=True)
        self.controller, self.host = controller, host
        self.fired_at: float | None = None
        self.error: str | None = None

    def lease(self) -> dict | None:
        shown = self.controller.tbctl("lease", "show", "--inventory",
                                      str(self.controller.inventory_path), "--json", check=False)
        return json.loads(shown.stdout or "{}").get("lease") if shown.returncode == 0 else None

    def run(self) -> None:
        _, held = harness.poll(self.lease,
                               lambda lease: bool(lease) and lease.get("operation") == "rollout",
                               timeout_s=LEASE_WAIT_S, interval_s=0.5)
        if not held:
            self.error = "the rollout never held the maintenance lease"
            return
        self.controller.lab.exec(self.host, f"systemctl start --no-block {BACKUP_SERVICE}")
        self.fired_at = time.time()


def test_rollout_config_change_under_load(cluster):
    controller = cluster
    hosts = controller.host_names
    # The change, as an operator makes it: in the inventory.
    controller.set_inventory_vars(tigerbeetle_cache_grid="288MiB")
    order = controller.tbctl("rollout", "order", "--inventory",
                             str(controller.inventory_path)).stdout.split()
    assert sorted(order) == sorted(hosts), order
    view_before = cluster_view(controller)
    assert order[-1] == hosts[view_before % len(hosts)], (order, view_before)
    # The backup stops its replica once the rollout has ended: not the primary the rollout's one
    # view change elects, or the check of that one view change below would count a second.
    next_primary = hosts[(view_before + 1) % len(hosts)]
    backup_host = next(host for host in order[:-1] if host != next_primary)
    backups_before = {backup["id"] for backup in controller.backups(backup_host)}
    with labctl.Timeline(controller.lab) as timeline:
        with controller.client(CLIENT_SECONDS_MAX) as client:
            backup = BackupDuringRollout(controller, backup_host)
            backup.start()
            rollout = controller.playbook("rollout.yml")
            rollout_ended = time.time()
            backup.join()
        report = client.stop()
    backup_started_ms = backup_waited_for_the_lease(controller, backup, backups_before,
                                                    rollout_ended)
    # That backup stops its replica after the rollout: the rollout's timeline ends before it.
    timeline.cut(min(int(rollout_ended * 1000), backup_started_ms))
    summary = timeline.summary()
    labctl.record("rollout", {"client": report, "timeline": summary,
                              "rollout_seconds": rollout.seconds, "recap": rollout.recap()})
    assert report["failures"] == 0, report
    assert report["requests"] > 0, report
    # Exactly one restart per replica: two distinct pids, never a gap of "0" at the ends.
    for host in hosts:
        pids = [pid for pid in timeline.pids(host) if pid != 0]
        assert len(pids) == 2, (host, timeline.pids(host))
    # In inventory order with the primary last, which costs one view change.
    first_down = [timeline.down_intervals(host)[0][0] for host in order]
    assert first_down == sorted(first_down), (order, summary)
    assert cluster_view(controller) == view_before + 1, (view_before, summary)
    # Never two down at once.
    assert labctl.overlapping({h: timeline.down_intervals(h) for h in hosts}) == [], summary
    # Backups paused on each host while it is changed, and only then: its backup timer stopped
    # once, over the replica's restart, on one host at a time, and running again afterwards.
    paused = {h: timeline.timer_paused_intervals(h) for h in hosts}
    for host in hosts:
        assert len(paused[host]) == 1, (host, paused[host], summary)
        (start, end), (down_start, down_end) = paused[host][0], timeline.down_intervals(host)[0]
        assert start <= down_start and down_end <= end, (host, paused[host], summary)
        assert timeline.timer[host][-1][1] == "active", (host, timeline.timer[host][-3:])
    assert labctl.overlapping(paused) == [], paused
    for host in hosts:
        unit = controller.lab.exec(host, "cat /etc/systemd/system/tigerbeetle.service").stdout
        assert "--cache-grid=288MiB" in unit
    assert controller.tbctl("status", "--inventory", str(controller.inventory_path),
                            check=False).returncode == 0


def backup_waited_for_the_lease(controller, backup, backups_before, rollout_ended) -> int:
    """The backup fired during the rollout waited for its lease and ran after it. Returns when
    its job began (unix ms)."""
    assert backup.error is None and backup.fired_at is not None, backup.error
    assert backup.fired_at < rollout_ended
    controller.unit_state(backup.host, BACKUP_SERVICE, until=["inactive", "failed"],
                          timeout_s=120)
    journal = controller.journal(backup.host, BACKUP_SERVICE, lines=200)
    assert "waiting for the maintenance lease" in journal, journal
    assert "backup accepted" in journal, journal
    new, _ = harness.poll(
        lambda: [b for b in controller.backups(backup.host) if b["id"] not in backups_before],
        timeout_s=300, interval_s=1)
    assert len(new) == 1, (new, journal)
    job = controller.agent(backup.host, f"/v1/jobs/backup-{new[0]['id']}")
    assert job["state"] == "succeeded", job
    # It began once the rollout had released the lease, at the rollout's very end.
    assert job["started_unix_ms"] / 1000 >= rollout_ended - 5, (job, rollout_ended)
    shown = controller.tbctl("lease", "show", "--inventory", str(controller.inventory_path),
                             "--json")
    assert json.loads(shown.stdout)["lease"] is None, shown.stdout
    return job["started_unix_ms"]


def cluster_view(controller, timeout_s: float = 60) -> int:
    """The view every replica reports in normal status (StatsD, every 10 s), once they agree."""
    replicas = harness.wait_for(
        "every replica normal in one view",
        lambda: [controller.agent(host, "/v1/status")["replica"]
                 for host in controller.host_names],
        lambda replicas: all(r["replica_status"] == 0 for r in replicas)
        and len({r["replica_view"] for r in replicas}) == 1,
        timeout_s=timeout_s, interval_s=1)
    return replicas[0]["replica_view"]
