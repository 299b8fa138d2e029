"""End-to-end: site.yml keeps the time daemon a host has and installs systemd-timesyncd only on
a host with none; asked to install another over it, it refuses and removes nothing.

tb-0 runs chrony (installed with apt from a local repository, which removes systemd-timesyncd:
Debian's time daemons conflict), tb-1 has no time daemon, tb-2 keeps the image's
systemd-timesyncd. The hosts have no mirror, so the packages come from a file: repository on
each host, downloaded on the controller (as labctl.seed_packages does).

On the shared lab's cluster (conftest.py), last of its users: site.yml runs again on the
provisioned hosts after their time daemons were changed; the replicas are not touched.

    python3 -m pytest tests/e2e/test_time_daemon.py
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import labctl

REPO_ON_HOST = "/srv/tb-lab-repo"


def local_repository(lab: "labctl.harness.Lab") -> None:
    """A file: apt repository on every host with chrony and what it needs beyond the image, and
    the image's own systemd-timesyncd; apt on the hosts reads only it."""
    root = Path(lab.hosts()[0].root)
    status = root / "var" / "lib" / "dpkg" / "status"
    simulation = labctl.run(["apt-get", "-s", "-o", f"Dir::State::status={status}", "install",
                      "--no-install-recommends", "chrony"], capture_output=True, text=True)
    wanted = re.findall(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+)", simulation.stdout, re.M)
    timesyncd = labctl.run(["dpkg-query", "--admindir", str(root / "var" / "lib" / "dpkg"), "--show",
                     "--showformat=${Version}", "systemd-timesyncd"],
                    capture_output=True, text=True).stdout.strip()
    wanted.append(("systemd-timesyncd", timesyncd))
    key = hashlib.sha256(json.dumps(sorted(wanted)).encode()).hexdigest()[:16]
    cache = labctl.harness.cache_dir() / f"lab-repo-{key}"
    if not cache.exists():
        work = Path(tempfile.mkdtemp(prefix="lab-repo.", dir=labctl.harness.cache_dir()))
        labctl.run(["apt-get", "download", *(f"{name}={version}" for name, version in wanted)],
            cwd=work, timeout_s=600)
        packages = labctl.run(["dpkg-scanpackages", "--multiversion", "."], cwd=work,
                       capture_output=True, text=True).stdout
        (work / "Packages").write_text(packages)
        work.chmod(0o755)  # apt's sandbox user reads it on the hosts
        os.rename(work, cache)
    for host in lab.hosts():
        shutil.copytree(cache, Path(host.root) / REPO_ON_HOST.lstrip("/"), dirs_exist_ok=True)
        lab.exec(host.name, f"echo 'deb [trusted=yes] file:{REPO_ON_HOST} ./'"
                 " >/etc/apt/sources.list.d/tb-lab.list && apt-get update -qq"
                 " -o Dir::Etc::sourcelist=sources.list.d/tb-lab.list"
                 " -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0", timeout_s=120)


def package_state(lab, host: str, package: str) -> str:
    return lab.exec(host, f"dpkg-query --show --showformat='${{db:Status-Status}}' {package}"
                    " 2>/dev/null || echo unknown", check=False).stdout.strip()


def unit_enabled(lab, host: str, unit: str) -> str:
    return lab.exec(host, f"systemctl is-enabled {unit} || true", check=False).stdout.strip()


def test_site_keeps_the_installed_time_daemon(cluster):
    controller = cluster
    lab = controller.lab
    pids_before = {host: controller.replica_pid(host) for host in controller.host_names}
    local_repository(lab)
    apt = "DEBIAN_FRONTEND=noninteractive apt-get -qq -y --no-install-recommends"
    lab.exec("tb-0", f"{apt} install chrony", timeout_s=300)
    lab.exec("tb-1", f"{apt} purge systemd-timesyncd", timeout_s=300)
    assert package_state(lab, "tb-0", "systemd-timesyncd") != "installed"
    assert package_state(lab, "tb-1", "systemd-timesyncd") != "installed"

    controller.playbook("site.yml")
    # chrony stays, enabled; nothing replaced it (in a container it does not start:
    # ConditionCapability=CAP_SYS_TIME, as systemd-timesyncd's ConditionVirtualization).
    assert package_state(lab, "tb-0", "chrony") == "installed"
    assert package_state(lab, "tb-0", "systemd-timesyncd") != "installed"
    assert unit_enabled(lab, "tb-0", "chrony.service") == "enabled"
    # No daemon: systemd-timesyncd installed and enabled. The image's one: kept.
    for host in ("tb-1", "tb-2"):
        assert package_state(lab, host, "systemd-timesyncd") == "installed", host
        assert unit_enabled(lab, host, "systemd-timesyncd.service") == "enabled", host

    # Asked for systemd-timesyncd where chrony runs: refused, chrony still there.
    refused = controller.playbook("site.yml", "--limit", "tb-0", "-e",
                                  json.dumps({"tigerbeetle_host_time_daemon": "systemd-timesyncd"}),
                                  check=False)
    assert refused.returncode != 0, refused.tail()
    assert "would make apt remove chrony" in refused.stdout, refused.tail()
    assert package_state(lab, "tb-0", "chrony") == "installed"
    assert package_state(lab, "tb-0", "systemd-timesyncd") != "installed"
    assert {host: controller.replica_pid(host) for host in controller.host_names} == pids_before
    labctl.log("time daemon: chrony kept on tb-0, systemd-timesyncd installed on tb-1, kept on tb-2")
