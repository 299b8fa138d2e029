"""End-to-end test 4: one host is partitioned (nftables drop on the lab bridge): the rollout's
pre-flight refuses to start, and nothing is touched. Then a replica stopped before a rollout: the
pre-flight waits for it without the maintenance lease, so another holder (recover.yml repairing
that replica) can take the lease meanwhile.

    python3 -m pytest tests/e2e/test_partition.py
"""

from __future__ import annotations

import subprocess
import threading

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


def test_preflight_waits_for_a_down_replica_without_the_lease(cluster):
    """Regression of the fault campaign's finding (seed 1, docs/reliability.md): the pre-flight
    waited for a down replica while holding the lease, so recover.yml, which needs the lease to
    repair that replica, could not run until both gave up."""
    controller = cluster
    lab = controller.lab
    down = controller.host_names[1]
    inventory = str(controller.inventory_path)
    lab.exec(down, "systemctl stop tigerbeetle.service")
    runs = {}
    rollout = threading.Thread(target=lambda: runs.setdefault("rollout", controller.playbook(
        "rollout.yml", "-e", "tb_ready_timeout_s=300", check=False)))
    rollout.start()
    try:
        # The pre-flight's `tbctl wait-ready` runs while the rollout waits, and it cannot end
        # while the replica is stopped: a state this test holds, not one between two polls.
        labctl.harness.wait_for(
            "the rollout's pre-flight waiting for the stopped replica",
            lambda: subprocess.run(["pgrep", "-f", "wait-ready --inventory"],
                                   capture_output=True, text=True).stdout.split(),
            timeout_s=120)
        holder = controller.tbctl("lease", "run", "--inventory", inventory, "--ttl", "30",
                                  "--holder", "e2e-preflight", "--", "true", check=False)
        assert holder.returncode == 0, \
            f"the lease was not free during the pre-flight's wait:\n{holder.stderr}"
        assert rollout.is_alive(), "the rollout ended while a replica was stopped"
    finally:
        lab.exec(down, "systemctl start tigerbeetle.service")
        rollout.join(timeout=labctl.PLAYBOOK_TIMEOUT_S)
    run = runs["rollout"]
    labctl.record("preflight_wait", {"rollout_seconds": run.seconds, "recap": run.recap()})
    assert run.returncode == 0, run.tail()
    assert "The maintenance lease was not taken" not in run.stdout
