"""End-to-end test 7: what the NixOS modules generate, run on real systemd hosts.

There is no NixOS here (no nixpkgs, no KVM for the flake's VM tests), so this installs on the
lab's Debian hosts exactly what the modules evaluate to for each inventory host
(tests/ansible/nixos-units.nix with --arg bootstrap true): the replica, bootstrap and agent
units as NixOS renders them, the store scripts they run, the host's inventory and the generated
agent settings file (environment.etc), the polkit rule, the tmpfiles rules and the firewall rules, with the real tigerbeetle and tb-agent at the
units' store paths. What stands in for NixOS itself, named as such: the user (useradd, as
users.users would), the packages of the units' PATH (the host's /usr/bin and /usr/sbin), and the
input chain around the module's rules (nixos-fw-standin: drop by default, ssh and established
traffic allowed, as NixOS's nftables firewall does).

Then it does what the VM tests do: no format without bootstrap, bootstrap once, a ready
cluster whose agents (the replica's user) accept the replica's StatsD, locked memory (VmLck;
RLIMIT_MEMLOCK as systemd configured it: the lab's containers cannot raise the process's), control
through polkit and nothing more, `tbctl start` of a replica failed at its start limit, a backup, recover of a deleted data file, the firewall, auth.

    python3 -m pytest tests/e2e/test_nixos_units.py
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import labctl

UNITS = ("tigerbeetle-replica", "tigerbeetle-replica-bootstrap", "tb-agent")
REPLICA_UNIT = "tigerbeetle-replica.service"
FIREWALL_TABLE = "nixos-fw-standin"
# The rollout's change, made in the inventory: another cache grid (a new start script).
NEXT_CACHE_GRID = "288MiB"
STANDIN_DIR = labctl.REPO / "tests" / "e2e" / "fixtures" / "nixos-standin"
STANDIN_LOG = "/var/log/nixos-standin.log"
CLIENT_SECONDS_MAX = 900


def evaluate(controller, host: str) -> dict:
    lib_flake = Path(os.environ.get("TB_NIXPKGS_LIB", labctl.REPO.parent / "shared" / "nixpkgs-lib"))
    if shutil.which("nix-instantiate") is None or not (lib_flake / "lib" / "default.nix").exists():
        pytest.skip(f"nix-instantiate or nixpkgs' lib ({lib_flake}) missing (scripts/deps; TB_NIXPKGS_LIB)")
    env = dict(os.environ, NIX_CONFIG="build-users-group =\n")
    result = labctl.run([
        "nix-instantiate", "--read-write-mode", "--eval", "--strict", "--json",
        "tests/ansible/nixos-units.nix", "--argstr", "nixpkgsLib", str(lib_flake / "lib"),
        "--argstr", "inventoryFile", str(controller.inventory_path), "--argstr", "hostName", host,
        "--arg", "bootstrap", "true"], cwd=labctl.REPO, env=env, capture_output=True)
    return json.loads(result.stdout)


def write_store(root: Path, path: str, data: bytes, mode: int = 0o444) -> None:
    """A store path: written once; a path already there must hold the same bytes (the store is
    content addressed)."""
    target = root / path.lstrip("/")
    if target.exists():
        assert target.read_bytes() == data, f"{path} exists with other contents"
        return
    write(root, path, data, mode)


def write(root: Path, path: str, data: bytes, mode: int = 0o644) -> None:
    """A file in a host's root, created with `mode` (a secret is never readable by others, not
    even until a later chmod)."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def etc_files(spec: dict, agent: dict) -> dict[str, bytes]:
    """The files the modules put under /etc (environment.etc) that the units read."""
    toml = labctl.run([sys.executable, str(labctl.REPO / "tests" / "nix" / "json-to-toml.py")],
                      input=json.dumps(agent["settings"]), capture_output=True).stdout
    assert spec["inventory"]["mode"] == "0644", spec["inventory"]
    return {"tigerbeetle/inventory.json": spec["inventory"]["text"].encode(),
            "tb-agent/settings.toml": toml.encode()}


def install(controller, host: str, nix: dict) -> None:
    """Puts on the host what `nixos-rebuild switch` would, at the same paths."""
    lab = controller.lab
    lab_host = lab.host(host)
    root = Path(lab_host.root)
    spec, agent = nix["host"], nix["agent"]
    user = spec["user"]
    # Stand-in for users.users: a system user and group (the agent's unit adds the journal's
    # group, SupplementaryGroups=).
    lab.exec(host, f"useradd --system --user-group --no-create-home --home-dir /var/empty "
                   f"--shell /usr/sbin/nologin {user}")
    binaries = controller.binaries
    write(root, f"{nix['replica']['packagePath']}/bin/tigerbeetle", binaries["tigerbeetle"].read_bytes())
    write(root, f"{agent['packagePath']}/bin/tb-agent", binaries["tb_agent"].read_bytes())
    for script in spec["storeScripts"]:
        write(root, script["path"], script["text"].encode())
    # environment.etc: the inventory and the settings file, root's, 0644 (neither holds a secret).
    for path, data in etc_files(spec, agent).items():
        write(root, f"/etc/{path}", data)
    # The unit files exactly as NixOS writes them (nixpkgs' systemd-lib.nix renders them).
    for name, text in spec["unitFiles"].items():
        assert name in UNITS, name
        write(root, f"/etc/systemd/system/{name}.service", text.encode())
    # Stand-in for the packages of the units' PATH (coreutils, ..., systemd): the host's own.
    for package in spec["pathPackages"]:
        (root / package.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for directory in ("bin", "sbin"):
            link = root / package.lstrip("/") / directory
            if not link.is_symlink():
                link.symlink_to(f"/usr/{directory}")
    write(root, "/etc/polkit-1/rules.d/60-tb-agent.rules", agent["polkitRules"].encode())
    write(root, "/etc/tmpfiles.d/tigerbeetle.conf", ("\n".join(spec["tmpfilesRules"]) + "\n").encode())
    tls = "/etc/tb-agent/tls"
    write(root, f"{tls}/agent.crt", Path(lab_host.tls_cert).read_bytes())
    write(root, f"{tls}/agent.key", Path(lab_host.tls_key).read_bytes(), mode=0o600)
    write(root, f"{tls}/ca.crt", lab.ca_cert_path.read_bytes())
    write(root, spec["peerTokenFile"], controller.peer_token_file.read_bytes(), mode=0o600)
    # Stand-in for NixOS's firewall around the module's rules (networking.firewall.extraInputRules).
    write(root, "/etc/nixos-fw-standin.nft", (
        f"table inet {FIREWALL_TABLE} {{\n  chain input {{\n"
        "    type filter hook input priority filter; policy drop;\n"
        "    iifname \"lo\" accept\n    ct state established,related accept\n"
        "    ip protocol icmp accept\n    tcp dport 22 accept\n"
        f"{spec['firewallInputRules']}\n  }}\n}}\n").encode())
    lab.exec(host, " && ".join([
        "chmod 0555 /nix/store/*/bin/* " + " ".join(s["path"] for s in spec["storeScripts"]),
        f"chown -R {user}:{user} /etc/tb-agent && chmod 0700 /etc/tb-agent {tls}",
        "chown root:root /etc/tb-agent/settings.toml",
        f"chmod 0600 {tls}/agent.key {spec['peerTokenFile']}",
        "systemd-tmpfiles --create /etc/tmpfiles.d/tigerbeetle.conf",
        "nft -f /etc/nixos-fw-standin.nft",
        "systemctl restart polkit.service",
        "systemctl daemon-reload",
    ]))


def test_nixos_units_on_real_systemd_hosts(controller):
    lab = controller.lab
    hosts = controller.host_names
    inventory = controller.inventory_path
    nix = {host: evaluate(controller, host) for host in hosts}
    for host in hosts:
        install(controller, host, nix[host])

    # Before bootstrap: the replica unit refuses without a data file (exit 78, not restarted)
    # and says to recover; nothing formats. 78 is a success status: the unit ends inactive, not
    # failed, so `nixos-rebuild switch` succeeds on a first deploy.
    for index, host in enumerate(hosts):
        data_file = nix[host]["host"]["dataFile"]
        state = controller.start_refused(host, REPLICA_UNIT)
        assert (state["refused"], state["ActiveState"], state["NRestarts"]) == ("True", "inactive", "0"), state
        # The inventory named is tb-agent replica-start's (the host's copy, or a placeholder).
        assert re.search(rf"tbctl recover --inventory \S+ --replica {index}\b",
                         controller.journal(host, REPLICA_UNIT))
        assert lab.exec(host, f"test -e {data_file}", check=False).returncode != 0

    # Bootstrap formats once, 0600 in a 0700 directory of the replica's user; a second refuses.
    for host in hosts:
        data_file = nix[host]["host"]["dataFile"]
        lab.exec(host, "systemctl start tigerbeetle-replica-bootstrap.service", timeout_s=300)
        modes = lab.exec(host, f"stat -c '%a %U' {data_file} {os.path.dirname(data_file)}").stdout.split("\n")
        assert modes[:2] == ["600 tigerbeetle", "700 tigerbeetle"], modes
        again = lab.exec(host, "systemctl start tigerbeetle-replica-bootstrap.service", check=False)
        assert again.returncode != 0
        assert "refusing to format" in controller.journal(host, "tigerbeetle-replica-bootstrap.service")

    # The replicas and their agents: ready, which needs each agent (the replica's user) to
    # accept its replica's StatsD datagrams, checked against /proc/<replica pid>/fd.
    for host in hosts:
        lab.exec(host, "systemctl reset-failed tigerbeetle-replica.service && "
                       "systemctl start tigerbeetle-replica.service tb-agent.service")
    controller.wait_ready(timeout_s=240)
    for host in hosts:
        status = controller.agent(host, "/v1/status")["replica"]
        assert status["run_mode"] == "systemd" and status["running"], status
        # The agent as on Debian: the replica's user, CAP_IPC_LOCK alone, a seccomp filter.
        assert controller.agent_process(host) == labctl.AGENT_LEAST_PRIVILEGE, host
        pid = controller.replica_pid(host, REPLICA_UNIT)
        # systemd took the unit's unlimited RLIMIT_MEMLOCK. (The lab's systemd cannot raise a
        # process's limit above the container's 8 MiB: this machine has no CAP_SYS_RESOURCE to
        # give its containers. The VM test reads /proc/PID/limits. The unit's CAP_IPC_LOCK
        # bypasses the cap, so VmLck below is the evidence that the memory is locked.)
        limit = lab.exec(host, "systemctl show --property=LimitMEMLOCK --property=LimitMEMLOCKSoft "
                               "tigerbeetle-replica.service").stdout.split()
        assert limit == ["LimitMEMLOCK=infinity", "LimitMEMLOCKSoft=infinity"], limit
        proc = lab.exec(host, f"cat /proc/{pid}/status").stdout
        locked, resident = labctl.vm_kib(proc, "VmLck"), labctl.vm_kib(proc, "VmRSS")
        assert locked >= 0.9 * resident, (host, locked, resident)
        assert "Unable to lock pages" not in controller.journal(host, REPLICA_UNIT)

    # Control through polkit, under a writing client: a restart by the agent; nothing else.
    before = controller.replica_pid(hosts[1], REPLICA_UNIT)
    with controller.client(600) as client:
        controller.tbctl("restart", "--inventory", str(inventory), "--replica", "1", timeout_s=300)
    report = client.stop()
    assert report["failures"] == 0 and report["requests"] > 0, report
    after = controller.replica_pid(hosts[1], REPLICA_UNIT)
    assert after not in (0, before), (before, after)
    for verb in ("restart", "reset-failed"):
        denied = lab.exec(hosts[0], f"runuser -u tigerbeetle -- systemctl --no-ask-password {verb} "
                                    "ssh.service", check=False)
        assert denied.returncode != 0, (verb, denied.stdout)

    # The start limit: a replica that keeps failing (its data file unreadable) is restarted until
    # systemd gives up and stays failed. After the repair, the operator's `tbctl start` brings
    # it back: the agent clears the failed state first (polkit grants reset-failed on the
    # replica unit alone), or systemd would refuse the start.
    failing, data_file = hosts[1], nix[hosts[1]]["host"]["dataFile"]
    controller.tbctl("stop", "--inventory", str(inventory), "--replica", "1")
    state = controller.fail_into_start_limit(failing, REPLICA_UNIT, data_file)
    assert (state["ActiveState"], state["limit_hit"]) == ("failed", "True"), state
    lab.exec(failing, f"chmod 0600 {data_file}")
    started = controller.tbctl("start", "--inventory", str(inventory), "--replica", "1", check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    controller.wait_ready()

    # A backup lands in the module's backup directory.
    controller.tbctl("backup", "--inventory", str(inventory), "--replica", "2", timeout_s=600)
    backup_dir = nix[hosts[2]]["host"]["backupDir"]
    listing = lab.exec(hosts[2], f"stat -c '%a %U' {backup_dir} && ls -A {backup_dir}").stdout.split("\n")
    assert listing[0] == "700 tigerbeetle" and listing[1], listing
    controller.wait_ready()

    # A deleted data file: no format, recover through the agent brings the replica back.
    lost, data_file = hosts[2], nix[hosts[2]]["host"]["dataFile"]
    controller.tbctl("stop", "--inventory", str(inventory), "--replica", "2")
    lab.exec(lost, f"rm {data_file}")
    state = controller.start_refused(lost, REPLICA_UNIT)
    assert (state["refused"], state["ActiveState"]) == ("True", "inactive"), state
    ready = controller.readiness_until(lost, "does not exist")
    assert f"data file {data_file} does not exist" in ready, ready
    controller.tbctl("recover", "--inventory", str(inventory), "--replica", "2", timeout_s=900)
    assert lab.exec(lost, f"test -e {data_file}", check=False).returncode == 0
    controller.wait_ready()
    assert "recover" in lab.exec(lost, "cat /var/log/tb-agent/audit.jsonl").stdout

    # The firewall: the controller (client and orchestrator networks) in, an outsider out.
    target = lab.hosts()[0].address
    verdicts = controller.firewall_verdicts(target, (3000, 7443))
    assert verdicts == {("controller", 3000): True, ("controller", 7443): True,
                        ("outsider", 3000): False, ("outsider", 7443): False}, verdicts
    # The peers, in neither network, reach the replica and agent ports (replication, quorum guard).
    lab.exec(hosts[1], f"timeout 3 bash -c '</dev/tcp/{target}/3000 && </dev/tcp/{target}/7443'")

    nixos_rollout(controller, hosts)

    # No token, no answer.
    url = controller.inventory["all"]["hosts"][hosts[0]]["tb_agent_url"] + "/v1/status"
    code = subprocess.run(lab.controller_command([
        "curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}", "--cacert",
        str(lab.ca_cert_path), url]), capture_output=True, text=True, timeout=30).stdout
    assert code == "401", code


def stage_next_system(controller, host: str, nix: dict) -> str:
    """Puts in the host's store what `nixos-rebuild build` would: the next system, whose units
    are the modules' evaluation of the changed inventory, each unit in a store path of its own
    as systemd-lib.nix makes them (the units' PATH packages stand in as install() made them). Nothing of it is active. Returns the system's store path."""
    root = Path(controller.lab.host(host).root)
    spec, agent = nix["host"], nix["agent"]
    for script in spec["storeScripts"]:
        write_store(root, script["path"], script["text"].encode(), mode=0o555)
    units = spec["unitFiles"]
    etc = etc_files(spec, agent)
    digest = hashlib.sha256(json.dumps([units, sorted(etc.items())], sort_keys=True, default=bytes.hex)
                            .encode()).hexdigest()[:32]
    system = f"/nix/store/{digest}-nixos-system-{host}"
    links = []
    for name, text in units.items():
        unit_digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        unit_path = f"/nix/store/{unit_digest}-unit-{name}.service/{name}.service"
        write_store(root, unit_path, text.encode())
        links.append(f"ln -sfn {unit_path} {system}/etc/systemd/system/{name}.service")
    for path, data in etc.items():
        write_store(root, f"{system}/etc/{path}", data)
    write_store(root, f"{system}/bin/switch-to-configuration",
                (STANDIN_DIR / "switch-to-configuration").read_bytes(), mode=0o555)
    controller.lab.exec(host, f"mkdir -p {system}/etc/systemd/system && " + " && ".join(links)
                        + f" && mkdir -p /etc/nixos-standin && echo {system} >/etc/nixos-standin/next-system")
    return system


def install_standins(controller, host: str) -> None:
    root = Path(controller.lab.host(host).root)
    for tool in ("nixos-rebuild", "nix-env"):
        target = root / "usr/local/bin" / tool
        target.write_bytes((STANDIN_DIR / tool).read_bytes())
        target.chmod(0o755)


def standin_events(controller, host: str) -> dict[str, list[int]]:
    """The stand-ins' log on a host: event -> its times (unix ns), in order."""
    events: dict[str, list[int]] = {}
    for line in controller.lab.exec(host, f"cat {STANDIN_LOG}").stdout.splitlines():
        event, _, ns = line.split()
        events.setdefault(event, []).append(int(ns))
    return events


def replica_cmdline(controller, host: str) -> str:
    pid = controller.replica_pid(host, REPLICA_UNIT)
    return controller.lab.exec(host, f"tr '\\0' ' ' </proc/{pid}/cmdline").stdout


def nixos_rollout(controller, hosts: list[str]) -> None:
    """rollout.yml's NixOS path (tigerbeetle_deploy: nixos), with stand-ins for nixos-rebuild,
    nix-env and switch-to-configuration (fixtures/nixos-standin). A first run stops at its first
    host, whose switch does its work and then fails (exit 4); the re-run finishes it: every host
    builds first, at once; then one host at a time switches, which leaves the replica running
    (X-RestartIfChanged=false), and the agent restarts it, the half-done host too; never two
    replicas down, no client request failing. A replica killed after its host's build, before
    its turn, comes back on its unchanged unit. A third run changes nothing."""
    lab, inventory = controller.lab, controller.inventory_path
    old_grid = controller.inventory["all"]["vars"]["tigerbeetle_cache_grid"]
    for host in hosts:
        controller.inventory["all"]["hosts"][host]["tigerbeetle_deploy"] = "nixos"
    controller.set_inventory_vars(tigerbeetle_cache_grid=NEXT_CACHE_GRID,
                                  tigerbeetle_nixos_flake="/etc/nixos")
    for host in hosts:
        nix = evaluate(controller, host)
        # As systemd-lib.nix renders it, and switch-to-configuration reads it.
        assert "X-RestartIfChanged=false" in nix["host"]["unitFiles"]["tigerbeetle-replica"].splitlines()
        stage_next_system(controller, host, nix)
        install_standins(controller, host)
        lab.exec(host, "touch /etc/nixos-standin/fail-after-switch")
    # The primary: killed after its build, it costs a view change.
    crashed = controller.tbctl("rollout", "order", "--inventory", str(inventory)).stdout.split()[-1]
    lab.exec(crashed, "touch /etc/nixos-standin/crash-after-build")
    failed = controller.playbook("rollout.yml", check=False)
    assert failed.returncode != 0 and "switch-to-configuration exited 4" in failed.stdout, failed.tail()
    crash_cmdline = lab.exec(crashed, "cat /var/log/nixos-standin-crash-cmdline").stdout
    assert f"--cache-grid={old_grid}" in crash_cmdline, crash_cmdline
    switched = [host for host in hosts if "switch-begin" in standin_events(controller, host)]
    assert len(switched) == 1, switched
    assert f"--cache-grid={old_grid}" in replica_cmdline(controller, switched[0])
    for host in hosts:
        lab.exec(host, f"rm -f /etc/nixos-standin/fail-after-switch /etc/nixos-standin/crash-after-build {STANDIN_LOG}")
    controller.wait_ready()
    finish_the_rollout(controller, hosts)
    rerun_changes_nothing(controller, hosts)


def finish_the_rollout(controller, hosts: list[str]) -> None:
    lab = controller.lab
    with labctl.Timeline(lab, unit=REPLICA_UNIT) as timeline:
        with controller.client(CLIENT_SECONDS_MAX) as client:
            controller.playbook("rollout.yml")
        report = client.stop()
    summary = timeline.summary()
    assert report["failures"] == 0 and report["requests"] > 0, report
    events = {host: standin_events(controller, host) for host in hosts}
    # Every build before any switch; one switch at a time, each after the previous host's
    # replica was back.
    first_switch = min(events[host]["switch-begin"][0] for host in hosts)
    assert all(events[host]["build-end"][0] < first_switch for host in hosts), events
    order = sorted(hosts, key=lambda host: events[host]["switch-begin"][0])
    switches = [(events[host]["switch-begin"][0], events[host]["switch-end"][0]) for host in order]
    assert all(end < begin for (_, end), (begin, _) in zip(switches, switches[1:])), (order, events)
    for host, previous in zip(order[1:], order):
        assert timeline.down_intervals(previous)[-1][1] * 1_000_000 < events[host]["switch-begin"][0], summary
    # The switch left each replica running; the agent restarted it after, once; never two down.
    for host in hosts:
        down_start = timeline.down_intervals(host)[-1][0] * 1_000_000
        assert events[host]["switch-end"][0] < down_start, (host, events[host], summary)
        assert f"--cache-grid={NEXT_CACHE_GRID}" in replica_cmdline(controller, host), host
        assert len([pid for pid in timeline.pids(host) if pid != 0]) == 2, (host, summary)
        assert lab.exec(host, "test -e /run/tb-rollout-replica-restart-pending", check=False).returncode != 0
    assert labctl.overlapping({h: timeline.down_intervals(h) for h in hosts}) == [], summary
    controller.wait_ready()


def rerun_changes_nothing(controller, hosts: list[str]) -> None:
    """A finished rollout run again restarts no replica."""
    with labctl.Timeline(controller.lab, unit=REPLICA_UNIT) as timeline:
        controller.playbook("rollout.yml")
    for host in hosts:
        assert len([pid for pid in timeline.pids(host) if pid != 0]) == 1, (host, timeline.summary())
