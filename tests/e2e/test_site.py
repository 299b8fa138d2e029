"""End-to-end test 1: site.yml + bootstrap.yml on 3 fresh hosts.

    python3 -m pytest tests/e2e/test_site.py
"""

from __future__ import annotations


import harness
import labctl


def test_site_and_bootstrap(cluster):
    controller = cluster
    # Every agent ready, through tbctl over verified TLS.
    result = controller.tbctl("status", "--inventory", str(controller.inventory_path), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for host in controller.host_names:
        status = controller.agent(host, "/v1/status")
        replica = status["replica"]
        # The agent's systemd path, for real: systemd runs the replica, the agent watches it.
        assert replica["run_mode"] == "systemd", replica
        assert replica["running"], replica
        pid = controller.replica_pid(host)
        assert pid > 0 and replica["pid"] == pid, (host, pid, replica["pid"])
        proc = controller.lab.exec(host, f"cat /proc/{pid}/status").stdout
        locked, resident = labctl.vm_kib(proc, "VmLck"), labctl.vm_kib(proc, "VmRSS")
        labctl.log(f"{host}: VmLck {locked} kB, VmRSS {resident} kB")
        assert locked >= 0.9 * resident, (host, locked, resident)
        # The replica runs as its own user; the agent as the same user, with the replica's one
        # capability and under a syscall filter (labctl.AGENT_LEAST_PRIVILEGE).
        user = controller.lab.exec(host, f"stat -c %U /proc/{pid}").stdout.strip()
        assert user == "tigerbeetle", user
        agent = controller.agent_process(host)
        assert agent == labctl.AGENT_LEAST_PRIVILEGE, (host, agent)
        # tbctl on the host, with the bash completion and man page it generated (tb_agent role).
        installed = controller.lab.exec(host, (
            "/usr/local/bin/tbctl --version && grep -q '^.TH tbctl 1' "
            "/usr/local/share/man/man1/tbctl.1 && grep -q '^.TH tbctl-restart 1' "
            "/usr/local/share/man/man1/tbctl-restart.1 "
            "&& bash -c '. /usr/share/bash-completion/completions/tbctl && complete -p tbctl'"),
            check=False)
        assert installed.returncode == 0, (host, installed.stdout, installed.stderr)
        assert "-F _tbctl" in installed.stdout, (host, installed.stdout)
        man_dir = controller.lab.exec(host, "stat -c %a /usr/local/share/man/man1").stdout
        assert man_dir.strip() == "755", (host, man_dir)


def test_firewall(cluster):
    controller = cluster
    lab = controller.lab
    target = lab.hosts()[0].address
    # The controller is in the client and orchestrator networks; the outsider in neither.
    # Other ports are not this firewall's business (sshd stays reachable).
    verdicts = controller.firewall_verdicts(target, (3000, 7443, 22))
    assert verdicts == {("controller", 3000): True, ("controller", 7443): True,
                        ("controller", 22): True, ("outsider", 3000): False,
                        ("outsider", 7443): False, ("outsider", 22): True}, verdicts
    # Peers reach each other's replica port (they are not in the client networks).
    peer = lab.hosts()[1].name
    lab.exec(peer, f"timeout 3 bash -c '</dev/tcp/{target}/3000'")


def test_agent_may_control_only_the_replica_unit(cluster):
    lab = cluster.lab
    host = lab.hosts()[0].name
    # polkit lets the agent's user (the replica's) start the replica unit (already running: a
    # no-op)...
    lab.exec(host, "runuser -u tigerbeetle -- systemctl start tigerbeetle.service")
    # ...and nothing else.
    denied = lab.exec(host, "runuser -u tigerbeetle -- systemctl --no-ask-password restart ssh.service",
                      check=False)
    assert denied.returncode != 0, denied.stdout


def test_scheduled_backups_are_the_agents(cluster):
    """Scheduled backups live in the agent (`[backup] schedule` in its settings): the roles write
    the schedule there, install no timer, service, client script or backup token, and every agent
    runs its scheduler (it logs its next tick). That an agent takes a scheduled backup by itself
    is tests/tests/backup_schedule.rs; one during a rollout, test_rollout.py."""
    controller = cluster
    lab = controller.lab
    for host in controller.host_names:
        settings = lab.exec(host, "cat /etc/tb-agent/settings.toml").stdout
        assert f'schedule = "{labctl.BACKUP_SCHEDULE}"' in settings, (host, settings)
        leftovers = lab.exec(host, "systemctl cat tb-agent-backup.timer tb-agent-backup.service; "
                                   "ls /etc/tb-agent/backup.token", check=False)
        assert leftovers.returncode != 0 and "[Timer]" not in leftovers.stdout, (host, leftovers.stdout)
        harness.wait_for(f"{host}'s agent to log its next scheduled backup",
                         lambda host=host: controller.journal(host, "tb-agent.service", lines=400),
                         lambda journal: "next scheduled backup" in journal,
                         timeout_s=60, interval_s=1)


def test_second_run_changes_nothing(cluster):
    controller = cluster
    second = controller.playbook("site.yml")
    recap = second.recap()
    assert set(recap) == set(controller.host_names), recap
    assert all(host["changed"] == 0 for host in recap.values()), (recap, second.tail(120))
    # bootstrap.yml on a bootstrapped cluster formats nothing.
    again = controller.bootstrap()
    assert "nothing to format" in again.stdout
    assert all(host["changed"] == 0 for host in again.recap().values()), again.tail()


def test_check_mode_changes_nothing(cluster):
    controller = cluster
    lab = controller.lab
    host = lab.hosts()[0].name
    before = lab.exec(host, "sha256sum /etc/systemd/system/tigerbeetle.service "
                            "/etc/tb-agent/settings.toml /etc/tigerbeetle/inventory.json").stdout
    # On a configured host with nothing pending, --check --diff has nothing to report either.
    clean = controller.playbook("site.yml", "--check", "--diff")
    recap = clean.recap()
    assert set(recap) == set(controller.host_names), recap
    assert all(h["changed"] == 0 for h in recap.values()), (recap, clean.tail(120))
    assert "\n--- before" not in clean.stdout and "\n+++ after" not in clean.stdout, clean.tail(120)
    # A pending change shown with --check --diff is reported but not applied (and not refused:
    # check mode only looks).
    previous = controller.set_inventory_vars(tigerbeetle_cache_grid="320MiB")
    try:
        preview = controller.playbook("rollout.yml", "--check", "--diff")
    finally:
        controller.restore_inventory_vars(previous)
    assert "--cache-grid=320MiB" in preview.stdout, preview.tail()
    after = lab.exec(host, "sha256sum /etc/systemd/system/tigerbeetle.service "
                           "/etc/tb-agent/settings.toml /etc/tigerbeetle/inventory.json").stdout
    assert before == after
    assert controller.tbctl("status", "--inventory", str(controller.inventory_path),
                            check=False).returncode == 0
