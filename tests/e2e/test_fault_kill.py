"""End-to-end test 3: the replica on the second host is killed (again and again, as in a crash
loop) during the rollout: the play stops before the third host, saying which host and why, and
the cluster still answers. Then the forward fix of the host the rollout left down (its unit
failed at its start limit): a plain re-run refuses at the pre-flight and says how to repair; a
repair whose --limit leaves that host out refuses; `-e tigerbeetle_rollout_repair=<host>` (with a
--limit that covers it and the host the rollout never reached) starts that host first and
finishes the rollout while a client writes, with no failed request. Last, a replica at its
start limit comes back with `tbctl start` (the agent resets the unit's failed state).

On the shared lab's cluster (conftest.py), after every other test that needs it healthy: it
changes the agents' ready timeout and the grid cache, and a failure here may leave a host down.

    python3 -m pytest tests/e2e/test_fault_kill.py
"""

from __future__ import annotations

import threading
import time

import labctl

# Short gates so the failure shows within a minute or two.
READY_TIMEOUT_S = 45


def test_killed_replica_stops_the_rollout(cluster):
    controller = cluster
    controller.write_vars(tb_agent_ready_timeout_ms=READY_TIMEOUT_S * 1000)
    controller.playbook("site.yml")
    controller.wait_ready()
    lab = controller.lab
    # The rollout's own order (inventory order, the current primary last).
    first, second, third = controller.tbctl(
        "rollout", "order", "--inventory", str(controller.inventory_path)).stdout.split()
    pids_before = {host: controller.replica_pid(host) for host in (first, second, third)}

    stop_killing = threading.Event()
    kills = []

    def kill_second_after_its_restart():
        # Wait until the rollout restarted the second host's replica (its pid changed)...
        while not stop_killing.is_set():
            pid = controller.replica_pid(second)
            if pid not in (0, pids_before[second]):
                break
            time.sleep(0.2)
        # ...then SIGKILL every process it gets, until told to stop.
        while not stop_killing.is_set():
            # The main process by pid: `systemctl kill` exits 1 in the lab's containers even
            # when it killed it ("Failed to send signal SIGKILL to auxiliary processes").
            result = lab.exec(second, "pid=$(systemctl show --property=MainPID --value "
                              "tigerbeetle.service); [ \"$pid\" -gt 0 ] && kill -KILL \"$pid\"",
                              check=False)
            if result.returncode == 0:
                kills.append(time.time())
            time.sleep(0.5)

    controller.set_inventory_vars(tigerbeetle_cache_grid="288MiB")
    killer = threading.Thread(target=kill_second_after_its_restart, daemon=True)
    killer.start()
    try:
        rollout = controller.playbook("rollout.yml", "-e", f"tb_ready_timeout_s={READY_TIMEOUT_S}",
                                      check=False)
        # The play failed at the second host and never touched the third.
        assert rollout.returncode != 0, rollout.tail()
        assert second in rollout.stdout
        failing = [line for line in rollout.stdout.splitlines() if "fatal:" in line]
        assert failing and all(second in line for line in failing), failing
        assert controller.replica_pid(third) == pids_before[third]
        unit = lab.exec(third, "cat /etc/systemd/system/tigerbeetle.service").stdout
        assert "--cache-grid=288MiB" not in unit
        # The cluster still answers (two of three replicas) while the second keeps dying.
        with controller.client(10) as client:
            time.sleep(10)
        report = client.stop()
        labctl.record("fault_kill", {"kills": len(kills), "client": report,
                                     "rollout_seconds": rollout.seconds,
                                     "failure": failing})
        assert report["failures"] == 0 and report["requests"] > 0, report
    finally:
        stop_killing.set()
        killer.join(timeout=30)
    assert kills, "the replica on the second host was never killed"
    forward_fix(controller, first, second, third, pids_before)


def forward_fix(controller, first: str, second: str, third: str, pids_before) -> None:
    """The second host, left down by the rollout, is repaired and the rollout finished."""
    # Crashed more often than its start limit allows: failed, and it stays failed.
    state = controller.unit_state(second, "tigerbeetle.service", until=["failed"], timeout_s=120)
    assert state["ActiveState"] == "failed", state
    timeout = ("-e", f"tb_ready_timeout_s={READY_TIMEOUT_S}")
    # The host stays failed: a short gate shows the refusal as well as a long one.
    rerun = controller.playbook("rollout.yml", "-e", "tb_ready_timeout_s=10", check=False)
    assert rerun.returncode != 0, rerun.tail()
    assert "pre-flight: not every replica is ready" in rerun.stdout, rerun.tail()
    assert "tigerbeetle_rollout_repair=<that host>" in rerun.stdout, rerun.tail()
    outside = controller.playbook("rollout.yml", *timeout, "--limit", third,
                                  "-e", f"tigerbeetle_rollout_repair={second}", check=False)
    assert outside.returncode != 0, outside.tail()
    assert "that the play covers" in outside.stdout, outside.tail()
    assert controller.replica_pid(third) == pids_before[third]
    # The repair and the host the failed rollout never reached (the first has the change): a
    # limit that covers the host to repair.
    with controller.client(300) as client:
        controller.playbook("rollout.yml", *timeout, "--limit", f"{second},{third}",
                            "-e", f"tigerbeetle_rollout_repair={second}")
    report = client.stop()
    assert report["failures"] == 0 and report["requests"] > 0, report
    assert controller.replica_pid(second) != 0
    assert controller.replica_pid(third) not in (0, pids_before[third])
    for host in (first, second, third):
        unit = controller.lab.exec(host, "cat /etc/systemd/system/tigerbeetle.service").stdout
        assert "--cache-grid=288MiB" in unit, host
    assert controller.tbctl("status", "--inventory", str(controller.inventory_path),
                            check=False).returncode == 0
    operator_start_after_start_limit(controller, second)


def operator_start_after_start_limit(controller, host: str) -> None:
    """A replica at its start limit (its data file unreadable, so it fails at once until systemd
    gives up) comes back, once repaired, with the operator's `tbctl start`: the agent resets the
    unit's failed state first, which the role's polkit rule grants on the replica unit alone.
    (The rollout's repair above resets it as root; this is the operator's way without Ansible.)"""
    replica = str(controller.host_names.index(host))
    data_file = f"/var/lib/tigerbeetle/0_{replica}.tigerbeetle"
    inventory = str(controller.inventory_path)
    controller.tbctl("stop", "--inventory", inventory, "--replica", replica)
    state = controller.fail_into_start_limit(host, "tigerbeetle.service", data_file)
    assert (state["ActiveState"], state["limit_hit"]) == ("failed", "True"), state
    controller.lab.exec(host, f"chmod 0600 {data_file}")
    started = controller.tbctl("start", "--inventory", inventory, "--replica", replica, check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    controller.wait_ready()
    denied = controller.lab.exec(host, "runuser -u tigerbeetle -- systemctl --no-ask-password "
                                       "reset-failed ssh.service", check=False)
    assert denied.returncode != 0, denied.stdout
