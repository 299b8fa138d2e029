"""The lab's inventory (inventories/lab.json): the shape of inventories/example.json for the lab's
addresses."""

from __future__ import annotations

import json

from .common import REPO
from .network import CONTROLLER_ADDRESS, HOST_COUNT_MAX, host_address, host_name

# The lab inventory: replicas are the first INVENTORY_REPLICA_COUNT hosts. Hosts after them
# (`lab up 4` boots tb-3) are outside the cluster and outside the client networks: the
# controller (CONTROLLER_ADDRESS) is the only client network in the lab.
INVENTORY_PATH = REPO / "inventories" / "lab.json"
INVENTORY_REPLICA_COUNT = 3
CLUSTER_ID = "0"
REPLICA_PORT = 3000
AGENT_PORT = 7443
AGENT_TLS_DIR = "/etc/tb-agent/tls"
LAB_CACHE_GRID = "256MiB"



def inventory(replica_count: int = INVENTORY_REPLICA_COUNT) -> dict:
    """The lab's inventory in the shape of inventories/example.json (what agent/proto/src/inventory/
    reads). Connection settings (key, known hosts) are not in it: they are per machine, in
    Lab.ansible_env()."""
    assert 1 <= replica_count <= HOST_COUNT_MAX
    hosts = {}
    for index in range(replica_count):
        address = host_address(index)
        hosts[host_name(index)] = {
            "ansible_host": str(address),
            "tigerbeetle_replica": index,
            "tigerbeetle_address": f"{address}:{REPLICA_PORT}",
            "tb_agent_url": f"https://{address}:{AGENT_PORT}",
        }
    controller_network = f"{CONTROLLER_ADDRESS}/32"
    return {"all": {
        "vars": {
            "tigerbeetle_cluster_id": CLUSTER_ID,
            "tigerbeetle_replica_count": replica_count,
            # Three replicas share this machine's memory: a small grid cache.
            "tigerbeetle_cache_grid": LAB_CACHE_GRID,
            # The controller is the only client and orchestrator (tb-3 and the others are not).
            "tigerbeetle_client_networks": [controller_network],
            "tb_agent_orchestrator_networks": [controller_network],
            # Where the roles install each host's certificate and key and the lab CA (docs/inventory.md).
            "tb_agent_tls_cert_file": f"{AGENT_TLS_DIR}/agent.crt",
            "tb_agent_tls_key_file": f"{AGENT_TLS_DIR}/agent.key",
            "tb_agent_peer_ca_file": f"{AGENT_TLS_DIR}/ca.crt",
            "ansible_user": "root",
        },
        "hosts": hosts,
    }}


def inventory_text() -> str:
    return json.dumps(inventory(), indent=2) + "\n"
