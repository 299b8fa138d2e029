use super::*;
use serde_json::json;

/// A valid plaintext inventory on private addresses, defaults everywhere they exist.
fn base() -> Value {
    json!({"all": {
        "vars": {"tigerbeetle_cluster_id": "42", "tigerbeetle_replica_count": 3,
                 "ansible_user": "root"},
        "hosts": {
            "tb-2": {"ansible_host": "h2", "tigerbeetle_replica": 2,
                     "tigerbeetle_address": "10.0.0.12:3000",
                     "tb_agent_url": "http://10.0.0.12:7000/"},
            "tb-0": {"ansible_host": "h0", "tigerbeetle_replica": 0,
                     "tigerbeetle_address": "10.0.0.10:3000",
                     "tb_agent_url": "http://10.0.0.10:7000"},
            "tb-1": {"ansible_host": "h1", "tigerbeetle_replica": 1,
                     "tigerbeetle_address": "10.0.0.11:3000",
                     "tb_agent_url": "http://10.0.0.11:7000"}}}})
}

fn with(change: impl FnOnce(&mut Value)) -> Value {
    let mut document = base();
    change(&mut document);
    document
}

fn vars(document: &mut Value) -> &mut Map<String, Value> {
    document["all"]["vars"].as_object_mut().unwrap()
}

fn host<'a>(document: &'a mut Value, name: &str) -> &'a mut Map<String, Value> {
    document["all"]["hosts"][name].as_object_mut().unwrap()
}

fn tls(document: &mut Value) {
    vars(document).insert("tb_agent_tls_cert_file".into(), json!("/etc/tb/agent.pem"));
    vars(document).insert("tb_agent_tls_key_file".into(), json!("/run/secrets/key"));
    for name in ["tb-0", "tb-1", "tb-2"] {
        let url = host(document, name)["tb_agent_url"]
            .as_str()
            .unwrap()
            .to_string();
        host(document, name).insert("tb_agent_url".into(), json!(url.replace("http:", "https:")));
    }
}

#[track_caller]
fn error(document: Value) -> String {
    match resolve(&document) {
        Ok(cluster) => panic!("accepted: {cluster:?}"),
        Err(error) => error.to_string(),
    }
}

#[track_caller]
fn error_text(text: &str) -> String {
    Inventory::parse(text).unwrap_err().to_string()
}

#[test]
fn deploy_method_and_nixos_flake() {
    let example: Value =
        serde_json::from_str(include_str!("../../../../../inventories/example.json")).unwrap();
    let mut document = example.clone();
    host(&mut document, "tb-1").insert("tigerbeetle_deploy".into(), json!("nixos"));
    assert_eq!(
        error(document.clone()),
        "all.hosts.tb-1.tigerbeetle_deploy: \"nixos\" needs all.vars.tigerbeetle_nixos_flake (the flake whose nixosConfigurations.<host> rollout.yml builds and activates on this host)"
    );
    vars(&mut document).insert("tigerbeetle_nixos_flake".into(), json!("/etc/nixos"));
    let cluster = resolve(&document).unwrap();
    assert_eq!(cluster.hosts["tb-1"].deploy, "nixos");
    assert_eq!(cluster.hosts["tb-0"].deploy, "systemd");
    assert_eq!(cluster.nixos_flake.as_deref(), Some("/etc/nixos"));
    for flake in ["", "/etc/nixos#tb-1", "path with space"] {
        let mut broken = document.clone();
        vars(&mut broken).insert("tigerbeetle_nixos_flake".into(), json!(flake));
        assert_eq!(
            error(broken),
            format!("all.vars.tigerbeetle_nixos_flake: {REASON_FLAKE}")
        );
    }
    let mut broken = example;
    host(&mut broken, "tb-0").insert("tigerbeetle_deploy".into(), json!("docker"));
    assert_eq!(
        error(broken),
        format!("all.hosts.tb-0.tigerbeetle_deploy: {REASON_DEPLOY}")
    );
}

#[test]
fn the_example_inventory_resolves_as_docs_inventory_md_shows() {
    let inventory =
        Inventory::parse(include_str!("../../../../../inventories/example.json")).unwrap();
    assert_eq!(inventory.replicas.len(), 3);
    assert_eq!(
        inventory.addresses(),
        "10.0.0.10:3000,10.0.0.11:3000,10.0.0.12:3000"
    );
    let cluster = serde_json::to_value(&inventory.cluster).unwrap();
    assert_eq!(
        cluster["hosts"]["tb-0"],
        json!({
            "address": "10.0.0.10:3000",
            "agent_ip": "10.0.0.10",
            "agent_listen": "10.0.0.10:7443",
            "agent_port": 7443,
            "agent_url": "https://10.0.0.10:7443",
            "ansible_host": "10.0.0.10",
            "data_file": "/var/lib/tigerbeetle/155384968277351797236104484427093106345_0.tigerbeetle",
            "deploy": "systemd",
            "ip": "10.0.0.10",
            "peer_ips": ["10.0.0.11", "10.0.0.12"],
            "port": 3000,
            "replica": 0
        })
    );
    assert_eq!(
        cluster["agent_tls"],
        json!({"cert_file": "/etc/tb-agent/tls/agent.crt", "client_ca_file": null,
               "key_file": "/run/secrets/tb-agent-tls-key"})
    );
    assert_eq!(
        cluster["agent_tokens"][0]["scopes"],
        json!(["read", "control", "backup"])
    );
    // Keys in sorted order, as Nix prints them.
    let keys: Vec<&String> = cluster.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn resolves_defaults_and_orders_by_replica() {
    let inventory = Inventory::from_value(&base()).unwrap();
    assert_eq!(inventory.cluster_id, 42);
    let names: Vec<&str> = inventory
        .replicas
        .iter()
        .map(|r| r.host_name.as_str())
        .collect();
    assert_eq!(names, ["tb-0", "tb-1", "tb-2"]);
    assert_eq!(inventory.replicas[2].agent_url, "http://10.0.0.12:7000");
    assert_eq!(inventory.replicas[2].host, "h2");
    let cluster = &inventory.cluster;
    assert_eq!(cluster.replica_hosts, ["tb-0", "tb-1", "tb-2"]);
    assert_eq!(cluster.cache_grid, None);
    assert_eq!(cluster.data_dir, "/var/lib/tigerbeetle");
    assert_eq!(cluster.statsd_port, 8125);
    assert_eq!(cluster.agent_peer_token_file, "/etc/tb-agent/peer.token");
    assert_eq!(cluster.agent_peer_ca_file, None);
    assert_eq!(cluster.agent_tls, None);
    assert!(cluster.agent_tokens.is_empty());
    assert!(cluster.client_networks.is_empty());
    let host = &cluster.hosts["tb-1"];
    assert_eq!(host.agent_listen, "10.0.0.11:7000");
    assert_eq!(host.data_file, "/var/lib/tigerbeetle/42_1.tigerbeetle");
    assert_eq!(host.peer_ips, ["10.0.0.10", "10.0.0.12"]);
}

#[test]
fn peer_ips_skip_the_own_ip_and_repeat_none() {
    let document = with(|d| {
        host(d, "tb-1").insert("tigerbeetle_address".into(), json!("10.0.0.10:3001"));
        host(d, "tb-2").insert("tigerbeetle_address".into(), json!("10.0.0.10:3002"));
        host(d, "tb-2").insert("tb_agent_listen".into(), json!("10.0.0.10:7002"));
    });
    let cluster = resolve(&document).unwrap();
    assert!(cluster.hosts["tb-0"].peer_ips.is_empty());
    assert_eq!(cluster.hosts["tb-2"].agent_listen, "10.0.0.10:7002");
    assert_eq!(cluster.hosts["tb-2"].agent_port, 7002);
}

#[test]
fn structure() {
    assert_eq!(error(json!([])), "the inventory must be a JSON object");
    assert_eq!(
        error(json!({"all": []})),
        "all: must be an object with vars and hosts"
    );
    assert_eq!(
        error(json!({"all": {"hosts": {}}})),
        "all.vars: must be an object"
    );
    assert_eq!(
        error(json!({"all": {"vars": {}, "hosts": []}})),
        "all.hosts: must be an object"
    );
}

#[test]
fn keys_at_their_level() {
    let unknown = "unknown key (keys starting with tigerbeetle_ or tb_agent_ are reserved for this project: check the spelling)";
    assert_eq!(
        error(with(|d| drop(
            vars(d).insert("tigerbeetle_replicas".into(), json!(3))
        ))),
        format!("all.vars.tigerbeetle_replicas: {unknown}")
    );
    assert_eq!(
        error(with(|d| drop(
            host(d, "tb-1").insert("tb_agent_token".into(), json!(1))
        ))),
        format!("all.hosts.tb-1.tb_agent_token: {unknown}")
    );
    assert_eq!(
        error(with(|d| drop(
            vars(d).insert("tb_agent_listen".into(), json!(null))
        ))),
        "all.vars.tb_agent_listen: belongs in all.hosts.<name>, not here"
    );
    assert_eq!(
        error(with(|d| drop(
            host(d, "tb-0").insert("tigerbeetle_data_dir".into(), json!("/x"))
        ))),
        "all.hosts.tb-0.tigerbeetle_data_dir: belongs in all.vars, not here"
    );
    // Not reserved: Ansible's, at any level.
    resolve(&with(|d| {
        vars(d).insert("ansible_host".into(), json!(1));
        host(d, "tb-0").insert("Tigerbeetle_x".into(), json!(1));
    }))
    .unwrap();
    assert_eq!(
        error(with(|d| drop(vars(d).remove("tigerbeetle_replica_count")))),
        "all.vars.tigerbeetle_replica_count: is required"
    );
    assert_eq!(
        error(with(|d| drop(host(d, "tb-2").remove("tb_agent_url")))),
        "all.hosts.tb-2.tb_agent_url: is required"
    );
    // Misplaced and unknown keys come before missing and invalid ones; keys in sorted order.
    assert_eq!(
        error(with(|d| {
            vars(d).insert("tigerbeetle_replica_count".into(), json!(9));
            vars(d).insert("tigerbeetle_zzz".into(), json!(1));
            vars(d).insert("tigerbeetle_cluster_id".into(), json!(1));
        })),
        format!("all.vars.tigerbeetle_zzz: {unknown}")
    );
    assert_eq!(
        error(with(|d| {
            vars(d).insert("tigerbeetle_replica_count".into(), json!(9));
            vars(d).insert("tigerbeetle_cluster_id".into(), json!(1));
        })),
        format!("all.vars.tigerbeetle_cluster_id: {REASON_U128}")
    );
}

/// The base inventory with `all.vars.<key>` set to `value`, resolved.
fn var(key: &str, value: Value) -> Result<(), String> {
    resolve(&with(|d| drop(vars(d).insert(key.into(), value))))
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// The error for `all.vars.<key>`.
fn reason(key: &str, reason: &str) -> Result<(), String> {
    Err(format!("all.vars.{key}: {reason}"))
}

#[test]
fn value_rules_numbers_and_sizes() {
    let id = "tigerbeetle_cluster_id";
    for bad in [
        json!("007"),
        json!("+1"),
        json!(""),
        json!(42),
        json!("0x1"),
        json!("340282366920938463463374607431768211456"),
    ] {
        assert_eq!(var(id, bad), reason(id, REASON_U128));
    }
    assert_eq!(
        var(id, json!("340282366920938463463374607431768211455")),
        Ok(())
    );
    assert_eq!(var(id, json!("0")), Ok(()));
    let count = "tigerbeetle_replica_count";
    for bad in [json!(0), json!(7), json!(3.0), json!("3"), json!(null)] {
        assert_eq!(var(count, bad), reason(count, REASON_COUNT));
    }
    let grid = "tigerbeetle_cache_grid";
    for bad in [
        json!("0GiB"),
        json!("04GiB"),
        json!("1234567GiB"),
        json!("4GB"),
        json!(4),
    ] {
        assert_eq!(var(grid, bad), reason(grid, REASON_SIZE));
    }
    assert_eq!(var(grid, json!("999999TiB")), Ok(()));
    assert_eq!(var(grid, json!(null)), Ok(()));
}

#[test]
fn value_rules_paths() {
    let dir = "tigerbeetle_data_dir";
    for bad in [
        json!("/a/./b"),
        json!("/a/../b"),
        json!("/a/"),
        json!("a"),
        json!("/"),
        json!("/a b"),
        json!(null),
        json!(format!("/{}", "a".repeat(4096))),
    ] {
        assert_eq!(var(dir, bad), reason(dir, REASON_PATH));
    }
    assert_eq!(var(dir, json!(format!("/{}", "a".repeat(4095)))), Ok(()));
    assert_eq!(var(dir, json!("/srv/.tb/a..b")), Ok(()));
    let secret = "tb_agent_peer_token_file";
    assert_eq!(
        var(secret, json!("/nix/store/x-token")),
        reason(secret, REASON_SECRET_IN_STORE)
    );
    assert_eq!(
        var(secret, json!("/nix/store/../x")),
        reason(secret, REASON_PATH)
    );
    assert_eq!(var(secret, json!(null)), reason(secret, REASON_PATH));
}

#[test]
fn value_rules_ports_and_networks() {
    let port = "tb_agent_statsd_port";
    for bad in [json!(0), json!(65536), json!("8125"), json!(8125.5)] {
        assert_eq!(var(port, bad), reason(port, REASON_PORT));
    }
    let networks = "tigerbeetle_client_networks";
    assert_eq!(
        var(networks, json!(["0.0.0.0/0", "10.0.0.0/8", "1.2.3.4/32"])),
        Ok(())
    );
    assert_eq!(
        var(networks, json!("10.0.0.0/8")),
        reason(networks, REASON_NETWORKS)
    );
    assert_eq!(
        var(networks, json!(vec!["10.0.0.0/8"; 65])),
        reason(networks, REASON_NETWORKS)
    );
    for (bad, index) in [
        ("10.0.0.1/8", 1),
        ("1.2.3.4/33", 1),
        ("1.2.3.0/024", 1),
        ("::/0", 1),
        ("10.0.0.0", 1),
    ] {
        assert_eq!(
            var(networks, json!(["10.0.0.0/8", bad])),
            Err(format!("all.vars.{networks}[{index}]: {REASON_NETWORK}"))
        );
    }
}

#[test]
fn sockets_and_urls() {
    let set = |key: &'static str, value: &str| {
        resolve(&with(|d| {
            drop(host(d, "tb-1").insert(key.into(), json!(value)))
        }))
        .map(|_| ())
        .map_err(|error| error.to_string())
    };
    let address = "tigerbeetle_address";
    for bad in [
        "h1:3000",
        "10.0.0.11",
        "10.0.0.011:3000",
        "10.0.0.11:03000",
        "10.0.0.256:1",
        "10.0.0.11:0",
        "10.0.0.11:65536",
        "10.0.0.11:3000,10.0.0.12:3000",
        "[::1]:3000",
        "10.0.0.11:3000:1",
    ] {
        assert_eq!(
            set(address, bad),
            Err(format!("all.hosts.tb-1.{address}: {REASON_SOCKET}")),
            "{bad}"
        );
    }
    let url = "tb_agent_url";
    for bad in [
        "10.0.0.11:7000",
        "http://10.0.0.11",
        "http://10.0.0.11:7000/v1",
        "http://10.0.0.11:7000//",
        "ftp://h:1",
        "http://a_b:1",
        "http://h:01",
        "https://[]:1",
        "http://:1",
    ] {
        assert_eq!(
            set(url, bad),
            Err(format!("all.hosts.tb-1.{url}: {REASON_URL}")),
            "{bad}"
        );
    }
    assert_eq!(set(url, "http://tb-1.example.net:7000/"), Ok(()));
    assert_eq!(set(url, "http://[fd00::1]:7000"), Ok(()));
    assert_eq!(
        set("ansible_host", ""),
        Err(format!("all.hosts.tb-1.ansible_host: {REASON_NAME}"))
    );
    assert_eq!(
        set("tb_agent_listen", "localhost:7000"),
        Err(format!("all.hosts.tb-1.tb_agent_listen: {REASON_SOCKET}"))
    );
}

mod checks;
