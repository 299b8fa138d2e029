"""End-to-end test 4: one host is partitioned (nftables drop on the lab bridge): the rollout's
pre-flight refuses to start, and nothing is touched.

    python3 -m pytest tests/e2e/test_partition.py
"""

from __future__ import annotations

import labctl


def test_partitioned_host_fails_the_preflight(cluster):
    controller = cluster
    lab = controller.lab
    hosts = controller.host_names
    partitioned = hosts[2]
    units_before = {h: lab.exec(h, "sha256sum /etc/systemd/system/tigerbeetle.service").stdout
                    for h in hosts}
    pids_before = {h: controller.replica_pid(h) for h in hosts}
    # A pending change (a value no earlier test applied), which must not be applied anywhere.
    previous = controller.set_inventory_vars(tigerbeetle_cache_grid="272MiB")
    lab.partition(partitioned)
    try:
        rollout = controller.playbook("rollout.yml", "-e", "tb_ready_timeout_s=20", check=False)
    finally:
        lab.heal(partitioned)
        controller.restore_inventory_vars(previous)
    labctl.record("partition", {"rollout_seconds": rollout.seconds, "recap": rollout.recap(),
                                "tail": rollout.tail(30)})
    assert rollout.returncode != 0
    assert "pre-flight: not every replica is ready" in rollout.stdout, rollout.tail()
    assert partitioned in rollout.stdout
    assert "Roll out one replica at a time" not in rollout.stdout
    assert all(h["changed"] == 0 for h in rollout.recap().values()), rollout.recap()
    assert rollout.seconds < 120, f"the pre-flight took {rollout.seconds:.0f} s to give up"
    for host in hosts:
        assert lab.exec(host, "sha256sum /etc/systemd/system/tigerbeetle.service").stdout == \
            units_before[host]
        assert controller.replica_pid(host) == pids_before[host]
    # Healed, the cluster is whole again (the next test may share it).
    controller.playbook("rollout.yml", "--check")
