//! The quorum guard: before this replica stops, ask the other replicas' agents whether the
//! cluster keeps a quorum without it.

use std::time::Duration;

use crate::api::ReadyReport;
use crate::config::Config;
use tb_proto::quorum::ready_replicas_needed;

/// Token files are one line; anything larger is a misconfiguration.
const TOKEN_FILE_SIZE_MAX_BYTES: u64 = 4096;

#[derive(Debug, Clone)]
pub struct QuorumVerdict {
    pub ok: bool,
    pub detail: String,
}

pub struct Peers {
    client: reqwest::Client,
    token: String,
    urls: Vec<String>,
}

pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    let metadata = std::fs::metadata(path)
        .map_err(|error| anyhow::anyhow!("token file {}: {error}", path.display()))?;
    if metadata.len() > TOKEN_FILE_SIZE_MAX_BYTES {
        anyhow::bail!(
            "token file {}: larger than {TOKEN_FILE_SIZE_MAX_BYTES} bytes",
            path.display()
        );
    }
    let token = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("token file {}: {error}", path.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        anyhow::bail!("token file {}: empty", path.display());
    }
    Ok(token)
}

/// An HTTP client with bounded timeouts, trusting `ca_file` for https URLs when given.
pub fn http_client(
    timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(2)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca_file) = ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|error| anyhow::anyhow!("CA file {}: {error}", ca_file.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder.build()?)
}

impl Peers {
    pub fn new(config: &Config) -> anyhow::Result<Option<Peers>> {
        let Some(peers) = &config.peers else {
            return Ok(None);
        };
        Ok(Some(Peers {
            client: http_client(
                Duration::from_millis(peers.timeout_ms),
                peers.ca_file.as_deref(),
            )?,
            token: read_token_file(&peers.token_file)?,
            urls: peers
                .agent_urls
                .iter()
                .map(|url| url.trim_end_matches('/').to_string())
                .collect(),
        }))
    }

    /// Asks every other agent, concurrently, whether its replica is ready.
    pub async fn quorum_without(&self, this_replica: u8) -> QuorumVerdict {
        let replica_count = self.urls.len() as u8;
        let needed = ready_replicas_needed(replica_count);
        let mut asks = tokio::task::JoinSet::new();
        for (index, url) in self.urls.iter().enumerate() {
            if index != usize::from(this_replica) {
                let (client, token, url) = (self.client.clone(), self.token.clone(), url.clone());
                asks.spawn(async move { (index, ask(&client, &token, &url).await) });
            }
        }
        let mut answers = asks.join_all().await;
        answers.sort_by_key(|(index, _)| *index);
        let ready: Vec<String> = answers
            .iter()
            .filter(|(_, answer)| answer.is_ok())
            .map(|(index, _)| index.to_string())
            .collect();
        let unready: Vec<String> = answers
            .iter()
            .filter_map(|(index, answer)| {
                answer
                    .as_ref()
                    .err()
                    .map(|why| format!("replica {index}: {why}"))
            })
            .collect();
        let ok = ready.len() >= usize::from(needed);
        let detail = format!(
            "{} of the other {} replicas ready ([{}]); {needed} needed to keep a quorum without \
             replica {this_replica}{}{}",
            ready.len(),
            replica_count - 1,
            ready.join(", "),
            if unready.is_empty() {
                ""
            } else {
                "; not ready: "
            },
            unready.join("; ")
        );
        QuorumVerdict { ok, detail }
    }
}

async fn ask(client: &reqwest::Client, token: &str, url: &str) -> Result<(), String> {
    let response = client
        .get(format!("{url}/v1/health/ready"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|error| format!("agent {url} unreachable: {}", root_cause(&error)))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(format!("agent {url} rejected the peer token ({status})"));
    }
    let report: ReadyReport = response.json().await.map_err(|error| {
        format!("agent {url} answered {status} with an unreadable body: {error}")
    })?;
    if report.ready {
        Ok(())
    } else {
        Err(format!("not ready: {}", report.failing_summary()))
    }
}

impl Peers {
    /// Other replicas whose process runs, or whose agent cannot say (unknown counts as running:
    /// the caller is about to do something only safe when they are all stopped).
    pub async fn running_peers(&self, this_replica: u8) -> Vec<String> {
        let mut asks = tokio::task::JoinSet::new();
        for (index, url) in self.urls.iter().enumerate() {
            if index != usize::from(this_replica) {
                let (client, token, url) = (self.client.clone(), self.token.clone(), url.clone());
                asks.spawn(async move { (index, replica_running(&client, &token, &url).await) });
            }
        }
        let mut answers = asks.join_all().await;
        answers.sort_by_key(|(index, _)| *index);
        answers
            .into_iter()
            .filter_map(|(index, answer)| match answer {
                Ok(false) => None,
                Ok(true) => Some(format!("replica {index} is running")),
                Err(why) => Some(format!("replica {index}: {why}")),
            })
            .collect()
    }
}

async fn replica_running(client: &reqwest::Client, token: &str, url: &str) -> Result<bool, String> {
    let response = client
        .get(format!("{url}/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|error| format!("agent {url} unreachable: {}", root_cause(&error)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("agent {url} answered {status}"));
    }
    let report: crate::api::StatusReport = response
        .json()
        .await
        .map_err(|error| format!("agent {url}: unreadable status: {error}"))?;
    Ok(report.replica.running)
}

/// The innermost error of a chain: reqwest's top-level message hides the useful part.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}
