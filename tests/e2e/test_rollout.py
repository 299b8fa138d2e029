"""End-to-end test 2: rollout.yml with a config change while a client writes transfers.

No client request fails; each replica restarts exactly once, in inventory order with the
primary last (so the rollout itself costs one view change: the count is recorded, not asserted,
since a starved machine adds view changes of TigerBeetle's own timeouts: 7 in one run beside
other tests on 2 cores), never two down at once. The
rollout holds the cluster's maintenance lease throughout, and nothing pauses scheduled backups:
the same change gives one host's agent a schedule of every minute, so from its turn on that
agent's scheduler ticks while the rollout still holds the lease. Every such tick is refused
(audited, nothing stopped), and the first tick after the rollout released the lease takes the
backup. The timeline is recorded in target/e2e/rollout.json.

    python3 -m pytest tests/e2e/test_rollout.py
"""

from __future__ import annotations

import json
import re
import time

import harness
import labctl

CLIENT_SECONDS_MAX = 900
EVERY_MINUTE = "* * * * *"
# A tick comes within a minute; the backup then stops, copies and restarts its replica.
SCHEDULED_BACKUP_WAIT_S = 300
AUDIT_LOG = "/var/log/tb-agent/audit.jsonl"


def set_schedules(controller, schedules: dict[str, str]) -> None:
    """Hosts' own backup schedules (labctl: tb_lab_backup_schedules), for the next play."""
    controller.vars["tb_lab_backup_schedules"] = schedules
    controller.write_vars()


def scheduled_audit_lines(controller, host: str) -> list[dict]:
    """The audit lines of the agent's own scheduled runs (actor "schedule")."""
    text = controller.lab.exec(host, f"cat {AUDIT_LOG}").stdout
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [line for line in lines if line.get("token") == "schedule"]


def test_rollout_config_change_under_load(cluster):
    controller = cluster
    hosts = controller.host_names
    order = controller.tbctl("rollout", "order", "--inventory",
                             str(controller.inventory_path)).stdout.split()
    assert sorted(order) == sorted(hosts), order
    view_before = controller.cluster_view()
    assert order[-1] == hosts[view_before % len(hosts)], (order, view_before)
    # The scheduled backup stops its replica once the rollout has ended: not the primary the
    # rollout's one view change elects, or the view changes recorded below would count its own.
    # Not the last host either: its schedule must be on while others still roll.
    next_primary = hosts[(view_before + 1) % len(hosts)]
    backup_host = next(host for host in order[:-1] if host != next_primary)
    backups_before = {backup["id"] for backup in controller.backups(backup_host)}
    audit_before = len(scheduled_audit_lines(controller, backup_host))
    # The change, as an operator makes it: in the inventory (the cache grid) and the settings.
    controller.set_inventory_vars(tigerbeetle_cache_grid="288MiB")
    set_schedules(controller, {backup_host: EVERY_MINUTE})
    try:
        with labctl.Timeline(controller.lab) as timeline:
            with controller.client(CLIENT_SECONDS_MAX) as client:
                rollout = controller.playbook("rollout.yml")
                rollout_ended = time.time()
            report = client.stop()
        job = scheduled_backup_after_the_rollout(controller, backup_host, backups_before,
                                                 rollout_ended)
        during = [line for line in scheduled_audit_lines(controller, backup_host)[audit_before:]
                  if line["time_unix_ms"] < job["started_unix_ms"]]
    finally:
        restore_schedules(controller, backup_host)
    # No scheduled run got past the lease while the rollout held it: each ended refused.
    ended = [line for line in during if line["phase"] == "end"]
    assert all(line["outcome"] in ("refused", "busy") for line in ended), during
    labctl.log(f"{backup_host}: {len(ended)} scheduled run(s) refused during the rollout")
    # That backup stops its replica after the rollout: the rollout's timeline ends before it.
    timeline.cut(min(int(rollout_ended * 1000), job["started_unix_ms"]))
    summary = timeline.summary()
    view_after = controller.cluster_view()
    labctl.record("rollout", {"client": report, "timeline": summary,
                              "rollout_seconds": rollout.seconds, "recap": rollout.recap(),
                              "scheduled_runs_refused": len(ended),
                              "view_changes": view_after - view_before})
    assert report["failures"] == 0, report
    assert report["requests"] > 0, report
    # Exactly one restart per replica: two distinct pids, never a gap of "0" at the ends.
    for host in hosts:
        pids = [pid for pid in timeline.pids(host) if pid != 0]
        assert len(pids) == 2, (host, timeline.pids(host))
    # In the order the rollout read under its lease: inventory order with the primary last,
    # which costs one view change (at least one: the primary's own restart). Not the order read
    # above: the primary may change between the two reads (a view change under this machine's
    # load; CI saw one), and the rollout follows the primary it sees.
    used = rollout_queue(rollout.stdout)
    assert sorted(used) == sorted(hosts), used
    first_down = [timeline.down_intervals(host)[0][0] for host in used]
    assert first_down == sorted(first_down), (used, order, summary)
    assert view_after > view_before, (view_before, view_after, summary)
    # Never two down at once.
    assert labctl.overlapping({h: timeline.down_intervals(h) for h in hosts}) == [], summary
    for host in hosts:
        unit = controller.lab.exec(host, "cat /etc/systemd/system/tigerbeetle.service").stdout
        assert "--cache-grid=288MiB" in unit
    assert controller.tbctl("status", "--inventory", str(controller.inventory_path),
                            check=False).returncode == 0


def rollout_queue(stdout: str) -> list[str]:
    """The hosts in the order rollout.yml queued them (its queue task's items, in order)."""
    _, found, rest = stdout.partition("TASK [Queue the hosts in that order")
    assert found, "rollout.yml's output has no queue task"
    return re.findall(r"^ok: \[[^\]]+\] => \(item=([^)]+)\)$", rest.split("\n\n", 1)[0], re.M)


def scheduled_backup_after_the_rollout(controller, host, backups_before, rollout_ended) -> dict:
    """The first scheduled backup of `host` after the rollout: taken by its agent alone,
    succeeded, begun once the rollout had released the lease. Returns its job."""
    new = harness.wait_for(
        f"a scheduled backup on {host} after the rollout",
        lambda: [b for b in controller.backups(host) if b["id"] not in backups_before],
        bool, timeout_s=SCHEDULED_BACKUP_WAIT_S, interval_s=1)
    job = controller.agent(host, f"/v1/jobs/backup-{new[0]['id']}")
    assert job["state"] == "succeeded", job
    assert job["started_unix_ms"] / 1000 >= rollout_ended - 5, (job, rollout_ended)
    audit = scheduled_audit_lines(controller, host)
    assert any(line.get("job_id") == job["id"] and line["outcome"] == "succeeded"
               for line in audit), audit[-5:]
    return job


def restore_schedules(controller, host: str) -> None:
    """The lab's own schedule again on `host`, applied under a lease the test holds, so that no
    every-minute backup can be copying while the play restarts that agent."""
    set_schedules(controller, {})
    inventory = ("--inventory", str(controller.inventory_path))
    acquired = harness.wait_for(
        "the maintenance lease (a scheduled backup may hold it)",
        lambda: controller.tbctl("lease", "acquire", "--ttl", "900", "--holder", "e2e",
                                 *inventory, check=False),
        lambda result: result.returncode == 0, timeout_s=300, interval_s=2)
    lease_id = acquired.stdout.strip()
    try:
        controller.playbook("site.yml", "--limit", host)
    finally:
        controller.tbctl("--lease-id", lease_id, "lease", "release", *inventory)
