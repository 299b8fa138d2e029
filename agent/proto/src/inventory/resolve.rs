//! The rules in order (docs/inventory.md, "Rules, in the order they are checked").

use super::*;

/// A value that passed its rule, or the key's default when absent or `null`.
pub(super) fn present<'a>(values: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    values.get(key).filter(|value| !value.is_null())
}

pub(super) fn string_or(values: &Map<String, Value>, key: &str, default: &str) -> String {
    present(values, key)
        .map(|value| value.as_str().expect("validated string").to_string())
        .unwrap_or_else(|| default.to_string())
}

pub(super) fn optional_string(values: &Map<String, Value>, key: &str) -> Option<String> {
    present(values, key).map(|value| value.as_str().expect("validated string").to_string())
}

pub(super) fn string_list(values: &Map<String, Value>, key: &str) -> Vec<String> {
    present(values, key)
        .map(|value| {
            value
                .as_array()
                .expect("validated list")
                .iter()
                .map(|item| item.as_str().expect("validated string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A host after steps 1 to 4, before the cross-host rules.
pub(super) struct HostDraft<'a> {
    pub(super) name: &'a str,
    pub(super) replica: u8,
    pub(super) ansible_host: String,
    pub(super) address: String,
    pub(super) socket: Socket<'a>,
    pub(super) url: Url<'a>,
    pub(super) agent_listen: String,
    pub(super) deploy: String,
}

/// The resolved cluster, or the first error (without the `inventory <path>: ` prefix).
pub fn resolve(document: &Value) -> Result<Cluster, InventoryError> {
    if nests_deeper_than(document, NESTING_DEPTH_MAX) {
        return Err(InventoryError::TooDeep);
    }
    // 1. Structure.
    let (vars, hosts) = structure(document)?;
    // 2. Cluster-wide keys.
    if let Some(error) = level_error("all.vars", vars, Level::Vars) {
        return Err(error);
    }
    // 3. Host names, 4. per-host keys.
    let host_values = host_keys(hosts)?;
    // 5. TLS files, together.
    let agent_tls = tls_files(vars)?;
    let tls = agent_tls.is_some();

    let nixos_flake = optional_string(vars, "tigerbeetle_nixos_flake");
    let cluster_id = string_or(vars, "tigerbeetle_cluster_id", "");
    let replica_count = u8::try_from(vars["tigerbeetle_replica_count"].as_i64().expect("count"))
        .expect("validated count");
    let data_dir = string_or(vars, "tigerbeetle_data_dir", DATA_DIR_DEFAULT);
    let cluster_id_number: u128 = cluster_id.parse().expect("validated as a decimal u128");
    let drafts: Vec<HostDraft> = host_values
        .iter()
        .map(|&(name, values)| draft(name, values))
        .collect();

    // 6. Replica slots.
    let ordered = replica_slots(&drafts, replica_count)?;
    // 7. Each host against the others and the TLS setting.
    let mut listen_sockets = Vec::with_capacity(drafts.len());
    for position in 0..drafts.len() {
        listen_sockets.push(check_host(&drafts, position, tls, nixos_flake.is_some())?);
    }

    // The resolved cluster.
    let hosts: BTreeMap<String, Host> = drafts
        .iter()
        .zip(listen_sockets)
        .map(|(host, listen)| {
            let data_file = format!(
                "{data_dir}/{}",
                data_file_name(cluster_id_number, host.replica)
            );
            let resolved = resolved_host(host, listen, &ordered, data_file);
            (host.name.to_string(), resolved)
        })
        .collect();
    let statsd_port = present(vars, "tb_agent_statsd_port")
        .map(|port| u16::try_from(port.as_i64().expect("validated")).expect("validated port"))
        .unwrap_or(STATSD_PORT_DEFAULT);
    Ok(Cluster {
        addresses: ordered.iter().map(|host| host.address.clone()).collect(),
        agent_peer_ca_file: optional_string(vars, "tb_agent_peer_ca_file"),
        agent_peer_token_file: string_or(vars, "tb_agent_peer_token_file", PEER_TOKEN_FILE_DEFAULT),
        agent_tls,
        agent_tokens: agent_tokens(vars),
        agent_urls: ordered
            .iter()
            .map(|host| normalised_url(&host.url))
            .collect(),
        cache_grid: optional_string(vars, "tigerbeetle_cache_grid"),
        client_networks: string_list(vars, "tigerbeetle_client_networks"),
        cluster_id,
        data_dir,
        hosts,
        lease: lease_keys(vars),
        nixos_flake,
        orchestrator_networks: string_list(vars, "tb_agent_orchestrator_networks"),
        replica_count,
        replica_hosts: ordered.iter().map(|host| host.name.to_string()).collect(),
        statsd_port,
    })
}

/// Step 1: `all.vars` and `all.hosts`, both objects.
/// A JSON object: `all.vars`, or one host's keys.
pub(super) type Object = Map<String, Value>;

pub(super) fn structure(document: &Value) -> Result<(&Object, &Object), InventoryError> {
    let Some(root) = document.as_object() else {
        return Err(InventoryError::NotAnObject);
    };
    let Some(all) = root.get("all").and_then(Value::as_object) else {
        return Err(InventoryError::key("all", Reason::NotVarsAndHosts));
    };
    let Some(vars) = all.get("vars").and_then(Value::as_object) else {
        return Err(InventoryError::key("all.vars", Reason::NotAnObject));
    };
    let Some(hosts) = all.get("hosts").and_then(Value::as_object) else {
        return Err(InventoryError::key("all.hosts", Reason::NotAnObject));
    };
    Ok((vars, hosts))
}

/// Steps 3 and 4: every host name, then every host's keys, hosts in name order.
pub(super) fn host_keys(hosts: &Object) -> Result<Vec<(&str, &Object)>, InventoryError> {
    let names = sorted_keys(hosts);
    if let Some(name) = names.iter().find(|name| !is_host_name(name)) {
        return Err(InventoryError::key(
            format!("all.hosts.{name}"),
            Reason::HostName,
        ));
    }
    let mut host_values = Vec::with_capacity(names.len());
    for name in names {
        let Some(values) = hosts[name].as_object() else {
            return Err(InventoryError::key(
                format!("all.hosts.{name}"),
                Reason::NotAnObject,
            ));
        };
        if let Some(error) = level_error(&format!("all.hosts.{name}"), values, Level::Host) {
            return Err(error);
        }
        host_values.push((name, values));
    }
    Ok(host_values)
}

/// Step 5: the TLS files, all or none of certificate and key; the client CA only with them.
pub(super) fn tls_files(vars: &Map<String, Value>) -> Result<Option<AgentTls>, InventoryError> {
    let cert_file = optional_string(vars, "tb_agent_tls_cert_file");
    let key_file = optional_string(vars, "tb_agent_tls_key_file");
    let client_ca_file = optional_string(vars, "tb_agent_tls_client_ca_file");
    let tls = cert_file.is_some();
    let needs =
        |path: &str, needs: &'static str| Err(InventoryError::key(path, Reason::Needs { needs }));
    if key_file.is_some() && !tls {
        return needs(
            "all.vars.tb_agent_tls_key_file",
            "all.vars.tb_agent_tls_cert_file",
        );
    }
    if tls && key_file.is_none() {
        return needs(
            "all.vars.tb_agent_tls_cert_file",
            "all.vars.tb_agent_tls_key_file",
        );
    }
    if client_ca_file.is_some() && !tls {
        return needs(
            "all.vars.tb_agent_tls_client_ca_file",
            "all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file",
        );
    }
    Ok(cert_file.map(|cert_file| AgentTls {
        cert_file,
        client_ca_file,
        key_file: key_file.expect("checked above"),
    }))
}

/// A host whose keys passed their rules (step 4), with its defaults.
pub(super) fn draft<'a>(name: &'a str, values: &'a Map<String, Value>) -> HostDraft<'a> {
    let text = |key: &str| values[key].as_str().expect("validated string");
    let socket = parse_socket(text("tigerbeetle_address")).expect("validated socket");
    let url = parse_url(text("tb_agent_url")).expect("validated url");
    let agent_listen = optional_string(values, "tb_agent_listen")
        .unwrap_or_else(|| format!("{}:{}", socket.ip, url.port));
    HostDraft {
        name,
        replica: u8::try_from(values["tigerbeetle_replica"].as_i64().expect("index"))
            .expect("validated index"),
        ansible_host: text("ansible_host").to_string(),
        address: text("tigerbeetle_address").to_string(),
        socket,
        url,
        agent_listen,
        deploy: string_or(values, "tigerbeetle_deploy", DEPLOY_DEFAULT),
    }
}

/// Step 6: every index below the count, held once, none missing. Hosts are in name order, so
/// the first holder of an index is the earliest name. Returns the hosts in replica order.
pub(super) fn replica_slots<'d, 'a>(
    drafts: &'d [HostDraft<'a>],
    replica_count: u8,
) -> Result<Vec<&'d HostDraft<'a>>, InventoryError> {
    for (position, host) in drafts.iter().enumerate() {
        let path = format!("all.hosts.{}.tigerbeetle_replica", host.name);
        let replica = host.replica;
        if replica >= replica_count {
            let reason = Reason::ReplicaBeyondCount {
                replica,
                replica_count,
            };
            return Err(InventoryError::key(path, reason));
        }
        if let Some(earlier) = drafts[..position]
            .iter()
            .find(|other| other.replica == replica)
        {
            let reason = Reason::ReplicaTaken {
                replica,
                host: earlier.name.to_string(),
            };
            return Err(InventoryError::key(path, reason));
        }
    }
    let mut ordered = Vec::with_capacity(usize::from(replica_count));
    for replica in 0..replica_count {
        let Some(host) = drafts.iter().find(|host| host.replica == replica) else {
            return Err(InventoryError::key(
                "all.hosts",
                Reason::ReplicaMissing { replica },
            ));
        };
        ordered.push(host);
    }
    assert_eq!(ordered.len(), drafts.len());
    Ok(ordered)
}

/// Step 7 for `drafts[position]`: its address against the earlier hosts', its URL's scheme
/// against the TLS setting, its listen address, its deploy method. Returns the listen IP and
/// port.
pub(super) fn check_host(
    drafts: &[HostDraft],
    position: usize,
    tls: bool,
    has_nixos_flake: bool,
) -> Result<(String, u16), InventoryError> {
    let host = &drafts[position];
    let refuse = |key: &str, reason: Reason| {
        Err(InventoryError::key(
            format!("all.hosts.{}.{key}", host.name),
            reason,
        ))
    };
    if let Some(earlier) = drafts[..position]
        .iter()
        .find(|other| other.address == host.address)
    {
        let reason = Reason::AddressTaken {
            address: host.address.clone(),
            host: earlier.name.to_string(),
        };
        return refuse("tigerbeetle_address", reason);
    }
    if tls && host.url.scheme != UrlScheme::Https {
        return refuse("tb_agent_url", Reason::UrlNeedsHttps);
    }
    if !tls && host.url.scheme != UrlScheme::Http {
        return refuse("tb_agent_url", Reason::UrlNeedsHttp);
    }
    // Given listen addresses passed their rule and defaults are built from valid parts:
    // this mirrors a check of the Nix reader that cannot fail.
    let Some(listen) = parse_socket(&host.agent_listen) else {
        return refuse("tb_agent_listen", Reason::Value(REASON_SOCKET));
    };
    if host.agent_listen == host.address {
        let listen = host.agent_listen.clone();
        return refuse("tb_agent_listen", Reason::ListenIsReplicaAddress { listen });
    }
    if !tls && !is_private_ipv4(listen.octets) {
        let ip = listen.ip.to_string();
        return refuse("tb_agent_listen", Reason::ListenPublicWithoutTls { ip });
    }
    if host.deploy == "nixos" && !has_nixos_flake {
        return refuse("tigerbeetle_deploy", Reason::NixosWithoutFlake);
    }
    Ok((listen.ip.to_string(), listen.port))
}

/// `<scheme>://<host>:<port>`.
pub(super) fn normalised_url(url: &Url) -> String {
    format!("{}://{}:{}", url.scheme.as_str(), url.host, url.port)
}

/// One host of the resolved cluster; `ordered` is every host in replica order.
pub(super) fn resolved_host(
    host: &HostDraft,
    (agent_ip, agent_port): (String, u16),
    ordered: &[&HostDraft],
    data_file: String,
) -> Host {
    let mut peer_ips: Vec<String> = Vec::with_capacity(ordered.len());
    for other in ordered {
        let ip = other.socket.ip;
        if ip != host.socket.ip && !peer_ips.iter().any(|kept| kept == ip) {
            peer_ips.push(ip.to_string());
        }
    }
    Host {
        address: host.address.clone(),
        agent_ip,
        agent_listen: host.agent_listen.clone(),
        agent_port,
        agent_url: normalised_url(&host.url),
        ansible_host: host.ansible_host.clone(),
        data_file,
        deploy: host.deploy.clone(),
        ip: host.socket.ip.to_string(),
        peer_ips,
        port: host.socket.port,
        replica: host.replica,
    }
}

pub(super) fn agent_tokens(vars: &Map<String, Value>) -> Vec<AgentToken> {
    let Some(tokens) = present(vars, "tb_agent_tokens") else {
        return Vec::new();
    };
    tokens
        .as_array()
        .expect("validated tokens")
        .iter()
        .map(|token| AgentToken {
            name: token["name"].as_str().expect("validated").to_string(),
            scopes: token["scopes"]
                .as_array()
                .expect("validated")
                .iter()
                .map(|scope| scope_of(scope).expect("validated"))
                .collect(),
            sha256: token["sha256"].as_str().expect("validated").to_string(),
        })
        .collect()
}

pub(super) fn lease_keys(vars: &Map<String, Value>) -> LeaseKeys {
    LeaseKeys {
        enabled: present(vars, "tb_agent_lease_enabled")
            .map(|value| value.as_bool().expect("validated bool")),
        id_prefix: optional_string(vars, "tb_agent_lease_id_prefix"),
        ledger: present(vars, "tb_agent_lease_ledger").map(|value| {
            u32::try_from(value.as_i64().expect("validated")).expect("validated ledger")
        }),
    }
}
