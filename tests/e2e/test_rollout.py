"""End-to-end test 2: rollout.yml with a config change while a client writes transfers.

No client request fails; each replica restarts exactly once, in inventory order, never two down
at once; each host's scheduled backups (its backup timer) are paused while it is changed, and
only then. The timeline is recorded in target/e2e/rollout.json.

    python3 -m pytest tests/e2e/test_rollout.py
"""

from __future__ import annotations

import labctl

CLIENT_SECONDS_MAX = 900


def test_rollout_config_change_under_load(cluster):
    controller = cluster
    hosts = controller.host_names
    # The change, as an operator makes it: in the inventory.
    controller.set_inventory_vars(tigerbeetle_cache_grid="288MiB")
    with labctl.Timeline(controller.lab) as timeline:
        with controller.client(CLIENT_SECONDS_MAX) as client:
            rollout = controller.playbook("rollout.yml")
        report = client.stop()
    summary = timeline.summary()
    labctl.record("rollout", {"client": report, "timeline": summary,
                              "rollout_seconds": rollout.seconds, "recap": rollout.recap()})
    assert report["failures"] == 0, report
    assert report["requests"] > 0, report
    # Exactly one restart per replica: two distinct pids, never a gap of "0" at the ends.
    for host in hosts:
        pids = [pid for pid in timeline.pids(host) if pid != 0]
        assert len(pids) == 2, (host, timeline.pids(host))
    # In inventory order.
    first_down = [timeline.down_intervals(host)[0][0] for host in hosts]
    assert first_down == sorted(first_down), summary
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
