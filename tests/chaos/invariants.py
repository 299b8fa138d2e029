"""The campaign's invariants, each able to fail, each naming what broke it:

- bank: every acknowledged transfer present with its fields, nothing present that was never
  sent or was refused, linked chains whole, balances explained (tests/examples/bank);
- one_down: our tools never took a replica down while so many others had been unavailable long
  enough for them to know (`KNOW_S`) that the rest could not commit without it (3 replicas: any
  other; 5 or 6: two others): judged from the agents' audit lines (a begun stop, restart or
  backup takes the replica down, unless its end line says it was refused and did nothing)
  against the readiness the runner observed;
- audit: every operation an agent began has its end line, unless that agent was killed in
  between (a SIGKILL of the agent or of its whole host leaves no chance to write one; counted
  apart, not hidden);
- lease_deadline: no agent acted on a lease past its own deadline: every closing audit line of
  an operation that stopped its replica under the lease says when it took the lease, when it
  went on to stop, and the lease's deadline then (agent/daemon/src/audit.rs LeaseAct);
- backups: every backup an agent lists verifies;
- full_volume: a backup asked for on a full backup volume (the fault `fill_backup_dir`) is
  refused before the replica stops when the volume has too few bytes (tbctl exit 3, or 5 and 6
  when another operation holds the host or the lease), never
  reported done, and leaves nothing of itself on the volume (no `.partial-*` copy, no marker).
"""

from __future__ import annotations

import json
import threading
import time

import labctl
from .events import EventLog
from .operations import TBCTL_REFUSED

# Seconds a replica must have been unavailable before a tool deciding to stop another is held
# to have known: readiness is evaluated about every second on the agents, and a tool asks all
# of them right before it acts.
KNOW_S = 5
# Audit actions whose begun operation stops the replica (a backup copies a stopped data file).
STOPPING_ACTIONS = ("stop", "restart", "backup")
# End outcomes of an operation that changed nothing (tb_proto::api::Outcome: refused by its
# guard or lease, busy with another, or nothing to do).
NOTHING_DONE_OUTCOMES = ("refused", "busy", "unchanged")
AUDIT_LOG = "/var/log/tb-agent/audit.jsonl"
# TigerBeetle's (replication, view-change) quorums by replica count (src/vsr.zig, `quorums`),
# written out here rather than taken from tb_proto's arithmetic, which this judges.
QUORUMS = {3: (2, 2), 4: (2, 3), 5: (3, 3), 6: (3, 4)}
POLL_INTERVAL_S = 1.0


class ReadinessMonitor(threading.Thread):
    """Every replica's readiness as tbctl sees it, about every second, as events."""

    def __init__(self, controller: labctl.Controller, events: EventLog):
        super().__init__(daemon=True)
        self.controller = controller
        self.events = events
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                result = self.controller.tbctl("status", "--inventory",
                                               str(self.controller.inventory_path), "--json",
                                               check=False, timeout_s=20)
                rows = json.loads(result.stdout or "[]")
                self.events.write("readiness", ready={row["host"]: row["ready"] for row in rows})
            except Exception as error:  # noqa: BLE001 - a missed sample, recorded as such
                self.events.write("readiness_error", error=str(error)[:300])
            self.stopping.wait(POLL_INTERVAL_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)


def unavailable_since(events: list[dict], hosts: list[str]) -> dict[str, list[tuple[int, int]]]:
    """Per host, the intervals (unix ms) over which every readiness sample said not ready."""
    intervals: dict[str, list[tuple[int, int]]] = {host: [] for host in hosts}
    since: dict[str, int | None] = {host: None for host in hosts}
    for event in events:
        if event["event"] != "readiness":
            continue
        for host in hosts:
            ready = event["ready"].get(host, False)
            if not ready and since[host] is None:
                since[host] = event["unix_ms"]
            elif ready and since[host] is not None:
                intervals[host].append((since[host], event["unix_ms"]))
                since[host] = None
    for host, start in since.items():
        if start is not None:
            intervals[host].append((start, 2 ** 62))
    return intervals


def audit_lines(controller: labctl.Controller) -> dict[str, list[dict]]:
    lines = {}
    for host in controller.host_names:
        text = controller.lab.exec(host, f"cat {AUDIT_LOG} 2>/dev/null || true").stdout
        lines[host] = [json.loads(line) for line in text.splitlines() if line.strip()]
    return lines


def others_down_allowed(replica_count: int) -> int:
    """Replicas besides the one a tool stops that may be down while the rest still form both
    quorums, so the cluster commits whichever replica was the primary."""
    return replica_count - 1 - max(QUORUMS[replica_count])


def one_down(events: list[dict], audits: dict[str, list[dict]]) -> list[str]:
    hosts = list(audits)
    down = unavailable_since(events, hosts)
    allowed = others_down_allowed(len(hosts))
    violations = []
    for host, lines in audits.items():
        # Every operation writes its begin line before its guard and lease decide: one whose
        # end line says nothing was done took nothing down. One without an end line (its agent
        # killed) still counts.
        idle = {line.get("job_id") for line in lines
                if line.get("phase") == "end" and line.get("outcome") in NOTHING_DONE_OUTCOMES}
        for line in lines:
            if line.get("phase") != "begin" or line.get("action") not in STOPPING_ACTIONS:
                continue
            if line.get("job_id") in idle:
                continue
            at = line["time_unix_ms"]
            known = {other: start for other in hosts if other != host
                     for start, end in down[other] if start + KNOW_S * 1000 <= at < end}
            if len(known) > allowed:
                violations.append(
                    f"one_down: {host}'s agent began {line['action']} (job "
                    f"{line.get('job_id')}) at {at} while " + ", ".join(
                        f"{other} had been unavailable since {start}"
                        for other, start in sorted(known.items())))
    return violations


# Faults that kill a host's agent (a host stopped hard kills everything on it).
AGENT_KILLING_FAULTS = ("kill_agent", "stop_host")


def lease_deadline(audits: dict[str, list[dict]]) -> tuple[list[str], int]:
    """Violations, and the lease acts checked (a report of 0 says no operation stopped a
    replica under the lease, which proves nothing)."""
    violations, checked = [], 0
    for host, lines in audits.items():
        for line in lines:
            if "lease_acted_unix_ms" not in line:
                continue
            checked += 1
            taken, acted = line.get("lease_taken_unix_ms"), line["lease_acted_unix_ms"]
            deadline = line.get("lease_deadline_unix_ms")
            if None in (taken, deadline) or not taken <= acted < deadline:
                violations.append(
                    f"lease_deadline: {host}'s agent acted ({line.get('action')} job "
                    f"{line.get('job_id')}) at {acted} under lease {line.get('lease_id')} taken "
                    f"at {taken} with its deadline at {deadline}")
    return violations, checked


def agent_kills(events: list[dict]) -> dict[str, list[int]]:
    kills: dict[str, list[int]] = {}
    for event in events:
        if event["event"] == "fault_begin" and event["kind"] in AGENT_KILLING_FAULTS:
            kills.setdefault(event["host"], []).append(event["unix_ms"])
    return kills


def audit_pairs(events: list[dict], audits: dict[str, list[dict]]) -> tuple[list[str], int]:
    """Violations, and the begun operations left open by a kill of their agent."""
    kills = agent_kills(events)
    violations, excused = [], 0
    for host, lines in audits.items():
        ended = {line.get("job_id") for line in lines if line.get("phase") == "end"}
        for line in lines:
            job = line.get("job_id")
            if line.get("phase") != "begin" or job is None or job in ended:
                continue
            if any(kill >= line["time_unix_ms"] for kill in kills.get(host, [])):
                excused += 1
                continue
            violations.append(f"audit: {host}: {line['action']} job {job} began at "
                              f"{line['time_unix_ms']} and never ended")
    return violations, excused


# What a backup leaves while it runs (agent/daemon/src/backup/store.rs, cold_copy.rs): gone once
# it has failed.
BACKUP_LEFTOVER_PREFIXES = (".partial-", ".replica-stopped-for-backup")


def full_volume(events: list[dict]) -> list[str]:
    violations = []
    for event in events:
        if event["event"] != "backup_while_full":
            continue
        host, by, rc = event["host"], event["by"], event["rc"]
        if rc == 0:
            violations.append(f"full_volume: {host}: a backup on a volume without free {by} "
                              f"was reported done: {event['tail']}")
        # Refused (3), or turned away before it began (5 busy, 6 lease held): all before the
        # stop. An operation of the campaign's own may hold the host or the lease meanwhile.
        elif by == "bytes" and rc not in TBCTL_REFUSED:
            violations.append(f"full_volume: {host}: a backup without room was not refused "
                              f"before the replica stopped (tbctl exit {rc}): {event['tail']}")
        leftovers = [name for name in event["volume"]
                     if name.startswith(BACKUP_LEFTOVER_PREFIXES)]
        if leftovers:
            violations.append(f"full_volume: {host}: a failed backup left {leftovers} "
                              f"(volume out of {by})")
    return violations


def backups_verify(controller: labctl.Controller) -> tuple[list[str], int]:
    """POST /v1/backups/{id}/verify answers the verification (200) or a job (202) after which
    the backup's own record holds it."""
    violations, verified = [], 0
    for host in controller.host_names:
        for backup in controller.backups(host):
            backup_id = backup["id"]
            answer = controller.agent(host, f"/v1/backups/{backup_id}/verify", method="POST",
                                      timeout_s=300)
            if "job_id" in answer:
                wait_job(controller, host, answer["job_id"])
                answer = controller.agent(host, f"/v1/backups/{backup_id}").get("verification")
            verified += 1
            if not (answer or {}).get("ok"):
                violations.append(f"backups: {host} lists {backup_id}, which does not verify: "
                                  f"{answer}")
    return violations, verified


def wait_job(controller: labctl.Controller, host: str, job: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = controller.agent(host, f"/v1/jobs/{job}")["state"]
        if state != "running":
            return state
        time.sleep(0.5)
    return "timed_out"
