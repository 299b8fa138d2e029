//! The rules one by one: tokens, host names, TLS files, replica slots, each host against the others, the check order, JSON as Nix reads it, the written form and the bounded load.

use super::*;

fn token() -> Value {
    json!({"name": "ops", "scopes": ["read", "control"], "sha256": "a".repeat(64)})
}

/// The base inventory with `tb_agent_tokens` set to `value`, resolved.
fn tokens(value: Value) -> Result<(), String> {
    resolve(&with(|d| {
        drop(vars(d).insert("tb_agent_tokens".into(), value))
    }))
    .map(|_| ())
    .map_err(|error| error.to_string())
}

#[test]
fn tokens_one_by_one() {
    let at = "all.vars.tb_agent_tokens";
    assert_eq!(tokens(json!([token()])), Ok(()));
    assert_eq!(tokens(json!({})), Err(format!("{at}: {REASON_TOKENS}")));
    let seventeen: Vec<Value> = (0..17)
        .map(|i| {
            let mut t = token();
            t["name"] = json!(format!("t{i}"));
            t
        })
        .collect();
    assert_eq!(
        tokens(json!(seventeen)),
        Err(format!("{at}: {REASON_TOKENS}"))
    );
    assert_eq!(
        tokens(json!([token(), "secret"])),
        Err(format!(
            "{at}[1]: must be an object with name, scopes and sha256"
        ))
    );
    let mut extra = token();
    extra["secret"] = json!("x");
    extra["zz"] = json!("x");
    assert_eq!(
        tokens(json!([extra])),
        Err(format!(
            "{at}[0].secret: unknown key (a token has name, scopes and sha256)"
        ))
    );
    let scopes = format!(
        "{at}[0].scopes: must be a non-empty list of distinct scopes among \"read\", \"control\", \"backup\""
    );
    for bad in [
        json!([]),
        json!(["read", "read"]),
        json!(["admin"]),
        json!("read"),
    ] {
        let mut t = token();
        t["scopes"] = bad;
        assert_eq!(tokens(json!([t])), Err(scopes.clone()));
    }
    let mut long = token();
    long["name"] = json!("n".repeat(65));
    assert_eq!(
        tokens(json!([long])),
        Err(format!(
            "{at}[0].name: must be a string of 1 to 64 characters"
        ))
    );
    let mut upper = token();
    upper["sha256"] = json!("A".repeat(64));
    assert!(
        tokens(json!([upper]))
            .unwrap_err()
            .starts_with(&format!("{at}[0].sha256: must be 64 lowercase hex digits"))
    );
}

#[test]
fn tokens_checked_whole_before_names_are_compared() {
    let at = "all.vars.tb_agent_tokens";
    let mut broken = token();
    broken["sha256"] = json!("x");
    assert!(
        tokens(json!([token(), token(), broken]))
            .unwrap_err()
            .starts_with(&format!("{at}[2].sha256"))
    );
    assert_eq!(
        tokens(json!([token(), token()])),
        Err(format!("{at}[1].name: \"ops\" is used twice"))
    );
}

#[test]
fn host_names() {
    let rename = |name: &str| {
        let name = name.to_string();
        resolve(&with(move |d| {
            let hosts = d["all"]["hosts"].as_object_mut().unwrap();
            let moved = hosts.remove("tb-2").unwrap();
            hosts.insert(name, moved);
        }))
        .map(|_| ())
        .map_err(|error| error.to_string())
    };
    for good in ["a", "0a", "A.b_c-d", &"a".repeat(63)] {
        assert_eq!(rename(good), Ok(()), "{good}");
    }
    for bad in ["", "-a", ".a", "_a", "a b", "é", "0", "12", &"a".repeat(64)] {
        assert_eq!(
            rename(bad),
            Err(format!(
                "all.hosts.{bad}: host names must be 1 to 63 characters among A-Z a-z 0-9 . _ - , start with a letter or digit and not be all digits (tbctl --replica reads digits as a replica index)"
            ))
        );
    }
    assert_eq!(
        error(with(|d| d["all"]["hosts"]["tb-1"] = json!([]))),
        "all.hosts.tb-1: must be an object"
    );
}

#[test]
fn tls_files_together() {
    assert_eq!(
        error(with(|d| drop(
            vars(d).insert("tb_agent_tls_key_file".into(), json!("/k"))
        ))),
        "all.vars.tb_agent_tls_key_file: needs all.vars.tb_agent_tls_cert_file"
    );
    assert_eq!(
        error(with(|d| drop(
            vars(d).insert("tb_agent_tls_cert_file".into(), json!("/c"))
        ))),
        "all.vars.tb_agent_tls_cert_file: needs all.vars.tb_agent_tls_key_file"
    );
    assert_eq!(
        error(with(|d| drop(
            vars(d).insert("tb_agent_tls_client_ca_file".into(), json!("/ca"))
        ))),
        "all.vars.tb_agent_tls_client_ca_file: needs all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file"
    );
    let cluster = resolve(&with(|d| {
        tls(d);
        vars(d).insert("tb_agent_tls_client_ca_file".into(), json!("/ca"));
    }))
    .unwrap();
    assert_eq!(
        cluster.agent_tls,
        Some(AgentTls {
            cert_file: "/etc/tb/agent.pem".into(),
            client_ca_file: Some("/ca".into()),
            key_file: "/run/secrets/key".into(),
        })
    );
    assert_eq!(cluster.agent_urls[2], "https://10.0.0.12:7000");
}

#[test]
fn replica_slots() {
    assert_eq!(
        error(with(|d| drop(
            host(d, "tb-1").insert("tigerbeetle_replica".into(), json!(3))
        ))),
        "all.hosts.tb-1.tigerbeetle_replica: 3 is not below the replica count 3"
    );
    assert_eq!(
        error(with(|d| drop(
            host(d, "tb-0").insert("tigerbeetle_replica".into(), json!(2))
        ))),
        "all.hosts.tb-2.tigerbeetle_replica: replica 2 is already host tb-0"
    );
    assert_eq!(
        error(with(|d| drop(
            vars(d).insert("tigerbeetle_replica_count".into(), json!(5))
        ))),
        "all.hosts: no host has tigerbeetle_replica 3"
    );
    assert_eq!(
        error(with(|d| drop(
            host(d, "tb-1").insert("tigerbeetle_replica".into(), json!(-1))
        ))),
        format!("all.hosts.tb-1.tigerbeetle_replica: {REASON_INDEX}")
    );
}

#[test]
fn each_host_against_the_others() {
    assert_eq!(
        error(with(|d| drop(host(d, "tb-2").insert(
            "tigerbeetle_address".into(),
            json!("10.0.0.10:3000")
        )))),
        "all.hosts.tb-2.tigerbeetle_address: 10.0.0.10:3000 is also the address of host tb-0"
    );
    assert_eq!(
        error(with(|d| drop(host(d, "tb-1").insert(
            "tb_agent_url".into(),
            json!("https://10.0.0.11:7000")
        )))),
        "all.hosts.tb-1.tb_agent_url: must start with http:// because TLS is not configured (all.vars.tb_agent_tls_cert_file)"
    );
    assert_eq!(
        error(with(|d| {
            tls(d);
            host(d, "tb-1").insert("tb_agent_url".into(), json!("http://10.0.0.11:7000"));
        })),
        "all.hosts.tb-1.tb_agent_url: must start with https:// because all.vars.tb_agent_tls_cert_file is set"
    );
    assert_eq!(
        error(with(|d| drop(host(d, "tb-1").insert(
            "tb_agent_url".into(),
            json!("http://10.0.0.11:3000")
        )))),
        "all.hosts.tb-1.tb_agent_listen: 10.0.0.11:3000 is the replica's own address"
    );
}

#[test]
fn a_public_listen_address_needs_tls() {
    let public = |listen: &str| {
        let listen = listen.to_string();
        resolve(&with(move |d| {
            drop(host(d, "tb-1").insert("tb_agent_listen".into(), json!(listen)))
        }))
        .map(|_| ())
    };
    for private in [
        "127.0.0.1:1",
        "10.1.2.3:1",
        "172.16.0.1:1",
        "172.31.255.255:1",
        "192.168.0.1:1",
        "100.64.0.1:1",
        "100.127.255.255:1",
        "169.254.0.1:1",
    ] {
        assert_eq!(public(private), Ok(()), "{private}");
    }
    for ip in [
        "0.0.0.0",
        "8.8.8.8",
        "172.15.0.1",
        "172.32.0.1",
        "192.169.0.1",
        "100.63.0.1",
        "100.128.0.1",
        "169.253.0.1",
        "11.0.0.1",
    ] {
        let ip = ip.to_string();
        let reason = Reason::ListenPublicWithoutTls { ip: ip.clone() };
        let refused = InventoryError::key("all.hosts.tb-1.tb_agent_listen", reason);
        assert_eq!(public(&format!("{ip}:7000")), Err(refused));
    }
    assert_eq!(
        public("8.8.8.8:7000").unwrap_err().to_string(),
        "all.hosts.tb-1.tb_agent_listen: 8.8.8.8 is a public address and bearer tokens would cross it in clear text: set all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file"
    );
    // With TLS, a public listen address is fine.
    resolve(&with(|d| {
        tls(d);
        host(d, "tb-1").insert("tb_agent_listen".into(), json!("0.0.0.0:7000"));
    }))
    .unwrap();
}

#[test]
fn the_first_error_in_check_order_wins() {
    // A bad value in all.vars (step 2) before a bad host name (step 3), before a bad host
    // (step 4), before TLS (5), slots (6) and addresses (7).
    let everything = with(|d| {
        vars(d).insert("tigerbeetle_cache_grid".into(), json!("4GB"));
        vars(d).insert("tb_agent_tls_key_file".into(), json!("/k"));
        host(d, "tb-1").insert("tigerbeetle_address".into(), json!("h:1"));
        let hosts = d["all"]["hosts"].as_object_mut().unwrap();
        let moved = hosts.remove("tb-2").unwrap();
        hosts.insert("bad name".into(), moved);
    });
    assert!(error(everything.clone()).starts_with("all.vars.tigerbeetle_cache_grid:"));
    let mut next = everything;
    vars(&mut next).remove("tigerbeetle_cache_grid");
    assert!(error(next.clone()).starts_with("all.hosts.bad name: host names"));
    let hosts = next["all"]["hosts"].as_object_mut().unwrap();
    let moved = hosts.remove("bad name").unwrap();
    hosts.insert("tb-2".into(), moved);
    assert!(error(next.clone()).starts_with("all.hosts.tb-1.tigerbeetle_address: must be"));
    host(&mut next, "tb-1").insert("tigerbeetle_address".into(), json!("10.0.0.10:3000"));
    assert!(error(next.clone()).starts_with("all.vars.tb_agent_tls_key_file: needs"));
    vars(&mut next).remove("tb_agent_tls_key_file");
    assert!(error(next).starts_with("all.hosts.tb-1.tigerbeetle_address: 10.0.0.10:3000 is also"));
}

#[test]
fn json_as_nix_reads_it() {
    let text = serde_json::to_string_pretty(&base()).unwrap();
    // `-0` is the integer 0 for Nix; `-0.0` and `0.0` are floats.
    let negative_zero = text.replacen(
        "\"tigerbeetle_replica\": 0",
        "\"tigerbeetle_replica\": -0",
        1,
    );
    assert_ne!(negative_zero, text);
    assert_eq!(
        Inventory::parse(&negative_zero).unwrap().replicas[0].host_name,
        "tb-0"
    );
    let float = text.replacen(
        "\"tigerbeetle_replica\": 0",
        "\"tigerbeetle_replica\": -0.0",
        1,
    );
    assert_eq!(
        error_text(&float),
        format!("all.hosts.tb-0.tigerbeetle_replica: {REASON_INDEX}")
    );
    // `-0` inside a string is text.
    let in_string = text.replacen("\"h0\"", "\"-0\"", 1);
    assert_eq!(Inventory::parse(&in_string).unwrap().replicas[0].host, "-0");
    // Duplicate keys: the last one counts, in both readers.
    let duplicate = text.replacen(
        "\"tigerbeetle_replica_count\": 3",
        "\"tigerbeetle_replica_count\": 7, \"tigerbeetle_replica_count\": 3",
        1,
    );
    assert_ne!(duplicate, text);
    Inventory::parse(&duplicate).unwrap();
    // NUL, which Nix strings cannot hold.
    let nul = text.replacen("\"h0\"", "\"h0\\u0000x\"", 1);
    assert!(error_text(&nul).contains("must not contain \\u0000"));
    // Nesting: 32 levels are fine, 33 are not, and far deeper (past serde_json's own limit)
    // gives the same error.
    let nest = |levels: usize| {
        text.replacen(
            "\"ansible_user\": \"root\"",
            &format!(
                "\"ansible_user\": {}{}",
                "[".repeat(levels),
                "]".repeat(levels)
            ),
            1,
        )
    };
    Inventory::parse(&nest(29)).unwrap();
    let deep = "the inventory must not nest objects and lists more than 32 levels deep";
    assert_eq!(error_text(&nest(30)), deep);
    assert_eq!(error_text(&nest(100_000)), deep);
    // Size.
    let large = format!("{text}{}", " ".repeat(1024 * 1024));
    assert!(error_text(&large).contains("larger than 1048576 bytes"));
    assert!(Inventory::parse("{").is_err());
}

#[test]
fn the_written_form_round_trips() {
    let file = InventoryFile {
        all: Group {
            vars: ClusterVars {
                tigerbeetle_cluster_id: "7".into(),
                tigerbeetle_replica_count: 1,
                other: BTreeMap::new(),
            },
            hosts: BTreeMap::from([(
                "solo".to_string(),
                HostVars {
                    ansible_host: "127.0.0.1".into(),
                    tigerbeetle_replica: 0,
                    tigerbeetle_address: "127.0.0.1:3000".into(),
                    tb_agent_url: "http://127.0.0.1:7000".into(),
                    other: BTreeMap::new(),
                },
            )]),
        },
    };
    let inventory = Inventory::from_file(&file).unwrap();
    assert_eq!(inventory.cluster_id, 7);
    assert_eq!(
        inventory.cluster.hosts["solo"].agent_listen,
        "127.0.0.1:7000"
    );
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tb-inventory-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file over the bound is refused by `load` with the file's name.
#[test]
fn load_refuses_an_oversized_file() {
    let path = scratch_dir("oversized").join("inventory.json");
    let padding = " ".repeat(INVENTORY_SIZE_MAX_BYTES as usize);
    std::fs::write(&path, format!("{}{padding}", base())).unwrap();
    let refused = Inventory::load(&path).unwrap_err().to_string();
    assert!(refused.contains("larger than"), "{refused}");
    assert!(refused.contains("inventory.json"), "{refused}");
    std::fs::write(&path, base().to_string()).unwrap();
    Inventory::load(&path).unwrap();
}

/// A source whose size metadata does not bound it (a FIFO here, a file that grows after a
/// size check in general) is read no further than one byte past the bound: the writer
/// finds the pipe closed long before it wrote everything it offered.
#[test]
fn load_reads_no_further_than_the_bound() {
    use std::io::Write;
    let path = scratch_dir("fifo").join("inventory.json");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let offered_bytes = 16 * INVENTORY_SIZE_MAX_BYTES as usize;
    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(writer_path)
            .unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut written_bytes = 0;
        while written_bytes < offered_bytes {
            match fifo.write(&chunk) {
                Ok(count) => written_bytes += count,
                Err(_) => break, // the reader closed the pipe: EPIPE
            }
        }
        written_bytes
    });
    let refused = Inventory::load(&path).unwrap_err().to_string();
    let written_bytes = writer.join().unwrap();
    assert!(refused.contains("larger than"), "{refused}");
    assert!(
        written_bytes < 2 * INVENTORY_SIZE_MAX_BYTES as usize,
        "the reader took {written_bytes} bytes"
    );
}
