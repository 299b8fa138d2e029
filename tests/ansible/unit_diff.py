"""What tests/ansible/compare-units and compare-agents share: reading a systemd unit as the
Ansible role renders it and as the NixOS module evaluates it, and comparing two keyed renderings
against a list of justified differences."""

from __future__ import annotations

import json
import os
import re

Key = tuple[str, str]
# key -> (Ansible value, NixOS value, reason). Values as systemd (or the agent) reads them.
Expected = dict[Key, tuple[object, object, str]]

# The units' capabilities, limits and hardening: one list that both the roles and the modules
# render (nix/units.nix reads it).
UNITS_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ansible", "roles",
                          "tigerbeetle", "files", "units.json")


def parse_unit(text: str) -> dict[Key, str]:
    """An INI-style unit file: (section, key) -> value. A key given twice is an error here (our
    units set none twice)."""
    out: dict[Key, str] = {}
    section = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        match = re.fullmatch(r"\[(\w+)\]", line)
        if match:
            section = match[1]
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"line {number}: not key=value in a section: {line}"
        assert (section, key) not in out, f"line {number}: {key} set twice"
        out[(section, key)] = value
    return out


def systemd_value(value) -> str:
    """How NixOS's systemd module writes a serviceConfig value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(systemd_value(item) for item in value)
    return str(value)


def unit_entries(nix: dict) -> list[tuple[str, str, object]]:
    """(section, key, value) for what NixOS writes of a systemd.services entry, for the keys our
    modules set; a value may be a list (one line per element) or None (no line)."""
    unit = [("Description", nix["description"]), ("Documentation", nix["documentation"]),
            ("After", nix["after"]), ("Before", nix.get("before", [])), ("Wants", nix["wants"]),
            ("StartLimitIntervalSec", nix["startLimitIntervalSec"]),
            ("StartLimitBurst", nix["startLimitBurst"])]
    return ([("Unit", key, value) for key, value in unit]
            # systemd-lib.nix's serviceToUnit writes this before serviceConfig, in [Service];
            # switch-to-configuration reads it there.
            + [("Service", "X-RestartIfChanged", False if nix.get("restartIfChanged") is False else None)]
            + [("Service", key, value) for key, value in nix["serviceConfig"].items()]
            + [("Install", "WantedBy", nix["wantedBy"])])


def nixos_unit(nix: dict) -> dict[Key, str]:
    """The unit NixOS writes for a systemd.services entry (nixos/lib/systemd-lib.nix: a list
    value becomes one line per element, booleans true/false) as (section, key) -> value, a
    list's elements joined by spaces as systemd reads repeated lines; keys without a line (None,
    an empty list) are absent."""
    return {(section, key): systemd_value(value) for section, key, value in unit_entries(nix)
            if value is not None and value != []}


def diff_keyed(ansible: dict, nixos: dict, expected: Expected, seen: set) -> list[str]:
    """Every key of either side: equal, or a listed difference with exactly these two values.
    Adds the listed keys met to `seen` (a listed key met nowhere is stale: see stale())."""
    problems = []
    for key in sorted(set(ansible) | set(nixos), key=str):
        a, n = ansible.get(key), nixos.get(key)
        if key in expected:
            seen.add(key)
            if (a, n) != expected[key][:2]:
                problems.append(f"{'.'.join(key)}: listed as a justified difference "
                                f"{expected[key][:2]}, but ansible {a!r}, nixos {n!r}")
        elif a != n:
            problems.append(f"{'.'.join(key)}: ansible {a!r}, nixos {n!r} (unlisted difference)")
    return problems


def stale(expected: Expected, seen: set) -> list[str]:
    return [f"{key}: listed as a difference but neither side has it" for key in set(expected) - seen]


def diff_listed(ansible: dict, nixos: dict, expected: Expected) -> list[str]:
    """diff_keyed over everything `expected` lists, with its stale entries."""
    seen: set = set()
    return diff_keyed(ansible, nixos, expected, seen) + stale(expected, seen)


def shared_directives(lists: tuple[str, ...]) -> dict[Key, str]:
    """("Service", key) -> value as systemd reads it, for units.json's `lists` together."""
    with open(UNITS_JSON) as file:
        units = json.load(file)
    listed = [d for name in lists for d in units[name]]
    keys = [d["key"] for d in listed]
    assert len(set(keys)) == len(keys), f"units.json: {lists} list a key twice: {keys}"
    return {("Service", d["key"]): systemd_value(d["value"]) for d in listed}


def split_shared(lists: tuple[str, ...], side: str, rendered: dict[Key, str]) -> tuple[dict[Key, str], list[str]]:
    """Checks that `rendered` (one side's unit, parsed) carries every directive of units.json's
    `lists` with its value, and returns the unit without them: both sides render them from the
    one list, so only the rest needs comparing."""
    shared = shared_directives(lists)
    problems = [f"{side}: {'.'.join(key)} is {rendered.get(key)!r}, units.json lists {value!r}"
                for key, value in shared.items() if rendered.get(key) != value]
    return {key: value for key, value in rendered.items() if key not in shared}, problems
