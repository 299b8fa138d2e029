"""Fixtures of the end-to-end tests: labs of 3 real systemd hosts (tests/hosts), under the
machine-wide heavy lock, torn down afterwards whatever happens.

Only one lab can exist on a machine in a lab slot (harness: TB_LAB_SLOT), so a session's labs
come from one pool:
- `cluster` (session): a shared lab with site.yml and bootstrap.yml applied, for the tests that
  work on a bootstrapped cluster: first those that leave it healthy (site, firewall reload,
  rollout, partition, the campaign), then backup/recover, and last those that change it most
  (a crash-looping replica, other time daemons). In one pytest session (tests/e2e/run) they
  share it; a file run alone gets its own.
- `controller` (module): a fresh lab of its own, nothing applied, for tests whose cluster cannot
  be shared (one deployed by an earlier commit's roles; one bootstrapped on another release;
  the NixOS modules' units instead of site.yml's). It replaces any shared lab, which a later
  `cluster` user would boot again.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import pytest

import labctl


class LabPool:
    """At most one lab at a time: the shared one, or a module's own."""

    def __init__(self, binaries):
        self.binaries = binaries
        self.stack: contextlib.ExitStack | None = None
        self.kind: str | None = None
        self.controller: labctl.Controller | None = None

    def close(self) -> None:
        if self.stack is not None:
            stack, self.stack, self.kind, self.controller = self.stack, None, None, None
            stack.close()

    def _boot(self, kind: str) -> labctl.Controller:
        self.close()
        stack = contextlib.ExitStack()
        try:
            lab = stack.enter_context(labctl.harness.running_lab(3))
            labctl.seed_packages(lab)
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tb-e2e.")))
            # Runs before the work directory goes: the playbook logs outlive the lab.
            stack.callback(labctl.keep_logs, work, kind)
            controller = labctl.Controller(lab, self.binaries, work)
        except BaseException:
            stack.close()
            raise
        self.stack, self.kind, self.controller = stack, kind, controller
        return controller

    def shared(self) -> labctl.Controller:
        if self.kind == "shared":
            return self.controller
        controller = self._boot("shared")
        labctl.log("shared lab: site.yml and bootstrap.yml")
        controller.playbook("site.yml")
        controller.bootstrap()
        return controller

    def own(self, name: str) -> labctl.Controller:
        return self._boot(name)


# How much of a failure's report is printed the moment it fails.
FAILURE_TAIL_CHARS = 6000


def pytest_runtest_logreport(report):
    """A failure's report at once, not only in the session's summary: a run cut short (CI's time
    limit, a kill) still shows why a test failed."""
    if report.failed:
        text = report.longreprtext[-FAILURE_TAIL_CHARS:]
        # The reason first (the line scripts/test's summary quotes), then the report's end.
        crash = getattr(report.longrepr, "reprcrash", None)
        reason = crash.message.splitlines()[0][:500] if crash and crash.message else "(no message)"
        print(f"\n== {report.nodeid} ({report.when}) failed: {reason}\n{text}\n",
              file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def binaries():
    return labctl.build_binaries()


@pytest.fixture(scope="session")
def lab_pool(binaries):
    pool = LabPool(binaries)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def cluster(lab_pool):
    """site.yml then bootstrap.yml: a running 3-replica cluster in systemd mode (shared)."""
    return lab_pool.shared()


@pytest.fixture(scope="module")
def controller(request, lab_pool):
    """A fresh lab of this module's own; nothing applied yet."""
    controller = lab_pool.own(request.module.__name__)
    try:
        yield controller
    finally:
        lab_pool.close()
