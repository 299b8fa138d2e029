"""End-to-end test 6: backup.yml backs up every replica, one at a time, while a client writes;
then a deleted data file comes back with recover.yml (tigerbeetle recover, never format), and
bootstrap.yml refuses the partial cluster in between.

    python3 -m pytest tests/e2e/test_backup_recover.py
"""

from __future__ import annotations

import labctl


def test_backup_then_recover(cluster):
    controller = cluster
    lab = controller.lab
    hosts = controller.host_names

    # A shared lab may hold a backup already (test_site starts the scheduled backup once).
    before = {host: len(controller.backups(host)) for host in hosts}
    with controller.client(600) as client:
        backup = controller.playbook("backup.yml")
    report = client.stop()
    assert report["failures"] == 0 and report["requests"] > 0, report
    after = {host: len(controller.backups(host)) for host in hosts}
    assert all(after[host] == before[host] + 1 for host in hosts), (before, after)

    # Lose one replica's data file: stop it through its agent (quorum guarded), delete the file.
    lost = hosts[1]
    controller.tbctl("stop", "--inventory", str(controller.inventory_path), "--replica", "1")
    data_file = "/var/lib/tigerbeetle/0_1.tigerbeetle"
    lab.exec(lost, f"rm {data_file}")

    # The unit refuses to start without it (its main process exits 78 right after the start,
    # Type=exec), is not restarted, and says what to do instead of formatting. 78 is a success
    # status: the unit ends inactive, not failed.
    state = controller.start_refused(lost, "tigerbeetle.service")
    assert (state["refused"], state["ActiveState"], state["NRestarts"]) == ("True", "inactive", "0"), state
    journal = controller.journal(lost, "tigerbeetle.service", lines=20)
    assert "does not exist; refusing to start" in journal and "recover" in journal, journal
    # The agent's readiness says why the replica does not run.
    ready = controller.readiness_until(lost, "does not exist")
    assert "data file /var/lib/tigerbeetle/0_1.tigerbeetle does not exist" in ready, ready
    lab.exec(lost, "systemctl reset-failed tigerbeetle.service", check=False)

    # bootstrap.yml sees a partial cluster and refuses without changing anything.
    refused = controller.bootstrap(check=False)
    assert refused.returncode != 0
    assert "Rebuild each missing replica with recover.yml" in refused.stdout, refused.tail()
    assert lab.exec(lost, f"test -e {data_file}", check=False).returncode != 0

    with controller.client(900) as client:
        recover = controller.playbook("recover.yml", "-e",
                                      '{"tigerbeetle_recover_hosts": ["%s"]}' % lost)
    report_recover = client.stop()
    labctl.record("backup_recover", {"backup_seconds": backup.seconds, "client_backup": report,
                                     "recover_seconds": recover.seconds,
                                     "client_recover": report_recover})
    assert report_recover["failures"] == 0, report_recover
    assert lab.exec(lost, f"test -e {data_file}", check=False).returncode == 0
    # `tigerbeetle recover` ran as the agent's child, under its unit: the replica's user, its one
    # capability and SystemCallFilter=@system-service (io_uring included); the file is the
    # replica's.
    assert controller.agent_process(lost) == labctl.AGENT_LEAST_PRIVILEGE
    assert lab.exec(lost, f"stat -c %U {data_file}").stdout.strip() == "tigerbeetle"
    assert controller.tbctl("status", "--inventory", str(controller.inventory_path),
                            check=False).returncode == 0
    # recover, not format: the agent's audit log and job say so.
    audit = lab.exec(lost, "cat /var/log/tb-agent/audit.jsonl").stdout
    assert "recover" in audit
