"""The campaign's schedule: which fault and which operation, when, drawn from a seed.

The seed reproduces the schedule, not the interleaving (replicas, Ansible and the kernel keep
their own time), so the runner keeps the full event log beside the report.

One fault at a time, each bounded (`DURATION_S`), with a quiet gap after it; operations on
their own timeline, one at a time, so an operation often runs while a fault is active: that is
where correct-looking pieces interact.
"""

from __future__ import annotations

import dataclasses
import random

# What the lab can inject. Clock steps are out of reach here (the lab hosts share the machine's
# clock); a hard container stop is not power loss (the page cache survives): see
# docs/reliability.md.
# fill_backup_dir joined on 2026-12-07: a seed run before draws another schedule now (the
# report of a run keeps the schedule it played).
FAULT_KINDS = ("kill_replica", "stop_replica", "kill_agent", "partition", "partition_oneway",
               "lose_data_file", "stop_host", "fill_backup_dir")
OPERATION_KINDS = ("restart", "backup", "backup_playbook", "rollout", "rollout_limit",
                   "rollout_interrupted")
# (min, max) seconds a fault lasts; a kill lasts until systemd has restarted the process.
DURATION_S = {"kill_replica": (0, 0), "stop_replica": (2, 12), "kill_agent": (0, 0),
              "partition": (3, 20), "partition_oneway": (3, 20), "lose_data_file": (0, 0),
              "stop_host": (1, 10), "fill_backup_dir": (5, 30)}
# (min, max) seconds after its start that an interrupted operation's playbook is killed.
INTERRUPT_AFTER_S = {"rollout_interrupted": (5, 120)}
WARMUP_S = 20
FAULT_GAP_S = (8, 30)
OPERATION_GAP_S = (15, 60)
# Room at the end for the last operation to finish before the workload stops.
COOLDOWN_S = 30


@dataclasses.dataclass(frozen=True)
class Step:
    at_s: float
    kind: str
    host: int
    duration_s: float = 0.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def faults(rng: random.Random, hosts: int, seconds: float) -> list[Step]:
    steps, at = [], float(WARMUP_S)
    while True:
        kind = rng.choice(FAULT_KINDS)
        low, high = DURATION_S[kind]
        duration = rng.uniform(low, high) if high else 0.0
        if at + duration > seconds - COOLDOWN_S:
            return steps
        steps.append(Step(round(at, 1), kind, rng.randrange(hosts), round(duration, 1)))
        at += duration + rng.uniform(*FAULT_GAP_S)


def operations(rng: random.Random, hosts: int, seconds: float) -> list[Step]:
    steps, at = [], float(WARMUP_S) + rng.uniform(0, 10)
    while at < seconds - COOLDOWN_S:
        kind = rng.choice(OPERATION_KINDS)
        host = rng.randrange(hosts)
        # An interrupted operation's duration is when its first run is killed.
        low, high = INTERRUPT_AFTER_S.get(kind, (0, 0))
        duration = round(rng.uniform(low, high), 1) if high else 0.0
        steps.append(Step(round(at, 1), kind, host, duration))
        at += rng.uniform(*OPERATION_GAP_S)
    return steps


def schedule(seed: int, hosts: int, seconds: float) -> tuple[list[Step], list[Step]]:
    """The faults and the operations of a campaign: the same seed, hosts and length give the
    same two lists."""
    assert hosts >= 1 and seconds > 0
    return (faults(random.Random(f"faults-{seed}"), hosts, seconds),
            operations(random.Random(f"operations-{seed}"), hosts, seconds))
