"""The lab: hosts booted from copies of the root filesystem with `systemd-nspawn --boot`, on the
lab's bridge; their state file, lifecycle (`up`, `down`, which also cleans a crashed run's
leftovers) and faults."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from . import cgroups, controller, network, pki, processes, volumes
from .common import (COMMAND_TIMEOUT_S_DEFAULT, SLOT_SUFFIX, LabError, log, make_private_dir,
                     run, state_dir_default, write_private)
from .controller import SSH_CONNECT_TIMEOUT_S
from .inventory import INVENTORY_PATH
from .locks import heavy_lock
from .network import (BRIDGE, CONTROLLER_ADDRESS, HOST_COUNT_MAX, NETNS_PATH, SUBNET,
                      host_address, host_name)
from .rootfs import rootfs_build
from .wait import poll, wait_for

BOOT_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
RMTREE_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    index: int
    address: str
    root: str
    nspawn_pid: int
    log_path: str
    tls_cert: str
    tls_key: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Lab:
    def __init__(self, state_dir: Path | None = None):
        self.state_dir = Path(state_dir) if state_dir else state_dir_default()

    # Paths ----------------------------------------------------------------------------------

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def ssh_key_path(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "ssh" / "known_hosts"

    @property
    def ca_cert_path(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    # State ----------------------------------------------------------------------------------

    def hosts(self) -> list[Host]:
        if not self.state_path.exists():
            return []
        state = json.loads(self.state_path.read_text())
        return [Host(**host) for host in state["hosts"]]

    def host(self, name: str) -> Host:
        for host in self.hosts():
            if host.name == name or host.address == name:
                return host
        raise LabError(f"no lab host {name!r} (running: {[h.name for h in self.hosts()]})")

    def _save(self, hosts: list[Host]) -> None:
        text = json.dumps({"hosts": [h.to_json() for h in hosts]}, indent=2)
        write_private(self.state_path.with_suffix(".tmp"), text)
        os.rename(self.state_path.with_suffix(".tmp"), self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        make_private_dir(self.state_dir)
        with open(self.state_dir / "lab.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # Commands -------------------------------------------------------------------------------

    def controller_command(self, argv: Sequence[str]) -> list[str]:
        """argv run on the controller side: inside the lab's network namespace."""
        return controller.controller_command(argv)

    def run_controller(self, argv: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S_DEFAULT,
                       check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return run(self.controller_command(argv), timeout_s=timeout_s, check=check, **kwargs)

    def ssh_options(self) -> list[str]:
        return controller.ssh_options(self.ssh_key_path, self.known_hosts_path)

    def ssh_command(self, host: str, command: str) -> list[str]:
        """ssh argv (to run with controller_command) that runs a shell command on a host."""
        target = self.host(host)
        return ["ssh", *self.ssh_options(), f"root@{target.address}", command]

    def exec(self, host: str, command: str, timeout_s: float = COMMAND_TIMEOUT_S_DEFAULT,
             check: bool = True) -> subprocess.CompletedProcess:
        """Runs a shell command on a host over ssh, from the controller side."""
        return self.run_controller(self.ssh_command(host, command), timeout_s=timeout_s,
                                   check=check)

    def ansible_env(self) -> dict[str, str]:
        """Environment for ansible-playbook against the lab (run it with controller_command)."""
        return controller.ansible_env(self.ssh_key_path, self.known_hosts_path,
                                      self.ca_cert_path, self.pki_dir)

    def paths(self) -> dict:
        return {
            "state_dir": str(self.state_dir),
            "netns": str(NETNS_PATH),
            "bridge": BRIDGE,
            "controller_address": str(CONTROLLER_ADDRESS),
            "ssh_key": str(self.ssh_key_path),
            "known_hosts": str(self.known_hosts_path),
            "ca_cert": str(self.ca_cert_path),
            "inventory": str(INVENTORY_PATH),
            "hosts": [h.to_json() for h in self.hosts()],
        }

    # Faults ---------------------------------------------------------------------------------

    def partition(self, host: str) -> None:
        """Drops every packet to and from one host on the lab bridge (the host keeps running)."""
        network.partition(self.host(host).address)

    def heal(self, host: str) -> None:
        network.heal(self.host(host).address)

    def partitioned(self) -> list[str]:
        return network.partitioned()

    def hard_restart(self, name: str, down_s: float = 0.0) -> Host:
        """The host's container stopped hard, then booted again on the same root filesystem:
        every process in the host's cgroups (the nspawn, the host's systemd and every unit)
        SIGKILLed at once, so no unit stops and the host runs no shutdown; after `down_s`, a
        fresh boot. Not power loss: the page cache is this machine's and survives, so nothing
        here says what a power cut would leave on disk."""
        with self._locked():
            hosts = self.hosts()
            index = next((i for i, h in enumerate(hosts) if h.name == name), None)
            if index is None:
                raise LabError(f"no host {name} in the lab")
            host = hosts[index]
            self._kill_host(host)
            time.sleep(down_s)
            process = self._launch(host.name, Path(host.root), Path(host.log_path), mode="a")
            hosts[index] = dataclasses.replace(host, nspawn_pid=process.pid)
            self._save(hosts)
        self._wait_ssh(hosts[index], time.monotonic() + BOOT_TIMEOUT_S)
        log(f"{name}: stopped hard and booted again")
        return hosts[index]

    def freeze_unit(self, name: str, unit: str, frozen: bool) -> None:
        """Freezes (or thaws) every process of a unit on a host, through the cgroup2 freezer of
        the unit's cgroup, written from this machine: the processes stop running without being
        told (no signal, not the stopped state SIGSTOP leaves in /proc), as a process whose event
        loop hangs looks from outside. The host's systemd cannot do it (`systemctl freeze`
        needs a unified cgroup hierarchy, and this machine's may be hybrid). Waits until the
        kernel reports the cgroup frozen (or thawed)."""
        directory = next((path / "payload" / "system.slice" / unit
                          for path in cgroups.host_cgroup_dirs(name)
                          if (path / "cgroup.freeze").exists()), None)
        if directory is None or not (directory / "cgroup.freeze").exists():
            raise LabError(f"{name}: no cgroup2 freezer for {unit} ({directory})")
        (directory / "cgroup.freeze").write_text("1\n" if frozen else "0\n")
        expected = f"frozen {int(frozen)}"
        wait_for(f"{name}'s {unit} {'frozen' if frozen else 'thawed'}",
                 lambda: (directory / "cgroup.events").read_text().splitlines(),
                 lambda events: expected in events, timeout_s=10, interval_s=0.05)

    def _kill_host(self, host: Host) -> None:
        dirs = cgroups.host_cgroup_dirs(host.name)
        kill_until_gone(lambda: sorted({pid for path in dirs for pid in cgroups.procs(path)}
                                       - {os.getpid()}), host.name)
        processes.reap(host.nspawn_pid)
        # The host's systemd builds its cgroup tree again at boot.
        for path in dirs:
            cgroups.remove_cgroup_tree(path)

    # Lifecycle ------------------------------------------------------------------------------

    def up(self, count: int) -> list[Host]:
        if not 1 <= count <= HOST_COUNT_MAX:
            raise LabError(f"host count must be between 1 and {HOST_COUNT_MAX}, not {count}")
        for tool in ("nsenter", "systemd-nspawn", "ip", "nft", "ssh", "ssh-keygen", "openssl"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is missing: run scripts/deps")
        rootfs = rootfs_build()
        with self._locked():
            self._down_locked()
            started = time.monotonic()
            network.network_up()
            pki.ssh_key(self.ssh_key_path)
            pki.certificates(self.pki_dir, self.ca_cert_path, count)
            make_private_dir(self.hosts_dir)
            hosts = []
            try:
                for index in range(count):
                    hosts.append(self._host_start(rootfs, index))
                    self._save(hosts)
                pki.known_hosts(self.known_hosts_path,
                                ((h.address, h.name, Path(h.root)) for h in hosts))
                deadline = time.monotonic() + BOOT_TIMEOUT_S
                for host in hosts:
                    self._wait_ssh(host, deadline)
            except BaseException:
                self._down_locked()
                raise
            log(f"{count} hosts up in {time.monotonic() - started:.1f} s: "
                + ", ".join(f"{h.name}={h.address}" for h in hosts))
            return hosts

    def down(self) -> None:
        with self._locked():
            self._down_locked()

    def _host_start(self, rootfs: Path, index: int) -> Host:
        name, address = host_name(index), host_address(index)
        host_dir = make_private_dir(self.hosts_dir / name)
        root = host_dir / "root"
        run(["cp", "-a", "--reflink=auto", str(rootfs), str(root)], timeout_s=600)
        volumes.create(root)
        etc = root / "etc"
        (etc / "hostname").write_text(f"{name}\n")
        (etc / "hosts").write_text(
            f"127.0.0.1 localhost\n{address} {name}\n"
            + "".join(f"{host_address(i)} {host_name(i)}\n"
                      for i in range(HOST_COUNT_MAX) if i != index))
        (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
        pki.host_ssh_key(etc, name)
        root_ssh = root / "root" / ".ssh"
        root_ssh.mkdir(mode=0o700, exist_ok=True)
        os.chmod(root_ssh, 0o700)
        write_private(root_ssh / "authorized_keys",
                      self.ssh_key_path.with_suffix(".pub").read_text())
        (etc / "systemd" / "network" / "10-host0.network").write_text(
            "# Lab address; sorts before nspawn's 80-container-host0.network (DHCP).\n"
            "[Match]\nName=host0\n\n"
            f"[Network]\nAddress={address}/{SUBNET.prefixlen}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        log_path = host_dir / "console.log"
        process = self._launch(name, root, log_path, mode="w")
        return Host(name=name, index=index, address=str(address), root=str(root),
                    nspawn_pid=process.pid, log_path=str(log_path),
                    tls_cert=str(self.pki_dir / f"{name}.crt"),
                    tls_key=str(self.pki_dir / f"{name}.key"))

    def _launch(self, name: str, root: Path, log_path: Path, mode: str) -> subprocess.Popen:
        """Boots the host's root filesystem with systemd-nspawn, in the host's own cgroups."""
        # Machine names are per machine, not per namespace: another slot's hosts have their own.
        machine = f"{name}-lab{SLOT_SUFFIX}" if SLOT_SUFFIX else name
        host_cgroups = cgroups.host_cgroup_dirs(name)
        for path in host_cgroups:
            path.mkdir(exist_ok=True)
        with open(log_path, mode) as console:
            return subprocess.Popen(
                self.controller_command([
                    "systemd-nspawn", "--boot", "--register=no", "--keep-unit",
                    f"--network-bridge={BRIDGE}", "--capability=CAP_IPC_LOCK",
                    volumes.nspawn_bind(root),
                    "--console=read-only", "-D", str(root), "-M", machine]),
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=lambda: cgroups.enter_cgroups(host_cgroups))

    def _wait_ssh(self, host: Host, deadline: float) -> None:
        """Ready means sshd accepts the lab key: the host's systemd got as far as sshd."""
        def answer() -> subprocess.CompletedProcess:
            if not processes.alive(host.nspawn_pid):
                raise LabError(f"{host.name}: systemd-nspawn exited during boot; "
                               f"see {host.log_path}")
            return self.run_controller(
                ["ssh", *self.ssh_options(), f"root@{host.address}", "true"],
                timeout_s=SSH_CONNECT_TIMEOUT_S + 5, check=False)
        result, answered = poll(answer, lambda result: result.returncode == 0,
                                timeout_s=max(0.0, deadline - time.monotonic()), interval_s=0.5)
        if not answered:
            raise LabError(f"{host.name}: sshd did not answer within {BOOT_TIMEOUT_S} s: "
                           f"{result.stderr.strip()}; see {host.log_path}")

    def _down_locked(self) -> None:
        """Stops every machine, deletes the namespace and removes the host copies. Safe to run
        on a lab in any state, including after a crash."""
        hosts = self.hosts()
        started = time.monotonic()
        # Orderly poweroff first: nspawn forwards SIGTERM as SIGRTMIN+3 to the host's systemd.
        for host in hosts:
            if processes.is_nspawn(host.nspawn_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(host.nspawn_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for host in hosts:
            # Past the deadline, what is left is killed below.
            poll(lambda: processes.is_nspawn(host.nspawn_pid), lambda running: not running,
                 timeout_s=max(0.0, deadline - time.monotonic()), interval_s=0.2)
        log(f"down: machines stopped in {time.monotonic() - started:.1f} s")
        # Whatever is left (a hung shutdown, a crashed earlier run): every process rooted in a
        # host copy, living in the lab's namespace or in a host's cgroup is the lab's own.
        kill_until_gone(self._lab_pids, "the lab")
        # Every host's cgroup, also of a crashed run's hosts not in the state file.
        for path in cgroups.host_cgroups():
            cgroups.remove_cgroup_tree(path)
        network.network_down()
        if self.hosts_dir.exists():
            volumes.unmount_all(self.hosts_dir)
            mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                      if line.split()[1].startswith(str(self.hosts_dir))]
            if mounts:
                raise LabError(f"refusing to delete {self.hosts_dir}: still mounted: {mounts}")
            # A process of a killed host can still be writing (its journal under /run/log) while
            # it exits: retry, then fail loudly.
            for attempt in range(RMTREE_ATTEMPTS):
                try:
                    shutil.rmtree(self.hosts_dir)
                    break
                except OSError as error:
                    if attempt + 1 == RMTREE_ATTEMPTS:
                        raise LabError(f"cannot delete {self.hosts_dir}: {error}; "
                                       f"lab processes left: {self._lab_pids()}") from error
                    time.sleep(1)
        if self.pki_dir.exists():
            shutil.rmtree(self.pki_dir)
        for path in (self.state_path, self.known_hosts_path):
            path.unlink(missing_ok=True)
        log(f"down in {time.monotonic() - started:.1f} s")

    def _lab_pids(self) -> list[int]:
        netns_inode = processes.inode(NETNS_PATH)
        hosts_dir = str(self.hosts_dir)
        own = {os.getpid()}
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in own:
                continue
            with contextlib.suppress(OSError):
                root = os.readlink(entry / "root")
                if root.startswith(hosts_dir + "/"):
                    pids.append(int(entry.name))
                    continue
                if netns_inode is not None and os.stat(entry / "ns" / "net").st_ino == \
                        netns_inode:
                    pids.append(int(entry.name))
        # A host's own processes are in their own mount and network namespaces (their root reads
        # as "/"), and a SIGKILLed nspawn leaves them running: its cgroup is what names them.
        for host_cgroup in cgroups.host_cgroups():
            pids += cgroups.procs(host_cgroup)
        return sorted(set(pids) - own)


def kill_until_gone(find_pids: Callable[[], list[int]], what: str) -> None:
    """SIGKILLs what `find_pids` names until it names nothing (a process can fork while its
    parent dies); bounded: 50 rounds."""
    for _ in range(50):
        pids = find_pids()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            processes.reap(pid)
        time.sleep(0.1)
    raise LabError(f"{what}: processes survive SIGKILL: {find_pids()}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread runs. A KeyboardInterrupt, so that pytest ends the
    session (tearing its fixtures down) instead of recording one failed test and going on to the
    next, which could boot another lab for a runner that was asked to stop."""


@contextlib.contextmanager
def running_lab(count: int, state_dir: Path | None = None) -> Iterator[Lab]:
    """A lab of `count` hosts for the body of a `with` block, under the machine-wide heavy lock;
    torn down however the block exits. A SIGTERM (a CI timeout, a killed runner) unwinds through
    the teardown like Ctrl-C does, then ends the process by that SIGTERM."""
    lab = Lab(state_dir)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with heavy_lock():
            try:
                lab.up(count)
                yield lab
            finally:
                lab.down()
    except Terminated:
        # Torn down: now die of the signal, so the parent sees how the runner ended.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_terminated(signum, frame):
    raise Terminated(f"signal {signum}")


