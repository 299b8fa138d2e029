"""End-to-end: a cluster deployed with the earlier layout, where the agent ran as a user of its
own (tb-agent, in the replica's group, with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE), moves to
the agent as the replica's user with CAP_IPC_LOCK only and a syscall filter, through
rollout.yml, one host at a time, while a client writes.

The earlier layout is the real one: site.yml and bootstrap.yml of the last commit that had it
(OLD_LAYOUT_COMMIT), with this tree's binaries. Its ansible/ is kept as a fixture made by
`git archive --format=tar 8c7f892 ansible | gzip -n -9`, so a shallow clone (CI's may be one)
runs the test as well. A backup taken
by that agent must still be readable and verifiable by the new one; every file the old user
owned is handed over, the old user keeps no group; no client request fails, and each replica
restarts once (the same release changes its unit), never two at once; a second site.yml
changes nothing.

    python3 -m pytest tests/e2e/test_agent_user_migration.py
"""

from __future__ import annotations

import subprocess

import harness
import labctl

# The last commit whose roles ran the agent as tb-agent.
OLD_LAYOUT_COMMIT = "8c7f892e6b18c219c1e80638f3fcc899d762603a"
OLD_LAYOUT_ARCHIVE = labctl.REPO / "tests/e2e/fixtures/ansible-8c7f892.tar.gz"
OLD_USER = "tb-agent"
# Where the old agent's files are: its config and secrets, audit log, backups, the data directory.
AGENT_PATHS = "/etc/tb-agent /var/log/tb-agent /var/lib/tb-backups /var/lib/tigerbeetle"
STATSD_WAIT_S = 60
# The old layout's scheduled-backup timer, service and token (its role's templates, shortened), and
# its agent's configuration file: the roles of this tree remove all of them.
LEGACY_FILES = ("/etc/systemd/system/tb-agent-backup.timer /etc/systemd/system/tb-agent-backup.service "
                "/etc/tb-agent/backup.token /etc/tb-agent/tb-agent.toml")
LEGACY_TIMER_SETUP = (
    "printf '[Unit]\\nDescription=old scheduled backup\\n[Service]\\nType=oneshot\\n"
    "ExecStart=/bin/true\\n' >/etc/systemd/system/tb-agent-backup.service && "
    "printf '[Unit]\\nDescription=old scheduled backup\\n[Timer]\\nOnCalendar=daily\\n"
    "[Install]\\nWantedBy=timers.target\\n' >/etc/systemd/system/tb-agent-backup.timer && "
    "install -m 0600 /dev/null /etc/tb-agent/backup.token && "
    "systemctl daemon-reload && systemctl enable --now tb-agent-backup.timer")
# Prints those of LEGACY_FILES that exist.
LEGACY_LIST = f"for f in {LEGACY_FILES}; do if [ -e $f ]; then echo $f; fi; done"


def old_ansible_dir(controller):
    """ansible/ as it was at OLD_LAYOUT_COMMIT, unpacked in the controller's work directory."""
    target = controller.work / "old-layout"
    target.mkdir()
    subprocess.run(["tar", "-xzf", str(OLD_LAYOUT_ARCHIVE), "-C", str(target)], check=True)
    return target / "ansible"


def old_owned(controller, host: str) -> list[str]:
    """Paths under the agent's directories still owned by the old user or its group."""
    out = controller.lab.exec(host, f"find {AGENT_PATHS} -xdev \\( -user {OLD_USER} -o "
                                    f"-group {OLD_USER} \\) -print 2>/dev/null || true").stdout
    return out.split()


def statsd_accepted(controller, host: str) -> None:
    """The agent (restarted) accepts its replica's StatsD datagrams: the origin check read the
    replica's /proc/PID/fd; none is rejected for an unknown owner."""
    def statsd_series() -> dict[str, float]:
        metrics = controller.agent_text(host, "/metrics")
        # "name{labels} value"; a series without labels is written "name{}".
        return {line.split(" ")[0].removesuffix("{}"): float(line.split(" ")[-1])
                for line in metrics.splitlines() if line.startswith("tb_agent_statsd_")}
    values = harness.wait_for(
        f"{host}'s agent to accept StatsD packets", statsd_series,
        lambda values: values.get("tb_agent_statsd_packets_total", 0) > 0,
        timeout_s=STATSD_WAIT_S, interval_s=1)
    assert values.get('tb_agent_statsd_rejected_total{reason="owner_unknown"}', 0) == 0, values


def test_agent_moves_to_the_replicas_user_through_the_rollout(controller):
    lab = controller.lab
    hosts = controller.host_names
    old = old_ansible_dir(controller)
    # The old layout's scheduled backups were a timer with a token of their own, which the lab
    # no longer makes (the agent schedules them now): the old layout runs without a schedule.
    no_old_timer = ("-e", "tb_agent_backup_schedule=")
    controller.playbook("site.yml", *no_old_timer, ansible_dir=old)
    controller.bootstrap(*no_old_timer, ansible_dir=old)
    controller.wait_ready()
    for host in hosts:
        assert controller.agent_process(host)["user"] == OLD_USER, host
    # A backup by the old agent: files of the old user in the backup directory.
    controller.tbctl("backup", "--inventory", str(controller.inventory_path), "--replica", "0",
                     timeout_s=600)
    (backup,) = controller.backups(hosts[0])
    assert old_owned(controller, hosts[0]), "the old layout left no file of its user"
    controller.wait_ready()

    # What the old layout's scheduled backups left on a host set up with them (its timer, its
    # service, its token), as the old role wrote them, beside the old agent's configuration file.
    for host in hosts:
        lab.exec(host, LEGACY_TIMER_SETUP)
        assert lab.exec(host, LEGACY_LIST).stdout.split() == LEGACY_FILES.split(), host

    pids = {host: controller.replica_pid(host) for host in hosts}
    with labctl.Timeline(lab) as timeline:
        with controller.client(600) as client:
            rollout = controller.playbook("rollout.yml")
        report = client.stop()
    labctl.record("agent_user_migration", {"client": report, "timeline": timeline.summary(),
                                           "rollout_seconds": rollout.seconds})
    assert report["failures"] == 0 and report["requests"] > 0, report
    # The replica's unit changed in the same release (UMask 0077, exit 78 a success status):
    # each replica restarted once, through its agent, never two down at once.
    for host in hosts:
        restarted = [pid for pid in timeline.pids(host) if pid != 0]
        assert len(restarted) == 2 and restarted[0] == pids[host], (host, timeline.pids(host))
    assert labctl.overlapping({h: timeline.down_intervals(h) for h in hosts}) == [], \
        timeline.summary()

    for host in hosts:
        # Removed by the roles, the timer stopped first.
        leftovers = lab.exec(host, f"{LEGACY_LIST}; systemctl is-active tb-agent-backup.timer",
                             check=False).stdout.split()
        assert leftovers == ["inactive"], (host, leftovers)
        assert controller.agent_process(host) == labctl.AGENT_LEAST_PRIVILEGE, host
        assert old_owned(controller, host) == [], host
        groups = lab.exec(host, f"id -nG {OLD_USER}").stdout.split()
        assert groups == [OLD_USER], (host, groups)
        statsd_accepted(controller, host)
    # The old agent's backup: listed, read whole and re-hashed by the new agent.
    assert [b["id"] for b in controller.backups(hosts[0])] == [backup["id"]]
    verified = controller.agent(hosts[0], f"/v1/backups/{backup['id']}/verify", method="POST",
                                timeout_s=120)
    assert "error" not in verified, verified
    assert controller.tbctl("status", "--inventory", str(controller.inventory_path),
                            check=False).returncode == 0

    second = controller.playbook("site.yml")
    assert all(h["changed"] == 0 for h in second.recap().values()), second.tail(120)
