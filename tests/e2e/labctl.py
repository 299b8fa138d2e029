"""Support for the end-to-end tests: a lab of real systemd hosts (tests/hosts), the controller-side
files the playbooks need (tokens, vars), and helpers to run ansible-playbook, tbctl and a client
from inside the lab's network namespace.

Nothing here is a mock: the hosts are systemd-nspawn machines with their own systemd and sshd,
the replicas are real TigerBeetle processes, the agents serve real HTTPS with the lab CA.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence


import harness  # tests/hosts/harness/: on the path by tests/pytest.ini (scripts: PYTHONPATH)

REPO = Path(__file__).resolve().parents[2]

ANSIBLE_DIR = REPO / "ansible"
# The playbooks of this tree run by their full names from the collection built from ansible/
# and installed as an operator installs it (galaxy.yml); another tree's run by path.
COLLECTION = "tb_bare_metal.cluster"
# What the agent process is allowed (Controller.agent_process): the replica's user and its one
# capability, CAP_IPC_LOCK (bit 14), in every set, and a seccomp filter (SystemCallFilter=).
AGENT_PROCESS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Seccomp")
CAP_IPC_LOCK_MASK = f"{1 << 14:016x}"
AGENT_LEAST_PRIVILEGE = {"user": "tigerbeetle", "CapInh": CAP_IPC_LOCK_MASK,
                         "CapPrm": CAP_IPC_LOCK_MASK, "CapEff": CAP_IPC_LOCK_MASK,
                         "CapBnd": CAP_IPC_LOCK_MASK, "CapAmb": CAP_IPC_LOCK_MASK, "Seccomp": "2"}
# The packages the roles need that the lab's base image lacks; seeded from the controller's apt
# (the lab hosts have no route to any mirror), then the role's apt task finds them installed.
LAB_SEED_PACKAGES = ("polkitd",)
PLAYBOOK_TIMEOUT_S = 1200
CONTROLLER = str(harness.CONTROLLER_ADDRESS)
# An address on the controller side that is NOT in the client networks, for the firewall check.
OUTSIDER = str(harness.SUBNET.network_address + 250)
# The lab agents' backup schedule (`[backup] schedule`, 5-field cron, UTC): set, so every agent
# runs its scheduler, but due only on 1 January (a test that needs a tick sets its own).
BACKUP_SCHEDULE = "0 3 1 1 *"
# The line of an agent's /metrics that carries the release its replica runs (read here
# independently of /v1/status's running_release, which upgrade.yml waits on).
RELEASE_PATTERN = r"^tb_release(?:\{[^}]*\})? [0-9.eE+]+$"


def log(message: str) -> None:
    print(f"e2e: {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], timeout_s: float = 600, check: bool = True, **kwargs):
    """harness.run: output captured as text; raises LabError on failure when check."""
    kwargs.pop("capture_output", None)
    kwargs.pop("text", None)
    return harness.run(argv, timeout_s=timeout_s, check=check, **kwargs)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def vm_kib(status: str, key: str) -> int:
    """A `Vm*` value of /proc/PID/status, in KiB."""
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} missing from /proc/PID/status")


# The cargo-built binaries the tests use, by key and path under target/release/.
CARGO_BINARIES = {"tb_agent": "tb-agent", "tbctl": "tbctl", "commit_gap": "examples/commit_gap",
                  "bank": "examples/bank"}


def build_binaries() -> dict[str, Path]:
    """tb-agent, tbctl, the commit_gap and bank clients (cargo, release; the bank is the fault
    campaign's workload) and the tigerbeetle server.

    With TB_E2E_BIN_DIR set (scripts/test), the cargo-built ones are that directory's copies,
    built before the session: scripts/test runs `cargo test` beside this session, which links
    target/release/tbctl and tb-agent again with the test build's features, so the tests must
    not run, install or hash the files cargo rewrites under them."""
    staged = os.environ.get("TB_E2E_BIN_DIR")
    if staged:
        binaries = {key: Path(staged) / Path(name).name for key, name in CARGO_BINARIES.items()}
        missing = [str(path) for path in binaries.values() if not os.access(path, os.X_OK)]
        assert not missing, f"TB_E2E_BIN_DIR={staged} lacks {missing}"
    else:
        env = dict(os.environ)
        # What scripts/env sets: the same ZIG_PATH, or cargo would rebuild the client.
        run([str(REPO / "scripts" / "zig-path")], capture_output=True, text=True)
        env.update(ZIG_PATH=str(REPO / "scripts" / "zig-cargo"), TB_CLIENT_DEBUG="false")
        run(["cargo", "build", "--release", "--locked", "-p", "tb-agent", "-p", "tbctl",
             "--bins"], cwd=REPO, env=env, timeout_s=3600)
        run(["cargo", "build", "--release", "--locked", "-p", "tb-tests", "--example",
             "commit_gap", "--example", "bank"], cwd=REPO, env=env, timeout_s=3600)
        target = REPO / "target" / "release"
        binaries = {key: target / name for key, name in CARGO_BINARIES.items()}
    tigerbeetle = run([str(REPO / "scripts" / "tigerbeetle-build")], capture_output=True,
                      text=True, timeout_s=3600).stdout.strip()
    return {**binaries, "tigerbeetle": Path(tigerbeetle)}


def seed_packages(lab: "harness.Lab", packages: Sequence[str] = LAB_SEED_PACKAGES) -> None:
    """Installs packages the lab image lacks, downloaded on the controller with apt (the package
    set is what `apt-get install` would add to the hosts' own dpkg status), with dpkg on each host."""
    hosts = lab.hosts()
    status = Path(hosts[0].root) / "var" / "lib" / "dpkg" / "status"
    simulation = run(["apt-get", "-s", "-o", f"Dir::State::status={status}", "install",
                      "--no-install-recommends", *packages], capture_output=True, text=True)
    wanted = re.findall(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+)", simulation.stdout, re.M)
    if not wanted:
        return
    key = hashlib.sha256(json.dumps(sorted(wanted)).encode()).hexdigest()[:16]
    cache = harness.cache_dir() / f"lab-debs-{key}"
    if not cache.exists():
        work = Path(tempfile.mkdtemp(prefix="lab-debs.", dir=harness.cache_dir()))
        run(["apt-get", "download", *(f"{name}={version}" for name, version in wanted)],
            cwd=work, timeout_s=600)
        os.rename(work, cache)
    for host in hosts:
        target = Path(host.root) / "var" / "cache" / "tb-lab-debs"
        target.mkdir(parents=True, exist_ok=True)
        for deb in cache.glob("*.deb"):
            shutil.copy2(deb, target / deb.name)
        lab.exec(host.name, "DEBIAN_FRONTEND=noninteractive dpkg -i /var/cache/tb-lab-debs/*.deb"
                 " >/dev/null && rm -rf /var/cache/tb-lab-debs", timeout_s=300)


def metric_sample(text: str, series: str) -> float | None:
    """The value of `series` in a Prometheus text exposition (`series` bare matches it also with
    an empty label set); None when absent."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in (series, series + "{}"):
            return float(value)
    return None


class Controller:
    """The controller side of a lab: secrets, vars, inventory, and commands in the netns."""

    def __init__(self, lab: "harness.Lab", binaries: dict[str, Path], work: Path,
                 replica_count: int | None = None):
        """`replica_count`: the first hosts that are the cluster (default: up to three, the
        committed lab inventory's; hosts after them are outside it)."""
        self.lab = lab
        self.binaries = binaries
        self.work = work
        secrets_dir = work / "secrets"
        self.vars_path = work / "vars.json"
        self.inventory_path = work / "lab.json"
        if self.vars_path.exists():
            # A development lab kept up between runs (tests/e2e/devlab): reuse its secrets.
            self.token_file = secrets_dir / "ops.token"
            self.peer_token_file = secrets_dir / "peer.token"
            self.inventory = json.loads(self.inventory_path.read_text())
            self.vars = json.loads(self.vars_path.read_text())
            return
        secrets_dir.mkdir(mode=0o700)
        self.token_file = secrets_dir / "ops.token"
        self.peer_token_file = secrets_dir / "peer.token"
        hashes = {}
        for name, path in (("ops", self.token_file), ("peers", self.peer_token_file)):
            secret = run([str(binaries["tb_agent"]), "generate-token"], capture_output=True,
                         text=True).stdout.strip()
            harness.write_private(path, secret + "\n")
            hashes[name] = run([str(binaries["tb_agent"]), "hash-token"], input=secret,
                               capture_output=True, text=True).stdout.strip()
        # The committed lab inventory (tests/hosts), with this run's token hashes: the only
        # source of the cluster's settings, as in production (docs/inventory.md).
        replica_count = replica_count or min(len(lab.hosts()), harness.INVENTORY_REPLICA_COUNT)
        assert 1 <= replica_count <= len(lab.hosts()), (replica_count, len(lab.hosts()))
        self.inventory = harness.inventory(replica_count)
        self.inventory["all"]["vars"]["tb_agent_tokens"] = [
            {"name": "ops", "scopes": ["read", "control", "backup"], "sha256": hashes["ops"]},
            {"name": "peers", "scopes": ["read"], "sha256": hashes["peers"]},
        ]
        self.write_inventory()
        # Role variables (not inventory keys): what to install from this controller.
        self.vars = {
            "tigerbeetle_binary_src": str(binaries["tigerbeetle"]),
            "tigerbeetle_binary_sha256": sha256_file(binaries["tigerbeetle"]),
            "tb_agent_binary_src": str(binaries["tb_agent"]),
            "tb_agent_binary_sha256": sha256_file(binaries["tb_agent"]),
            "tb_agent_peer_token_src": str(self.peer_token_file),
            "tb_agent_token_file": str(self.token_file),
            "tb_agent_tls_cert_src": f"{lab.pki_dir}/{{{{ inventory_hostname }}}}.crt",
            "tb_agent_tls_key_src": f"{lab.pki_dir}/{{{{ inventory_hostname }}}}.key",
            "tb_agent_tls_ca_src": str(lab.ca_cert_path),
            # Scheduled backups: every agent runs its schedule, due only on 1 January, unless
            # a test gives a host its own (tb_lab_backup_schedules: {host: cron}, then a play).
            "tb_lab_backup_schedules": {},
            "tb_agent_backup_schedule": ("{{ tb_lab_backup_schedules[inventory_hostname] | "
                                         f"default('{BACKUP_SCHEDULE}') }}}}"),
            "tb_agent_backup_randomized_delay_s": 0,
            # The playbooks call tbctl on the controller (the maintenance lease).
            "tbctl_path": str(binaries["tbctl"]),
            # tbctl on the hosts too, with its generated bash completion and man page.
            "tb_agent_tbctl_binary_src": str(binaries["tbctl"]),
            "tb_agent_tbctl_binary_sha256": sha256_file(binaries["tbctl"]),
        }
        self.vars_path = work / "vars.json"
        self.write_vars()

    def write_inventory(self) -> None:
        """Writes the inventory and checks it with the Rust reader (`tbctl inventory check`),
        which applies every rule of docs/inventory.md, when this tbctl has that command."""
        harness.write_private(self.inventory_path, json.dumps(self.inventory, indent=2) + "\n")
        tbctl = str(self.binaries["tbctl"])
        if run([tbctl, "inventory", "check", "--help"], check=False).returncode == 0:
            run([tbctl, "inventory", "check", str(self.inventory_path)])

    def set_inventory_vars(self, **values) -> dict:
        """Changes cluster-wide inventory keys (all.vars), as an operator edits the inventory
        before rollout.yml; returns the previous values (None: absent) for restore_inventory_vars."""
        inventory_vars = self.inventory["all"]["vars"]
        previous = {key: inventory_vars.get(key) for key in values}
        inventory_vars.update(values)
        self.write_inventory()
        return previous

    def restore_inventory_vars(self, previous: dict) -> None:
        inventory_vars = self.inventory["all"]["vars"]
        for key, value in previous.items():
            if value is None:
                inventory_vars.pop(key, None)
            else:
                inventory_vars[key] = value
        self.write_inventory()

    def write_vars(self, **overrides) -> Path:
        self.vars.update(overrides)
        harness.write_private(self.vars_path, json.dumps(self.vars, indent=2))
        return self.vars_path

    @property
    def host_names(self) -> list[str]:
        return [host.name for host in self.lab.hosts()]

    def addresses(self) -> str:
        hosts = self.inventory["all"]["hosts"]
        return ",".join(hosts[name]["tigerbeetle_address"] for name in sorted(
            hosts, key=lambda name: hosts[name]["tigerbeetle_replica"]))

    def env(self, ansible_dir: Path = ANSIBLE_DIR) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.lab.ansible_env())
        env.update(ANSIBLE_CONFIG=str(ansible_dir / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_NOCOLOR="1", TBCTL_TOKEN_FILE=str(self.token_file),
                   PYTHONUNBUFFERED="1")
        if ansible_dir == ANSIBLE_DIR:
            env.update(ANSIBLE_COLLECTIONS_PATH=str(self.installed_collection()))
        return env

    def installed_collection(self) -> Path:
        """ansible/ built into a collection tarball and installed with ansible-galaxy, once per
        controller: a work directory kept across runs (tests/e2e/devlab) gets this tree's
        playbooks again, not the ones an earlier run installed."""
        installed = self.work / "collections"
        if not getattr(self, "_collection_installed", False):
            built = self.work / "collection-build"
            subprocess.run(["ansible-galaxy", "collection", "build", str(ANSIBLE_DIR),
                            "--output-path", str(built), "--force"],
                           check=True, capture_output=True, text=True, timeout=120)
            tarballs = sorted(built.glob("tb_bare_metal-cluster-*.tar.gz"))
            assert len(tarballs) == 1, f"expected one collection tarball in {built}: {tarballs}"
            subprocess.run(["ansible-galaxy", "collection", "install", "--force", "-p",
                            str(installed), str(tarballs[0])],
                           check=True, capture_output=True, text=True, timeout=120)
            self._collection_installed = True
        return installed

    def playbook(self, name: str, *args: str, check: bool = True,
                 timeout_s: float = PLAYBOOK_TIMEOUT_S,
                 ansible_dir: Path = ANSIBLE_DIR) -> "PlaybookRun":
        """The collection's playbook <name> by its full name, or the playbook of another tree's
        ansible/ (an earlier commit's) by its path there."""
        argv = self.playbook_argv(name, args, ansible_dir)
        started = time.monotonic()
        log(f"ansible-playbook {name} {' '.join(args)}")
        # stdin from /dev/null: ansible-playbook refuses a non-blocking stdin, which an ssh run
        # earlier in the same test may have left on the inherited one.
        result = subprocess.run(argv, env=self.env(ansible_dir), capture_output=True, text=True,
                                timeout=timeout_s, cwd=REPO, stdin=subprocess.DEVNULL)
        outcome = PlaybookRun(name, result.returncode, result.stdout, result.stderr,
                              time.monotonic() - started)
        log_dir = self.work / "logs"
        log_dir.mkdir(exist_ok=True)
        (log_dir / f"{int(time.time() * 1000)}-{name}.log").write_text(
            outcome.stdout + "\n--- stderr\n" + outcome.stderr)
        if check and result.returncode != 0:
            raise AssertionError(f"{name} failed ({result.returncode}):\n{outcome.tail()}\n"
                                 f"{self.failed_units_report()}")
        return outcome

    def playbook_argv(self, name: str, args: Sequence[str],
                      ansible_dir: Path = ANSIBLE_DIR) -> list[str]:
        if ansible_dir == ANSIBLE_DIR:
            playbook = f"{COLLECTION}.{Path(name).stem}"
        else:
            in_playbooks = ansible_dir / "playbooks" / name
            playbook = str(in_playbooks if in_playbooks.exists() else ansible_dir / name)
        return self.lab.controller_command([
            "ansible-playbook", "-i", str(self.inventory_path), playbook,
            "-e", f"@{self.vars_path}", *args])

    def playbook_killed(self, name: str, kill_after_s: float, *args: str) -> bool:
        """The playbook as a lost controller leaves it: ansible-playbook and every process it
        started (its forks, their ssh) SIGKILLed `kill_after_s` after its start. Returns whether
        it was still running then (False: it had ended by itself). Its output is kept with the
        other playbook logs."""
        log_dir = self.work / "logs"
        log_dir.mkdir(exist_ok=True)
        log(f"ansible-playbook {name} {' '.join(args)} (killed after {kill_after_s} s)")
        with open(log_dir / f"{int(time.time() * 1000)}-{name}-killed.log", "w") as output:
            process = subprocess.Popen(self.playbook_argv(name, args), env=self.env(),
                                       stdout=output, stderr=subprocess.STDOUT, cwd=REPO,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                process.wait(timeout=kill_after_s)
                return False
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return True

    def bootstrap_vars(self) -> list[str]:
        """What bootstrap.yml needs beyond the vars file: the operator's confirmation (the
        cluster id) and the tbctl it runs `tbctl bootstrap-check` with."""
        cluster_id = self.inventory["all"]["vars"]["tigerbeetle_cluster_id"]
        return ["-e", f"tigerbeetle_bootstrap_confirm={cluster_id}",
                "-e", f"tbctl_path={self.binaries['tbctl']}"]

    def bootstrap(self, *args: str, check: bool = True,
                  ansible_dir: Path = ANSIBLE_DIR) -> "PlaybookRun":
        """bootstrap.yml as an operator runs it for a new cluster (confirmed)."""
        return self.playbook("bootstrap.yml", *self.bootstrap_vars(), *args, check=check,
                             ansible_dir=ansible_dir)

    def failed_units_report(self, journal_lines: int = 40) -> str:
        """What systemd says about every failed unit on every host: a failed task names only
        the unit, and the lab (with its journals) is gone when CI prints the failure."""
        script = ("for unit in $(systemctl list-units --failed --plain --no-legend "
                  "| awk '{print $1}'); do systemctl status --no-pager --lines=0 \"$unit\"; "
                  f"journalctl --no-pager --lines={journal_lines} --unit=\"$unit\"; done")
        report = []
        for host in self.host_names:
            try:
                result = self.lab.exec(host, script, timeout_s=30, check=False)
            except subprocess.SubprocessError as error:
                report.append(f"--- {host}: {error}")
                continue
            if result.returncode != 0 or result.stdout.strip():
                report.append(f"--- failed units on {host} (exit {result.returncode}):\n"
                              f"{result.stdout}{result.stderr}")
        return "\n".join(report) or "--- no failed units on any host"

    def tbctl_argv(self, *args: str) -> list[str]:
        return self.lab.controller_command([
            str(self.binaries["tbctl"]), "--ca-file", str(self.lab.ca_cert_path), *args])

    def tbctl(self, *args: str, check: bool = True, timeout_s: float = 300):
        return subprocess.run(self.tbctl_argv(*args), env=self.env(), capture_output=True,
                              text=True, timeout=timeout_s, check=check)

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Until tbctl reports every replica ready (a deadline, not a sleep)."""
        harness.wait_for(
            "every replica ready (tbctl status)",
            lambda: self.tbctl("status", "--inventory", str(self.inventory_path), check=False),
            lambda result: result.returncode == 0, timeout_s=timeout_s, interval_s=1)

    def connects(self, source: str, address: str, port: int) -> bool:
        """A TCP connection from a controller-side source address (inside the lab netns)."""
        code = ("import socket, sys\n"
                "try:\n"
                f"    socket.create_connection(('{address}', {port}), timeout=3,"
                f" source_address=('{source}', 0)).close()\n"
                "except OSError as error:\n"
                "    print(error); sys.exit(1)\n")
        return run(self.lab.controller_command(["python3", "-c", code]), check=False).returncode == 0

    def firewall_verdicts(self, target: str, ports: Sequence[int]) -> dict[tuple[str, int], bool]:
        """Whether each port of `target` accepts a TCP connection from the controller (inside
        the client and orchestrator networks) and from an outsider (in neither), whose address
        is on the lab bridge only for the check."""
        bridge = ["dev", harness.BRIDGE]
        self.lab.run_controller(["ip", "addr", "add", f"{OUTSIDER}/32", *bridge])
        try:
            return {(name, port): self.connects(source, target, port)
                    for name, source in (("controller", CONTROLLER), ("outsider", OUTSIDER))
                    for port in ports}
        finally:
            self.lab.run_controller(["ip", "addr", "del", f"{OUTSIDER}/32", *bridge], check=False)

    def status(self) -> list[dict]:
        result = self.tbctl("status", "--inventory", str(self.inventory_path), "--json",
                            check=False)
        return json.loads(result.stdout)

    def agent(self, host: str, path: str, method: str = "GET", timeout_s: float = 30) -> dict:
        """One request to a host's agent over TLS, verified with the lab CA (curl, no token in
        argv: the header comes from a 0600 file)."""
        return json.loads(self.agent_text(host, path, method, timeout_s))

    def agent_text(self, host: str, path: str, method: str = "GET", timeout_s: float = 30) -> str:
        url = self.inventory["all"]["hosts"][host]["tb_agent_url"] + path
        header = self.work / "secrets" / "auth.header"
        harness.write_private(header, f"Authorization: Bearer {self.token_file.read_text().strip()}\n")
        result = run(self.lab.controller_command([
            "curl", "--silent", "--show-error", "--max-time", str(timeout_s), "--cacert",
            str(self.lab.ca_cert_path), "-H", f"@{header}", "-X", method, url]),
            capture_output=True, text=True, check=False, timeout_s=timeout_s + 5)
        if result.returncode != 0:
            raise AssertionError(f"{method} {url}: curl {result.returncode}: {result.stderr}")
        return result.stdout

    def metric(self, host: str, series: str) -> float | None:
        """One unlabelled sample (`series`, or `series{labels}` written in full) of the host's
        agent's /metrics; None when absent."""
        return metric_sample(self.agent_text(host, "/metrics"), series)

    def cluster_view(self, timeout_s: float = 60) -> int:
        """The view every replica reports in normal status (StatsD, every 10 s), once they
        agree."""
        replicas = harness.wait_for(
            "every replica normal in one view",
            lambda: [self.agent(host, "/v1/status")["replica"] for host in self.host_names],
            lambda replicas: all(r["replica_status"] == 0 for r in replicas)
            and len({r["replica_view"] for r in replicas}) == 1,
            timeout_s=timeout_s, interval_s=1)
        return replicas[0]["replica_view"]

    def gate_source(self, host: str) -> str | None:
        """The evidence that passed the current replica process's readiness (its gate), from the
        agent's /metrics: "log" or "statsd"."""
        text = self.agent_text(host, "/metrics")
        return next((source for source in ("log", "statsd")
                     if metric_sample(text, f'tb_agent_replica_gate_source{{source="{source}"}}')
                     == 1), None)

    def backups(self, host: str) -> list:
        """The host's backups as its agent lists them (GET /v1/backups answers a list)."""
        listed = self.agent(host, "/v1/backups")
        assert isinstance(listed, list), listed
        return listed

    def running_release(self, host: str) -> str | None:
        """The release the host's replica process reports it runs (StatsD gauge tb.release on
        the agent's /metrics, packed major << 16 | minor << 8 | patch), not the binary on disk."""
        match = re.search(RELEASE_PATTERN, self.agent_text(host, "/metrics"), re.M)
        if match is None:
            return None
        value = int(float(match[0].split(" ")[-1]))
        return f"{value >> 16}.{(value >> 8) & 0xff}.{value & 0xff}"

    def agent_process(self, host: str, unit: str = "tb-agent.service") -> dict[str, str]:
        """Who the running agent is, from /proc/<its pid>/status: its user, capability sets
        (hex masks) and seccomp mode (2: a filter)."""
        pid = self.lab.exec(host, f"systemctl show --property=MainPID --value {unit}").stdout.strip()
        assert pid not in ("", "0"), (host, unit, "not running")
        out = self.lab.exec(host, f"stat -c %U /proc/{pid} && cat /proc/{pid}/status").stdout
        user, status = out.split("\n", 1)
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        return {"user": user, **{key: fields[key].strip() for key in AGENT_PROCESS_FIELDS}}

    def replica_pid(self, host: str, unit: str = "tigerbeetle.service") -> int:
        """The replica unit's main pid (0: not running). The Ansible role's unit by default."""
        out = self.lab.exec(host, f"systemctl show --property=MainPID --value {unit}")
        return int(out.stdout.strip() or 0)

    def unit_state(self, host: str, unit: str, until: Sequence[str],
                   timeout_s: float = 30) -> dict[str, str]:
        """ActiveState, NRestarts and ExecMainStatus of a unit once its ActiveState is one of
        `until`, or at the deadline (for the caller's assertion to show). Not merely "settled":
        a Type=exec unit whose process exits at once is "active" before it is "failed"."""
        def observe() -> dict[str, str]:
            out = self.lab.exec(host, "systemctl show --property=ActiveState "
                                      f"--property=NRestarts --property=ExecMainStatus {unit}")
            return dict(line.split("=", 1) for line in out.stdout.splitlines())
        state, _ = harness.poll(observe, lambda state: state["ActiveState"] in until,
                                timeout_s=timeout_s, interval_s=0.1)
        return state

    def start_refused(self, host: str, unit: str, timeout_s: float = 30) -> dict[str, str]:
        """Starts a replica unit whose data file is missing: its ActiveState and NRestarts once
        its start script has refused (one more "refusing to start" line in its journal) and it
        has stopped, or at the deadline. Not ExecMainStatus: systemd unloads an inactive unit
        that nothing references, and with it the status of its last run."""
        count_refusals = (f"journalctl --unit={unit} --output=cat --no-pager "
                          "| grep -c 'does not exist; refusing to start' || true")
        before = int(self.lab.exec(host, count_refusals).stdout.strip() or 0)
        self.lab.exec(host, f"systemctl start {unit}", check=False)
        def observe() -> dict[str, str]:
            refused = int(self.lab.exec(host, count_refusals).stdout.strip() or 0) > before
            out = self.lab.exec(host, f"systemctl show --property=ActiveState --property=NRestarts {unit}")
            return dict(line.split("=", 1) for line in out.stdout.splitlines()) | \
                {"refused": str(refused)}
        state, _ = harness.poll(
            observe,
            lambda state: state["refused"] == "True"
            and state["ActiveState"] in ("inactive", "failed"),
            timeout_s=timeout_s, interval_s=0.1)
        return state

    def fail_into_start_limit(self, host: str, unit: str, data_file: str,
                              timeout_s: float = 120) -> dict[str, str]:
        """Starts a stopped replica unit whose data file its user cannot read (mode 0000, as
        after a wrong chmod): the replica exits at once, Restart=on-failure starts it again until
        systemd gives up (StartLimitBurst) and the unit stays failed, where a plain start is
        refused. Its ActiveState and NRestarts, and limit_hit: whether systemd logged that it gave
        up ("Start request repeated too quickly"; Result keeps the first failure's, exit-code),
        once it did and the unit is failed, or at the deadline. The data file stays unreadable:
        restoring it is the caller's repair."""
        count_hits = (f"journalctl --unit={unit} --output=cat --no-pager "
                      "| grep -c 'Start request repeated too quickly' || true")
        before = int(self.lab.exec(host, count_hits).stdout.strip() or 0)
        self.lab.exec(host, f"chmod 0000 {data_file} && systemctl start {unit}")
        def observe() -> dict[str, str]:
            hit = int(self.lab.exec(host, count_hits).stdout.strip() or 0) > before
            out = self.lab.exec(host, f"systemctl show --property=ActiveState --property=NRestarts {unit}")
            return dict(line.split("=", 1) for line in out.stdout.splitlines()) | \
                {"limit_hit": str(hit)}
        state, _ = harness.poll(
            observe, lambda state: state["limit_hit"] == "True" and state["ActiveState"] == "failed",
            timeout_s=timeout_s, interval_s=0.2)
        return state

    def readiness_until(self, host: str, text: str, timeout_s: float = 15) -> str:
        """The agent's readiness report once it contains `text`, or at the deadline (for the
        caller's assertion to show): the agent polls its replica's unit every second."""
        report, _ = harness.poll(lambda: self.agent_text(host, "/v1/health/ready"),
                                 lambda report: text in report, timeout_s=timeout_s,
                                 interval_s=0.2)
        return report

    def journal(self, host: str, unit: str, lines: int = 50) -> str:
        return self.lab.exec(host, f"journalctl --unit={unit} --no-pager --lines={lines}").stdout

    @contextlib.contextmanager
    def client(self, seconds: int, extra: Sequence[str] = ()) -> Iterator["ClientRun"]:
        """commit_gap writing transfers the whole time, from the controller (a client network)."""
        argv = self.lab.controller_command([
            str(self.binaries["commit_gap"]), "--cluster-id", "0", "--addresses",
            self.addresses(), "--seconds", str(seconds), *extra])
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        client = ClientRun(process)
        try:
            yield client
        finally:
            client.stop()


class ClientRun:
    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.report: dict | None = None
        self.stderr = ""

    def stop(self) -> dict:
        if self.report is None:
            if self.process.poll() is None:
                self.process.terminate()
            stdout, self.stderr = self.process.communicate(timeout=120)
            try:
                self.report = json.loads(stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                raise AssertionError(f"the client printed no report: {stdout!r} {self.stderr!r}")
        return self.report


class ReplClient:
    """A client of any release: the given tigerbeetle binary's `repl`, one session per request
    (`command`, whose answer must contain `expect`), every REQUEST_INTERVAL_S in a thread, from the
    controller. For a cluster older than this tree's client (commit_gap), as during an upgrade.
    Records each request's end and outcome; `stop` returns the counts, the first failures and
    the longest stall (the longest time between two successful answers, from the start)."""

    REQUEST_INTERVAL_S = 0.5
    REQUEST_TIMEOUT_S = 30

    def __init__(self, controller: "Controller", binary: str, command: str, expect: str):
        self.controller, self.binary, self.command, self.expect = controller, binary, command, expect
        self.answers: list[tuple[float, bool]] = []
        self.failures: list[tuple[float, str, str]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def request(self) -> subprocess.CompletedProcess:
        return run(self.controller.lab.controller_command([
            self.binary, "repl", "--cluster=0", f"--addresses={self.controller.addresses()}",
            f"--command={self.command}"]), check=False, timeout_s=self.REQUEST_TIMEOUT_S)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                result = self.request()
                ok = result.returncode == 0 and self.expect in result.stdout
                out, err = result.stdout[-200:], result.stderr[-200:]
            except subprocess.TimeoutExpired:
                ok, out, err = False, "", f"no answer in {self.REQUEST_TIMEOUT_S} s"
            self.answers.append((time.monotonic(), ok))
            if not ok:
                self.failures.append((time.time(), out, err))
            time.sleep(self.REQUEST_INTERVAL_S)

    def __enter__(self) -> "ReplClient":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> dict:
        self._stopping.set()
        self._thread.join(timeout=self.REQUEST_TIMEOUT_S * 2)
        successes = [self.started] + [at for at, ok in self.answers if ok]
        gaps = [later - earlier for earlier, later in zip(successes, successes[1:])]
        return {"requests": len(self.answers), "failures": len(self.failures),
                "first_failures": self.failures[:5],
                "longest_stall_ms": round(max(gaps, default=0) * 1000)}


class PlaybookRun:
    RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                       re.M)

    def __init__(self, name: str, returncode: int, stdout: str, stderr: str, seconds: float):
        self.name, self.returncode, self.stdout, self.stderr = name, returncode, stdout, stderr
        self.seconds = seconds

    def recap(self) -> dict[str, dict[str, int]]:
        return {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]),
                       "failed": int(m[4])} for m in self.RECAP.findall(self.stdout)}

    def tail(self, lines: int = 60) -> str:
        return "\n".join((self.stdout + "\n" + self.stderr).splitlines()[-lines:])

    TASK_HEADER = re.compile(r"^(TASK|PLAY|RUNNING HANDLER) \[(.*)\] \**$")
    HOST_RESULT = re.compile(r"^(ok|changed|skipping|fatal|failed): \[([^\]\s]+)")

    def task_results(self, task: str) -> dict[str, list[str]]:
        """Per host, the result of each run of the task named `task`, in order (the default
        callback's "ok: [host]", "skipping: [host]"...: a serial play runs it once per host)."""
        results: dict[str, list[str]] = {}
        current = None
        for line in self.stdout.splitlines():
            header = self.TASK_HEADER.match(line)
            if header:
                current = header[2]
                continue
            result = self.HOST_RESULT.match(line)
            if result and current == task:
                results.setdefault(result[2], []).append(result[1])
        return results

    # rollout.yml's "Say how this host stages" (tasks/stage_systemd.yml): "<host>: stage fast"
    # or "<host>: stage full: ...", in a message Ansible may fold over lines.
    STAGING = re.compile(r"['\"]?([a-z0-9-]+): stage (fast|full)\b")

    def staging_paths(self) -> dict[str, str]:
        """Per host, how rollout.yml's staging play staged it: "fast" (only the staged files,
        its applied record matched) or "full" (the roles in full)."""
        return dict(self.STAGING.findall(" ".join(self.stdout.split())))


class Timeline:
    """Samples every host's replica (systemd MainPID) every 100 ms, from a loop on each host, so
    the order of restarts and any overlap of downtime can be checked afterwards."""

    SAMPLE_S = 0.1

    def __init__(self, lab: "harness.Lab", unit: str = "tigerbeetle.service"):
        self.lab = lab
        self.unit = unit
        self.processes: dict[str, subprocess.Popen] = {}
        self.samples: dict[str, list[tuple[int, int]]] = {}

    def __enter__(self) -> "Timeline":
        script = ("while :; do echo \"$(date +%s%3N) "
                  f"$(systemctl show --property=MainPID --value {self.unit})\"; "
                  f"sleep {self.SAMPLE_S}; done")
        for host in self.lab.hosts():
            self.processes[host.name] = subprocess.Popen(
                self.lab.controller_command(self.lab.ssh_command(host.name, script)),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc) -> None:
        for name, process in self.processes.items():
            process.terminate()
            stdout, _ = process.communicate(timeout=30)
            samples = []
            for line in stdout.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    samples.append((int(parts[0]), int(parts[1])))
            self.samples[name] = samples

    def cut(self, until_ms: int) -> None:
        """Forgets the samples after `until_ms` (what happened after the step under test)."""
        for host in self.samples:
            self.samples[host] = [s for s in self.samples[host] if s[0] <= until_ms]

    def pids(self, host: str) -> list[int]:
        """The distinct replica pids in order (0 = not running)."""
        out: list[int] = []
        for _, pid in self.samples[host]:
            if not out or out[-1] != pid:
                out.append(pid)
        return out

    def down_intervals(self, host: str) -> list[tuple[int, int]]:
        """[start_ms, end_ms] intervals where the replica had no process, or where its pid
        changed between two samples (a restart faster than the sampling)."""
        intervals = []
        samples = self.samples[host]
        start = None
        for (t0, p0), (t1, p1) in zip(samples, samples[1:]):
            if p1 == 0 and start is None:
                start = t1
            elif p1 != 0 and start is not None:
                intervals.append((start, t1))
                start = None
            elif p0 != 0 and p1 != 0 and p0 != p1:
                intervals.append((t0, t1))
        if start is not None:
            intervals.append((start, samples[-1][0]))
        return intervals

    def summary(self) -> dict:
        return {host: {"pids": self.pids(host), "down_ms": self.down_intervals(host)}
                for host in self.samples}


def overlapping(intervals: dict[str, list[tuple[int, int]]]) -> list[tuple[str, str]]:
    flat = [(start, end, host) for host, spans in intervals.items() for start, end in spans]
    pairs = []
    for i, (s1, e1, h1) in enumerate(flat):
        for s2, e2, h2 in flat[i + 1:]:
            if h1 != h2 and s1 < e2 and s2 < e1:
                pairs.append((h1, h2))
    return pairs


def keep_logs(work: Path, name: str) -> None:
    """Copies a controller's playbook logs to target/e2e/logs/<name>/ (replacing older ones)."""
    source = work / "logs"
    if not source.is_dir():
        return
    target = REPO / "target" / "e2e" / "logs" / name
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target)


def record(name: str, data: dict) -> Path:
    """Writes what a test measured to target/e2e/<name>.json and prints it."""
    directory = REPO / "target" / "e2e"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    log(f"{name}: {json.dumps(data)}")
    return path
