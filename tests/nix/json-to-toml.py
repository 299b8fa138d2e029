#!/usr/bin/env python3
"""Renders a JSON object as TOML, standing in for pkgs.formats.toml's generator on machines
without nixpkgs, so that `tb-agent check-config` can validate the agent config our NixOS module
generates. Handles what the agent config uses: tables, arrays of tables, strings, integers,
floats, booleans and arrays of scalars. Reads JSON on stdin, writes TOML on stdout."""
import json
import sys


def scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    raise SystemExit(f"json-to-toml: cannot render {value!r} inline")


def is_table_array(value):
    return isinstance(value, list) and value and all(isinstance(v, dict) for v in value)


def table(path, obj, out):
    plain = {k: v for k, v in obj.items() if not isinstance(v, dict) and not is_table_array(v)}
    if path and (plain or not obj):
        out.append(f"[{'.'.join(path)}]")
    for key, value in plain.items():
        if value is None:
            raise SystemExit(f"json-to-toml: {'.'.join(path + [key])} is null: TOML has no null")
        out.append(f"{json.dumps(key) if not key.replace('_', '').isalnum() else key} = {scalar(value)}")
    for key, value in obj.items():
        if isinstance(value, dict):
            table(path + [key], value, out)
        elif is_table_array(value):
            for item in value:
                out.append(f"[[{'.'.join(path + [key])}]]")
                for k, v in item.items():
                    out.append(f"{k} = {scalar(v)}")


def main():
    document = json.load(sys.stdin)
    if not isinstance(document, dict):
        raise SystemExit("json-to-toml: the document must be an object")
    out = []
    table([], document, out)
    print("\n".join(out))


main()
