"""Our tools, run as operators run them while faults land: tbctl restart and backup, backup.yml,
rollout.yml with a changed inventory value (whole cluster and `--limit` one host). Each may be
refused (busy, lease held, quorum guard, a gate that does not pass); a refusal is recorded, not
a failure: the promises are judged by the invariants, not by the exit status."""

from __future__ import annotations

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
            outcome = getattr(self, step.kind)(host)
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

    def restart(self, host: str) -> str:
        return self.tbctl("restart", "--replica", host)

    def backup(self, host: str) -> str:
        return self.tbctl("backup", "--replica", host)

    def backup_playbook(self, host: str) -> str:
        return self.playbook("backup.yml", "--limit", host)

    def next_change(self) -> None:
        self.rollouts += 1
        self.controller.set_inventory_vars(
            tigerbeetle_cache_grid=CACHE_GRIDS[self.rollouts % len(CACHE_GRIDS)])

    def rollout(self, host: str) -> str:
        self.next_change()
        return self.playbook("rollout.yml")

    def rollout_limit(self, host: str) -> str:
        """An operator rolling one host first (`--limit`): the others keep the old value until a
        later rollout, which the campaign's next rollout is."""
        self.next_change()
        return self.playbook("rollout.yml", "--limit", host)
