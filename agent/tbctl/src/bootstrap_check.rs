//! `tbctl bootstrap-check`: may this inventory's cluster be formatted (or, with
//! `--data-files-expected`, started for the first time)? ansible/playbooks/bootstrap.yml runs it once on
//! the controller before it changes anything.
//!
//! A re-formatted replica forgets what it acknowledged, so formatting is allowed only when
//! nothing shows that the cluster exists: no replica address accepts a TCP connection, a
//! TigerBeetle client of this cluster id gets no answer, and every agent answers and reports its
//! replica not running, with no data file (and no client answer of its own). Agents answering is
//! normal: site.yml starts them before bootstrap.yml.
//!
//! What cannot be observed is not taken as absent: an address that neither accepts nor refuses
//! (a timeout, a firewall that drops), an agent that does not answer, or a client that cannot
//! be created makes the answer "could not tell" (its own exit code), never "safe".

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tigerbeetle_unofficial as tb;
use tokio::task::JoinSet;

use super::client::AgentClient;
use tb_proto::api;
use tb_proto::inventory::{Inventory, ReplicaEntry};
use tb_proto::tigerbeetle::PROBE_ACCOUNT_ID;

/// Something shows that the cluster exists: formatting (or a first start) is refused.
pub const EXIT_REFUSED: u8 = super::exit::REFUSED_CODE;
/// Something could not be observed: safety is not proven, so the caller must refuse too.
pub const EXIT_UNKNOWN: u8 = super::exit::UNREACHABLE_CODE;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    pub inventory: PathBuf,
    /// Timeout of each TCP connection attempt and of each agent request.
    #[arg(long, default_value_t = 5_000, value_parser = super::timeout_ms)]
    pub timeout_ms: u64,
    /// How long a TigerBeetle client of the cluster waits for an answer. A cluster that was
    /// never started gives none, so the check takes at least this long.
    #[arg(long, default_value_t = 5_000, value_parser = super::timeout_ms)]
    pub client_timeout_ms: u64,
    /// Every replica's data file exists (a bootstrap whose start failed): data files the agents
    /// report are expected, and only a running or answering replica refuses.
    #[arg(long)]
    pub data_files_expected: bool,
}

/// What a TCP connection attempt to a replica address gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Port {
    /// Refused: nothing listens there.
    Closed,
    Listening,
    /// Neither (timeout, unreachable network): nothing can be concluded.
    Unknown(String),
}

/// What a TigerBeetle client of the cluster id got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClientProbe {
    NoAnswer,
    /// A replica answered (a lookup result, or an eviction, which only a replica sends).
    Answered(String),
    Failed(String),
}

/// What one agent's `/v1/status` says about its replica, or why it could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AgentView {
    Reported(AgentReport),
    Unreachable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentReport {
    cluster_id: String,
    index: u8,
    running: bool,
    data_file: String,
    data_file_size_bytes: Option<u64>,
    /// The agent's own client probe got an answer from the cluster.
    cluster_answers: bool,
}

impl From<&api::StatusReport> for AgentReport {
    fn from(report: &api::StatusReport) -> AgentReport {
        AgentReport {
            cluster_id: report.replica.cluster_id.clone(),
            index: report.replica.index,
            running: report.replica.running,
            data_file: report.replica.data_file.clone(),
            data_file_size_bytes: report.replica.data_file_size_bytes,
            cluster_answers: report.replica.probe_ok,
        }
    }
}

struct Observation {
    entry: ReplicaEntry,
    port: Port,
    agent: AgentView,
}

/// What was found: `live` shows the cluster exists; `unknown` could not be observed.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
struct Findings {
    live: Vec<String>,
    unknown: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Safe,
    Refused,
    Unknown,
}

impl Findings {
    fn verdict(&self) -> Verdict {
        if !self.live.is_empty() {
            Verdict::Refused
        } else if !self.unknown.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Safe
        }
    }
}

pub async fn check(
    client: &AgentClient,
    inventory: &Inventory,
    args: &CheckArgs,
) -> anyhow::Result<ExitCode> {
    let (probe, observations) = tokio::join!(
        probe_cluster(
            inventory.cluster_id,
            inventory.addresses(),
            args.client_timeout_ms
        ),
        observe(client, inventory, args.timeout_ms)
    );
    let findings = judge(
        &inventory.cluster_id.to_string(),
        &observations,
        &probe,
        args.data_files_expected,
    );
    let code = report(&findings, &observations);
    // `--json`: the verdict and what led to it, as the text lines say (exit code unchanged).
    super::output::emit(&serde_json::json!({
        "verdict": findings.verdict(),
        "live": findings.live,
        "unknown": findings.unknown,
    }))?;
    Ok(code)
}

/// Asks every replica address and every agent at once.
async fn observe(client: &AgentClient, inventory: &Inventory, timeout_ms: u64) -> Vec<Observation> {
    let mut tasks = JoinSet::new();
    for entry in inventory.replicas.iter().cloned() {
        let client = client.clone();
        tasks.spawn(async move {
            let (port, agent) = tokio::join!(
                connect(&entry.address, timeout_ms),
                agent_view(&client, &entry.agent_url, timeout_ms)
            );
            Observation { entry, port, agent }
        });
    }
    let mut observations = tasks.join_all().await;
    observations.sort_by_key(|observation| observation.entry.index);
    observations
}

async fn connect(address: &str, timeout_ms: u64) -> Port {
    let attempt = tokio::net::TcpStream::connect(address);
    match tokio::time::timeout(Duration::from_millis(timeout_ms), attempt).await {
        Ok(Ok(_stream)) => Port::Listening,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => Port::Closed,
        Ok(Err(error)) => Port::Unknown(error.to_string()),
        Err(_) => Port::Unknown(format!("no answer within {timeout_ms} ms")),
    }
}

async fn agent_view(client: &AgentClient, url: &str, timeout_ms: u64) -> AgentView {
    match client.status(url, timeout_ms).await {
        Ok(report) => AgentView::Reported(AgentReport::from(&report)),
        Err(error) => AgentView::Unreachable(error.to_string()),
    }
}

/// One lookup through a real client, bounded: the client retries forever, so it is abandoned
/// after the timeout and dropped on a blocking thread (dropping joins its I/O thread).
async fn probe_cluster(cluster_id: u128, addresses: String, timeout_ms: u64) -> ClientProbe {
    let client = match tb::Client::new(cluster_id, addresses.as_str()) {
        Ok(client) => client,
        Err(error) => return ClientProbe::Failed(format!("cannot create a client: {error}")),
    };
    let lookup = client.lookup_accounts(vec![PROBE_ACCOUNT_ID]);
    let result = tokio::time::timeout(Duration::from_millis(timeout_ms), lookup).await;
    let probe = match result {
        Err(_) => ClientProbe::NoAnswer,
        Ok(Ok(accounts)) => ClientProbe::Answered(format!(
            "lookup_accounts answered ({} found)",
            accounts.len()
        )),
        Ok(Err(error)) => classify_send_error(error.kind(), &error.to_string()),
    };
    let _ = tokio::task::spawn_blocking(move || drop(client)).await;
    probe
}

fn classify_send_error(kind: tb::error::SendErrorKind, text: &str) -> ClientProbe {
    use tb::error::SendErrorKind::{ClientEvicted, ClientReleaseTooHigh, ClientReleaseTooLow};
    match kind {
        // Only a replica of a running cluster evicts a client.
        ClientEvicted | ClientReleaseTooHigh | ClientReleaseTooLow => {
            ClientProbe::Answered(format!("a replica evicted the client ({text})"))
        }
        _ => ClientProbe::Failed(text.to_string()),
    }
}

/// The decision, from what was observed (no I/O: unit-tested).
fn judge(
    cluster_id: &str,
    observations: &[Observation],
    probe: &ClientProbe,
    data_files_expected: bool,
) -> Findings {
    let mut findings = Findings::default();
    for observation in observations {
        judge_replica(cluster_id, observation, data_files_expected, &mut findings);
    }
    match probe {
        ClientProbe::NoAnswer => {}
        ClientProbe::Answered(detail) => findings.live.push(format!(
            "a client of cluster {cluster_id} got an answer: {detail}"
        )),
        ClientProbe::Failed(detail) => findings.unknown.push(format!(
            "the TigerBeetle client of cluster {cluster_id} failed: {detail}"
        )),
    }
    findings
}

fn judge_replica(
    cluster_id: &str,
    observation: &Observation,
    data_files_expected: bool,
    findings: &mut Findings,
) {
    let entry = &observation.entry;
    let name = format!("replica {} ({})", entry.index, entry.host_name);
    match &observation.port {
        Port::Closed => {}
        Port::Listening => findings.live.push(format!(
            "{name}: {} accepts connections (a replica listens there)",
            entry.address
        )),
        Port::Unknown(detail) => findings.unknown.push(format!(
            "{name}: {} neither accepted nor refused a connection ({detail}); is this \
             controller in tigerbeetle_client_networks?",
            entry.address
        )),
    }
    let agent = match &observation.agent {
        AgentView::Reported(agent) => agent,
        AgentView::Unreachable(detail) => {
            findings.unknown.push(format!(
                "{name}: its agent {} did not answer ({detail}); run site.yml first",
                entry.agent_url
            ));
            return;
        }
    };
    if agent.cluster_id != cluster_id || agent.index != entry.index {
        findings.unknown.push(format!(
            "{name}: its agent serves replica {} of cluster {}, not replica {} of cluster \
             {cluster_id}: run site.yml with this inventory first",
            agent.index, agent.cluster_id, entry.index
        ));
    }
    if agent.running {
        findings
            .live
            .push(format!("{name}: its agent reports the replica running"));
    }
    if let (Some(size_bytes), false) = (agent.data_file_size_bytes, data_files_expected) {
        findings.live.push(format!(
            "{name}: its agent reports the data file {} ({size_bytes} bytes)",
            agent.data_file
        ));
    }
    if agent.cluster_answers {
        findings.live.push(format!(
            "{name}: its agent's client probe gets answers from the cluster"
        ));
    }
}

fn report(findings: &Findings, observations: &[Observation]) -> ExitCode {
    for observation in observations {
        let entry = &observation.entry;
        let port = match &observation.port {
            Port::Closed => "closed".to_string(),
            Port::Listening => "LISTENING".to_string(),
            Port::Unknown(detail) => format!("unknown ({detail})"),
        };
        let agent = match &observation.agent {
            AgentView::Reported(agent) => format!(
                "replica running: {}, data file {}: {}",
                agent.running,
                agent.data_file,
                agent
                    .data_file_size_bytes
                    .map_or("absent".to_string(), |size| format!("{size} bytes"))
            ),
            AgentView::Unreachable(detail) => format!("no answer ({detail})"),
        };
        super::output::say(format!(
            "replica {} ({}): {} {port}; agent: {agent}",
            entry.index, entry.host_name, entry.address
        ));
    }
    for line in findings.live.iter().chain(&findings.unknown) {
        eprintln!("bootstrap-check: {line}");
    }
    match findings.verdict() {
        Verdict::Safe => {
            super::output::say(
                "bootstrap-check: no replica runs, answers or has a data file: safe",
            );
            ExitCode::SUCCESS
        }
        Verdict::Refused => {
            eprintln!(
                "bootstrap-check: REFUSED: this cluster exists (see above); formatting would \
                 make replicas forget what they acknowledged. Nothing was changed."
            );
            ExitCode::from(EXIT_REFUSED)
        }
        Verdict::Unknown => {
            eprintln!(
                "bootstrap-check: COULD NOT TELL whether this cluster exists (see above), so \
                 formatting is not safe. Nothing was changed."
            );
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u8) -> ReplicaEntry {
        ReplicaEntry {
            index,
            host_name: format!("tb-{index}"),
            host: format!("10.0.0.{index}"),
            address: format!("10.0.0.{index}:3000"),
            agent_url: format!("https://10.0.0.{index}:7443"),
        }
    }

    /// What a host prepared by site.yml and never bootstrapped looks like.
    fn fresh(index: u8) -> Observation {
        Observation {
            entry: entry(index),
            port: Port::Closed,
            agent: AgentView::Reported(AgentReport {
                cluster_id: "7".into(),
                index,
                running: false,
                data_file: format!("/var/lib/tigerbeetle/7_{index}.tigerbeetle"),
                data_file_size_bytes: None,
                cluster_answers: false,
            }),
        }
    }

    fn fresh_cluster() -> Vec<Observation> {
        (0..3).map(fresh).collect()
    }

    fn agent(observation: &mut Observation) -> &mut AgentReport {
        match &mut observation.agent {
            AgentView::Reported(agent) => agent,
            AgentView::Unreachable(_) => unreachable!(),
        }
    }

    fn verdict(observations: &[Observation], probe: &ClientProbe, expected: bool) -> Verdict {
        judge("7", observations, probe, expected).verdict()
    }

    #[test]
    fn a_fresh_cluster_with_answering_agents_is_safe() {
        let findings = judge("7", &fresh_cluster(), &ClientProbe::NoAnswer, false);
        assert_eq!(findings, Findings::default());
    }

    #[test]
    fn anything_live_refuses() {
        let answered = ClientProbe::Answered("lookup".into());
        assert_eq!(
            verdict(&fresh_cluster(), &answered, false),
            Verdict::Refused
        );
        let mut listening = fresh_cluster();
        listening[1].port = Port::Listening;
        assert_eq!(
            verdict(&listening, &ClientProbe::NoAnswer, false),
            Verdict::Refused
        );
        let mut running = fresh_cluster();
        agent(&mut running[2]).running = true;
        assert_eq!(
            verdict(&running, &ClientProbe::NoAnswer, true),
            Verdict::Refused
        );
        let mut probing = fresh_cluster();
        agent(&mut probing[0]).cluster_answers = true;
        assert_eq!(
            verdict(&probing, &ClientProbe::NoAnswer, true),
            Verdict::Refused
        );
    }

    #[test]
    fn a_data_file_refuses_unless_expected() {
        let mut formatted = fresh_cluster();
        agent(&mut formatted[0]).data_file_size_bytes = Some(1 << 30);
        let findings = judge("7", &formatted, &ClientProbe::NoAnswer, false);
        assert_eq!(findings.verdict(), Verdict::Refused);
        assert!(findings.live[0].contains("/var/lib/tigerbeetle/7_0.tigerbeetle"));
        assert_eq!(
            verdict(&formatted, &ClientProbe::NoAnswer, true),
            Verdict::Safe
        );
    }

    #[test]
    fn what_cannot_be_observed_is_never_safe() {
        let mut silent = fresh_cluster();
        silent[0].port = Port::Unknown("timeout".into());
        assert_eq!(
            verdict(&silent, &ClientProbe::NoAnswer, false),
            Verdict::Unknown
        );
        let mut unreachable = fresh_cluster();
        unreachable[1].agent = AgentView::Unreachable("refused".into());
        assert_eq!(
            verdict(&unreachable, &ClientProbe::NoAnswer, false),
            Verdict::Unknown
        );
        let failed = ClientProbe::Failed("no memory".into());
        assert_eq!(verdict(&fresh_cluster(), &failed, false), Verdict::Unknown);
        let mut other = fresh_cluster();
        agent(&mut other[2]).cluster_id = "8".into();
        assert_eq!(
            verdict(&other, &ClientProbe::NoAnswer, false),
            Verdict::Unknown
        );
    }

    #[test]
    fn live_outweighs_unknown() {
        let mut mixed = fresh_cluster();
        mixed[0].port = Port::Unknown("timeout".into());
        mixed[1].port = Port::Listening;
        let findings = judge("7", &mixed, &ClientProbe::NoAnswer, false);
        assert_eq!(findings.verdict(), Verdict::Refused);
        assert_eq!((findings.live.len(), findings.unknown.len()), (1, 1));
    }

    #[test]
    fn evictions_are_answers() {
        use tb::error::SendErrorKind;
        let evicted = classify_send_error(SendErrorKind::ClientEvicted, "evicted");
        assert!(matches!(evicted, ClientProbe::Answered(_)));
        let local = classify_send_error(SendErrorKind::TooMuchData, "too much");
        assert!(matches!(local, ClientProbe::Failed(_)));
    }
}
