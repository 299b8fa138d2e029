"""End-to-end test 5: a real TigerBeetle upgrade, 0.16.70 to 0.16.78, with upgrade.yml.

The cluster is bootstrapped on 0.16.70 (built from the source vendored in
tigerbeetle-unofficial-sys 0.14.20+0.16.70); upgrade.yml swaps in the multiversion 0.16.78 binary
that bundles 0.16.70 (scripts/tigerbeetle-build-multiversion); every agent then reports 0.16.78
and the accounts written before are intact. A 0.16.70 client (the old binary's `repl`) keeps
working throughout. Refused before anything changes: a target that does not bundle the running
release, and a target older than the agents' embedded client.

    python3 -m pytest tests/e2e/test_upgrade.py
"""

from __future__ import annotations

import pytest

import harness
import labctl

ACCOUNTS = "create_accounts id=7001 code=10 ledger=700, id=7002 code=10 ledger=700;"
LOOKUP = "lookup_accounts id=7001, id=7002;"


def repl(controller, binary, command: str):
    return labctl.ReplClient(controller, str(binary), command, "").request()


@pytest.fixture(scope="module")
def releases():
    old = labctl.run([str(labctl.REPO / "scripts" / "tigerbeetle-build-release"), "0.16.70"],
                     timeout_s=3600).stdout.strip()
    new = labctl.run([str(labctl.REPO / "scripts" / "tigerbeetle-build-multiversion")],
                     timeout_s=3600).stdout.strip()
    return {"old": old, "new": new}


def hashes(controller) -> dict[str, str]:
    return {h: controller.lab.exec(h, "sha256sum /usr/local/bin/tigerbeetle").stdout.split()[0]
            for h in controller.host_names}


def skew(controller) -> dict[str, bool]:
    return {h: controller.agent(h, "/v1/status")["replica"]["version_skew"]
            for h in controller.host_names}


def wait_for_skew(controller, expected: bool, timeout_s: float = 90) -> dict[str, bool]:
    """The agents' probes refresh on their own schedule: wait for every one to agree."""
    seen, _ = harness.poll(lambda: skew(controller),
                           lambda seen: all(value == expected for value in seen.values()),
                           timeout_s=timeout_s, interval_s=1)
    return seen


def tbctl_status(controller) -> str:
    result = controller.tbctl("status", "--inventory", str(controller.inventory_path), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_upgrade_0_16_70_to_0_16_78(controller, releases):
    old, new = releases["old"], releases["new"]
    controller.write_vars(tigerbeetle_binary_src=old,
                          tigerbeetle_binary_sha256=labctl.sha256_file(labctl.Path(old)))
    controller.playbook("site.yml")
    controller.bootstrap()
    created = repl(controller, old, ACCOUNTS)
    assert created.returncode == 0, created.stdout + created.stderr
    before = hashes(controller)
    # The agents' embedded client (0.16.78) is newer than the cluster (0.16.70), whose primary
    # evicts it: the agents count that as the cluster answering (bootstrap.yml's gate passed) and
    # report the skew.
    skew_before = wait_for_skew(controller, True)
    assert all(skew_before.values()), skew_before
    status_before = tbctl_status(controller)
    assert status_before.count("version skew") == len(controller.host_names), status_before
    running_before = {h: controller.running_release(h) for h in controller.host_names}
    assert set(running_before.values()) == {"0.16.70"}, running_before

    # Refused before anything changes, and before the binary runs anywhere: a SHA-256 that is
    # not the binary's...
    plain = labctl.run([str(labctl.REPO / "scripts" / "tigerbeetle-build")]).stdout.strip()
    refused_sha = controller.playbook("upgrade.yml", "-e", f"tigerbeetle_binary_src={plain}",
                                      "-e", f"tigerbeetle_binary_sha256={'0' * 64}", check=False)
    assert refused_sha.returncode != 0 and "not the expected" in refused_sha.stdout and \
        "it was not run" in refused_sha.stdout, refused_sha.tail()
    # ...0.16.78 without 0.16.70 bundled...
    refused = controller.playbook("upgrade.yml", "-e", f"tigerbeetle_binary_src={plain}", "-e",
                                  f"tigerbeetle_binary_sha256={labctl.sha256_file(labctl.Path(plain))}",
                                  check=False)
    assert refused.returncode != 0 and "cannot" in refused.stdout and \
        "upgrade this replica" in refused.stdout, refused.tail()
    # ...and a target older than the agents' client (0.16.78 > 0.16.70).
    refused_client = controller.playbook("upgrade.yml", check=False)
    assert refused_client.returncode != 0, refused_client.tail()
    assert "newer than the target release" in refused_client.stdout, refused_client.tail()
    assert hashes(controller) == before

    # A 0.16.70 client keeps working throughout (each request is one `repl` session).
    with labctl.ReplClient(controller, old, LOOKUP, "7001") as client:
        upgrade = controller.playbook(
            "upgrade.yml", "-e", f"tigerbeetle_binary_src={new}", "-e",
            f"tigerbeetle_binary_sha256={labctl.sha256_file(labctl.Path(new))}")
    old_client = client.stop()
    versions = {h: controller.agent(h, "/v1/status")["replica"]["binary_version"]
                for h in controller.host_names}
    # What each replica process runs (not just the binary on disk): upgrade.yml returned only
    # after the cluster re-executed the new release.
    running = {h: controller.running_release(h) for h in controller.host_names}
    # The cluster runs 0.16.78 now: the agents' client is no longer evicted.
    skew_after = wait_for_skew(controller, False)
    status_after = tbctl_status(controller)
    labctl.record("upgrade", {"upgrade_seconds": upgrade.seconds, "versions": versions,
                              "running": running,
                              "skew_before": skew_before, "skew_after": skew_after,
                              "old_client": old_client})
    assert not any(skew_after.values()), skew_after
    assert "version skew" not in status_after, status_after
    assert all(v.startswith("0.16.78+") for v in versions.values()), versions
    assert all(r == "0.16.78" for r in running.values()), running
    # The replicas really run 0.16.78 (re-executed, same unit), and the accounts are intact.
    looked_up = repl(controller, new, LOOKUP)
    assert "7001" in looked_up.stdout and "7002" in looked_up.stdout, looked_up.stdout
    assert old_client["requests"] > 0 and old_client["failures"] == 0, old_client
