"""Our tools, run as operators run them while faults land: tbctl restart and backup, backup.yml,
rollout.yml with a changed inventory value (whole cluster, `--limit` one host, and one killed
partway then run again). Each may be refused (busy, lease held, quorum guard, a gate that does
not pass); a refusal is recorded, not a failure: the promises are judged by the invariants, not
by the exit status."""

from __future__ import annotations

import json
import subprocess
import time

import labctl
from .events import EventLog
from .schedule import Step

# tbctl's exit statuses (docs/cli.md): 0 done, 3 refused, 5 busy, 6 lease held; anything else
# (1: a wait ran out, 2: usage) is recorded as failed.
TBCTL_REFUSED = {3: "refused", 5: "busy", 6: "lease_held"}
OPERATION_TIMEOUT_S = 600
# The rolled-out change: the replicas' grid cache, alternating, so every rollout has a change.
CACHE_GRIDS = ("256MiB", "288MiB")


class Operations:
    def __init__(self, controller: labctl.Controller, events: EventLog):
        self.controller = controller
        self.events = events
        self.rollouts = 0

    def run(self, step: Step) -> str:
        host = self.controller.host_names[step.host]
        self.events.write("operation_begin", kind=step.kind, host=host)
        started = time.monotonic()
        try:
            outcome = getattr(self, step.kind)(host, step)
        except subprocess.TimeoutExpired:
            outcome = "timed_out"
        self.events.write("operation_end", kind=step.kind, host=host, outcome=outcome,
                          seconds=round(time.monotonic() - started, 1))
        return outcome

    def tbctl(self, *args: str) -> str:
        result = self.controller.tbctl(*args, "--inventory", str(self.controller.inventory_path),
                                       check=False, timeout_s=OPERATION_TIMEOUT_S)
        if result.returncode == 0:
            return "done"
        self.events.write("tool_output", argv=list(args), rc=result.returncode,
                          tail=(result.stdout + result.stderr)[-2000:])
        return TBCTL_REFUSED.get(result.returncode, f"failed_{result.returncode}")

    def playbook(self, name: str, *args: str) -> str:
        run = self.controller.playbook(name, *args, check=False, timeout_s=OPERATION_TIMEOUT_S)
        if run.returncode == 0:
            return "done"
        self.events.write("tool_output", argv=[name, *args], rc=run.returncode,
                          tail=run.tail(40))
        return f"failed_{run.returncode}"

    def restart(self, host: str, _: Step) -> str:
        return self.tbctl("restart", "--replica", host)

    def backup(self, host: str, _: Step) -> str:
        return self.tbctl("backup", "--replica", host)

    def backup_playbook(self, host: str, _: Step) -> str:
        return self.playbook("backup.yml", "--limit", host)

    def next_change(self) -> None:
        self.rollouts += 1
        self.controller.set_inventory_vars(
            tigerbeetle_cache_grid=CACHE_GRIDS[self.rollouts % len(CACHE_GRIDS)])

    def rollout(self, host: str, _: Step) -> str:
        self.next_change()
        return self.playbook("rollout.yml")

    def rollout_limit(self, host: str, _: Step) -> str:
        """An operator rolling one host first (`--limit`): the others keep the old value until a
        later rollout, which the campaign's next rollout is."""
        self.next_change()
        return self.playbook("rollout.yml", "--limit", host)

    def rollout_interrupted(self, host: str, step: Step) -> str:
        """rollout.yml as a lost controller leaves it (killed `step.duration_s` after its start,
        staged or partway through its turns), then the runbook (docs/ansible.md): the lease the
        killed play left is broken, and rollout.yml runs again. The re-run's outcome is the
        operation's."""
        self.next_change()
        killed = self.controller.playbook_killed("rollout.yml", step.duration_s)
        self.events.write("playbook_killed", name="rollout.yml", after_s=step.duration_s,
                          killed=killed)
        if killed:
            self.break_rollout_lease()
        return self.playbook("rollout.yml")

    def break_rollout_lease(self) -> None:
        """`tbctl --lease-id ID lease break` of a lease held for a rollout: the killed play's,
        since operations run one at a time (a scheduled backup's lease says backup)."""
        shown = self.controller.tbctl("lease", "show", "--json", "--inventory",
                                      str(self.controller.inventory_path), check=False)
        try:
            lease = json.loads(shown.stdout).get("lease")
        except json.JSONDecodeError:
            lease = None
        self.events.write("lease_left", lease=lease, rc=shown.returncode)
        if lease and lease.get("operation") == "rollout":
            self.tbctl("--lease-id", lease["lease_id"], "lease", "break")
