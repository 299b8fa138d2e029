"""The lab's network: a namespace of its own with one bridge, static addresses, and an nftables
table whose set of partitioned addresses the bridge drops. Nothing in it routes anywhere else."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Sequence

from .common import COMMAND_TIMEOUT_S_DEFAULT, SLOT, SLOT_SUFFIX, LabError, run

NETNS = f"tb-lab{SLOT_SUFFIX}"
NETNS_PATH = Path("/var/run/netns") / NETNS
BRIDGE = f"tblab{SLOT}"
# A private /24 used only inside the lab's namespace (one per slot).
SUBNET = ipaddress.IPv4Network(f"10.213.{SLOT}.0/24")
CONTROLLER_ADDRESS = SUBNET.network_address + 1
HOST_ADDRESS_OFFSET = 10
HOST_COUNT_MAX = 8
NFT_TABLE = "tb_lab"


def host_name(index: int) -> str:
    return f"tb-{index}"


def host_address(index: int) -> ipaddress.IPv4Address:
    assert 0 <= index < HOST_COUNT_MAX
    return SUBNET.network_address + HOST_ADDRESS_OFFSET + index


def in_namespace(argv: Sequence[str]) -> list[str]:
    """argv run inside the lab's network namespace. `nsenter`, not `ip netns exec`: the latter
    remounts /sys, which breaks nspawn."""
    return ["nsenter", f"--net={NETNS_PATH}", "--", *argv]


def run_in_namespace(argv: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S_DEFAULT,
                     check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return run(in_namespace(argv), timeout_s=timeout_s, check=check, **kwargs)


def network_up() -> None:
    run(["ip", "netns", "add", NETNS])
    run_in_namespace(["ip", "link", "set", "lo", "up"])
    run_in_namespace(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run_in_namespace(["ip", "addr", "add", f"{CONTROLLER_ADDRESS}/{SUBNET.prefixlen}",
                      "dev", BRIDGE])
    run_in_namespace(["ip", "link", "set", BRIDGE, "up"])
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
    run_in_namespace(["nft", "-f", "-"], input=ruleset)


def network_down() -> None:
    if NETNS_PATH.exists():
        run(["ip", "netns", "delete", NETNS])


def partition(address: str) -> None:
    """Drops every packet to and from `address` on the lab bridge."""
    run_in_namespace(["nft", "add", "element", "bridge", NFT_TABLE, "partitioned",
                      f"{{ {address} }}"])


def heal(address: str) -> None:
    if address in partitioned():
        run_in_namespace(["nft", "delete", "element", "bridge", NFT_TABLE, "partitioned",
                          f"{{ {address} }}"])


def partitioned() -> list[str]:
    result = run_in_namespace(["nft", "-j", "list", "set", "bridge", NFT_TABLE, "partitioned"])
    for item in json.loads(result.stdout)["nftables"]:
        if "set" in item:
            return sorted(str(e) for e in item["set"].get("elem", []))
    raise LabError("nft: set partitioned not found")
