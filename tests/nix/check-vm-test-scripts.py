#!/usr/bin/env python3
"""Checks the NixOS VM tests' scripts without running them (no nixpkgs or KVM here): each is
valid Python, names only machines its test defines (plus the driver's start_all and loop
variables bound to machines), and calls only driver methods our tests are meant to use. Input:
the JSON of tests/nix/vm-test-scripts.nix on stdin. Exits 1 with every problem listed."""
import ast
import json
import sys

# The driver's Machine methods these tests use (nixos/lib/test-driver): a typo would only show
# in users' CI otherwise.
MACHINE_METHODS = {"succeed", "fail", "wait_for_unit", "wait_until_succeeds", "wait_until_fails",
                   "execute", "start", "shutdown", "crash", "wait_for_open_port",
                   "wait_for_closed_port", "systemctl"}
DRIVER_GLOBALS = {"start_all", "machines", "driver", "subtest", "retry", "log"}

problems = []
tests = json.load(sys.stdin)
for check, test in sorted(tests.items()):
    nodes = set(test["nodes"])
    try:
        tree = ast.parse(test["testScript"], filename=check)
    except SyntaxError as error:
        problems.append(f"{check}: not valid Python: {error}")
        continue
    bound = ({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
             | {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
             | {a.arg for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) for a in n.args.args})
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in nodes | bound | DRIVER_GLOBALS | set(dir(__builtins__)):
                problems.append(f"{check}: line {node.lineno}: {node.id} is no machine of this test "
                                f"({', '.join(sorted(nodes))}) nor bound in the script")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id in nodes
                and node.func.attr not in MACHINE_METHODS):
            problems.append(f"{check}: line {node.lineno}: {node.func.value.id}.{node.func.attr} "
                            "is not a test-driver method these tests use")
for problem in problems:
    print(problem, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"   {len(tests)} VM test scripts: valid Python, only their own machines and driver methods")
