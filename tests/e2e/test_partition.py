"""End-to-end test 4: one host is partitioned (nftables drop on the lab bridge): the rollout's
pre-flight refuses to start, and nothing is touched. Then a replica stopped before a rollout: the
pre-flight waits for it without the maintenance lease, so another holder (recover.yml repairing
that replica) can take the lease meanwhile; and once the rollout has the lease, a replica down
again ends it within the short recheck, which frees the lease.

    python3 -m pytest tests/e2e/test_partition.py
"""

from __future__ import annotations

import subprocess
import threading
import time

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



def wait_ready_running() -> bool:
    """Whether a `tbctl wait-ready` of a gate runs on the controller (one per gate, until it
    sees every replica ready or its deadline)."""
    return bool(subprocess.run(["pgrep", "-f", "wait-ready --inventory"],
                               capture_output=True, text=True).stdout.split())


def lease_operation(controller) -> str | None:
    """What the cluster's maintenance lease is held for (`manual` for `tbctl lease run`,
    `rollout` for the rollout's), or None when it is free."""
    lease = controller.agent(controller.host_names[0], "/v1/lease").get("lease")
    return lease["operation"] if lease else None


def test_preflight_waits_without_the_lease_and_rechecks_under_it_at_once(cluster):
    """The fault campaign's findings, each a state this test holds rather than catches:
    1. (seed 1) the pre-flight waited for a down replica while holding the maintenance lease, so
       recover.yml, which needs the lease to repair that replica, could not run meanwhile;
    2. (seed 7) a replica that went down between that wait and the lease was waited for again
       under the lease, for the whole gate (3 minutes), with the same effect."""
    controller = cluster
    lab = controller.lab
    down = controller.host_names[1]
    inventory = str(controller.inventory_path)
    release = controller.work / "release-the-lease"
    lab.exec(down, "systemctl stop tigerbeetle.service")
    runs = {}
    rollout = threading.Thread(target=lambda: runs.setdefault("rollout", controller.playbook(
        "rollout.yml", "-e", "tb_ready_timeout_s=300", check=False)))
    rollout.start()
    holder = None
    try:
        # 1. The rollout waits for the stopped replica (its gate's wait-ready cannot end while
        # the replica is stopped), and meanwhile another holder can take the lease.
        labctl.harness.wait_for("the rollout's pre-flight waiting for the stopped replica",
                                wait_ready_running, timeout_s=120)
        holder = subprocess.Popen(
            controller.tbctl_argv("lease", "run", "--inventory", inventory, "--ttl", "300",
                                  "--holder", "e2e-preflight", "--", "sh", "-c",
                                  f"while [ ! -e {release} ]; do sleep 0.2; done"),
            env=controller.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        labctl.harness.wait_for("the other holder to hold the lease during the pre-flight",
                                lambda: lease_operation(controller),
                                lambda operation: operation == "manual", timeout_s=60)
        assert rollout.is_alive(), "the rollout ended while a replica was stopped"
        # 2. The replica is back: the rollout's wait ends, and it waits for the lease, which
        # this test holds. The replica goes down again before the rollout gets the lease.
        lab.exec(down, "systemctl start tigerbeetle.service")
        labctl.harness.wait_for("the pre-flight's wait to end (the replica is ready)",
                                wait_ready_running, lambda running: not running, timeout_s=180)
        lab.exec(down, "systemctl stop tigerbeetle.service")
        release.touch()
        released = time.monotonic()
        out, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, f"tbctl lease run: {out}{err}"
        rollout.join(timeout=labctl.PLAYBOOK_TIMEOUT_S)
        ended_after_s = time.monotonic() - released
    finally:
        release.touch()
        if holder is not None and holder.poll() is None:
            holder.kill()
        lab.exec(down, "systemctl start tigerbeetle.service")
        rollout.join(timeout=labctl.PLAYBOOK_TIMEOUT_S)
    run = runs["rollout"]
    labctl.record("preflight_lease", {"rollout_seconds": run.seconds, "recap": run.recap(),
                                      "ended_after_release_s": ended_after_s})
    # Under the lease, the rollout only rechecks: the replica is down, so it ends within its
    # lease retry (10 s) and the recheck (15 s), not the 300 s of the gate, and frees the lease.
    assert run.returncode != 0, run.tail()
    assert "pre-flight: not every replica is ready after 15 s" in run.stdout, run.tail()
    assert ended_after_s < 90, f"the rollout held the lease {ended_after_s:.0f} s after it got it"
    assert lease_operation(controller) is None
    assert all(h["changed"] == 0 for h in run.recap().values()), run.recap()
    controller.wait_ready()


# A cache grid no other test's change uses (test_rollout 288MiB, test_site 320MiB,
# test_rollout_staging 352MiB): the staged inventory shows it once staging wrote it, in the
# agent's role, well before the staging play's last steps (the replica unit, then the gate).
STAGED_GRID = "384MiB"
STAGED_INVENTORY = "/etc/tigerbeetle/inventory.json.staged"


def test_a_replica_down_during_staging_ends_the_rollout_at_once(cluster):
    """The fault campaign, seed 11: a replica lost while the rollout staged its change (its data
    file, whose repair needs the lease) was waited for by the gate after staging for the whole
    gate, under the lease, so recover.yml could not repair it meanwhile (tb-0 down 275 s instead
    of ~50). Staging stops nothing, so that gate only rechecks now: the replica stopped during
    staging ends the rollout within the recheck, before any activation, and the lease is free.
    Before the fix the same run waited the gate's 300 s (tb_ready_timeout_s) under the lease."""
    controller = cluster
    lab = controller.lab
    down = controller.host_names[1]
    # A staged inventory an earlier run of this test left would show the change at once.
    for host in controller.host_names:
        lab.exec(host, f"rm -f {STAGED_INVENTORY}")
    previous = controller.set_inventory_vars(tigerbeetle_cache_grid=STAGED_GRID)
    runs = {}
    rollout = threading.Thread(target=lambda: runs.setdefault("rollout", controller.playbook(
        "rollout.yml", "-e", "tb_ready_timeout_s=300", check=False)))
    rollout.start()
    try:
        # Staging has begun (past the pre-flight, under the lease): one host's staged inventory
        # has the new grid. Then the replica goes down, as a fault would take it.
        labctl.harness.wait_for(
            "a host's staged inventory with the change",
            lambda: any(STAGED_GRID in lab.exec(host, f"cat {STAGED_INVENTORY}",
                                                check=False).stdout
                        for host in controller.host_names),
            timeout_s=300, interval_s=0.5)
        assert rollout.is_alive(), "the rollout ended before staging was seen"
        lab.exec(down, "systemctl stop tigerbeetle.service")
        stopped = time.monotonic()
        rollout.join(timeout=labctl.PLAYBOOK_TIMEOUT_S)
        ended_after_s = time.monotonic() - stopped
    finally:
        lab.exec(down, "systemctl start tigerbeetle.service")
        rollout.join(timeout=labctl.PLAYBOOK_TIMEOUT_S)
        controller.restore_inventory_vars(previous)
    run = runs["rollout"]
    labctl.record("staging_lease", {"rollout_seconds": run.seconds, "recap": run.recap(),
                                    "ended_after_stop_s": ended_after_s})
    assert run.returncode != 0, run.tail()
    assert "after staging: not every replica is ready after 15 s" in run.stdout, run.tail()
    assert "Activate the staged" not in run.stdout, run.tail()
    # The rest of staging, the recheck (15 s) and the lease's release; not the gate's 300 s.
    assert ended_after_s < 200, f"the rollout held the lease {ended_after_s:.0f} s after the stop"
    assert lease_operation(controller) is None
    controller.wait_ready()
