#!/usr/bin/env python3
"""Differential test of the two inventory readers: nix/inventory.nix and `tbctl inventory check`.

Takes the valid inventories under tests/inventories/good/, breaks each in random ways (one to
three mutations: a tricky value for a key, a key removed, moved to the other level or misspelt,
a host renamed, added or removed, TLS switched on or off), and checks that both readers give the
same verdict: the same resolved cluster for an inventory both accept, the same first error,
word for word, for one both reject. The shared bad inventories prove each rule once; this
explores the combinations and the edges between rules.

Usage: inventory-differential.py REPO TBCTL [CASES] [SEED]
Prints one line per disagreement (at most 20) and exits 1 if there is any.
"""

import copy
import json
import os
import random
import subprocess
import sys
import tempfile

VARS_KEYS = [
    "tigerbeetle_cluster_id", "tigerbeetle_replica_count", "tigerbeetle_cache_grid",
    "tigerbeetle_data_dir", "tigerbeetle_client_networks", "tb_agent_orchestrator_networks",
    "tb_agent_statsd_port", "tb_agent_tokens", "tb_agent_peer_token_file",
    "tb_agent_peer_ca_file", "tb_agent_tls_cert_file", "tb_agent_tls_key_file",
    "tb_agent_tls_client_ca_file", "tb_agent_lease_enabled", "tb_agent_lease_ledger",
    "tb_agent_lease_id_prefix",
]
HOST_KEYS = ["ansible_host", "tigerbeetle_replica", "tigerbeetle_address", "tb_agent_url",
             "tb_agent_listen"]

# Values near the edges of every rule, by rule; any key also gets values of the others.
INTS = [-1, 0, 1, 2, 3, 5, 6, 7, 255, 256, 8125, 65535, 65536, 2**63, -2**63, 1.0, 3.5, 1e3,
        None, True, "3"]
U128 = ["", "0", "00", "01", "1", "+1", " 1", "-1", "1 ", "42", "٣", "1e3", "0x10",
        "340282366920938463463374607431768211455", "340282366920938463463374607431768211456",
        "999999999999999999999999999999999999999", "1000000000000000000000000000000000000000",
        "3402823669209384634633746074317682114550"]
SOCKETS = ["10.0.0.10:3000", "10.0.0.11:3000", "192.168.1.10:3000", "192.168.1.10:7000",
           "127.0.0.1:1", "0.0.0.0:7000", "8.8.8.8:7000", "1.2.3.4:0", "1.2.3.4:65536",
           "1.2.3.4:65535", "01.2.3.4:1", "1.2.3.4:01", "1.2.3:4", "1.2.3.4.5:6", "256.1.1.1:1",
           "255.255.255.255:1", "1.2.3.4", ":80", "1.2.3.4:", "host:80", "[::1]:80",
           "10.0.0.10:3000,10.0.0.11:3000", "100.64.0.1:7000", "100.63.255.1:7000",
           "100.127.0.1:7000", "100.128.0.1:7000", "172.15.0.1:7000", "172.16.0.1:7000",
           "172.31.255.255:7000", "172.32.0.1:7000", "169.254.1.1:7000", "169.253.1.1:7000",
           "192.169.0.1:7000", "192.167.0.1:7000", "126.0.0.1:7000", "128.0.0.1:7000",
           "9.0.0.1:7000", "11.0.0.1:7000", "1.2.3.4:1:2", " 1.2.3.4:1", "1.2.3.4:123456"]
NETWORKS = ["10.0.0.0/8", "10.0.0.1/8", "0.0.0.0/0", "1.0.0.0/0", "1.2.3.4/32", "1.2.3.4/33",
            "1.2.3.4/032", "1.2.3.0/24/", "::/0", "10.0.0.0/", "/8", "10.0.0.0/08",
            "10.128.0.0/9", "10.64.0.0/9", "255.255.255.255/32", "255.255.255.254/31",
            "10.0.0.0/100", "10.0.0.0", "01.0.0.0/8"]
PATHS = ["/a/b", "/a/./b", "/a/../b", "/a/", "/", "//a", "a/b", "/a b", "/a/.b", "/a/..b",
         "/é", "/a+b/c-d_e.f", "/a/.", "/a/..", "/./a", "/nix/store/abc-secret", "/nix/store",
         "/nix/store/", "/nix/storex/a", "/nix/store/a/b", "/a\\b", "/a:b", "/a~",
         "/" + "a" * 4095, "/" + "a" * 4096, "/a/" + "b" * 4093, "/a/" + "b" * 4094]
URLS = ["http://h:1", "http://h:1/", "https://h:1", "https://h:1/", "http://h:1//", "http://h",
        "http://h:0", "http://h:65536", "http://h:65535", "http://h:01", "ftp://h:1",
        "HTTP://h:1", "http://:1", "https://[::1]:7443", "https://[]:1", "https://[::1]]:1",
        "https://[::1]", "https://[g::1]:1", "https://[1.2.3.4]:1/", "http://a_b:1",
        "http://h:1/x", "http://h:1?x", "http://10.0.0.10:7000", "https://10.0.0.10:7443",
        "http://192.168.1.10:7000", "http://h.example-1.net:7000", "http://-:1", "http://.:1",
        "https://h:1:2", "http://h:123456", "http://user@h:1"]
SIZES = ["4GiB", "0GiB", "1KiB", "999999TiB", "1000000TiB", "1234567GiB", "4gib", "4 GiB",
         "04GiB", "4GB", "GiB", "4", "4PiB", "1.5GiB"]
NAMES = ["", "é", "a" * 253, "a" * 254, "é" * 126, "é" * 127, "tb-0", "10.0.0.10", " "]
SHA = ["8d3b2b7c8ea0c7f4f9b6b5a0e4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5",
       "8D3B2B7C8EA0C7F4F9B6B5A0E4C3D2E1F0A9B8C7D6E5F4A3B2C1D0E9F8A7B6C5",
       "8d3b2b7c8ea0c7f4f9b6b5a0e4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c",
       "8d3b2b7c8ea0c7f4f9b6b5a0e4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c55",
       "g" * 64, "my-secret-token"]
BOOLS = [True, False, None, 0, 1, "true", "false"]
LEDGERS = [0, 1, 2, 1952607232, 4294967295, 4294967296, -1, 2**63, 1.0, None, True, "1"]
ID_PREFIXES = ["74622d6c65617365", "0000000000000000", "ffffffffffffffff", "0000000000000001",
               "fffffffffffffffe", "74622D6C65617365", "74622d6c6561736", "74622d6c656173655",
               "74622d6c6561736g", " 4622d6c65617365", None, 1]
TOKEN_NAMES = ["", "a" * 64, "a" * 65, "é" * 32, "é" * 33, "ops", "prometheus"]
POOLS = {
    "tigerbeetle_cluster_id": U128, "tigerbeetle_replica_count": INTS,
    "tigerbeetle_cache_grid": SIZES, "tigerbeetle_data_dir": PATHS,
    "tigerbeetle_client_networks": "networks", "tb_agent_orchestrator_networks": "networks",
    "tb_agent_statsd_port": INTS, "tb_agent_tokens": "tokens",
    "tb_agent_peer_token_file": PATHS, "tb_agent_peer_ca_file": PATHS,
    "tb_agent_tls_cert_file": PATHS, "tb_agent_tls_key_file": PATHS,
    "tb_agent_tls_client_ca_file": PATHS, "ansible_host": NAMES, "tigerbeetle_replica": INTS,
    "tigerbeetle_address": SOCKETS, "tb_agent_url": URLS, "tb_agent_listen": SOCKETS,
    "name": TOKEN_NAMES, "sha256": SHA, "tb_agent_lease_enabled": BOOLS,
    "tb_agent_lease_ledger": LEDGERS, "tb_agent_lease_id_prefix": ID_PREFIXES,
}
SCALARS = INTS + U128 + SOCKETS + NETWORKS + PATHS + URLS + SIZES + NAMES + SHA + [
    "read", "control", "backup", "admin"]
HOST_NAMES = ["tb-0", "tb-1", "tb-9", "A", "a", "0", "Z.z", "_x", "-x", ".x", "x y", "é",
              "a" * 63, "a" * 64, "tb_0", ""]
TOKEN = {"name": "ops", "scopes": ["read"],
         "sha256": "8d3b2b7c8ea0c7f4f9b6b5a0e4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5"}


def value_for(rng, key):
    """Mostly a value near the edges of the key's own rule."""
    pool = POOLS.get(key)
    if pool is None or rng.random() < 0.25:
        return value(rng)
    if pool == "networks":
        length = rng.choice([0, 1, 2, 3, 64, 65])
        return [rng.choice(NETWORKS if rng.random() < 0.9 else SCALARS) for _ in range(length)]
    if pool == "tokens":
        tokens = [copy.deepcopy(TOKEN) | {"name": f"t{i}"} for i in range(rng.choice([0, 1, 2, 16, 17]))]
        if tokens and rng.random() < 0.7:
            mutate_token(rng, rng.choice(tokens))
        return tokens
    return rng.choice(pool)


def value(rng, depth=0):
    """A tricky value: mostly scalars, sometimes lists or objects of them."""
    roll = rng.random()
    if depth < 2 and roll < 0.12:
        return [value(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 65]))]
    if depth < 2 and roll < 0.18:
        return {rng.choice(["name", "scopes", "sha256", "extra"]): value(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}
    if roll < 0.25:
        token = copy.deepcopy(TOKEN)
        mutate_token(rng, token)
        return [token] if rng.random() < 0.5 else [token, copy.deepcopy(TOKEN)]
    return rng.choice(SCALARS)


def mutate_token(rng, token):
    key = rng.choice(["name", "scopes", "sha256", "extra"])
    roll = rng.random()
    if roll < 0.2:
        token.pop(key, None)
    elif key == "scopes" and roll < 0.7:
        token[key] = rng.choice([[], ["read", "read"], ["read", "control", "backup"],
                                 ["backup", "read"], ["root"], "read", [1]])
    else:
        token[key] = value_for(rng, key)


def mutate(rng, doc):
    """Breaks (or keeps valid) one thing in doc, in place; returns doc or its replacement."""
    if rng.random() < 0.01:
        return rng.choice([[], "all", 1, None, {"all": []}, {"all": None}, {"vars": {}, "hosts": {}},
                           {"all": {"vars": {}}}, {"all": {"hosts": {}}}])
    if not isinstance(doc, dict) or not isinstance(doc.get("all"), dict):
        return doc
    all_ = doc["all"]
    vars_ = all_.get("vars")
    hosts = all_.get("hosts")
    if not isinstance(vars_, dict) or not isinstance(hosts, dict):
        return doc  # Broken beyond repair already.
    names = sorted(hosts)
    kind = rng.randrange(14)
    host = hosts[rng.choice(names)] if names else None
    if kind == 0:
        key = rng.choice(VARS_KEYS)
        vars_[key] = value_for(rng, key)
    elif kind in (1, 2) and isinstance(host, dict):
        key = rng.choice(HOST_KEYS)
        host[key] = value_for(rng, key)
    elif kind == 3:
        vars_.pop(rng.choice(VARS_KEYS), None)
    elif kind == 4 and isinstance(host, dict):
        host.pop(rng.choice(HOST_KEYS), None)
    elif kind == 5 and isinstance(host, dict):
        # A key at the wrong level.
        if rng.random() < 0.5:
            vars_[rng.choice(HOST_KEYS)] = host.get("tigerbeetle_address", "1.2.3.4:5")
        else:
            key = rng.choice(VARS_KEYS)
            host[key] = vars_.get(key, 1)
    elif kind == 6:
        # A misspelt reserved key, or an unreserved one.
        where = vars_ if rng.random() < 0.5 or not isinstance(host, dict) else host
        where[rng.choice(["tigerbeetle_replicas", "tb_agent_token", "tigerbeetle_", "tb_agent_",
                          "ansible_port", "tigerbeetlex", "Tigerbeetle_replica"])] = 1
    elif kind == 7 and names:
        # Rename a host.
        name = rng.choice(names)
        hosts[rng.choice(HOST_NAMES)] = hosts.pop(name)
    elif kind == 8 and names:
        # Copy a host under a new name (same replica, same address).
        hosts[rng.choice(HOST_NAMES)] = copy.deepcopy(hosts[rng.choice(names)])
    elif kind == 9 and names:
        del hosts[rng.choice(names)]
    elif kind == 10:
        # Switch TLS on or off, with or without its partner keys.
        if vars_.get("tb_agent_tls_cert_file") is None:
            vars_["tb_agent_tls_cert_file"] = "/etc/tb/agent.pem"
            if rng.random() < 0.8:
                vars_["tb_agent_tls_key_file"] = "/run/secrets/key"
            for h in hosts.values():
                if isinstance(h, dict) and isinstance(h.get("tb_agent_url"), str) and rng.random() < 0.9:
                    h["tb_agent_url"] = h["tb_agent_url"].replace("http://", "https://", 1)
        else:
            for key in ["tb_agent_tls_cert_file", "tb_agent_tls_key_file", "tb_agent_tls_client_ca_file"]:
                if rng.random() < 0.8:
                    vars_.pop(key, None)
            for h in hosts.values():
                if isinstance(h, dict) and isinstance(h.get("tb_agent_url"), str) and rng.random() < 0.9:
                    h["tb_agent_url"] = h["tb_agent_url"].replace("https://", "http://", 1)
    elif kind == 11 and isinstance(host, dict):
        # Swap replicas or addresses between two hosts, or make them collide.
        other = hosts[rng.choice(names)]
        key = rng.choice(["tigerbeetle_replica", "tigerbeetle_address", "tb_agent_listen"])
        if isinstance(other, dict) and key in other:
            host[key] = other[key]
    elif kind == 12 and isinstance(vars_.get("tb_agent_tokens"), list) and vars_["tb_agent_tokens"]:
        tokens = vars_["tb_agent_tokens"]
        roll = rng.random()
        if roll < 0.5 and isinstance(tokens[0], dict):
            mutate_token(rng, tokens[rng.randrange(len(tokens))] if isinstance(tokens[-1], dict) else tokens[0])
        elif roll < 0.7:
            tokens.append(copy.deepcopy(tokens[0]))
        else:
            tokens.extend(copy.deepcopy(TOKEN) | {"name": f"t{i}"} for i in range(rng.choice([1, 14, 15, 16])))
    elif kind == 13:
        # Structure.
        roll = rng.random()
        if roll < 0.25:
            all_["vars"] = rng.choice([[], None, "x", 1])
        elif roll < 0.5:
            all_["hosts"] = rng.choice([[], None, "x", 1])
        elif roll < 0.75 and names:
            hosts[rng.choice(names)] = rng.choice([[], None, "x", 1])
        else:
            all_["children"] = {"x": {}}
    return doc


def raw_cases(base):
    """JSON texts that json.dump cannot write: where the two JSON parsers could differ."""
    text = json.dumps(base)

    def vars_first(entry):
        return text.replace('"vars": {', '"vars": {' + entry + ", ", 1)

    def deep(levels):
        return "[" * levels + "]" * levels

    count = '"tigerbeetle_replica_count": 3'
    replica = '"tigerbeetle_replica": 0'
    assert count in text and replica in text
    return [
        text.replace(replica, '"tigerbeetle_replica": -0', 1),  # the integer 0 for Nix
        text.replace(replica, '"tigerbeetle_replica": -0.0', 1),
        text.replace(replica, '"tigerbeetle_replica": 0e0', 1),
        text.replace(replica, '"tigerbeetle_replica": 0.0', 1),
        text.replace(count, '"tigerbeetle_replica_count": -0'),
        text.replace(count, '"tigerbeetle_replica_count": 7, ' + count),  # the last one counts
        text.replace(count, count + ', "tigerbeetle_replica_count": 7'),
        text.replace(count, '"tigerbeetle_replica_count": 9223372036854775811'),
        text.replace(count, '"tigerbeetle_replica_count": 18446744073709551619'),
        vars_first('"tb_agent_statsd_port": 9223372036854775808'),
        vars_first('"tb_agent_statsd_port": 18446744073709551615'),
        vars_first('"tb_agent_statsd_port": 8.125e3'),
        vars_first('"ansible_x": "-0"'),
        vars_first('"ansible_x": [-0, -0.5, 1e-400, 123456789012345678901234567890]'),
        vars_first('"ansible_x": ' + deep(29)),  # 32 levels in all: the most allowed
        vars_first('"ansible_x": ' + deep(30)),
        vars_first('"ansible_x": ' + deep(200)),
        # Not here: a value nested 128 levels or deeper that a later duplicate key replaces.
        # Nix keeps the last duplicate and accepts; serde_json stops at its recursion limit
        # before it sees the duplicate, and tbctl refuses (docs/inventory.md says so).
        vars_first('"ansible_x": ' + deep(100) + ', "ansible_x": 1'),
        vars_first('"ansible_x": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["'),
        vars_first('"tb_agent_peer_ca_file": "\\u002fetc\\u002fca.pem"'),
        vars_first('"tb_agent_peer_ca_file": null'),
        text.replace('"ansible_host": "', '"ansible_host": "\\u00e9', 1),
        text.replace('"ansible_host": "', '"ansible_host": "\u00e9', 1),
    ]


def nix_verdicts(repo, paths):
    expr = """{ files }:
      let inventory = import %s/nix/inventory.nix; in
      map (f: inventory.check (builtins.fromJSON (builtins.readFile f))) files""" % repo
    args = ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr, "--arg", "files",
            "[ " + " ".join(paths) + " ]"]
    env = dict(os.environ, NIX_CONFIG="build-users-group =")
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def rust_verdict(tbctl, path):
    done = subprocess.run([tbctl, "inventory", "check", "--json", path], capture_output=True,
                          text=True)
    if done.returncode == 0:
        return {"ok": True, "cluster": json.loads(done.stdout)}
    prefix = f"tbctl: inventory {path}: "
    error = done.stderr.strip()
    return {"ok": False, "error": error[len(prefix):] if error.startswith(prefix) else error}


def main():
    repo, tbctl = sys.argv[1], sys.argv[2]
    cases = int(sys.argv[3]) if len(sys.argv) > 3 else 400
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    rng = random.Random(seed)
    good_dir = os.path.join(repo, "tests/inventories/good")
    bases = [json.load(open(os.path.join(good_dir, name))) for name in sorted(os.listdir(good_dir))
             if name.endswith(".json")]
    with tempfile.TemporaryDirectory() as work:
        paths = []
        plain = json.load(open(os.path.join(good_dir, "plaintext-private.json")))
        for case, text in enumerate(raw_cases(plain)):
            path = os.path.join(work, f"raw-{case}.json")
            with open(path, "w") as file:
                file.write(text)
            paths.append(path)
        for case in range(cases):
            doc = copy.deepcopy(rng.choice(bases))
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                doc = mutate(rng, doc)
            path = os.path.join(work, f"case-{case}.json")
            with open(path, "w") as file:
                json.dump(doc, file, ensure_ascii=rng.random() < 0.5)
            paths.append(path)
        nix = nix_verdicts(repo, paths)
        disagreements = 0
        accepted = 0
        for path, theirs in zip(paths, nix):
            ours = rust_verdict(tbctl, path)
            accepted += theirs["ok"]
            if ours != theirs:
                disagreements += 1
                if disagreements <= 20:
                    print(f"{os.path.basename(path)}: {json.dumps(json.load(open(path)))[:600]}\n"
                          f"  nix:   {json.dumps(theirs)[:400]}\n  tbctl: {json.dumps(ours)[:400]}")
        print(f"   {len(paths)} inventories ({len(paths) - cases} JSON edge cases, {cases} mutated with "
              f"seed {seed}): {accepted} accepted by both, "
              f"{len(paths) - accepted - disagreements} rejected by both with the same error, "
              f"{disagreements} disagreement(s)")
        return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
