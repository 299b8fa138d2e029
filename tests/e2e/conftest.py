"""Fixtures of the end-to-end tests. Each test module boots its own lab (3 fresh hosts) under the
machine-wide heavy lock and tears it down afterwards, whatever happens."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

import labctl


@pytest.fixture(scope="session")
def binaries():
    return labctl.build_binaries()


@pytest.fixture(scope="module")
def lab():
    with labctl.harness.running_lab(3) as lab:
        labctl.seed_packages(lab)
        yield lab


@pytest.fixture(scope="module")
def controller(request, lab, binaries):
    with tempfile.TemporaryDirectory(prefix="tb-e2e.") as work:
        try:
            yield labctl.Controller(lab, binaries, Path(work))
        finally:
            # The playbook logs outlive the lab: target/e2e/logs/<test module>/.
            labctl.keep_logs(Path(work), request.module.__name__)


@pytest.fixture(scope="module")
def cluster(controller):
    """site.yml then bootstrap.yml: a running 3-replica cluster in systemd mode."""
    controller.playbook("site.yml")
    controller.playbook("bootstrap.yml")
    return controller
