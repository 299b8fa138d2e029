"""A real TigerBeetle upgrade, 0.16.70 to 0.16.78, the upstream way, on 127.0.0.1.

A 3-replica cluster is formatted and started with a plain 0.16.70 binary (each replica runs its
own copy of the binary), accounts are created with the 0.16.70 client, then each replica's
binary file is replaced (cp to a temporary name, then mv: an atomic rename) by the multiversion
0.16.78 binary that carries 0.16.70 (scripts/tigerbeetle-build-multiversion). The running
0.16.70 replicas notice the new binary, the cluster agrees to upgrade and every replica re-execs
into 0.16.78 in place. The test waits (bounded) for two signals:
- per replica: the replica logs `release=<R>` each time it (re)starts an image, and
  `listening on` once that image serves; the last image started must be 0.16.78 and serving,
  with the process never having exited;
- for the cluster: a 0.16.78 client is evicted (ClientReleaseTooHigh) while the cluster runs
  0.16.70 -- checked before the swap, so the signal can fail -- and reads the old accounts once
  the cluster runs 0.16.78.

Run (builds take minutes the first time; the cluster uses about 3 x 0.8 GB):
    flock /tmp/tb-heavy.lock python3 -m pytest -q tests/upgrade/test_multiversion_upgrade.py
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import harness

REPO = Path(__file__).resolve().parents[2]

PAST = "0.16.70"
TARGET = "0.16.78"
REPLICA_COUNT = 3
CLUSTER_ID = 0
PORT_BASE = 39000
ADDRESSES = ",".join(f"127.0.0.1:{PORT_BASE + i}" for i in range(REPLICA_COUNT))
ACCOUNT_IDS = (1001, 1002, 1003)

BUILD_TIMEOUT_S = 3600
READY_TIMEOUT_S = 120
UPGRADE_TIMEOUT_S = 180
CLIENT_TIMEOUT_S = 30


def build(*argv: str) -> Path:
    result = subprocess.run([str(REPO / "scripts" / argv[0]), *argv[1:]], check=True,
                            stdout=subprocess.PIPE, text=True, timeout=BUILD_TIMEOUT_S)
    path = Path(result.stdout.strip())
    assert path.is_file(), path
    return path


def release(binary: Path) -> str:
    output = subprocess.run([str(binary), "version", "--verbose"], check=True,
                            capture_output=True, text=True).stdout
    return re.search(r"^process\.release=(\S+)$", output, re.MULTILINE).group(1)


class Replica:
    def __init__(self, root: Path, index: int):
        self.index = index
        self.dir = root / f"replica-{index}"
        self.dir.mkdir(mode=0o700)
        self.binary = self.dir / "tigerbeetle"
        self.data_file = self.dir / f"{CLUSTER_ID}_{index}.tigerbeetle"
        self.log_path = self.dir / "replica.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "start", f"--addresses={ADDRESSES}", "--cache-grid=256MiB",
                 str(self.data_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def swap_binary(self, new_binary: Path) -> None:
        """The upstream upgrade step: replace the binary file atomically under the running
        replica (a copy under a temporary name in the same directory, then a rename)."""
        temporary = self.dir / "tigerbeetle.new"
        shutil.copy2(new_binary, temporary)
        os.rename(temporary, self.binary)

    def images(self) -> list[tuple[str, bool]]:
        """(release, serving) for each image this replica process started, in order."""
        images: list[tuple[str, bool]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            started = re.search(r"\): release=(\d+\.\d+\.\d+)$", line)
            if started:
                images.append((started.group(1), False))
            elif "listening on" in line and images:
                images[-1] = (images[-1][0], True)
        return images

    def running_release(self) -> str | None:
        images = self.images()
        if not images or not images[-1][1]:
            return None
        return images[-1][0]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def repl(binary: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(binary), "repl", f"--cluster={CLUSTER_ID}", f"--addresses={ADDRESSES}",
         f"--command={command}"],
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, stdin=subprocess.DEVNULL)


def lookup_ids(binary: Path) -> set[int]:
    ids = ", ".join(f"id={account_id}" for account_id in ACCOUNT_IDS)
    result = repl(binary, f"lookup_accounts {ids};")
    assert result.returncode == 0, result
    return {int(match) for match in re.findall(r'"id": "(\d+)"', result.stdout)}


def wait_for_release(replicas, release: str, timeout_s: float, diagnostics) -> None:
    """Until every replica serves `release`; at the deadline, what each served and the
    diagnostics."""
    try:
        harness.wait_for(f"every replica serving {release}",
                         lambda: [replica.running_release() for replica in replicas],
                         lambda serving: all(seen == release for seen in serving),
                         timeout_s=timeout_s, interval_s=0.25)
    except harness.TimedOut as timed_out:
        raise AssertionError(f"{timed_out}\n{diagnostics()}") from None


@pytest.fixture(scope="module")
def binaries():
    with harness.heavy_lock():
        past = build("tigerbeetle-build-release", PAST)
        multiversion = build("tigerbeetle-build-multiversion")
    assert release(past) == PAST
    assert release(multiversion) == TARGET
    return past, multiversion


def test_upgrade_0_16_70_to_0_16_78_by_binary_swap(binaries):
    past, multiversion = binaries
    root = Path(tempfile.mkdtemp(prefix="tb-upgrade-"))
    os.chmod(root, 0o700)
    replicas = [Replica(root, i) for i in range(REPLICA_COUNT)]

    def diagnostics() -> str:
        return "\n".join(f"--- replica {r.index} (alive={r.alive()}) images={r.images()}\n"
                         + "\n".join(r.log_path.read_text(errors="replace").splitlines()[-15:])
                         for r in replicas)

    with harness.heavy_lock():
        try:
            for replica in replicas:
                shutil.copy2(past, replica.binary)
                subprocess.run([str(replica.binary), "format", f"--cluster={CLUSTER_ID}",
                                f"--replica={replica.index}",
                                f"--replica-count={REPLICA_COUNT}", str(replica.data_file)],
                               check=True, capture_output=True, timeout=60)
                replica.start()
            wait_for_release(replicas, PAST, READY_TIMEOUT_S, diagnostics)

            accounts = ", ".join(f"id={account_id} code=10 ledger=700"
                                 for account_id in ACCOUNT_IDS)
            created = repl(past, f"create_accounts {accounts};")
            assert created.returncode == 0, created
            assert lookup_ids(past) == set(ACCOUNT_IDS)

            # Negative control for the cluster-level signal: a 0.16.78 client is refused by a
            # 0.16.70 cluster, so its success later proves the cluster upgraded.
            too_new = subprocess.run(
                [str(multiversion), "repl", f"--cluster={CLUSTER_ID}",
                 f"--addresses={ADDRESSES}", "--command=lookup_accounts id=1001;"],
                capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S,
                stdin=subprocess.DEVNULL)
            assert too_new.returncode != 0 or '"id": "1001"' not in too_new.stdout, too_new
            assert "release_too_high" in (too_new.stdout + too_new.stderr).lower() or \
                "ClientReleaseTooHigh" in too_new.stdout + too_new.stderr, too_new

            swapped_at = time.monotonic()
            for replica in replicas:
                replica.swap_binary(multiversion)
            wait_for_release(replicas, TARGET, UPGRADE_TIMEOUT_S, diagnostics)
            upgraded_s = time.monotonic() - swapped_at
            print(f"every replica serves {TARGET} {upgraded_s:.1f} s after the last swap")
            for replica in replicas:
                print(f"replica {replica.index} images (release, serving): {replica.images()}")

            # Upgraded in place: the same processes, re-executed, never restarted.
            assert all(r.alive() for r in replicas), diagnostics()
            for replica in replicas:
                assert [release for release, _ in replica.images()][-1] == TARGET
                assert PAST in [release for release, _ in replica.images()]
            assert lookup_ids(multiversion) == set(ACCOUNT_IDS)
        finally:
            for replica in replicas:
                replica.stop()
            shutil.rmtree(root)
