"""Development aid: keeps a 3-host lab up (under the heavy lock) until interrupted, with the
controller files in /tmp/tb-e2e-dev, so playbooks can be re-run by hand (tests/e2e/devlab runs
this file with the harness on PYTHONPATH):

    tests/e2e/devlab &                      # waits for the lock, boots, prints "ready"
    tests/e2e/devlab playbook site.yml      # runs a playbook against it
"""
import signal
import sys
import time
from pathlib import Path

import labctl

WORK = Path("/tmp/tb-e2e-dev")

if len(sys.argv) > 2 and sys.argv[1] == "playbook":
    controller = labctl.Controller(labctl.harness.Lab(), labctl.build_binaries(), WORK)
    run = controller.playbook(sys.argv[2], *sys.argv[3:], check=False)
    print(run.stdout[-20000:], run.stderr[-5000:])
    sys.exit(run.returncode)

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
binaries = labctl.build_binaries()
with labctl.harness.running_lab(3) as lab:
    labctl.seed_packages(lab)
    if WORK.exists():
        import shutil
        shutil.rmtree(WORK)
    WORK.mkdir(mode=0o700)
    labctl.Controller(lab, binaries, WORK)
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
