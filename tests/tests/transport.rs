//! The agent's transport edge: slow clients, secret file permissions, TLS and mutual TLS (with
//! certificates made here by rcgen), for tbctl and for the agents' own peer client.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, Ports};
use tb_agent::auth::hash_secret_hex;

const READER: &str = "reader-secret-0123456789abcdef";
const OPERATOR: &str = "operator-secret-0123456789abcdef";

/// Certificates for one test: a CA, an agent certificate (server and client use, for
/// 127.0.0.1 and localhost), an operator client certificate, and one from a CA nobody trusts.
struct Pki {
    ca: PathBuf,
    agent_cert: PathBuf,
    agent_key: PathBuf,
    operator_cert: PathBuf,
    operator_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn write_secret(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir).unwrap();
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).unwrap();
        (certificate.pem(), Issuer::new(params, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>,
                name: &str,
                names: &[&str],
                usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        let certificate = params.signed_by(&key, issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    };
    let (ca_pem, issuer) = ca("tb-tests CA");
    let (_, stranger_issuer) = ca("someone else's CA");
    let both = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let client = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let pki = Pki {
        ca: dir.join("ca.crt"),
        agent_cert: dir.join("agent.crt"),
        agent_key: dir.join("agent.key"),
        operator_cert: dir.join("operator.crt"),
        operator_key: dir.join("operator.key"),
        stranger_cert: dir.join("stranger.crt"),
        stranger_key: dir.join("stranger.key"),
    };
    std::fs::write(&pki.ca, ca_pem).unwrap();
    for (cert_path, key_path, (cert, key)) in [
        (
            &pki.agent_cert,
            &pki.agent_key,
            leaf(&issuer, "agent", &["127.0.0.1", "localhost"], both),
        ),
        (
            &pki.operator_cert,
            &pki.operator_key,
            leaf(&issuer, "operator", &[], client.clone()),
        ),
        (
            &pki.stranger_cert,
            &pki.stranger_key,
            leaf(&stranger_issuer, "stranger", &[], client),
        ),
    ] {
        std::fs::write(cert_path, cert).unwrap();
        write_secret(key_path, &key);
    }
    pki
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tb-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A one-replica agent config whose replica is not running (no data file): enough for the
/// transport, which is all these tests look at.
fn standalone_config(port: u16, server_extra: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{server_extra}\n\
         [[tokens]]\nname = \"reader\"\nscopes = [\"read\"]\nsha256 = \"{reader}\"\n\
         [[tokens]]\nname = \"operator\"\nscopes = [\"read\", \"control\"]\nsha256 = \"{operator}\"\n\
         [replica]\ncluster_id = \"7\"\nindex = 0\ncount = 1\naddresses = [\"127.0.0.1:{}\"]\n\
         data_file = \"/nonexistent/tb-tests/0_0.tigerbeetle\"\nstatsd_port = {}\n\
         [replica.run]\nmode = \"process\"\nbinary = \"{}\"\n{rest}",
        port + 1,
        port + 2,
        common::tigerbeetle_bin().display(),
        reader = hash_secret_hex(READER),
        operator = hash_secret_hex(OPERATOR),
    )
}

/// A `tb-agent serve` in its own process group, killed with its replica (if any) on drop.
struct Agent {
    child: Child,
}

impl Agent {
    fn spawn(config_path: &Path, log: &Path, environment: &[(&str, &str)]) -> Agent {
        use std::os::unix::process::CommandExt;
        let child = Command::new(common::bin_dir().join("tb-agent"))
            .args(["serve", "--config", config_path.to_str().unwrap()])
            .envs(environment.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        Agent { child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// 300 connections from 127.0.0.2 that send half a request head and wait, renewed whenever the
/// agent closes them, while 127.0.0.1 gets nine in ten liveness and readiness answers within 100 ms.
/// The agent also closes a half-sent head after `server.header_read_timeout_ms`.
#[test]
fn slow_clients_from_one_address_do_not_lock_others_out() {
    const SLOW_CONNECTIONS: usize = 300;
    const HEAD_TIMEOUT_MS: u64 = 2_000;
    let port = Ports::for_test(61).agent;
    let dir = temp_dir("slowloris");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        standalone_config(
            port,
            &format!("header_read_timeout_ms = {HEAD_TIMEOUT_MS}"),
            "",
        ),
    )
    .unwrap();
    let log = dir.join("agent.log");
    let _agent = Agent::spawn(&config, &log, &[]);
    let url = format!("http://127.0.0.1:{port}");
    let probe_client = || {
        // No pooling: every request opens a new connection, as a fresh client would.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::blocking::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    common::wait_live(&probe_client(), &url, Some(&log));
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let half_head = b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

    // A half-sent head from another address is closed after the head timeout, not before.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let closed_after = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(target).await.unwrap();
        stream.write_all(half_head).await.unwrap();
        let started = Instant::now();
        let mut buffer = [0u8; 1024];
        while let Ok(read) = stream.read(&mut buffer).await {
            if read == 0 {
                break;
            }
        }
        started.elapsed()
    });
    assert!(
        closed_after >= Duration::from_millis(HEAD_TIMEOUT_MS - 200)
            && closed_after < Duration::from_millis(HEAD_TIMEOUT_MS + 2_000),
        "a half-sent head was closed after {closed_after:?}"
    );

    // The attack: each task holds one slow connection and opens a new one when it is closed.
    let attacking = std::sync::Arc::new(AtomicBool::new(true));
    let closed_by_agent = std::sync::Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SLOW_CONNECTIONS {
        let (attacking, closed_by_agent) = (attacking.clone(), closed_by_agent.clone());
        tasks.push(runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while attacking.load(Ordering::Relaxed) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                if let Ok(mut stream) = socket.connect(target).await {
                    let sent = stream.write_all(half_head).await.is_ok();
                    if sent {
                        let mut buffer = [0u8; 1024];
                        loop {
                            let read = tokio::time::timeout(
                                Duration::from_millis(100),
                                stream.read(&mut buffer),
                            )
                            .await;
                            match read {
                                Ok(Ok(0)) | Ok(Err(_)) => {
                                    closed_by_agent.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                Ok(Ok(_)) => {}
                                Err(_) if !attacking.load(Ordering::Relaxed) => return,
                                Err(_) => {}
                            }
                        }
                    }
                }
                // Renew, a little later: a tight loop would measure this machine's CPU, not
                // the agent.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // The attack is on once the agent has turned connections away.
    common::wait_for(
        "the agent to close 100 slow connections",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || match closed_by_agent.load(Ordering::Relaxed) {
            closed if closed >= 100 => Ok(()),
            closed => Err(format!("{closed} closed")),
        },
    );

    // Over more than two head timeouts (the attack renews), every answer within half the head
    // timeout and nine in ten within 100 ms. A request locked out waits for a slow connection's
    // head timeout to free a slot (up to 2 s), so a lock-out shows in the 90th percentile; a
    // single slow answer is this 2-core machine running a lab beside the test (CI's lanes:
    // 170 ms, and once 719 ms, one answer in hundreds), not a slot wait.
    let client = probe_client();
    let mut tooks_ms: Vec<u128> = Vec::new();
    let mut answered = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(HEAD_TIMEOUT_MS * 5 / 2) {
        for (path, token, code) in [
            ("/v1/health/live", None, 200),
            // Not ready (no replica here), but answered.
            ("/v1/health/ready", Some(READER), 503),
        ] {
            let mut request = client.get(format!("{url}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let asked = Instant::now();
            let response = request.send();
            let took = asked.elapsed();
            let status = response.map(|response| response.status().as_u16());
            assert_eq!(status.ok(), Some(code), "{path} after {took:?}");
            assert!(
                took < Duration::from_millis(HEAD_TIMEOUT_MS / 2),
                "{path} took {took:?} during the attack (answer {answered})"
            );
            tooks_ms.push(took.as_millis());
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    attacking.store(false, Ordering::Relaxed);
    let closed = closed_by_agent.load(Ordering::Relaxed);
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    tooks_ms.sort_unstable();
    let p90_ms = tooks_ms[tooks_ms.len() * 9 / 10];
    let slowest_ms = tooks_ms[tooks_ms.len() - 1];
    eprintln!(
        "{answered} answers, 90th percentile {p90_ms} ms, slowest {slowest_ms} ms; \
         the agent closed {closed} slow connections"
    );
    assert!(answered >= 20, "only {answered} answers during the attack");
    assert!(
        p90_ms < 100,
        "90th percentile {p90_ms} ms during the attack"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_agent_command(subcommand: &str, config: &Path) -> (Option<i32>, String) {
    let output = Command::new(common::bin_dir().join("tb-agent"))
        .args([subcommand, "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A token file or TLS key that group or others can read stops the agent with the field and the
/// fix, as ssh refuses such private keys; `check-config` says the same.
#[test]
fn secret_files_open_to_others_are_refused() {
    let port = Ports::for_test(62).agent;
    let dir = temp_dir("secret-modes");
    let pki = make_pki(&dir.join("pki"));
    let peer_token = dir.join("peer.token");
    write_secret(&peer_token, "peer-secret\n");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        standalone_config(
            port,
            &format!(
                "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                pki.agent_cert.display(),
                pki.agent_key.display()
            ),
            &format!(
                "[peers]\nagent_urls = [\"https://127.0.0.1:{port}\"]\ntoken_file = \"{}\"\n\
                 ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                peer_token.display(),
                pki.ca.display(),
                pki.operator_cert.display(),
                pki.operator_key.display()
            ),
        ),
    )
    .unwrap();
    assert_eq!(
        run_agent_command("check-config", &config),
        (Some(0), String::new())
    );
    for (path, field, mode) in [
        (&peer_token, "peers.token_file", 0o644),
        (&peer_token, "peers.token_file", 0o640),
        (&pki.agent_key, "server.tls.key_file", 0o640),
        (&pki.operator_key, "peers.client_key_file", 0o604),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        for subcommand in ["check-config", "serve"] {
            let (code, stderr) = run_agent_command(subcommand, &config);
            assert_eq!(code, Some(2), "{subcommand} {field} {mode:o}: {stderr}");
            let expected = format!("{field}: {} is open to group or others", path.display());
            assert!(
                stderr.contains(&expected) && stderr.contains("chmod 600"),
                "{subcommand} {field} {mode:o}: {stderr}"
            );
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::remove_file(&peer_token).unwrap();
    let (code, stderr) = run_agent_command("check-config", &config);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("peers.token_file: cannot read"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The agent tells systemd it started (sd_notify READY=1, `Type=notify`) only once it can serve:
/// a certificate that is not PEM stops it before, with the field, and the same configuration
/// with a readable certificate reports READY. The test is the notify socket systemd would hold.
#[test]
fn ready_is_notified_only_once_the_tls_material_is_read() {
    use std::os::unix::net::UnixDatagram;
    let port = Ports::for_test(64).agent;
    let dir = temp_dir("notify-ready");
    let pki = make_pki(&dir.join("pki"));
    let not_pem = dir.join("not-pem.crt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let config = |cert: &Path| {
        let path = dir.join("agent.toml");
        let tls = format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            pki.agent_key.display()
        );
        std::fs::write(&path, standalone_config(port, &tls, "")).unwrap();
        path
    };
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let environment = [("NOTIFY_SOCKET", notify_path.to_str().unwrap())];
    let messages = |agent: &mut Agent, until_exit: bool| {
        let (mut seen, started) = (String::new(), Instant::now());
        let mut buffer = [0u8; 4096];
        while started.elapsed() < Duration::from_secs(20) && !seen.contains("READY=1") {
            if let Ok(read) = notify.recv(&mut buffer) {
                seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
            let exited = agent.child.try_wait().unwrap();
            if until_exit && exited.is_some() {
                return (seen, exited);
            }
        }
        (seen, agent.child.try_wait().unwrap())
    };

    let log = dir.join("broken.log");
    let mut broken = Agent::spawn(&config(&not_pem), &log, &environment);
    let (seen, exited) = messages(&mut broken, true);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        exited.is_some_and(|status| !status.success()),
        "{exited:?}: {stderr}"
    );
    assert!(
        !seen.contains("READY=1"),
        "READY before the TLS failure: {seen:?}"
    );
    assert!(stderr.contains(&not_pem.display().to_string()), "{stderr}");

    let log = dir.join("agent.log");
    let mut agent = Agent::spawn(&config(&pki.agent_cert), &log, &environment);
    let (seen, exited) = messages(&mut agent, false);
    assert!(
        seen.contains("READY=1") && exited.is_none(),
        "{seen:?} {exited:?}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tbctl status --json` for a one-replica inventory: the parsed array's only element.
fn tbctl_status(
    inventory: &Path,
    token_file: &Path,
    flags: &[&str],
    environment: &[(&str, &Path)],
) -> serde_json::Value {
    let output = Command::new(common::bin_dir().join("tbctl"))
        .args(flags)
        .args(["status", "--json", "--timeout-ms", "10000", "--inventory"])
        .arg(inventory)
        .arg("--token-file")
        .arg(token_file)
        .env_remove("TBCTL_CA_FILE")
        .env_remove("TBCTL_CLIENT_CERT")
        .env_remove("TBCTL_CLIENT_KEY")
        .envs(environment.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut array: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap_or_else(|_| {
        panic!(
            "tbctl status: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    array.remove(0)
}

fn write_inventory(path: &Path, urls: &[String]) {
    let hosts: serde_json::Map<String, serde_json::Value> = urls
        .iter()
        .enumerate()
        .map(|(index, url)| {
            (
                format!("replica-{index}"),
                serde_json::json!({
                    "ansible_host": "127.0.0.1",
                    "tigerbeetle_replica": index,
                    "tigerbeetle_address": format!("127.0.0.1:{}", 3000 + index),
                    "tb_agent_url": url,
                }),
            )
        })
        .collect();
    let mut inventory = serde_json::json!({
        "all": {
            "vars": {
                "tigerbeetle_cluster_id": "7",
                "tigerbeetle_replica_count": urls.len(),
            },
            "hosts": hosts,
        }
    });
    declare_tls(&mut inventory);
    std::fs::write(path, serde_json::to_string_pretty(&inventory).unwrap()).unwrap();
}

/// An inventory with https:// agent URLs must say that the agents serve TLS (both inventory
/// readers refuse it otherwise). tbctl reads only the URLs; the files are the agents' business.
fn declare_tls(inventory: &mut serde_json::Value) {
    let vars = inventory["all"]["vars"].as_object_mut().unwrap();
    vars.insert(
        "tb_agent_tls_cert_file".into(),
        "/etc/tb-agent/tls/agent.crt".into(),
    );
    vars.insert(
        "tb_agent_tls_key_file".into(),
        "/etc/tb-agent/tls/agent.key".into(),
    );
}

/// Server TLS with `tbctl --ca-file`, then mutual TLS: tbctl needs `--client-cert` and
/// `--client-key` (or their environment variables), and a certificate from another CA is refused.
#[test]
fn tls_and_mutual_tls_with_tbctl() {
    let ports = Ports::for_test(63);
    let dir = temp_dir("tls-tbctl");
    let pki = make_pki(&dir.join("pki"));
    let token = dir.join("reader.token");
    write_secret(&token, READER);
    let tls_section = |client_ca: bool| {
        let mut section = format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.agent_cert.display(),
            pki.agent_key.display()
        );
        if client_ca {
            section.push_str(&format!("client_ca_file = \"{}\"\n", pki.ca.display()));
        }
        section
    };
    let ca_flag = ["--ca-file", pki.ca.to_str().unwrap()];

    // Server TLS only.
    let port = ports.agent;
    let config = dir.join("tls.toml");
    std::fs::write(&config, standalone_config(port, &tls_section(false), "")).unwrap();
    let log = dir.join("tls.log");
    let agent = Agent::spawn(&config, &log, &[]);
    let url = format!("https://127.0.0.1:{port}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trusting = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    common::wait_live(&trusting, &url, Some(&log));
    let inventory = dir.join("tls.json");
    write_inventory(&inventory, std::slice::from_ref(&url));
    let status = tbctl_status(&inventory, &token, &ca_flag, &[]);
    assert!(status["error"].is_null(), "{status}");
    assert_eq!(status["status"]["replica"]["cluster_id"], "7", "{status}");
    // The same through TBCTL_CA_FILE.
    let status = tbctl_status(&inventory, &token, &[], &[("TBCTL_CA_FILE", &pki.ca)]);
    assert!(status["error"].is_null(), "{status}");
    // Without the CA the agent's certificate is not trusted, and the message says what to pass.
    let status = tbctl_status(&inventory, &token, &[], &[]);
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("--ca-file"), "{status}");
    drop(agent);

    // Mutual TLS.
    let port = ports.agent + 1;
    let config = dir.join("mtls.toml");
    std::fs::write(&config, standalone_config(port, &tls_section(true), "")).unwrap();
    let log = dir.join("mtls.log");
    let _agent = Agent::spawn(&config, &log, &[]);
    let url = format!("https://127.0.0.1:{port}");
    let with_certificate = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        )
        .identity(
            reqwest::Identity::from_pem(
                &[
                    std::fs::read(&pki.operator_cert).unwrap(),
                    std::fs::read(&pki.operator_key).unwrap(),
                ]
                .concat(),
            )
            .unwrap(),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    common::wait_live(&with_certificate, &url, Some(&log));
    let inventory = dir.join("mtls.json");
    write_inventory(&inventory, std::slice::from_ref(&url));
    let status = tbctl_status(&inventory, &token, &ca_flag, &[]);
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("client certificate") && error.contains("--client-cert"),
        "{status}"
    );
    let operator_flags = [
        ca_flag[0],
        ca_flag[1],
        "--client-cert",
        pki.operator_cert.to_str().unwrap(),
        "--client-key",
        pki.operator_key.to_str().unwrap(),
    ];
    let status = tbctl_status(&inventory, &token, &operator_flags, &[]);
    assert!(status["error"].is_null(), "{status}");
    assert_eq!(status["status"]["replica"]["cluster_id"], "7", "{status}");
    let status = tbctl_status(
        &inventory,
        &token,
        &ca_flag,
        &[
            ("TBCTL_CLIENT_CERT", &pki.operator_cert),
            ("TBCTL_CLIENT_KEY", &pki.operator_key),
        ],
    );
    assert!(status["error"].is_null(), "{status}");
    let stranger_flags = [
        ca_flag[0],
        ca_flag[1],
        "--client-cert",
        pki.stranger_cert.to_str().unwrap(),
        "--client-key",
        pki.stranger_key.to_str().unwrap(),
    ];
    let status = tbctl_status(&inventory, &token, &stranger_flags, &[]);
    assert!(!status["error"].is_null(), "{status}");
    assert!(status["status"].is_null(), "{status}");
    // Half an identity is a usage error, caught before any request.
    let output = Command::new(common::bin_dir().join("tbctl"))
        .args(["status", "--inventory"])
        .arg(&inventory)
        .arg("--client-cert")
        .arg(&pki.operator_cert)
        .env_remove("TBCTL_CLIENT_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--client-key"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real three-replica cluster whose agents serve mutual TLS and whose peer clients present
/// the agent certificate (`peers.client_cert_file`) and trust the CA (`peers.ca_file`):
/// `tbctl status` sees every replica, and a stop passes the quorum guard, which asks the peers
/// over mutual TLS. The agents run with proxy variables pointing nowhere: the peer client must
/// not use them.
#[test]
fn mutual_tls_cluster_status_and_guarded_stop() {
    let cluster = Cluster::up("mtls", Ports::for_test(60));
    cluster.wait_all_ready();
    let down = common::tbctl(&[
        "local",
        "down",
        "--state-dir",
        cluster.state.state_dir.to_str().unwrap(),
    ]);
    assert!(down.status.success(), "{down:?}");
    let dir = cluster.state.state_dir.join("mtls");
    std::fs::create_dir_all(&dir).unwrap();
    let pki = make_pki(&dir.join("pki"));

    // The configs `local up` wrote, with TLS added: same ports, same data files.
    let mut agents = Vec::new();
    for entry in &cluster.state.agents {
        let text = std::fs::read_to_string(&entry.config).unwrap();
        let text = text
            .replacen(
                "\n[[tokens]]",
                &format!(
                    "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n\n[[tokens]]",
                    pki.agent_cert.display(),
                    pki.agent_key.display(),
                    pki.ca.display()
                ),
                1,
            )
            .replace("\"http://127.0.0.1", "\"https://127.0.0.1")
            .replacen(
                "[peers]\n",
                &format!(
                    "[peers]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                    pki.ca.display(),
                    pki.agent_cert.display(),
                    pki.agent_key.display()
                ),
                1,
            );
        assert!(text.contains("client_ca_file") && text.contains("client_key_file"));
        let config = dir.join(format!("agent-{}.toml", entry.replica));
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("agent-{}.log", entry.replica));
        let nowhere = "http://127.0.0.1:9";
        agents.push(Agent::spawn(
            &config,
            &log,
            &[
                ("HTTPS_PROXY", nowhere),
                ("https_proxy", nowhere),
                ("HTTP_PROXY", nowhere),
                ("ALL_PROXY", nowhere),
            ],
        ));
    }
    let inventory_text = std::fs::read_to_string(&cluster.state.inventory).unwrap();
    let mut inventory_json: serde_json::Value =
        serde_json::from_str(&inventory_text.replace("\"http://127.0.0.1", "\"https://127.0.0.1"))
            .unwrap();
    declare_tls(&mut inventory_json);
    let inventory = dir.join("inventory.json");
    std::fs::write(
        &inventory,
        serde_json::to_string_pretty(&inventory_json).unwrap(),
    )
    .unwrap();
    let token_file = cluster.token_file_arg();
    let tbctl = |args: &[&str]| {
        let mut all = vec![
            "--token-file",
            &token_file,
            "--ca-file",
            pki.ca.to_str().unwrap(),
            "--client-cert",
            pki.operator_cert.to_str().unwrap(),
            "--client-key",
            pki.operator_key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--inventory", inventory.to_str().unwrap()]);
        common::tbctl(&all)
    };
    let wait = tbctl(&["wait-ready", "--timeout-ms", "180000"]);
    assert!(
        wait.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&wait.stdout),
        String::from_utf8_lossy(&wait.stderr)
    );

    let status = tbctl(&["status", "--json"]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{stdout}");
    let replicas: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(replicas.len(), 3);
    for replica in &replicas {
        assert_eq!(replica["ready"], true, "{replica}");
        assert!(
            replica["agent_url"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
    }

    // The quorum guard asks replicas 1 and 2 over mutual TLS, and lets the stop through.
    let stop = tbctl(&["stop", "--replica", "0"]);
    let stdout = String::from_utf8_lossy(&stop.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stop.stderr).into_owned();
    assert!(stop.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 of the other 2 replicas ready"),
        "{stdout}\n{stderr}"
    );
    // Now replicas 1 and 2 must refuse: their guard reaches replica 0's agent, which says why
    // its replica is not ready (an unreachable peer would say "unreachable" instead).
    let refused = tbctl(&["stop", "--replica", "1"]);
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 of the other 2 replicas ready") && !stderr.contains("unreachable"),
        "{stderr}"
    );
    let start = tbctl(&["start", "--replica", "0"]);
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let wait = tbctl(&["wait-ready", "--timeout-ms", "180000"]);
    assert!(
        wait.status.success(),
        "{}",
        String::from_utf8_lossy(&wait.stderr)
    );
    drop(agents);
}
