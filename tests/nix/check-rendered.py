#!/usr/bin/env python3
"""Runs what the NixOS modules render for every host of every good inventory through the real
tools, as scripts/check-nix step 3 asks (tests/nix/module-tests.nix's `rendered` on stdin):

- each unit file, as nixpkgs' systemd-lib.nix writes it, through `systemd-analyze verify` in a
  temporary root: this host's systemd units (for the targets ours name), the store scripts the
  units run copied from the local store (builtins.toFile wrote them while evaluating), and, for
  the placeholder packages (tests/nix/fake-pkgs.nix: tigerbeetle, tb-agent), stand-in
  executables at their store paths (a `#!/bin/sh` that exits 0; verify checks that a command
  exists and is executable, not what it does). Any message about our units fails;
- every store script a unit runs (not the stand-ins) through `bash -n`;
- the whole nftables ruleset, as nixpkgs' firewall-nftables.nix renders it, through `nft -c -f`
  (root only: nft needs CAP_NET_ADMIN even to check; otherwise SKIP), and the accept rules the
  inventory calls for must sit in its input-allow chain, which the input chain (policy drop)
  jumps to for new connections;
- the polkit rules through `node --check`.

Exits non-zero on any failure, printing each.
"""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

STANDIN = "#!/bin/sh\n# check-rendered.py: stand-in for a placeholder package's executable\nexit 0\n"
PLACEHOLDER = "/nix/store/00000000000000000000000000000000-"
EXEC_KEYS = re.compile(r"^(ExecCondition|ExecStartPre|ExecStart|ExecStartPost|ExecReload|ExecStop|ExecStopPost)=(.*)$")


def exec_paths(unit_text):
    """The executables of a unit's Exec*= lines (systemd's prefixes -@:+! stripped)."""
    paths = []
    for line in unit_text.splitlines():
        match = EXEC_KEYS.match(line)
        if match:
            command = match.group(2).lstrip("-@:+!")
            paths.append(command.split()[0])
    return paths


def place(root, path):
    """Puts `path` under `root`: the local store's file if it exists, a stand-in if it is a
    placeholder package's (fake-pkgs.nix's all-zero hash). Returns "store", "standin" or None
    (neither: a store path nothing made)."""
    target = root + path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isfile(path):
        shutil.copyfile(path, target)
        os.chmod(target, 0o755)
        return "store"
    if not path.startswith(PLACEHOLDER):
        return None
    with open(target, "w") as out:
        out.write(STANDIN)
    os.chmod(target, 0o755)
    return "standin"


def verify_units(root, key, units, problems, counts):
    unit_dir = os.path.join(root, "etc/systemd/system")
    shutil.rmtree(unit_dir, ignore_errors=True)
    os.makedirs(unit_dir)
    for name, text in units.items():
        with open(os.path.join(unit_dir, name), "w") as out:
            out.write(text)
        for path in exec_paths(text):
            if not path.startswith("/nix/store/"):
                problems.append(f"{key} {name}: runs {path}, which is not a store path")
                continue
            kind = place(root, path)
            if kind is None:
                problems.append(f"{key} {name}: runs {path}, which is neither in the store nor a placeholder package's")
                continue
            counts[kind] += 1
            if kind == "store":
                check_script(key, name, path, problems)
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *sorted(units)],
                            capture_output=True, text=True)
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if any(name in line for name in units) or "/etc/systemd/system" in line]
    if result.returncode != 0 or ours:
        problems.append(f"{key}: systemd-analyze verify (exit {result.returncode}):\n  "
                        + "\n  ".join(ours or (result.stdout + result.stderr).splitlines()[-5:]))


def check_script(key, name, path, problems):
    with open(path) as script:
        first = script.readline()
    if not first.startswith("#!"):
        return
    result = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    if result.returncode != 0:
        problems.append(f"{key} {name}: bash -n {path}: {result.stderr.strip()}")


def block(text, header):
    """The body of the first `header {` ... matching `}` in text, or None."""
    start = text.find(header + " {")
    if start < 0:
        return None
    depth, i = 0, text.index("{", start)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def check_ruleset(work, key, host, problems, nft_ok):
    ruleset = host["ruleset"]
    table = block(ruleset, "table inet nixos-fw")
    allow = block(table or "", "chain input-allow")
    chain_input = block(table or "", "chain input")
    if allow is None or chain_input is None:
        problems.append(f"{key}: the ruleset has no nixos-fw input and input-allow chains (is the firewall on?)")
        return
    if "policy drop" not in chain_input or not re.search(r"new\s*:\s*jump input-allow", chain_input):
        problems.append(f"{key}: the input chain does not drop by default and send new connections to input-allow")
    lines = {line.strip() for line in allow.splitlines()}
    for rule in host["acceptRules"]:
        if rule not in lines:
            problems.append(f"{key}: the input-allow chain lacks: {rule}")
    if nft_ok:
        path = os.path.join(work, "ruleset.nft")
        with open(path, "w") as out:
            out.write(ruleset)
        result = subprocess.run(["nft", "-c", "-f", path], capture_output=True, text=True)
        if result.returncode != 0:
            problems.append(f"{key}: nft -c -f rejects the ruleset: {result.stderr.strip()}")


def check_polkit(work, key, rules, problems):
    path = os.path.join(work, "polkit.js")
    with open(path, "w") as out:
        out.write(rules)
    result = subprocess.run(["node", "--check", path], capture_output=True, text=True)
    if result.returncode != 0:
        problems.append(f"{key}: node --check rejects the polkit rules: {result.stderr.strip()}")


def main():
    rendered = json.load(sys.stdin)["rendered"]
    problems = []
    counts = {"store": 0, "standin": 0}
    nft_ok = os.geteuid() == 0
    if not nft_ok:
        print("SKIP: nft -c -f on the rendered rulesets: it needs root (CAP_NET_ADMIN); the rules' place in the chains is still checked")
    with tempfile.TemporaryDirectory() as work:
        root = os.path.join(work, "root")
        # The host's own units, for the targets and units ours name (multi-user.target, ...).
        shutil.copytree("/lib/systemd/system", os.path.join(root, "usr/lib/systemd/system"), symlinks=True)
        for key, host in sorted(rendered.items()):
            verify_units(root, key, host["units"], problems, counts)
            check_ruleset(work, key, host, problems, nft_ok)
            check_polkit(work, key, host["polkitRules"], problems)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    units = sum(len(host["units"]) for host in rendered.values())
    print(f"   {len(rendered)} hosts: {units} units verified by systemd-analyze, {counts['store']} store scripts "
          f"bash -n'd ({counts['standin']} placeholder executables stood in), rulesets"
          f"{' nft -c checked and' if nft_ok else ''} holding their accept rules in input-allow, polkit rules node --check'd")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
