"""The fault campaign (tests/chaos/run): a bank workload on the lab's cluster, faults and our own
tools' operations from a seeded schedule, then the invariants (invariants.py) and a report.

    tests/chaos/run --seed 7 --minutes 3 --report target/chaos/report.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import labctl
from . import invariants
from .events import EventLog
from .faults import Faults
from .operations import Operations
from .schedule import Step, schedule

BANK_ACCOUNTS = 300
BANK_WRITERS = 4
READY_AFTER_FAULTS_S = 300
LATE_MAX_S = 30
MINUTES_MAX = 24 * 60
BANK_COUNTS = ("lost", "phantoms", "broken_chains", "balance_errors")
# What the campaign's rollouts change (operations.py), put back at its end.
ROLLED_KEYS = ("tigerbeetle_cache_grid",)


def play(steps: list[Step], started: float, act, events: EventLog, name: str) -> None:
    """Runs each step at its time, one at a time. A step still running when the next is due
    delays it; one due more than `LATE_MAX_S` ago is skipped (recorded), so a long operation
    (a rollout waiting on a replica a fault took) does not stretch the campaign."""
    for step in steps:
        due = started + step.at_s
        late_s = time.monotonic() - due
        if late_s > LATE_MAX_S:
            events.write(f"{name}_skipped", kind=step.kind, late_s=round(late_s, 1))
            continue
        if late_s > 0:
            events.write(f"{name}_late", kind=step.kind, late_s=round(late_s, 1))
        else:
            time.sleep(-late_s)
        try:
            act(step)
        except Exception as error:  # noqa: BLE001 - the campaign goes on; the log says why
            events.write(f"{name}_error", kind=step.kind, error=str(error)[-2000:])


def bank(binary: Path, controller: labctl.Controller, *args: str) -> list[str]:
    return controller.lab.controller_command([
        str(binary), *args, "--cluster-id", "0", "--addresses", controller.addresses()])


def run_campaign(args, controller: labctl.Controller, bank_binary: Path, out: Path) -> dict:
    events = EventLog(out / "events.jsonl")
    seconds = args.minutes * 60
    fault_steps, operation_steps = schedule(args.seed, len(controller.host_names), seconds)
    events.write("schedule", seed=args.seed, faults=[s.to_json() for s in fault_steps],
                 operations=[s.to_json() for s in operation_steps])
    bank_log = out / "bank.jsonl"
    workload = subprocess.Popen(
        bank(bank_binary, controller, "run", "--seconds", str(int(seconds)), "--seed",
             str(args.seed), "--accounts", str(BANK_ACCOUNTS), "--writers", str(BANK_WRITERS),
             "--log", str(bank_log)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monitor = invariants.ReadinessMonitor(controller, events)
    monitor.start()
    faults, operations = Faults(controller, events), Operations(controller, events)
    started = time.monotonic()
    threads = [threading.Thread(target=play, args=(fault_steps, started, faults.run, events,
                                                   "fault")),
               threading.Thread(target=play, args=(operation_steps, started, operations.run,
                                                   events, "operation"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    faults.heal_all()
    stdout, stderr = workload.communicate(timeout=seconds + 600)
    events.write("workload_end", rc=workload.returncode, summary=stdout.strip()[-2000:],
                 stderr=stderr[-2000:])
    controller.wait_ready(timeout_s=READY_AFTER_FAULTS_S)
    monitor.stop()
    return {"events": events, "bank_log": bank_log, "fault_steps": fault_steps,
            "operation_steps": operation_steps, "workload_rc": workload.returncode}


def check_bank(controller, bank_binary: Path, bank_log: Path) -> dict:
    result = subprocess.run(bank(bank_binary, controller, "check", "--log", str(bank_log)),
                            capture_output=True, text=True, timeout=900)
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise AssertionError(f"bank check printed no report ({result.returncode}): "
                             f"{result.stderr[-2000:]}")
    return report


def checker_can_fail(controller, bank_binary: Path, bank_log: Path, out: Path) -> list[str]:
    """The bank checker on a tampered copy of the log (one acknowledged transfer's amount
    changed) must report it lost: a checker that cannot fail proves nothing."""
    lines = bank_log.read_text().splitlines()
    tampered = out / "bank-tampered.jsonl"
    for index, line in enumerate(lines):
        record = json.loads(line)
        if record.get("event") == "request" and record["transfers"][0]["kind"] == "plain":
            reply = next((json.loads(later) for later in lines[index + 1:]
                          if json.loads(later).get("request") == record["request"]), None)
            if reply and reply["event"] == "reply" and not reply["errors"]:
                record["transfers"][0]["amount"] = str(int(record["transfers"][0]["amount"]) + 1)
                lines[index] = json.dumps(record)
                break
    else:
        return ["checker self-test: no acknowledged plain transfer to tamper with"]
    tampered.write_text("\n".join(lines) + "\n")
    report = check_bank(controller, bank_binary, tampered)
    if report.get("lost", 0) < 1:
        return [f"checker self-test: a tampered log passed: {report}"]
    return []


def longest_gaps(bank_log: Path, events: list[dict]) -> dict[str, int]:
    """Per fault kind, the longest time (ms) without any answer to the bank's writers that began
    while a fault of that kind was active: how long the cluster was unavailable to clients."""
    answers = sorted(json.loads(line)["unix_ms"] for line in bank_log.read_text().splitlines()
                     if '"event":"reply"' in line.replace(" ", ""))
    windows = [(e["began_ms"], e["unix_ms"], e["kind"]) for e in events
               if e["event"] == "fault_end"]
    longest: dict[str, int] = {}
    for before, after in zip(answers, answers[1:]):
        for began, ended, kind in windows:
            if began <= before <= ended:
                longest[kind] = max(longest.get(kind, 0), after - before)
    return longest


def summarize(args, played: dict, bank_report: dict, violations: list[str],
              audit_excused: int, backups_verified: int) -> dict:
    events = played["events"].read()
    faults: dict[str, int] = {}
    for event in events:
        if event["event"] == "fault_begin":
            faults[event["kind"]] = faults.get(event["kind"], 0) + 1
    operations: dict[str, dict[str, int]] = {}
    for event in events:
        if event["event"] == "operation_end":
            kind = operations.setdefault(event["kind"], {})
            kind[event["outcome"]] = kind.get(event["outcome"], 0) + 1
    return {
        "seed": args.seed,
        "minutes": args.minutes,
        "faults": faults,
        "operations": operations,
        "acknowledged": bank_report.get("acknowledged", 0),
        "indeterminate": bank_report.get("indeterminate", 0),
        "lost": bank_report.get("lost", 0),
        "phantoms": bank_report.get("phantoms", 0),
        "broken_chains": bank_report.get("broken_chains", 0),
        "balance_errors": bank_report.get("balance_errors", 0),
        "promise_violations": len(violations),
        "violations": violations[:50],
        "audit_open_after_agent_kill": audit_excused,
        "backups_verified": backups_verified,
        "longest_unavailability_ms": longest_gaps(played["bank_log"], events),
        "bank": bank_report,
        "workload_rc": played["workload_rc"],
        "rerun": f"tests/chaos/run --seed {args.seed} --minutes {args.minutes}",
    }


def table(report: dict) -> str:
    rows = [("seed", report["seed"]), ("minutes", report["minutes"]),
            ("faults", ", ".join(f"{k} {v}" for k, v in sorted(report["faults"].items()))),
            ("operations", ", ".join(f"{k} {sum(v.values())} ({', '.join(f'{o} {n}' for o, n in sorted(v.items()))})"
                                     for k, v in sorted(report["operations"].items()))),
            ("acknowledged transfers", report["acknowledged"]),
            ("indeterminate transfers", report["indeterminate"]),
            ("lost", report["lost"]), ("phantoms", report["phantoms"]),
            ("broken chains", report["broken_chains"]),
            ("balance errors", report["balance_errors"]),
            ("promise violations", report["promise_violations"]),
            ("backups verified", report["backups_verified"]),
            ("lease acts checked", report.get("lease_acts_checked", 0)),
            ("longest unavailability (ms)", ", ".join(
                f"{k} {v}" for k, v in sorted(report["longest_unavailability_ms"].items())))]
    return "\n".join(f"{name:<28} {value}" for name, value in rows)


def context_of(violation: str, events: list[dict], window_ms: int = 10_000) -> list[dict]:
    """The events around the first unix ms a violation names."""
    numbers = [int(word) for word in violation.replace(",", " ").split() if word.isdigit()
               and len(word) == 13]
    if not numbers:
        return []
    at = numbers[0]
    return [e for e in events if abs(e["unix_ms"] - at) <= window_ms
            and e["event"] not in ("readiness",)][:40]


def campaign(controller: labctl.Controller, seed: int, minutes: float, out: Path) -> dict:
    """One campaign on a lab whose cluster runs (site.yml and bootstrap.yml applied): the
    workload under the seed's faults and operations, then every invariant. Leaves the cluster
    ready and its inventory as it found it (a last rollout.yml puts the original values back)."""
    bank_binary = controller.binaries["bank"]
    original = {key: controller.inventory["all"]["vars"].get(key) for key in ROLLED_KEYS}
    args = argparse.Namespace(seed=seed, minutes=minutes)
    played = run_campaign(args, controller, bank_binary, out)
    bank_report = check_bank(controller, bank_binary, played["bank_log"])
    events = played["events"].read()
    audits = invariants.audit_lines(controller)
    (out / "audit.json").write_text(json.dumps(audits, indent=1))
    violations = invariants.one_down(events, audits) + invariants.full_volume(events)
    audit_violations, excused = invariants.audit_pairs(events, audits)
    lease_violations, lease_acts = invariants.lease_deadline(audits)
    backup_violations, verified = invariants.backups_verify(controller)
    violations += audit_violations + lease_violations + backup_violations
    violations += checker_can_fail(controller, bank_binary, played["bank_log"], out)
    if not bank_report.get("acknowledged"):
        violations.append("bank: no transfer was acknowledged: the workload never ran")
    report = summarize(args, played, bank_report, violations, excused, verified)
    report["lease_acts_checked"] = lease_acts
    report["failed"] = [f"bank: {name} {report[name]}" for name in BANK_COUNTS if report[name]]
    report["failed"] += violations
    report["context"] = {violation: context_of(violation, events)
                         for violation in report["failed"][:10]}
    controller.restore_inventory_vars(original)
    controller.playbook("rollout.yml")
    controller.wait_ready(timeout_s=READY_AFTER_FAULTS_S)
    return report


def explain(report: dict) -> str:
    lines = [f"FAILED (seed {report['seed']}): {violation}" for violation in report["failed"]]
    for violation, context in report["context"].items():
        lines.append(f"around: {violation}")
        lines.extend(f"  {json.dumps(event)[:300]}" for event in context)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--hosts", type=int, default=3,
                        help="lab hosts, each a replica: 3 to 6 (TigerBeetle's largest cluster)")
    args = parser.parse_args()
    if not 0 < args.minutes <= MINUTES_MAX:
        parser.error(f"--minutes must be in (0, {MINUTES_MAX}]")
    if not 3 <= args.hosts <= 6:
        parser.error("--hosts must be 3 to 6")
    out = args.report.parent / f"{args.report.stem}.d"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, mode=0o700)
    binaries = labctl.build_binaries()
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(labctl.harness.running_lab(args.hosts))
        labctl.seed_packages(lab)
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tb-chaos.")))
        stack.callback(lambda: shutil.copytree(work / "logs", out / "playbooks",
                                               dirs_exist_ok=True)
                       if (work / "logs").exists() else None)
        controller = labctl.Controller(lab, binaries, work, replica_count=args.hosts)
        controller.playbook("site.yml")
        controller.bootstrap()
        report = campaign(controller, args.seed, args.minutes, out)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    if report["failed"]:
        print(explain(report), file=sys.stderr)
    print(f"report: {args.report}; event log, bank log, audit lines: {out}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
