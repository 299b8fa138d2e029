#!/usr/bin/env python3
"""A replica unit whose data file is missing (before bootstrap, or waiting for `tbctl recover`)
must end inactive, not failed, and not restarting: `nixos-rebuild switch` (switch-to-configuration)
exits 4 when a unit it started is failed, and deploy tools roll such a host back.

Reads module-tests.nix's output on stdin; for each replica unit, runs its start commands as
systemd would with the data file absent. The unit's `tb-agent replica-start` runs as the tb-agent
built from this tree (argv[1], standing in for the placeholder package), and reads the inventory
the host is built from (standing in for /etc/tigerbeetle/inventory.json, where the host holds a
copy of it) (this machine has none at the units' paths: checked),
and judges the outcome by systemd.service(5):
- ExecCondition=: exit 0 goes on; 1 to 254 skips the unit, which is not marked failed; 255 or a
  signal fails it;
- ExecStartPre=, then ExecStart= (the main process): an exit status other than 0 and those in
  SuccessExitStatus= fails the unit; Restart=on-failure restarts it unless the status is in
  RestartPreventExitStatus=.
A stand-in for systemd's rules, not systemd: tests/e2e/test_nixos_units.py runs these units on
real systemd hosts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys


def words(value) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [word for v in values for word in str(v).split()]


def commands(value) -> list[list[str]]:
    values = value if isinstance(value, list) else [value]
    return [shlex.split(str(v)) for v in values]


def run(argv: list[str]) -> tuple[int, str]:
    # systemd prefixes ("-", "@", ...) are not used by these units; a leading "-" would be.
    assert argv[0][:1] not in "-@:+!", f"unhandled ExecStart prefix in {argv}"
    if not os.access(argv[0], os.X_OK):
        # tests/nix/fake-pkgs.nix's writeShellScript writes with builtins.toFile, which cannot
        # set the executable bit that nixpkgs' sets: run its #! interpreter as the kernel would.
        with open(argv[0]) as file:
            shebang = file.readline()
        assert shebang.startswith("#!"), f"{argv[0]} is neither executable nor a script"
        argv = shebang[2:].split() + argv
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return done.returncode, done.stderr


HOST_INVENTORY = "/etc/tigerbeetle/inventory.json"


def on_this_machine(value, agent: str, inventory: str):
    """The unit's commands with the placeholder tb-agent and the host's inventory path replaced
    by the tested binary and the inventory file the host's copy is made from."""
    def word(w: str) -> str:
        if w.startswith("/nix/store/") and w.endswith("/bin/tb-agent") and not os.path.exists(w):
            return agent
        return inventory if w == HOST_INVENTORY else w
    values = value if isinstance(value, list) else [value]
    return [shlex.join(word(w) for w in shlex.split(str(v))) for v in values]


def outcome(unit: dict, agent: str) -> tuple[str, str]:
    """(state, why): the state systemd leaves the unit in."""
    config = {key: on_this_machine(value, agent, unit["inventory"]) if key.startswith("Exec") else value
              for key, value in unit["serviceConfig"].items()}
    for argv in commands(config.get("ExecCondition", [])):
        status, stderr = run(argv)
        if 1 <= status <= 254:
            return "inactive", f"ExecCondition exited {status}: skipped: {stderr.strip()[:200]}"
        if status != 0:
            return "failed", f"ExecCondition exited {status}"
    for argv in commands(config.get("ExecStartPre", [])):
        status, _ = run(argv)
        if status != 0:
            return "failed", f"ExecStartPre exited {status}"
    (argv,) = commands(config["ExecStart"])
    status, stderr = run(argv)
    success = {"0"} | set(words(config.get("SuccessExitStatus", [])))
    if str(status) in success:
        return "inactive", f"main process exited {status}, a success status: {stderr.strip()[:200]}"
    if config.get("Restart") in ("on-failure", "always") and \
            str(status) not in words(config.get("RestartPreventExitStatus", [])):
        return "restarting", f"main process exited {status}, restarted by Restart={config['Restart']}"
    return "failed", f"main process exited {status} (not 0, not in SuccessExitStatus)"


def main() -> None:
    agent = sys.argv[1]
    units = json.load(sys.stdin)["replicaUnits"]
    problems = []
    for name, unit in sorted(units.items()):
        if os.path.lexists(unit["dataFile"]):
            problems.append(f"{name}: {unit['dataFile']} exists on this machine: cannot run the unit without it")
            continue
        state, why = outcome(unit, agent)
        if state != "inactive":
            problems.append(f"{name}: without its data file the replica unit ends {state}: {why}")
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"   {len(units)} replica units: without a data file each ends inactive, not failed, not restarting")


if __name__ == "__main__":
    main()
