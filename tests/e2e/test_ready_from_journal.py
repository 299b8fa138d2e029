"""End-to-end: readiness from the replica's own log in systemd mode (issue 16, item 1).

The agent, as its real unit and unprivileged user, follows the journal entries of the replica
unit's current main process (journalctl --follow _SYSTEMD_UNIT=... _PID=..., fields journald sets
itself; an entry's own time, __MONOTONIC_TIMESTAMP, is when it counts): a restarted replica
is ready as soon as its log shows it rejoined, not ~10 s later at its first StatsD report; the
readiness report says which evidence it used. A line another local process writes into the
journal, in the replica's words, changes nothing: only entries whose journald-set fields name the
unit's invocation and main pid count. Shares the bootstrapped cluster and leaves it healthy.

    python3 -m pytest tests/e2e/test_ready_from_journal.py

"""

from __future__ import annotations

import statistics
import threading
import time

import labctl

# Restart → ready (the agent's restart answers once ready again): a bound only the log can meet,
# since the first StatsD report of a new process comes about 10 s after its start. Issue 16's
# target of 2 s is bench/rollout's; here 1.8-4.5 s, median 2.2 s (2026-12-06).
RESTART_TO_READY_MEDIAN_MAX_S = 5.0
FORGED_WATCH_S = 5
# Over two StatsD intervals (10 s each) and the staleness limit: any report the new process
# sends, and the end of the log's young-process window, fall inside the watch.
NEVER_REJOINS_WATCH_S = 25
# The staleness limit (15 s) from the last report before the freeze (up to 10 s earlier), and a
# margin for this 2-core machine.
HUNG_DETECTED_MAX_S = 40
# A replica on the cluster's newest checkpoint is less than this far behind (replica/gate.rs).
LAG_BOUND_OPS = 992
# Two StatsD intervals.
STATSD_REPORT_WAIT_S = 20
# Where the agent hands its evidence to its next run (replica/handover.rs).
HANDOVER_FILE = "/run/tb-agent/replica-evidence.json"
# An agent restart that a StatsD report beat to the replica's restart is tried again.
HANDOVER_ATTEMPTS = 3
# The cluster's first checkpoint (TigerBeetle's checkpoint interval, 960 ops, less one): past
# it, every replica's unit has written a checkpoint line.
FIRST_CHECKPOINT_OP = 959
# How long the client may write until every agent knows a checkpoint past the first.
CHECKPOINT_WRITES_MAX_S = 90
# From a replica's restart to its agent vouching for the new process's checkpoint: its unit's
# journal is searched 1 s after the agent first sees the process, at its next poll (every 1 s);
# the restart itself takes 1-4 s here. Under the new process's first StatsD report, 10 s after
# its state machine opened.
YOUNG_CHECKPOINT_KNOWN_MAX_S = 9


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def test_restart_is_ready_from_the_journal(cluster: labctl.Controller):
    cluster.wait_ready()
    order = cluster.tbctl("rollout", "order", "--inventory",
                          str(cluster.inventory_path)).stdout.split()
    times = []
    for host in order:
        asked = time.monotonic()
        seen = []
        result = {}
        restart = threading.Thread(target=lambda: result.update(answer=cluster.agent(
            host, "/v1/replica/restart", method="POST", timeout_s=120)))
        restart.start()
        while restart.is_alive():
            report = cluster.agent(host, "/v1/health/ready")
            detail = check(report, "replica_status")["detail"]
            if not seen or seen[-1] != detail:
                seen.append(detail)
            time.sleep(0.3)
        restart.join()
        answer = result["answer"]
        took = time.monotonic() - asked
        labctl.log(f"{host}: replica_status during the restart: {seen}")
        assert answer.get("outcome") == "restarted", answer
        report = cluster.agent(host, "/v1/health/ready")
        assert report["ready"], report
        detail = check(report, "replica_status")["detail"]
        # The agent's own figure: from the stop to ready again (the request's time adds the
        # HTTPS calls and this loop's polling).
        ready_s = answer["downtime_ms"] / 1000
        # The evidence at the gate, as the agent recorded it when readiness first passed for
        # this process: a report read later may already name a StatsD gauge that arrived since.
        source = cluster.gate_source(host)
        labctl.log(f"{host}: restart → ready {ready_s:.2f} s by the agent on its {source}, "
                   f"request {took:.2f} s (now: {detail})")
        assert source == "log", (
            f"{report}\n{cluster.journal(host, 'tb-agent.service', 40).replace('warning(message_bus)', '')}\n"
            f"{cluster.journal(host, 'tigerbeetle.service', 15)}\n"
            + cluster.lab.exec(host, "systemctl show -p InvocationID -p MainPID tigerbeetle.service;"
                               " journalctl -u tigerbeetle.service -o json -n 2 --output-fields="
                               "_PID,_SYSTEMD_UNIT,_SYSTEMD_INVOCATION_ID;"
                               " grep -rh 'unit' /etc/tb-agent/ 2>&1 | head -5;"
                               " pid=$(systemctl show -p MainPID --value tigerbeetle.service);"
                               " user=$(systemctl show -p User --value tb-agent.service);"
                               " echo user=$user; grep Groups /proc/$(systemctl show -p MainPID"
                               " --value tb-agent.service)/status; ls -la /var/log/journal/*/ | head -4;"
                               " timeout 5 systemd-run --quiet --wait --pipe -p User=$user"
                               " -p SupplementaryGroups=systemd-journal -p SystemCallFilter=@system-service"
                               " -p ProtectSystem=strict journalctl --follow"
                               " --no-tail --quiet --no-pager --output=json --output-fields="
                               "MESSAGE,_PID,_SYSTEMD_UNIT,_SYSTEMD_INVOCATION_ID"
                               " _SYSTEMD_UNIT=tigerbeetle.service _PID=$pid 2>&1 | head -c 1500",
                               check=False).stdout)
        # The gate on the log passed on the checkpoint comparison (the replica's at least the
        # cluster's newest, asked of the other agents): the bound's series exists only then.
        bound = cluster.metric(host, "tb_agent_replica_gate_checkpoint_lag_bound_ops")
        assert bound is not None and bound <= LAG_BOUND_OPS, bound
        times.append(ready_s)
        cluster.wait_ready()
    median = statistics.median(times)
    labctl.log(f"restart → ready median {median:.2f} s over {times}")
    assert median <= RESTART_TO_READY_MEDIAN_MAX_S, times


def wait_for_a_statsd_report(cluster: labctl.Controller, host: str) -> None:
    """Until the agent received a StatsD datagram it had not before, and the rest of that report:
    the next report is then ~10 s away."""
    def last_packet() -> float:
        last = cluster.metric(host, "tb_agent_statsd_last_packet_timestamp_seconds")
        assert last is not None, f"{host}: no tb_agent_statsd_last_packet_timestamp_seconds"
        return last
    before = last_packet()
    labctl.harness.wait_for(f"{host}'s agent to receive a StatsD report", last_packet,
                            lambda last: last > before, timeout_s=STATSD_REPORT_WAIT_S,
                            interval_s=0.2)
    time.sleep(0.5)


def statsd_packets(cluster: labctl.Controller, host: str) -> float:
    """StatsD datagrams the host's agent accepted since it started."""
    packets = cluster.metric(host, "tb_agent_statsd_packets_total")
    assert packets is not None, f"{host}: no tb_agent_statsd_packets_total"
    return packets


def restart_agent_then_replica(cluster: labctl.Controller, host: str, agent_restart: str) -> str:
    """The agent restarted by `agent_restart` (a shell command) right after a StatsD report, so
    the new run hears none before the replica's restart (checked: a report in between would give
    the new run evidence of its own, and the attempt is made again); then the replica restarted
    through it. The evidence that passed the new process's gate."""
    for _ in range(HANDOVER_ATTEMPTS):
        wait_for_a_statsd_report(cluster, host)
        cluster.lab.exec(host, agent_restart)
        if statsd_packets(cluster, host) == 0:
            break
        labctl.log(f"{host}: a StatsD report reached the new agent before the restart; again")
    else:
        raise AssertionError(f"{host}: a StatsD report came before every replica restart")
    answer = cluster.agent(host, "/v1/replica/restart", method="POST", timeout_s=120)
    assert answer.get("outcome") == "restarted", answer
    source = cluster.gate_source(host)
    labctl.log(f"{host}: after `{agent_restart}`, ready in {answer['downtime_ms']} ms on {source}")
    cluster.wait_ready()
    return source


def test_an_agent_restart_hands_the_evidence_over(cluster: labctl.Controller):
    """A rollout restarts the agent (its binary or settings changed) right before the replica.
    The agent's evidence about the replica process (its view, caught up, its commit trend)
    passes to the next run through its runtime directory, so the restarted replica is still
    ready on its log. Without the file (the same restart, the file removed between stop and
    start) the new run knows nothing of the process before and waits for StatsD: the file is what
    makes the difference."""
    cluster.wait_ready()
    host = cluster.host_names[1]
    user = cluster.lab.exec(host, "systemctl show -p User --value tb-agent.service").stdout.strip()
    assert cluster.lab.exec(host, "stat -c '%a %U' /run/tb-agent").stdout.split() == ["700", user]
    assert restart_agent_then_replica(
        cluster, host, "systemctl restart tb-agent.service") == "log"
    # This run of the agent (its invocation) took the evidence over.
    took_over = cluster.lab.exec(
        host, "journalctl _SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value"
              " tb-agent.service) -o cat | grep -c 'took over the previous run'",
        check=False).stdout.strip()
    assert took_over not in ("", "0"), took_over
    # The file was there (the agent wrote it at its stop); the agent starts again whatever
    # happened, so a failure here leaves the shared cluster whole.
    assert restart_agent_then_replica(
        cluster, host, f"systemctl stop tb-agent.service; test -f {HANDOVER_FILE}; there=$?;"
        f" rm -f {HANDOVER_FILE}; systemctl start tb-agent.service; exit $there") == "statsd"


def test_a_forged_journal_line_is_ignored(cluster: labctl.Controller):
    cluster.wait_ready()
    host = cluster.host_names[0]
    answer = cluster.agent(host, "/v1/replica/restart", method="POST", timeout_s=120)
    assert answer.get("outcome") == "restarted", answer
    # A state line in the replica's words, from another process (its own _PID and invocation):
    # accepted, it would hold readiness (a sync in progress) until the next StatsD report.
    forged = ("$(date -u '+%Y-%m-%d %H:%M:%S.000Z') info(replica): 0n: "
              "sync: ops=0..99999/0..99999")
    cluster.lab.exec(host, f'echo "{forged}" | systemd-cat --identifier=tigerbeetle')
    deadline = time.monotonic() + FORGED_WATCH_S
    while time.monotonic() < deadline:
        report = cluster.agent(host, "/v1/health/ready")
        assert report["ready"], report
        assert "99999" not in check(report, "replica_sync")["detail"], report
        time.sleep(0.2)


def test_a_replica_that_never_rejoins_stays_not_ready(cluster: labctl.Controller):
    """A restarted replica that cannot rejoin (the two others stopped: no quorum, no primary)
    never reports ready, over more than two StatsD intervals. Its log may still say normal: a
    restarted backup logs normal status in its own saved view before it has heard from anyone
    (replica_log's first trap), so the probe must be answered after the process started, and
    without a quorum none is. The others started again, it rejoins."""
    cluster.wait_ready()
    host, *others = cluster.host_names
    try:
        # Past the agents (whose quorum guard would refuse): the operator's own systemctl.
        for other in others:
            cluster.lab.exec(other, "systemctl stop tigerbeetle.service")
        cluster.lab.exec(host, "systemctl restart tigerbeetle.service")
        pid = cluster.replica_pid(host)
        assert pid != 0
        deadline = time.monotonic() + NEVER_REJOINS_WATCH_S
        seen = set()
        while time.monotonic() < deadline:
            report = cluster.agent(host, "/v1/health/ready")
            seen.add(tuple(c["name"] for c in report["checks"] if not c["ok"]))
            assert not report["ready"], report
            time.sleep(0.5)
        # The same process the whole time: it neither rejoined nor crashed out of the test.
        assert cluster.replica_pid(host) == pid
        labctl.log(f"{host} without quorum, the failing checks were: {sorted(seen)}")
    finally:
        for other in others:
            cluster.lab.exec(other, "systemctl start tigerbeetle.service")
    cluster.wait_ready()


def test_a_hung_replica_is_not_ready(cluster: labctl.Controller):
    """A replica whose process stops running without exiting (its cgroup frozen, as a hung event
    loop would look from outside) sends no StatsD and logs nothing: the log's last word (normal
    status) must not keep it ready. The agent reports it not ready within the staleness limit
    (15 s) of its last report, and ready again once it runs."""
    cluster.wait_ready()
    host = cluster.host_names[-1]
    frozen_at = time.monotonic()
    cluster.lab.freeze_unit(host, "tigerbeetle.service", frozen=True)
    try:
        # Its replica_status fails: the log's last word (normal) no longer stands alone, and
        # StatsD's last report went stale.
        report = labctl.harness.wait_for(
            f"{host}'s agent to report its frozen replica's status stale",
            lambda: cluster.agent(host, "/v1/health/ready"),
            lambda report: not check(report, "replica_status")["ok"],
            timeout_s=HUNG_DETECTED_MAX_S, interval_s=0.5)
        assert not report["ready"], report
        labctl.log(f"{host} frozen: not ready after {time.monotonic() - frozen_at:.1f} s: "
                   f"{[c for c in report['checks'] if not c['ok']]}")
        # Held: still frozen, still not ready.
        time.sleep(2)
        assert not cluster.agent(host, "/v1/health/ready")["ready"]
    finally:
        cluster.lab.freeze_unit(host, "tigerbeetle.service", frozen=False)
    cluster.wait_ready()


def test_operator_restarts_do_not_use_up_the_start_limit(cluster: labctl.Controller):
    """systemd counts every start against the unit's start limit, an operator's too: more
    restarts through the agent than the limit allows (a few rollouts in a row) must each bring the
    replica back, while a crash loop stays bounded (test_fault_kill). Before, the restart one past
    the limit failed after its stop and left the replica down."""
    cluster.wait_ready()
    host = cluster.host_names[-1]
    burst = int(cluster.lab.exec(
        host, "systemctl show -p StartLimitBurst --value tigerbeetle.service").stdout.strip())
    assert 0 < burst < 20, burst
    for attempt in range(burst + 1):
        answer = cluster.agent(host, "/v1/replica/restart", method="POST", timeout_s=120)
        assert answer.get("outcome") == "restarted", (attempt, answer)
    assert cluster.agent(host, "/v1/health/ready")["ready"]
    cluster.wait_ready()


def status(cluster: labctl.Controller, host: str) -> dict:
    return cluster.agent(host, "/v1/status")["replica"]


def test_the_old_primary_restarted_last_is_ready_on_its_log(cluster: labctl.Controller):
    """rollout.yml restarts the primary last, and its view change makes a replica restarted a
    turn before the new primary. The old primary's gate on its log compares its checkpoint with
    the new primary's, which that young process's agent must vouch for before its first StatsD
    report (~10 s after its start) and before its log shows a checkpoint of its own: from its
    unit's journal, whose newest checkpoint line is at least the one the process opened at.
    Without it the old primary's gate waited for StatsD (bench/README.md)."""
    cluster.wait_ready()
    hosts = cluster.host_names
    with cluster.client(CHECKPOINT_WRITES_MAX_S + 30) as client:
        labctl.harness.wait_for(
            "every agent to know a checkpoint past the cluster's first",
            lambda: [status(cluster, host)["checkpoint_op"] for host in hosts],
            lambda ops: all(op is not None and op > FIRST_CHECKPOINT_OP for op in ops),
            timeout_s=CHECKPOINT_WRITES_MAX_S, interval_s=1)
    client.stop()
    view = cluster.cluster_view(timeout_s=STATSD_REPORT_WAIT_S * 2)
    primary, successor = hosts[view % len(hosts)], hosts[(view + 1) % len(hosts)]
    before = status(cluster, successor)["checkpoint_op"]
    restarted = time.monotonic()
    answer = cluster.agent(successor, "/v1/replica/restart", method="POST", timeout_s=120)
    assert answer.get("outcome") == "restarted", answer
    young = labctl.harness.wait_for(
        f"{successor}'s agent to vouch for its new process's checkpoint",
        lambda: status(cluster, successor),
        lambda replica: replica["checkpoint_op"] is not None,
        timeout_s=max(0.0, YOUNG_CHECKPOINT_KNOWN_MAX_S - (time.monotonic() - restarted)),
        interval_s=0.2)
    # Not from StatsD: the new process has sent no report yet. Never below the true checkpoint.
    assert young["replica_status"] is None, young
    assert young["checkpoint_op"] >= before, (young, before)
    answer = cluster.agent(primary, "/v1/replica/restart", method="POST", timeout_s=120)
    assert answer.get("outcome") == "restarted", answer
    source = cluster.gate_source(primary)
    labctl.log(f"{primary} (primary of view {view}) restarted after {successor}: ready in "
               f"{answer['downtime_ms']} ms on its {source}; {successor} vouched for checkpoint "
               f"{young['checkpoint_op']} (before its restart: {before})")
    assert source == "log", cluster.journal(primary, "tb-agent.service", 30)
    bound = cluster.metric(primary, "tb_agent_replica_gate_checkpoint_lag_bound_ops")
    assert bound is not None and bound <= LAG_BOUND_OPS, bound
    cluster.wait_ready()
