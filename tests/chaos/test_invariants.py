"""The campaign's own logic without a lab (seconds): the schedule is reproducible and bounded,
and each invariant that judges events (one_down, audit) fails on the case it exists for. The
bank checker's failing case runs in every campaign (checker_can_fail)."""

from chaos import invariants
from chaos.schedule import COOLDOWN_S, DURATION_S, schedule

HOSTS = ["tb-0", "tb-1", "tb-2"]


def readiness(at_ms: int, **ready) -> dict:
    return {"event": "readiness", "unix_ms": at_ms,
            "ready": {host: ready.get(host.replace("-", "_"), True) for host in HOSTS}}


def audit(at_ms: int, action: str, phase: str = "begin", job: str = "job-1",
          outcome: str = "running") -> dict:
    return {"time_unix_ms": at_ms, "action": action, "phase": phase, "job_id": job,
            "outcome": outcome}


def test_the_seed_reproduces_the_schedule_and_faults_never_overlap():
    first, second = schedule(7, 3, 1800), schedule(7, 3, 1800)
    assert first == second
    assert schedule(8, 3, 1800) != first
    faults, operations = first
    assert faults and operations
    for before, after in zip(faults, faults[1:]):
        assert before.at_s + before.duration_s < after.at_s
    for step in faults:
        low, high = DURATION_S[step.kind]
        assert low <= step.duration_s <= high
        assert step.at_s + step.duration_s <= 1800 - COOLDOWN_S
        assert 0 <= step.host < 3


def test_with_five_replicas_one_other_down_is_allowed_and_two_are_not():
    five = [f"tb-{i}" for i in range(5)]

    def sample(at_ms: int, *down: str) -> dict:
        return {"event": "readiness", "unix_ms": at_ms,
                "ready": {host: host not in down for host in five}}

    one = [sample(0), sample(1_000, "tb-1"), sample(30_000)]
    two = [sample(0), sample(1_000, "tb-1", "tb-2"), sample(30_000)]
    audits = {host: [] for host in five} | {"tb-0": [audit(11_000, "restart")]}
    assert invariants.others_down_allowed(5) == 1 and invariants.others_down_allowed(3) == 0
    assert invariants.one_down(one, audits) == []
    violations = invariants.one_down(two, audits)
    assert len(violations) == 1 and "tb-1" in violations[0] and "tb-2" in violations[0]


def test_one_down_flags_a_stop_while_another_replica_was_known_down():
    events = [readiness(0), readiness(1_000, tb_1=False), readiness(20_000, tb_1=False),
              readiness(30_000)]
    # tb-0's agent restarts its replica 10 s after tb-1 went down: a violation.
    violations = invariants.one_down(events, {"tb-0": [audit(11_000, "restart")],
                                              "tb-1": [], "tb-2": []})
    assert len(violations) == 1 and "tb-1 had been unavailable since 1000" in violations[0]
    # Within KNOW_S of the other going down, or after it came back: not a violation.
    early = 1_000 + invariants.KNOW_S * 1000 - 1
    assert invariants.one_down(events, {"tb-0": [audit(early, "restart"),
                                                 audit(31_000, "backup")],
                                        "tb-1": [], "tb-2": []}) == []
    # A read-only action, or one refused by its guard (its begin line, then an end line that
    # says nothing was done: seen in the 30-minute campaign, seed 7): nothing taken down.
    refused = [audit(11_000, "backup", job="b2"),
               audit(11_001, "backup", phase="end", job="b2", outcome="refused")]
    assert invariants.one_down(events, {"tb-0": [audit(11_000, "backup_verify"), *refused],
                                        "tb-1": [], "tb-2": []}) == []
    # The same begin line whose operation went on (or whose agent died before its end): counted.
    went_on = [audit(11_000, "backup", job="b3"),
               audit(15_000, "backup", phase="end", job="b3", outcome="succeeded")]
    assert len(invariants.one_down(events, {"tb-0": went_on, "tb-1": [], "tb-2": []})) == 1
    assert len(invariants.one_down(events, {"tb-0": went_on[:1], "tb-1": [], "tb-2": []})) == 1


def test_audit_flags_an_operation_without_its_end_unless_its_agent_was_killed():
    lines = {"tb-0": [audit(1_000, "backup", job="b1")], "tb-1": [], "tb-2": []}
    violations, excused = invariants.audit_pairs([], lines)
    assert len(violations) == 1 and "b1" in violations[0] and excused == 0
    killed = [{"event": "fault_begin", "kind": "kill_agent", "host": "tb-0", "unix_ms": 2_000}]
    assert invariants.audit_pairs(killed, lines) == ([], 1)
    # A host stopped hard kills its agent as well; a fault on another host excuses nothing.
    stopped = [{"event": "fault_begin", "kind": "stop_host", "host": "tb-0", "unix_ms": 2_000}]
    assert invariants.audit_pairs(stopped, lines) == ([], 1)
    elsewhere = [{**stopped[0], "host": "tb-1"}]
    assert len(invariants.audit_pairs(elsewhere, lines)[0]) == 1
    lines["tb-0"].append(audit(3_000, "backup", phase="end", job="b1"))
    assert invariants.audit_pairs([], lines) == ([], 0)


def test_lease_deadline_flags_an_act_past_the_deadline_or_before_the_lease():
    def act(taken, acted, deadline):
        return {"time_unix_ms": acted + 5_000, "action": "restart", "phase": "end",
                "job_id": "r1", "lease_id": "ab", "lease_taken_unix_ms": taken,
                "lease_acted_unix_ms": acted, "lease_deadline_unix_ms": deadline}
    within = {"tb-0": [act(1_000, 2_000, 30_000), audit(3_000, "backup")], "tb-1": []}
    assert invariants.lease_deadline(within) == ([], 1)
    for bad in (act(1_000, 30_000, 30_000), act(1_000, 31_000, 30_000),
                act(2_001, 2_000, 30_000)):
        violations, checked = invariants.lease_deadline({"tb-0": [bad]})
        assert checked == 1 and len(violations) == 1 and "tb-0" in violations[0], violations
    missing = act(1_000, 2_000, 30_000)
    del missing["lease_deadline_unix_ms"]
    assert len(invariants.lease_deadline({"tb-0": [missing]})[0]) == 1


def test_full_volume_flags_a_backup_not_refused_or_leaving_its_copy_behind():
    def full(by: str, rc: int, volume: list[str]) -> dict:
        return {"event": "backup_while_full", "host": "tb-2", "by": by, "rc": rc, "tail": "",
                "volume": volume}

    fine = [full("bytes", 3, ["chaos-fill", ".sequence"]),
            full("inodes", 1, ["chaos-fill-inodes", "20261207T100133Z-r2-0c4ded24"])]
    assert invariants.full_volume(fine) == []
    # Turned away before it began (busy, lease held: a campaign operation meanwhile) is fine.
    assert invariants.full_volume([full("bytes", 5, []), full("bytes", 6, [])]) == []
    assert len(invariants.full_volume([full("bytes", 1, [])])) == 1
    assert len(invariants.full_volume([full("inodes", 0, [])])) == 1
    left = invariants.full_volume([full("inodes", 1, [".partial-20261207T1-r2-1"])])
    assert len(left) == 1 and ".partial-" in left[0]
