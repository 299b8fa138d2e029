"""What tests/ansible/compare-units and compare-agents share: reading a systemd unit as the
Ansible role renders it and as the NixOS module evaluates it, and comparing two keyed renderings
against a list of justified differences."""

from __future__ import annotations

import re

Key = tuple[str, str]
# key -> (Ansible value, NixOS value, reason). Values as systemd (or the agent) reads them.
Expected = dict[Key, tuple[object, object, str]]


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


def render_unit(nix: dict) -> str:
    """The unit file NixOS writes for a systemd.services entry, for the keys our modules set
    (nixos/lib/systemd-lib.nix: a list value becomes one line per element, booleans
    true/false). tests/e2e/test_nixos_units.py installs these on real systemd hosts."""
    def lines(section: str, pairs: list[tuple[str, object]]) -> list[str]:
        out = [f"[{section}]"]
        for key, value in pairs:
            for item in value if isinstance(value, list) else [value]:
                if item is not None:
                    out.append(f"{key}={systemd_value(item)}")
        return out
    unit = [("Description", nix["description"]), ("Documentation", nix["documentation"]),
            ("After", nix["after"]), ("Before", nix.get("before", [])), ("Wants", nix["wants"]),
            ("StartLimitIntervalSec", nix["startLimitIntervalSec"]),
            ("StartLimitBurst", nix["startLimitBurst"])]
    return "\n".join(lines("Unit", unit) + [""] + lines("Service", list(nix["serviceConfig"].items()))
                     + [""] + lines("Install", [("WantedBy", nix["wantedBy"])])) + "\n"


def nixos_unit(nix: dict) -> dict[Key, str]:
    """The unit file NixOS writes for a systemd.services entry (the keys our modules set)."""
    out = {
        ("Unit", "Description"): nix["description"],
        ("Unit", "Documentation"): systemd_value(nix["documentation"]),
        ("Unit", "After"): systemd_value(nix["after"]),
        ("Unit", "Wants"): systemd_value(nix["wants"]),
        ("Unit", "StartLimitIntervalSec"): systemd_value(nix["startLimitIntervalSec"]),
        ("Unit", "StartLimitBurst"): systemd_value(nix["startLimitBurst"]),
        ("Install", "WantedBy"): systemd_value(nix["wantedBy"]),
    }
    for key, value in nix["serviceConfig"].items():
        out[("Service", key)] = systemd_value(value)
    # An empty list is no setting at all.
    return {key: value for key, value in out.items() if value != ""}


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
