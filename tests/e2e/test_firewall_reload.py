"""End-to-end: the firewall survives the host's own firewall tooling, and its absence is seen.

Debian's /etc/nftables.conf begins with `flush ruleset`: nftables.service's start, reload,
restart and stop would remove the table inet tigerbeetle, and the replica port (no
authentication) would be open to every network. The role's drop-in loads the table again after
each; what no unit sees (a table deleted by hand) turns the agent's readiness check `firewall`
and tb_agent_firewall_rules_loaded to failing within the recorder's period, and back once the
table is loaded again. Shares the bootstrapped cluster (tests/e2e/run: after test_site.py) and
leaves it as it found it: healthy, nftables.service in its former state.

    python3 -m pytest tests/e2e/test_firewall_reload.py
"""

from __future__ import annotations

import time

import harness
import labctl

REPLICA_PORT = 3000
AGENT_PORT = 7443
# The recorder runs every 30 s (tb_agent_firewall_record_period_s); the agent re-reads the
# record at most every second and /metrics re-encodes at least every second.
RECORD_PERIOD_S = 30
FLIP_DEADLINE_S = RECORD_PERIOD_S + 15
# The recorder also runs after every start of the firewall unit: a restored table shows at once.
RESTORE_DEADLINE_S = 10
PROTECTED = {("controller", REPLICA_PORT): True, ("outsider", REPLICA_PORT): False}


def firewall_state(controller: labctl.Controller, host: str) -> tuple[dict | None, float | None]:
    """The agent's `firewall` readiness check and its tb_agent_firewall_rules_loaded line."""
    report = controller.agent(host, "/v1/health/ready")
    check = next((c for c in report["checks"] if c["name"] == "firewall"), None)
    return check, controller.metric(host, "tb_agent_firewall_rules_loaded")


def wait_firewall_state(controller: labctl.Controller, host: str, ok: bool,
                        deadline_s: float = FLIP_DEADLINE_S) -> dict:
    """Until the check and the metric both say `ok` (a deadline, not a sleep)."""
    check, _ = harness.wait_for(
        f"{host}'s firewall check and metric to say ok={ok}",
        lambda: firewall_state(controller, host),
        lambda seen: seen[0] is not None and seen[0]["ok"] == ok and seen[1] == float(ok),
        timeout_s=deadline_s, interval_s=1)
    return check


def test_nftables_service_keeps_the_table(cluster):
    controller = cluster
    lab = controller.lab
    host = lab.hosts()[0]
    was_active = lab.exec(host.name, "systemctl is-active nftables.service",
                          check=False).stdout.strip() == "active"
    # The distribution's unit and file, and its `flush ruleset`: what this test is about.
    conf = lab.exec(host.name, "cat /etc/nftables.conf").stdout
    assert "flush ruleset" in conf, conf
    try:
        # systemctl returns once the job, the drop-in's commands included, has run.
        for action in ("start", "reload", "restart", "stop", "start", "reload"):
            lab.exec(host.name, f"systemctl {action} nftables.service")
            verdicts = controller.firewall_verdicts(host.address, (REPLICA_PORT,))
            assert verdicts == PROTECTED, (action, verdicts)
    finally:
        lab.exec(host.name, f"systemctl {'start' if was_active else 'stop'} nftables.service",
                 check=False)
    assert controller.firewall_verdicts(host.address, (REPLICA_PORT, AGENT_PORT)) == {
        **PROTECTED, ("controller", AGENT_PORT): True, ("outsider", AGENT_PORT): False}
    controller.wait_ready()


def test_a_removed_table_fails_the_firewall_check(cluster):
    controller = cluster
    lab = controller.lab
    host = lab.hosts()[0]
    record = lab.exec(host.name, "stat -c '%U %a' /run/tigerbeetle-firewall/record.json; "
                                 "cat /run/tigerbeetle-firewall/record.json").stdout
    assert record.startswith("root 644\n"), record
    check = wait_firewall_state(controller, host.name, ok=True)
    assert f"drops ports {REPLICA_PORT}, {AGENT_PORT}" in check["detail"], check
    try:
        # What no unit sees: the table gone by hand. The port is open to anyone...
        lab.exec(host.name, "nft delete table inet tigerbeetle")
        verdicts = controller.firewall_verdicts(host.address, (REPLICA_PORT,))
        assert verdicts[("outsider", REPLICA_PORT)], verdicts
        # ...and the agent says so, in readiness and in /metrics, within the recorder's period.
        started = time.monotonic()
        check = wait_firewall_state(controller, host.name, ok=False)
        flipped_s = time.monotonic() - started
        assert "inet tigerbeetle is not loaded" in check["detail"], check
        assert "systemctl restart tigerbeetle-firewall.service" in check["detail"], check
        status = controller.tbctl("status", "--inventory", str(controller.inventory_path),
                                  check=False)
        assert status.returncode != 0, status.stdout
    finally:
        lab.exec(host.name, "systemctl restart tigerbeetle-firewall.service")
    # Loaded again: the check and the metric recover at once, the port is closed to outsiders.
    started = time.monotonic()
    wait_firewall_state(controller, host.name, ok=True, deadline_s=RESTORE_DEADLINE_S)
    restored_s = time.monotonic() - started
    assert controller.firewall_verdicts(host.address, (REPLICA_PORT,)) == PROTECTED
    controller.wait_ready()
    labctl.record("firewall_reload", {"check_failed_after_s": round(flipped_s, 1),
                                      "check_passed_after_s": round(restored_s, 1)})
