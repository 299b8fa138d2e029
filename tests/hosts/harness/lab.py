"""A lab of real Linux hosts for end-to-end tests: Debian bookworm, systemd as PID 1, sshd.

Each host is a copy of one cached `debootstrap` root filesystem booted with `systemd-nspawn
--boot`, attached to a bridge inside a network namespace that this module creates. The
controller side of a test (ansible-playbook, tbctl, curl) runs inside the same namespace
(`Lab.controller_command`) and reaches the hosts at static addresses; nothing in the lab has a
route anywhere else, so no lab traffic can leave the namespace.

Only one lab exists on a machine at a time (its addresses are the committed
`inventories/lab.json`); a lock file serializes `up` and `down`. Everything the lab creates is
recorded under the state directory and removed by `down`, which `up` also runs first, so a
crashed run's leftovers (machines, namespace, host copies) are cleaned at the next `up`.

Traps (all verified on a Debian bookworm machine without systemd as its PID 1):
- `ip netns exec` remounts /sys, which breaks nspawn; enter the namespace with
  `nsenter --net=/var/run/netns/NAME` instead.
- `machinectl` needs registration with systemd-machined; with `--register=no` a machine is
  stopped by signalling its nspawn process (SIGTERM asks its systemd for an orderly poweroff).
- nspawn's container gets `80-container-host0.network` (DHCP) from systemd-networkd; the lab's
  static-address file must sort before it (`10-host0.network`).
- The container needs CAP_IPC_LOCK to mlock TigerBeetle's memory: it bypasses RLIMIT_MEMLOCK,
  which shows as `VmLck` in `/proc/PID/status`.
- `--keep-unit` puts the container's units under nspawn's own cgroup (`<cgroup>/payload`). Started
  from the same cgroup, all hosts would share one tree: a unit of the same name on two hosts is
  one cgroup directory, and one host's systemd removing it while another starts a process there
  fails that start (`status=219/CGROUP`, seen with a firewall unit started on three hosts at
  once). Each nspawn therefore starts in a cgroup of its own (`host_cgroup_dirs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]

# The rootfs package list. Hosts have no route to any package mirror, so everything the
# playbooks use on a host (python3-apt for Ansible's apt module, nftables, time sync, curl for
# debugging) must be in the image. Changing this list changes the cache key.
ROOTFS_SUITE = "bookworm"
ROOTFS_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-timesyncd",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "nftables",
    "iproute2",
    "iputils-ping",
    "procps",
    "ca-certificates",
    "curl",
    "sudo",
    "libcap2-bin",
)

NETNS = "tb-lab"
NETNS_PATH = Path("/var/run/netns") / NETNS
BRIDGE = "tblab0"
# A private /24 used only inside the lab's namespace.
SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
CONTROLLER_ADDRESS = SUBNET.network_address + 1
HOST_ADDRESS_OFFSET = 10
HOST_COUNT_MAX = 8
NFT_TABLE = "tb_lab"
# Each host's cgroup (in each systemd hierarchy) is this prefix and its name.
HOST_CGROUP_PREFIX = "tb-lab-"

# The lab inventory: replicas are the first INVENTORY_REPLICA_COUNT hosts. Hosts after them
# (`lab up 4` boots tb-3) are outside the cluster and outside the client networks: the
# controller (CONTROLLER_ADDRESS) is the only client network in the lab.
INVENTORY_PATH = REPO / "inventories" / "lab.json"
INVENTORY_REPLICA_COUNT = 3
CLUSTER_ID = "0"
REPLICA_PORT = 3000
AGENT_PORT = 7443
AGENT_TLS_DIR = "/etc/tb-agent/tls"
LAB_CACHE_GRID = "256MiB"

BOOT_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
RMTREE_ATTEMPTS = 5
SSH_CONNECT_TIMEOUT_S = 3
COMMAND_TIMEOUT_S_DEFAULT = 120
DEBOOTSTRAP_TIMEOUT_S = 1800


class LabError(Exception):
    pass


def cache_dir() -> Path:
    base = os.environ.get("TB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tb-bare-metal"
    )
    return Path(base)


def state_dir_default() -> Path:
    return Path(os.environ.get("TB_LAB_DIR") or cache_dir() / "lab")


def host_name(index: int) -> str:
    return f"tb-{index}"


def host_address(index: int) -> ipaddress.IPv4Address:
    assert 0 <= index < HOST_COUNT_MAX
    return SUBNET.network_address + HOST_ADDRESS_OFFSET + index


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S_DEFAULT, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), timeout=timeout_s, text=True, capture_output=True,
                            **kwargs)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))} exited with {result.returncode}:\n"
                       f"{result.stdout}{result.stderr}")
    return result


def make_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(path, mode)


# ---------------------------------------------------------------------------------------------
# The machine-wide lock for heavy work (replicas, hosts, builds).

HEAVY_LOCK_PATH = Path("/tmp/tb-heavy.lock")


def _heavy_lock_held_by_ancestor() -> bool:
    """An ancestor of this process (`flock /tmp/tb-heavy.lock pytest ...`) holds the lock."""
    try:
        inode = os.stat(HEAVY_LOCK_PATH).st_ino
    except OSError:
        return False
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and \
                fields[5].rsplit(":", 1)[-1] == str(inode):
            holders.add(int(fields[4]))
    pid = os.getpid()
    while pid > 1:
        if pid in holders:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


@contextlib.contextmanager
def heavy_lock() -> Iterator[None]:
    """Holds /tmp/tb-heavy.lock for the block, unless an ancestor already holds it; either way
    sets TB_HEAVY_LOCK_HELD=1 so the build scripts this process runs do not wait on it."""
    if os.environ.get("TB_HEAVY_LOCK_HELD") == "1" or _heavy_lock_held_by_ancestor():
        os.environ["TB_HEAVY_LOCK_HELD"] = "1"
        yield
        return
    with open(HEAVY_LOCK_PATH, "a") as lock:
        log(f"waiting for {HEAVY_LOCK_PATH}")
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.environ["TB_HEAVY_LOCK_HELD"] = "1"
        try:
            yield
        finally:
            del os.environ["TB_HEAVY_LOCK_HELD"]


# ---------------------------------------------------------------------------------------------
# Root filesystem, built once per package list.


def rootfs_path() -> Path:
    key = hashlib.sha256("\n".join((ROOTFS_SUITE, *ROOTFS_PACKAGES)).encode()).hexdigest()[:16]
    return cache_dir() / f"rootfs-{ROOTFS_SUITE}-{key}"


def rootfs_build() -> Path:
    """The cached rootfs, built (about 3 minutes, once) if missing; built in a temp dir and
    renamed into place, so a crash never leaves a half-built rootfs under the final name."""
    final = rootfs_path()
    if (final / "etc" / "os-release").exists():
        return final
    make_private_dir(cache_dir())
    with open(cache_dir() / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "etc" / "os-release").exists():
            return final
        if shutil.which("debootstrap") is None:
            raise LabError("debootstrap is missing: run scripts/deps")
        for stale in cache_dir().glob(f"{final.name}.tmp-*"):
            shutil.rmtree(stale)
        work = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=cache_dir()))
        log(f"debootstrap {ROOTFS_SUITE} into {work} (a few minutes, once)")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
             ROOTFS_SUITE, str(work)], timeout_s=DEBOOTSTRAP_TIMEOUT_S)
        # Per-host identity is added by each copy; the image must carry none.
        for key in (work / "etc" / "ssh").glob("ssh_host_*"):
            key.unlink()
        (work / "etc" / "machine-id").write_text("")
        dbus_id = work / "var" / "lib" / "dbus" / "machine-id"
        if dbus_id.exists() or dbus_id.is_symlink():
            dbus_id.unlink()
        run(["chroot", str(work), "systemctl", "enable", "systemd-networkd.service",
             "ssh.service"])
        # Units that need hardware or a console a container lacks only slow the boot down.
        run(["chroot", str(work), "systemctl", "mask", "getty@tty1.service",
             "serial-getty@.service", "console-getty.service", "apt-daily.timer",
             "apt-daily-upgrade.timer"])
        (work / "etc" / "ssh" / "sshd_config.d" / "10-lab.conf").write_text(
            "# Lab hosts: key authentication only, one ed25519 host key per host.\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
        )
        os.chmod(work, 0o755)
        os.rename(work, final)
        log(f"rootfs ready: {final}")
        return final


# ---------------------------------------------------------------------------------------------
# Hosts and the lab.


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
        return ["nsenter", f"--net={NETNS_PATH}", "--", *argv]

    def run_controller(self, argv: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S_DEFAULT,
                       check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return run(self.controller_command(argv), timeout_s=timeout_s, check=check, **kwargs)

    def ssh_options(self) -> list[str]:
        return [
            "-i", str(self.ssh_key_path),
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
            "-o", "LogLevel=ERROR",
        ]

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
        """Environment for ansible-playbook against the lab (run it with controller_command):
        the lab's key, and strict host key checking against the keys the lab generated."""
        return {
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.ssh_key_path),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": (f"-o UserKnownHostsFile={self.known_hosts_path} "
                                 "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
                                 "-o ControlMaster=auto -o ControlPersist=60s"),
            "TB_LAB_CA": str(self.ca_cert_path),
            "TB_LAB_PKI": str(self.pki_dir),
        }

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
        address = self.host(host).address
        self.run_controller(["nft", "add", "element", "bridge", NFT_TABLE, "partitioned",
                             f"{{ {address} }}"])

    def heal(self, host: str) -> None:
        address = self.host(host).address
        if address in self.partitioned():
            self.run_controller(["nft", "delete", "element", "bridge", NFT_TABLE, "partitioned",
                                 f"{{ {address} }}"])

    def partitioned(self) -> list[str]:
        result = self.run_controller(["nft", "-j", "list", "set", "bridge", NFT_TABLE,
                                      "partitioned"])
        for item in json.loads(result.stdout)["nftables"]:
            if "set" in item:
                return sorted(str(e) for e in item["set"].get("elem", []))
        raise LabError("nft: set partitioned not found")

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
            self._network_up()
            self._ssh_key()
            self._pki(count)
            make_private_dir(self.hosts_dir)
            hosts = []
            try:
                for index in range(count):
                    hosts.append(self._host_start(rootfs, index))
                    self._save(hosts)
                self._known_hosts(hosts)
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

    def _network_up(self) -> None:
        run(["ip", "netns", "add", NETNS])
        self.run_controller(["ip", "link", "set", "lo", "up"])
        self.run_controller(["ip", "link", "add", BRIDGE, "type", "bridge"])
        self.run_controller(["ip", "addr", "add", f"{CONTROLLER_ADDRESS}/{SUBNET.prefixlen}",
                             "dev", BRIDGE])
        self.run_controller(["ip", "link", "set", BRIDGE, "up"])
        # Partitions: a set of host addresses whose packets the bridge drops, both the ones it
        # forwards between hosts and the ones to and from the controller's own address.
        ruleset = (
            f"table bridge {NFT_TABLE} {{\n"
            "  set partitioned { type ipv4_addr; }\n"
            + "".join(
                f"  chain {hook} {{ type filter hook {hook} priority 0; policy accept;\n"
                "    ip saddr @partitioned drop\n"
                "    ip daddr @partitioned drop\n"
                "  }\n"
                for hook in ("forward", "input", "output"))
            + "}\n"
        )
        self.run_controller(["nft", "-f", "-"], input=ruleset)

    def _ssh_key(self) -> None:
        ssh_dir = make_private_dir(self.ssh_key_path.parent)
        if not self.ssh_key_path.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tb-lab-controller",
                 "-f", str(self.ssh_key_path)])
        os.chmod(self.ssh_key_path, 0o600)
        assert ssh_dir.stat().st_mode & 0o077 == 0

    def _pki(self, count: int) -> None:
        """A CA made for this lab run and one server certificate per host (SAN: the host's
        address and name), for the agents' TLS. Keys are 0600 in a 0700 directory."""
        pki = make_private_dir(self.pki_dir)
        ca_key = pki / "ca.key"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", str(ca_key), "-out", str(self.ca_cert_path), "-days", "30",
             "-subj", "/CN=tb-lab CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        os.chmod(ca_key, 0o600)
        for index in range(count):
            name, address = host_name(index), host_address(index)
            key, csr, cert = (pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt")
            extensions = pki / f"{name}.ext"
            extensions.write_text(
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                f"subjectAltName=IP:{address},DNS:{name}\n")
            run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/CN={name}"])
            os.chmod(key, 0o600)
            run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert_path),
                 "-CAkey", str(ca_key), "-CAcreateserial", "-days", "30", "-out", str(cert),
                 "-extfile", str(extensions)])
            csr.unlink()
            extensions.unlink()

    def _host_start(self, rootfs: Path, index: int) -> Host:
        name, address = host_name(index), host_address(index)
        host_dir = make_private_dir(self.hosts_dir / name)
        root = host_dir / "root"
        run(["cp", "-a", "--reflink=auto", str(rootfs), str(root)], timeout_s=600)
        etc = root / "etc"
        (etc / "hostname").write_text(f"{name}\n")
        (etc / "hosts").write_text(
            f"127.0.0.1 localhost\n{address} {name}\n"
            + "".join(f"{host_address(i)} {host_name(i)}\n"
                      for i in range(HOST_COUNT_MAX) if i != index))
        (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
             "-f", str(etc / "ssh" / "ssh_host_ed25519_key")])
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
        cgroups = host_cgroup_dirs(name)
        for path in cgroups:
            path.mkdir(exist_ok=True)
        with open(log_path, "w") as console:
            process = subprocess.Popen(
                self.controller_command([
                    "systemd-nspawn", "--boot", "--register=no", "--keep-unit",
                    f"--network-bridge={BRIDGE}", "--capability=CAP_IPC_LOCK",
                    "--console=read-only", "-D", str(root), "-M", name]),
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=lambda: _enter_cgroups(cgroups))
        pki = self.pki_dir
        return Host(name=name, index=index, address=str(address), root=str(root),
                    nspawn_pid=process.pid, log_path=str(log_path),
                    tls_cert=str(pki / f"{name}.crt"), tls_key=str(pki / f"{name}.key"))

    def _known_hosts(self, hosts: list[Host]) -> None:
        lines = []
        for host in hosts:
            public = Path(host.root, "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{host.address},{host.name} {public[0]} {public[1]}\n")
        write_private(self.known_hosts_path, "".join(lines))

    def _wait_ssh(self, host: Host, deadline: float) -> None:
        """Ready means sshd accepts the lab key: the host's systemd got as far as sshd."""
        while True:
            if not _alive(host.nspawn_pid):
                raise LabError(f"{host.name}: systemd-nspawn exited during boot; "
                               f"see {host.log_path}")
            result = self.run_controller(
                ["ssh", *self.ssh_options(), f"root@{host.address}", "true"],
                timeout_s=SSH_CONNECT_TIMEOUT_S + 5, check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: sshd did not answer within {BOOT_TIMEOUT_S} s: "
                               f"{result.stderr.strip()}; see {host.log_path}")
            time.sleep(0.5)

    def _down_locked(self) -> None:
        """Stops every machine, deletes the namespace and removes the host copies. Safe to run
        on a lab in any state, including after a crash."""
        hosts = self.hosts()
        started = time.monotonic()
        # Orderly poweroff first: nspawn forwards SIGTERM as SIGRTMIN+3 to the host's systemd.
        for host in hosts:
            if _is_nspawn(host.nspawn_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(host.nspawn_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for host in hosts:
            while _is_nspawn(host.nspawn_pid) and time.monotonic() < deadline:
                _reap(host.nspawn_pid)
                time.sleep(0.2)
        log(f"down: machines stopped in {time.monotonic() - started:.1f} s")
        # Whatever is left (a hung shutdown, a crashed earlier run): every process rooted in a
        # host copy, living in the lab's namespace or in a host's cgroup is the lab's own.
        for _ in range(50):
            pids = self._lab_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                _reap(pid)
            time.sleep(0.1)
        else:
            raise LabError(f"processes survive SIGKILL: {self._lab_pids()}")
        # Every host's cgroup, also of a crashed run's hosts not in the state file.
        for path in _host_cgroups():
            _remove_cgroup_tree(path)
        if NETNS_PATH.exists():
            run(["ip", "netns", "delete", NETNS])
        if self.hosts_dir.exists():
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
        netns_inode = _inode(NETNS_PATH)
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
        for host_cgroup in _host_cgroups():
            for directory, _, files in os.walk(host_cgroup):
                if "cgroup.procs" in files:
                    with contextlib.suppress(OSError):
                        pids += [int(pid) for pid in
                                 Path(directory, "cgroup.procs").read_text().split()]
        return sorted(set(pids) - own)


def _systemd_cgroup_parents() -> list[Path]:
    """This process's cgroup in each hierarchy a container's systemd tracks units in: the
    unified (cgroup2) one and, on a legacy or hybrid host, the v1 `name=systemd` one."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path
    parents = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        mount_root, mount_point, fs_type, options = fields[3], fields[4], tail[0], tail[2]
        if fs_type == "cgroup2":
            key = ""
        elif fs_type == "cgroup" and "name=systemd" in options.split(","):
            key = "name=systemd"
        else:
            continue
        if key not in own:
            continue
        if mount_root != "/":
            raise LabError(f"cgroup hierarchy at {mount_point} is mounted from {mount_root}, "
                           "not its root: cannot place the lab's hosts in their own cgroups")
        parents.append(Path(mount_point) / own[key].lstrip("/"))
    return parents


def host_cgroup_dirs(name: str) -> list[Path]:
    return [parent / f"{HOST_CGROUP_PREFIX}{name}" for parent in _systemd_cgroup_parents()]


def _host_cgroups() -> list[Path]:
    """Every lab host's cgroup on this machine, of this run or an earlier one."""
    return [path for parent in _systemd_cgroup_parents()
            for path in parent.glob(f"{HOST_CGROUP_PREFIX}*")]


def _enter_cgroups(dirs: Sequence[Path]) -> None:
    """Runs in the forked child before exec: moves it (so nspawn) into the host's cgroups."""
    for path in dirs:
        (path / "cgroup.procs").write_text("0\n")


def _remove_cgroup_tree(path: Path) -> None:
    """Deepest first: a cgroup directory goes only once it has no children and no processes.
    What cannot go (a process not yet reaped) is reused by the next host of that name."""
    if not path.is_dir():
        return
    for directory, _, _ in sorted(os.walk(path), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(directory)
        except OSError as error:
            log(f"down: cgroup {directory} left: {error}")
            return


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _is_nspawn(pid: int) -> bool:
    """The pid is still a live systemd-nspawn (pids are reused after a crash)."""
    if not _alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(command) and command[0].endswith(b"systemd-nspawn")


def _reap(pid: int) -> None:
    """Collects the exit status of a child of this process, if it is one that has exited."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@contextlib.contextmanager
def running_lab(count: int, state_dir: Path | None = None) -> Iterator[Lab]:
    """A lab of `count` hosts for the body of a `with` block, under the machine-wide heavy lock;
    torn down however the block exits."""
    lab = Lab(state_dir)
    # A SIGTERM (a CI timeout, a killed runner) unwinds through `finally` like Ctrl-C does.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with heavy_lock():
            try:
                lab.up(count)
                yield lab
            finally:
                lab.down()
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------------
# The lab inventory.


def inventory(replica_count: int = INVENTORY_REPLICA_COUNT) -> dict:
    """The lab's inventory in the shape of inventories/example.json (what agent/src/inventory.rs
    reads). Connection settings (key, known hosts) are not in it: they are per machine, in
    Lab.ansible_env()."""
    assert 1 <= replica_count <= HOST_COUNT_MAX
    hosts = {}
    for index in range(replica_count):
        address = host_address(index)
        hosts[host_name(index)] = {
            "ansible_host": str(address),
            "tigerbeetle_replica": index,
            "tigerbeetle_address": f"{address}:{REPLICA_PORT}",
            "tb_agent_url": f"https://{address}:{AGENT_PORT}",
        }
    controller_network = f"{CONTROLLER_ADDRESS}/32"
    return {"all": {
        "vars": {
            "tigerbeetle_cluster_id": CLUSTER_ID,
            "tigerbeetle_replica_count": replica_count,
            # Three replicas share this machine's memory: a small grid cache.
            "tigerbeetle_cache_grid": LAB_CACHE_GRID,
            # The controller is the only client and orchestrator (tb-3 and the others are not).
            "tigerbeetle_client_networks": [controller_network],
            "tb_agent_orchestrator_networks": [controller_network],
            # Where the roles install each host's certificate and key and the lab CA (docs/inventory.md).
            "tb_agent_tls_cert_file": f"{AGENT_TLS_DIR}/agent.crt",
            "tb_agent_tls_key_file": f"{AGENT_TLS_DIR}/agent.key",
            "tb_agent_peer_ca_file": f"{AGENT_TLS_DIR}/ca.crt",
            "ansible_user": "root",
        },
        "hosts": hosts,
    }}


def inventory_text() -> str:
    return json.dumps(inventory(), indent=2) + "\n"
