"""End-to-end: bootstrap.yml cannot format a live or damaged cluster, and completes a bootstrap
whose start failed. On the shared bootstrapped cluster, which it leaves healthy.

    python3 -m pytest tests/e2e/test_bootstrap_refusals.py

Every refusal must leave every data file as it was. While the replicas run they write their
data files (every request, the agents' probes included, is journaled), so the live refusals
compare what a format would change: the file's inode (bootstrap formats beside the final name and
renames) and size, and that no half-formatted file appeared. The refusal of a changed
tigerbeetle_data_dir runs with the replicas stopped, and there every data file's SHA-256 is
compared.
"""

from __future__ import annotations


import harness
import labctl

DATA_DIR = "/var/lib/tigerbeetle"
ELSEWHERE = "/srv/tigerbeetle-elsewhere"


def data_file(controller, host: str) -> str:
    replica = controller.inventory["all"]["hosts"][host]["tigerbeetle_replica"]
    cluster_id = controller.inventory["all"]["vars"]["tigerbeetle_cluster_id"]
    return f"{DATA_DIR}/{cluster_id}_{replica}.tigerbeetle"


def identities(controller) -> dict[str, tuple[str, int, str]]:
    """Per host: inode and size of its data file, and every file of the data directory (a
    half-formatted `.formatting` file would show)."""
    found = {}
    for host in controller.host_names:
        stat, _, listing = controller.lab.exec(
            host, f"stat -c '%i %s' {data_file(controller, host)}; ls -A {DATA_DIR}"
        ).stdout.partition("\n")
        inode, size = stat.split()
        found[host] = (inode, int(size), listing)
    return found


def assert_untouched(controller, before: dict[str, tuple[str, int, str]]) -> None:
    """The same data files, none replaced (a format makes a new file: a new inode) and none cut
    short; a running replica may grow its own (seen: 512 KiB while these tests ran)."""
    after = identities(controller)
    for host, (inode, size, listing) in before.items():
        assert (after[host][0], after[host][2]) == (inode, listing), (host, before, after)
        assert after[host][1] >= size, (host, before, after)


def hashes(controller) -> dict[str, str]:
    return {host: controller.lab.exec(host, f"sha256sum {data_file(controller, host)}",
                                      timeout_s=300).stdout.split()[0]
            for host in controller.host_names}


def assert_refused(run, *reasons: str) -> None:
    assert run.returncode != 0, run.tail()
    output = run.stdout + run.stderr
    for reason in reasons:
        assert reason in output, (reason, run.tail(80))
    assert "Format the data file" not in run.stdout, run.tail(80)


def test_limit_is_refused(cluster):
    controller = cluster
    before = identities(controller)
    binaries = {host: controller.lab.exec(host, "sha256sum /usr/local/bin/tigerbeetle").stdout
                for host in controller.host_names}
    one = controller.host_names[1]
    refused = controller.bootstrap("--limit", one, check=False)
    assert_refused(refused, "bootstrap.yml acts on the whole cluster", "given: " + one)
    # upgrade.yml swapped one host's binary before it failed on another host's facts.
    upgrade = controller.playbook("upgrade.yml", "--limit", one, check=False)
    assert upgrade.returncode != 0, upgrade.tail()
    assert "upgrade.yml acts on the whole cluster" in upgrade.stdout, upgrade.tail(80)
    assert "Install the new binary" not in upgrade.stdout, upgrade.tail(80)
    assert {host: controller.lab.exec(host, "sha256sum /usr/local/bin/tigerbeetle").stdout
            for host in controller.host_names} == binaries
    assert_untouched(controller, before)


def test_confirmation_is_required(cluster):
    controller = cluster
    before = identities(controller)
    tbctl = f"tbctl_path={controller.binaries['tbctl']}"
    missing = controller.playbook("bootstrap.yml", "-e", tbctl, check=False)
    assert_refused(missing, "Confirm that cluster", "given: nothing")
    cluster_id = controller.inventory["all"]["vars"]["tigerbeetle_cluster_id"]
    wrong = controller.playbook("bootstrap.yml", "-e", tbctl, "-e",
                                f"tigerbeetle_bootstrap_confirm={cluster_id}1", check=False)
    assert_refused(wrong, "Confirm that cluster", f"given: {cluster_id}1")
    assert_untouched(controller, before)


def test_bootstrap_check_sees_the_live_cluster(cluster):
    controller = cluster
    inventory = str(controller.inventory_path)
    for extra in ([], ["--data-files-expected"]):
        result = controller.tbctl("bootstrap-check", "--inventory", inventory, *extra, check=False)
        assert result.returncode == 3, (extra, result.stdout, result.stderr)
        for host in controller.inventory["all"]["hosts"].values():
            assert f"{host['tigerbeetle_address']} accepts connections" in result.stderr, result.stderr
        assert "got an answer" in result.stderr, result.stderr
        assert "reports the replica running" in result.stderr, result.stderr
        # The agents' data files count against a format, not against a first start.
        assert ("reports the data file /var/lib/tigerbeetle/" in result.stderr) == (not extra), \
            (extra, result.stderr)


def test_changed_data_dir_on_the_live_cluster_is_refused(cluster):
    controller = cluster
    before = identities(controller)
    refuse_changed_data_dir(controller, "the replica unit is active")
    assert_untouched(controller, before)


def refuse_changed_data_dir(controller, finding: str) -> None:
    """bootstrap.yml with a changed tigerbeetle_data_dir is refused, naming the installed unit's
    file, the existing data file, `finding` and the check; nothing is created there."""
    # An -e override of an inventory key is refused before anything: the roles read the
    # inventory file through tbctl (the agent and the replica's start guard read it too).
    overridden = controller.bootstrap("-e", f"tigerbeetle_data_dir={ELSEWHERE}", check=False)
    assert_refused(overridden, "Give inventory keys in the inventory file only")
    previous = controller.set_inventory_vars(tigerbeetle_data_dir=ELSEWHERE)
    try:
        refused = controller.bootstrap(check=False)
    finally:
        controller.restore_inventory_vars(previous)
    assert_refused(refused, "Refusing to format cluster", "the installed unit starts",
                   f"data file {data_file(controller, controller.host_names[0])} exists",
                   finding, "bootstrap-check (exit 3")
    for host in controller.host_names:
        assert controller.lab.exec(host, f"test -e {ELSEWHERE}", check=False).returncode != 0


def stop_cluster(controller) -> None:
    """Every replica stopped, and no agent's client still counting the cluster as answering."""
    for host in controller.host_names:
        controller.lab.exec(host, "systemctl stop tigerbeetle.service")
    harness.wait_for(
        "every replica stopped and no probe answered",
        lambda: [controller.agent(host, "/v1/status")["replica"]
                 for host in controller.host_names],
        lambda replicas: not any(replica["running"] or replica["probe_ok"]
                                 for replica in replicas),
        timeout_s=120, interval_s=1)


def test_changed_data_dir_on_a_stopped_cluster_is_refused_then_rerun_starts_it(cluster):
    controller = cluster
    stop_cluster(controller)
    inodes = {host: controller.lab.exec(host, f"stat -c %i {data_file(controller, host)}").stdout
              for host in controller.host_names}
    try:
        before = hashes(controller)
        # The old units still point at the old files; with a changed data directory every
        # host would look new to a check of the inventory's path alone.
        refuse_changed_data_dir(controller, "reports the data file")
        assert hashes(controller) == before
    finally:
        # Every data file exists and nothing runs, as after a bootstrap whose start failed:
        # the re-run starts the replicas (it never formats) and waits for the cluster.
        rerun = controller.bootstrap()
    assert "starting the replicas" in rerun.stdout, rerun.tail(80)
    assert {host: controller.lab.exec(host, f"stat -c %i {data_file(controller, host)}").stdout
            for host in controller.host_names} == inodes
    controller.wait_ready()
    labctl.log("bootstrap re-run started the stopped cluster")
