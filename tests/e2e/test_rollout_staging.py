"""End-to-end test: rollout.yml stages on every host at once, then activates one host at a time.

On the shared cluster (site.yml + bootstrap.yml), with a unit change (the cache grid, which
changes the replica unit and the inventory the agent reads):

1. A host whose staging fails (its staged unit's path is a directory) stops the play
   before any activation: no replica and no agent restarted, every active file unchanged, the
   other hosts' changes staged beside the active files, the lease released.
2. A replica killed (SIGKILL) with its change staged restarts on its active files: its new
   process's command line is the old one.
3. The rollout then activates every host in its turn while a client writes: each replica
   restarts once, in `tbctl rollout order`, never two down at once, no request fails, every
   replica runs the new command line, and no turn renews the lease by itself (the command
   before it did).
4. A re-run with nothing staged that differs restarts nothing and reports changed=0, also with
   the roles forced in full (-e tigerbeetle_stage_full=true): what the fast path staged in 3
   (every host's applied record matched) is byte for byte, mode and owner what the roles write.
5. An agent restart owed by an earlier run (its marker, left by a run that changed the agent's
   files and stopped before restarting it) is done by the next run: by rollout.yml (that agent
   only, no replica) and by site.yml.
6. Drift: a host that lost a file its prerequisites wrote (the polkit rule) stages in full,
   which puts it back, while the others stage fast; the next rollout stages fast everywhere.

    python3 -m pytest tests/e2e/test_rollout_staging.py
"""

from __future__ import annotations

import harness
import labctl

CLIENT_SECONDS_MAX = 900
# Not the cache grid of another test's change (test_rollout 288MiB, test_site's preview 320MiB).
GRID = "352MiB"
UNIT = "/etc/systemd/system/tigerbeetle.service"
AGENT_FILES = ("/etc/systemd/system/tb-agent.service", "/usr/local/bin/tb-agent",
               "/etc/tb-agent/settings.toml", "/etc/tigerbeetle/inventory.json")
AGENT_MARKER = "/run/tb-agent-restart-pending"


def snapshot(controller) -> dict[str, dict]:
    """Per host: the replica's and the agent's pids and the SHA-256 of every active file."""
    out = {}
    for host in controller.host_names:
        sums = controller.lab.exec(host, "sha256sum " + " ".join((UNIT,) + AGENT_FILES)).stdout
        out[host] = {"replica_pid": controller.replica_pid(host),
                     "agent_pid": controller.replica_pid(host, "tb-agent.service"),
                     "files": sums}
    return out


def replica_command_line(controller, host: str) -> str:
    pid = controller.replica_pid(host)
    assert pid != 0, host
    return controller.lab.exec(host, f"tr '\\0' ' ' </proc/{pid}/cmdline").stdout


def lease_is_free(controller) -> bool:
    """Takes and gives back the cluster's lease: only possible when nobody holds it."""
    inventory = ("--inventory", str(controller.inventory_path))
    taken = controller.tbctl("lease", "acquire", "--ttl", "60", "--holder", "e2e-staging",
                             *inventory, check=False)
    if taken.returncode != 0:
        return False
    controller.tbctl("--lease-id", taken.stdout.strip(), "lease", "release", *inventory)
    return True


def test_staging_then_activation(cluster):
    controller = cluster
    hosts = controller.host_names
    inventory = ("--inventory", str(controller.inventory_path))
    order = controller.tbctl("rollout", "order", *inventory).stdout.split()
    failing = order[-1]
    assert GRID not in replica_command_line(controller, hosts[0])
    controller.set_inventory_vars(tigerbeetle_cache_grid=GRID)

    # 1. One host's staging fails at its last step, the replica unit: its staged path is a
    # directory holding a directory of the template's name, which no file can be written over
    # (the other hosts write theirs at the same step).
    before = snapshot(controller)
    controller.lab.exec(failing, f"rm -f {UNIT}.staged && mkdir -p {UNIT}.staged/tigerbeetle.service.j2")
    try:
        failed = controller.playbook("rollout.yml", check=False)
    finally:
        controller.lab.exec(failing, f"rm -r {UNIT}.staged")
    assert failed.returncode != 0, failed.tail()
    fatal = [host for host in hosts if f"fatal: [{host}]" in failed.stdout]
    assert fatal == [failing], failed.tail()
    assert "Activate the staged" not in failed.stdout, failed.tail()
    assert snapshot(controller) == before, failed.tail()
    for host in hosts:
        staged = controller.lab.exec(host, f"cat {UNIT}.staged", check=False).stdout
        assert (f"--cache-grid={GRID}" in staged) == (host != failing), (host, staged)
        assert f"--cache-grid={GRID}" not in controller.lab.exec(host, f"cat {UNIT}").stdout
    assert lease_is_free(controller)
    labctl.log(f"staging failed on {failing}: nothing activated, nothing restarted")

    # 2. A replica killed with its change staged comes back on its active files.
    victim = order[0]
    old_pid = controller.replica_pid(victim)
    old_command = replica_command_line(controller, victim)
    controller.lab.exec(victim, "systemctl kill --signal=SIGKILL tigerbeetle.service")
    harness.wait_for(f"{victim}'s replica restarted by systemd",
                     lambda: controller.replica_pid(victim),
                     lambda pid: pid not in (0, old_pid), timeout_s=60, interval_s=0.2)
    assert replica_command_line(controller, victim) == old_command
    assert f"--cache-grid={GRID}" in controller.lab.exec(victim, f"cat {UNIT}.staged").stdout
    controller.wait_ready()

    # 3. The rollout activates each host in its turn.
    with labctl.Timeline(controller.lab) as timeline:
        with controller.client(CLIENT_SECONDS_MAX) as client:
            rollout = controller.playbook("rollout.yml")
        report = client.stop()
    # site.yml (or an earlier rollout) recorded what the prerequisites were applied from.
    assert rollout.staging_paths() == {host: "fast" for host in hosts}, rollout.tail(120)
    summary = timeline.summary()
    labctl.record("rollout-staging", {"client": report, "timeline": summary,
                                      "rollout_seconds": rollout.seconds})
    assert report["failures"] == 0 and report["requests"] > 0, report
    for host in hosts:
        pids = [pid for pid in timeline.pids(host) if pid != 0]
        assert len(pids) == 2, (host, summary)
        assert f"--cache-grid={GRID}" in replica_command_line(controller, host)
    first_down = [timeline.down_intervals(host)[0][0] for host in order]
    assert first_down == sorted(first_down), (order, summary)
    assert labctl.overlapping({h: timeline.down_intervals(h) for h in hosts}) == [], summary
    # The lease was renewed by the command before each turn (the gate after staging, then each
    # restart: --then-renew-lease-ttl-s), so no turn renewed it by itself.
    renewals = rollout.task_results("Renew the maintenance lease before this host")
    assert renewals == {host: ["skipping"] for host in hosts}, (renewals, rollout.tail(120))

    # 4. Nothing left to activate: nothing restarts, nothing changes, and the roles in full
    # find every file the fast path staged as they would have written it.
    before = snapshot(controller)
    noop = controller.playbook("rollout.yml", "-e", "tigerbeetle_stage_full=true")
    assert noop.staging_paths() == {host: "full" for host in hosts}, noop.tail(120)
    assert snapshot(controller) == before, noop.tail()
    assert all(h["changed"] == 0 for h in noop.recap().values()), (noop.recap(), noop.tail(120))

    # 5. An agent restart an earlier run left owed (its marker) is done, and only that.
    owed = order[1]
    before = snapshot(controller)
    controller.lab.exec(owed, f"echo owed >{AGENT_MARKER}")
    controller.playbook("rollout.yml")
    after = snapshot(controller)
    for host in hosts:
        assert after[host]["replica_pid"] == before[host]["replica_pid"], host
        assert (after[host]["agent_pid"] != before[host]["agent_pid"]) == (host == owed), host
    controller.lab.exec(owed, f"echo owed >{AGENT_MARKER}")
    controller.playbook("site.yml", "--limit", owed)
    assert controller.replica_pid(owed, "tb-agent.service") != after[owed]["agent_pid"]
    assert controller.replica_pid(owed) == after[owed]["replica_pid"]
    assert controller.lab.exec(owed, f"test -e {AGENT_MARKER}", check=False).returncode != 0
    controller.wait_ready()

    # 6. Drift in what the prerequisites wrote sends that host through the roles in full.
    drifted = order[0]
    rule = "/etc/polkit-1/rules.d/50-tb-agent.rules"
    before = snapshot(controller)
    controller.lab.exec(drifted, f"rm {rule}")
    repaired = controller.playbook("rollout.yml")
    assert repaired.staging_paths() == {host: "full" if host == drifted else "fast" for host in hosts}, \
        repaired.tail(120)
    assert f"{rule} differs or is gone" in " ".join(repaired.stdout.split()), repaired.tail(120)
    assert controller.lab.exec(drifted, f"test -s {rule}", check=False).returncode == 0
    assert {h: before[h]["replica_pid"] for h in hosts} == \
        {h: controller.replica_pid(h) for h in hosts}
    again = controller.playbook("rollout.yml")
    assert again.staging_paths() == {host: "fast" for host in hosts}, again.tail(120)
    assert all(h["changed"] == 0 for h in again.recap().values()), (again.recap(), again.tail(120))
