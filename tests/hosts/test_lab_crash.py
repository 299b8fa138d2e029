"""A crashed run's leftovers are cleaned at the next `up`: machines whose owner is gone and whose
state file is lost (their nspawn and the hosts' own processes), the namespace and the host copies.

Run (root, about half a minute):
    flock /tmp/tb-heavy.lock python3 -m pytest -q tests/hosts/test_lab_crash.py
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import harness

LAB_CLI = Path(__file__).resolve().parent / "lab"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def test_up_cleans_a_crashed_run(tmp_path):
    state_dir = tmp_path / "lab"
    env = {**os.environ, "TB_LAB_DIR": str(state_dir)}
    with harness.heavy_lock():
        lab = harness.Lab(state_dir)
        try:
            # A lab whose owner exits without `down` (as a killed test run would) ...
            subprocess.run([str(LAB_CLI), "up", "2"], env=env, check=True, timeout=300,
                           capture_output=True)
            orphans = lab.hosts()
            assert len(orphans) == 2 and all(harness.is_nspawn(h.nspawn_pid) for h in orphans)
            # The hosts' systemd: in their own namespaces, they outlive a killed nspawn.
            inits = [pid for h in orphans for pid in children(h.nspawn_pid)]
            assert len(inits) == 2, inits
            # ... and whose state file is lost: only the namespace and the copies remain.
            lab.state_path.unlink()
            lab.up(1)
            for orphan in orphans:
                assert not harness.is_nspawn(orphan.nspawn_pid), orphan
            assert [pid for pid in inits if harness.alive(pid)] == [], inits
            assert [h.name for h in lab.hosts()] == ["tb-0"]
            assert not (lab.hosts_dir / "tb-1").exists()
            assert lab.exec("tb-0", "cat /proc/1/comm").stdout.strip() == "systemd"
        finally:
            lab.down()
        assert not harness.NETNS_PATH.exists()
        assert lab._lab_pids() == []
        assert not lab.hosts_dir.exists()


def test_sigterm_tears_the_lab_down(tmp_path):
    """A runner stopped by SIGTERM (a CI timeout) still removes its machines."""
    state_dir = tmp_path / "lab"
    script = (
        "import time\n"
        "import harness\n"
        f"with harness.running_lab(1, {str(state_dir)!r}) as lab:\n"
        "    print(lab.hosts()[0].nspawn_pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    with harness.heavy_lock():
        # Run from the harness's directory, as tests/hosts/lab is: `import harness` finds it.
        runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  text=True, cwd=Path(harness.__file__).parents[1])
        try:
            nspawn_pid = int(runner.stdout.readline())
            assert harness.is_nspawn(nspawn_pid)
            runner.terminate()
            returncode = runner.wait(timeout=120)
            # Observed before the fallback cleanup below, which must not hide a leak.
            leaked = {
                "machine": harness.is_nspawn(nspawn_pid),
                "namespace": harness.NETNS_PATH.exists(),
                "host copies": (state_dir / "hosts").exists(),
            }
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
            harness.Lab(state_dir).down()
        # Died of the SIGTERM, after the teardown.
        assert returncode == -signal.SIGTERM, returncode
        assert not any(leaked.values()), leaked
