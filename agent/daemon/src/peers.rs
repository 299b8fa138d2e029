//! The quorum guard: before this replica stops, ask the other replicas' agents whether the
//! cluster keeps a quorum without it.

use std::time::Duration;

use crate::api::ReadyReport;
use crate::config::Config;
use tb_proto::quorum::ready_replicas_needed;

/// Token files are one line; anything larger is a misconfiguration.
const TOKEN_FILE_SIZE_MAX_BYTES: u64 = 4096;
/// A CA bundle, a client certificate chain or its key: a few PEM blocks.
const PEM_FILE_SIZE_MAX_BYTES: u64 = 1024 * 1024;
/// A peer's readiness report or status is a few KiB; a larger answer is not an agent talking,
/// and reading it whole would let a confused or hostile peer exhaust this agent's memory.
pub const PEER_BODY_SIZE_MAX_BYTES: usize = 256 * 1024;

/// Why a peer agent gave no usable answer; each reads as the line the guard's detail carries.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no agent URL for replica {0}")]
    NoUrl(u8),
    #[error("agent {url} unreachable: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("agent {url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("agent {url} rejected the peer token ({status})")]
    TokenRejected {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("agent {url} answered {status} with a body larger than {limit} bytes", limit = PEER_BODY_SIZE_MAX_BYTES)]
    TooLarge {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("agent {url} answered {status}, then the body failed: {cause}")]
    BodyFailed {
        url: String,
        status: reqwest::StatusCode,
        cause: String,
    },
    #[error("agent {url} answered {status} with an unreadable body: {source}")]
    Unreadable {
        url: String,
        status: reqwest::StatusCode,
        source: serde_json::Error,
    },
    /// The agent answered: its replica is not ready, for the reasons its checks give.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The agent answered, but cannot vouch for its replica's checkpoint.
    #[error("agent {url} does not know its replica's checkpoint (checkpoint_op null)")]
    NoCheckpoint { url: String },
    /// An answer that is not needed was not waited for beyond its share of the freshness.
    #[error("agent {url} did not answer within {wait_ms} ms (not needed: not waited for)")]
    NotWaitedFor { url: String, wait_ms: u128 },
}

/// How long the cluster's checkpoint waits for an answer it does not need (a replica other than
/// the primary, when this one is not the primary): the answer must be at most
/// `CLUSTER_CHECKPOINT_FRESH` old when it counts, and one unreachable peer (a request timeout of
/// seconds) must not age it past that.
const OPTIONAL_CHECKPOINT_WAIT: Duration = Duration::from_millis(250);

/// Why the cluster's newest checkpoint is not known: the answer that was needed and missing.
#[derive(Debug, thiserror::Error)]
#[error("replica {replica} ({role}): {source}")]
pub struct CheckpointUnknown {
    replica: usize,
    role: &'static str,
    #[source]
    source: PeerError,
}

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
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("token file {}: {error}", path.display()))?;
    // The same reading of a secret as `tb-agent hash-token` and tbctl's token files.
    let token = tb_proto::auth::secret_from_text(&text)
        .map_err(|error| anyhow::anyhow!("token file {}: {error}", path.display()))?;
    Ok(token.to_string())
}

fn read_pem(field: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|error| anyhow::anyhow!("{field} {}: {error}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_SIZE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| anyhow::anyhow!("{field} {}: {error}", path.display()))?;
    if bytes.len() as u64 > PEM_FILE_SIZE_MAX_BYTES {
        anyhow::bail!(
            "{field} {}: larger than {PEM_FILE_SIZE_MAX_BYTES} bytes",
            path.display()
        );
    }
    Ok(bytes)
}

/// The peer client's TLS settings: CA for the peers' server certificates, and the client
/// certificate this agent presents to peers that require one (mutual TLS).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTls<'a> {
    pub ca_file: Option<&'a std::path::Path>,
    pub client_cert_file: Option<&'a std::path::Path>,
    pub client_key_file: Option<&'a std::path::Path>,
}

/// An HTTP client with bounded timeouts, trusting `tls.ca_file` for https URLs when given and
/// presenting the client certificate when given. It never uses a proxy from the environment
/// (`HTTPS_PROXY` and the like): peers are reached directly, and a proxy would see the token.
pub fn http_client(timeout: Duration, tls: ClientTls) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(2)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca_file) = tls.ca_file {
        let pem = read_pem("peers.ca_file", ca_file)?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| anyhow::anyhow!("peers.ca_file {}: {error}", ca_file.display()))?;
        if certificates.is_empty() {
            anyhow::bail!(
                "peers.ca_file {}: holds no PEM certificate",
                ca_file.display()
            );
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    match (tls.client_cert_file, tls.client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let mut pem = read_pem("peers.client_cert_file", cert_file)?;
            pem.push(b'\n');
            pem.extend(read_pem("peers.client_key_file", key_file)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|error| {
                anyhow::anyhow!(
                    "peers.client_cert_file {} with peers.client_key_file {}: {}",
                    cert_file.display(),
                    key_file.display(),
                    root_cause(&error)
                )
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => anyhow::bail!("peers: set both client_cert_file and client_key_file, or neither"),
    }
    Ok(builder.build()?)
}

/// Reads a JSON body of at most `PEER_BODY_SIZE_MAX_BYTES`, refusing a larger one as soon as
/// its announced length or its arriving bytes pass the limit.
async fn read_json<T: serde::de::DeserializeOwned>(
    mut response: reqwest::Response,
    url: &str,
) -> Result<T, PeerError> {
    let status = response.status();
    let too_large = || PeerError::TooLarge {
        url: url.to_string(),
        status,
    };
    if response
        .content_length()
        .is_some_and(|length| length > PEER_BODY_SIZE_MAX_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| PeerError::BodyFailed {
            url: url.to_string(),
            status,
            cause: root_cause(&error),
        })?
    {
        if body.len() + chunk.len() > PEER_BODY_SIZE_MAX_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|source| PeerError::Unreadable {
        url: url.to_string(),
        status,
        source,
    })
}

impl Peers {
    pub fn new(config: &Config) -> anyhow::Result<Option<Peers>> {
        let Some(peers) = &config.peers else {
            return Ok(None);
        };
        Ok(Some(Peers {
            client: http_client(
                Duration::from_millis(peers.timeout_ms),
                ClientTls {
                    ca_file: peers.ca_file.as_deref(),
                    client_cert_file: peers.client_cert_file.as_deref(),
                    client_key_file: peers.client_key_file.as_deref(),
                },
            )?,
            token: read_token_file(&peers.token_file)?,
            urls: peers
                .agent_urls
                .iter()
                .map(|url| url.trim_end_matches('/').to_string())
                .collect(),
        }))
    }

    /// Asks every agent but this replica's, concurrently (each request bounded by the client's
    /// timeout), and returns the answers in replica order.
    async fn ask_others<T, F, Fut>(&self, this_replica: u8, ask: F) -> Vec<(usize, T)>
    where
        T: Send + 'static,
        F: Fn(reqwest::Client, String, String) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
    {
        let mut asks = tokio::task::JoinSet::new();
        for (index, url) in self.urls.iter().enumerate() {
            if index != usize::from(this_replica) {
                let answer = ask(self.client.clone(), self.token.clone(), url.clone());
                asks.spawn(async move { (index, answer.await) });
            }
        }
        let mut answers = asks.join_all().await;
        answers.sort_by_key(|(index, _)| *index);
        answers
    }

    /// Asks every other agent, concurrently, whether its replica is ready.
    pub async fn quorum_without(&self, this_replica: u8) -> QuorumVerdict {
        let replica_count = self.urls.len() as u8;
        let needed = ready_replicas_needed(replica_count);
        let answers = self
            .ask_others(this_replica, |client, token, url| async move {
                ask(&client, &token, &url).await
            })
            .await;
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

impl Peers {
    /// The lease as replica `replica`'s agent sees it: the agent that granted a lease names
    /// its holder.
    pub async fn lease_view(&self, replica: u8) -> Result<tb_proto::lease::LeaseStatus, PeerError> {
        let url = self
            .urls
            .get(usize::from(replica))
            .ok_or(PeerError::NoUrl(replica))?;
        let response = get(&self.client, &self.token, url, "/v1/lease").await?;
        if !response.status().is_success() {
            return Err(PeerError::Status {
                url: url.clone(),
                status: response.status(),
            });
        }
        read_json(response, url).await
    }
}

/// GET `path` from the peer agent at `url` with the peer token; an unreachable agent is one line.
async fn get(
    client: &reqwest::Client,
    token: &str,
    url: &str,
    path: &str,
) -> Result<reqwest::Response, PeerError> {
    client
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|error| PeerError::Unreachable {
            url: url.to_string(),
            cause: root_cause(&error),
        })
}

async fn ask(client: &reqwest::Client, token: &str, url: &str) -> Result<(), PeerError> {
    let response = get(client, token, url, "/v1/health/ready").await?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(PeerError::TokenRejected {
            url: url.to_string(),
            status,
        });
    }
    let report: ReadyReport = read_json(response, url).await?;
    if report.ready {
        Ok(())
    } else {
        Err(PeerError::NotReady(report.failing_summary()))
    }
}

impl Peers {
    /// The cluster's newest checkpoint, as the other replicas' agents know it from their logs
    /// (`checkpoint_op` of `/v1/status`, asked concurrently): the largest answer. The primary of
    /// `view` commits first, so its answer is required; when this replica is that primary (a view
    /// change may have elected it), every other agent's is.
    pub async fn cluster_checkpoint(
        &self,
        this_replica: u8,
        view: u32,
    ) -> Result<u64, CheckpointUnknown> {
        assert!(
            !self.urls.is_empty(),
            "the agent URLs include this replica's"
        );
        let primary = (view as usize) % self.urls.len();
        let every_one_needed = usize::from(this_replica) == primary;
        let primary_url = self.urls[primary].clone();
        let answers = self
            .ask_others(this_replica, |client, token, url| {
                let needed = every_one_needed || url == primary_url;
                async move {
                    if needed {
                        return checkpoint_of(&client, &token, &url).await;
                    }
                    tokio::time::timeout(
                        OPTIONAL_CHECKPOINT_WAIT,
                        checkpoint_of(&client, &token, &url),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(PeerError::NotWaitedFor {
                            url: url.clone(),
                            wait_ms: OPTIONAL_CHECKPOINT_WAIT.as_millis(),
                        })
                    })
                }
            })
            .await;
        let mut newest = 0;
        for (index, answer) in answers {
            let role = if index == primary {
                "the primary of view"
            } else {
                "another replica"
            };
            match answer {
                Ok(checkpoint) => newest = newest.max(checkpoint),
                Err(source) if index == primary || usize::from(this_replica) == primary => {
                    return Err(CheckpointUnknown {
                        replica: index,
                        role,
                        source,
                    });
                }
                // Not needed: the primary's answer bounds the cluster's commit.
                Err(_) => {}
            }
        }
        Ok(newest)
    }

    /// Other replicas whose process runs, or whose agent cannot say (unknown counts as running:
    /// the caller is about to do something only safe when they are all stopped).
    pub async fn running_peers(&self, this_replica: u8) -> Vec<String> {
        self.ask_others(this_replica, |client, token, url| async move {
            replica_running(&client, &token, &url).await
        })
        .await
        .into_iter()
        .filter_map(|(index, answer)| match answer {
            Ok(false) => None,
            Ok(true) => Some(format!("replica {index} is running")),
            Err(why) => Some(format!("replica {index}: {why}")),
        })
        .collect()
    }
}

async fn replica_running(
    client: &reqwest::Client,
    token: &str,
    url: &str,
) -> Result<bool, PeerError> {
    Ok(status_of(client, token, url).await?.replica.running)
}

async fn checkpoint_of(client: &reqwest::Client, token: &str, url: &str) -> Result<u64, PeerError> {
    status_of(client, token, url)
        .await?
        .replica
        .checkpoint_op
        .ok_or_else(|| PeerError::NoCheckpoint {
            url: url.to_string(),
        })
}

async fn status_of(
    client: &reqwest::Client,
    token: &str,
    url: &str,
) -> Result<crate::api::StatusReport, PeerError> {
    let response = get(client, token, url, "/v1/status").await?;
    let status = response.status();
    if !status.is_success() {
        return Err(PeerError::Status {
            url: url.to_string(),
            status,
        });
    }
    read_json(response, url).await
}

/// The innermost error of a chain: reqwest's top-level message hides the useful part.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod oversized_answers {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// How a fake peer announces the endless body it then sends.
    #[derive(Clone, Copy)]
    enum Framing {
        Chunked,
        ContentLength,
    }

    /// A fake peer agent: a real agent never answers like this, which is the point. It answers
    /// every request with a 200 whose body does not end (whitespace, which is valid JSON so far).
    async fn endless_peer(framing: Framing) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let framing = match framing {
                        Framing::Chunked => "transfer-encoding: chunked".to_string(),
                        Framing::ContentLength => format!("content-length: {}", 1u64 << 40),
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
                    );
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let spaces = vec![b' '; 64 * 1024];
                    loop {
                        let written = if framing.starts_with("transfer") {
                            let size = format!("{:x}\r\n", spaces.len());
                            stream.write_all(size.as_bytes()).await.is_ok()
                                && stream.write_all(&spaces).await.is_ok()
                                && stream.write_all(b"\r\n").await.is_ok()
                        } else {
                            stream.write_all(&spaces).await.is_ok()
                        };
                        if !written {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{address}")
    }

    /// Replica 0 (this one, never called) and the two others at `others`.
    fn test_peers(timeout: Duration, others: [String; 2]) -> Peers {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let [one, two] = others;
        Peers {
            client: http_client(timeout, ClientTls::default()).unwrap(),
            token: "peer-token".to_string(),
            urls: vec!["http://127.0.0.1:1".to_string(), one, two],
        }
    }

    /// A peer that accepts connections and never answers.
    async fn silent_peer() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        format!("http://{address}")
    }

    /// The cluster's checkpoint needs the primary's answer only (this replica is a backup): a
    /// silent other replica is not waited for past OPTIONAL_CHECKPOINT_WAIT, so the answer
    /// that counts is not aged past its freshness by a request timeout of seconds.
    #[tokio::test]
    async fn the_cluster_checkpoint_does_not_wait_for_an_answer_it_does_not_need() {
        let timeout = Duration::from_secs(20);
        // Replica 1, the primary of view 1, refuses connections at once.
        let peers = test_peers(
            timeout,
            ["http://127.0.0.1:1".to_string(), silent_peer().await],
        );
        let started = Instant::now();
        let unknown = peers.cluster_checkpoint(0, 1).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(
            unknown
                .to_string()
                .starts_with("replica 1 (the primary of view)"),
            "{unknown}"
        );
    }

    #[tokio::test]
    async fn a_peer_with_an_endless_answer_is_not_ready_and_not_read_whole() {
        let timeout = Duration::from_secs(20);
        let peers = test_peers(
            timeout,
            [
                endless_peer(Framing::Chunked).await,
                endless_peer(Framing::ContentLength).await,
            ],
        );
        let started = Instant::now();
        let verdict = peers.quorum_without(0).await;
        assert!(!verdict.ok, "{}", verdict.detail);
        assert_eq!(
            verdict.detail.matches("with a body larger than").count(),
            2,
            "{}",
            verdict.detail
        );
        // Refused as the bytes arrive, long before the request timeout would have ended it.
        assert!(started.elapsed() < timeout / 4, "{:?}", started.elapsed());
        let running = peers.running_peers(0).await;
        assert_eq!(running.len(), 2, "{running:?}");
        assert!(
            running.iter().all(|why| why.contains("larger than")),
            "{running:?}"
        );
    }
}

#[cfg(test)]
mod token_file {
    use super::read_token_file;

    fn read(text: &str) -> anyhow::Result<String> {
        let dir = std::env::temp_dir().join(format!("tb-peer-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.token", text.len()));
        std::fs::write(&path, text).unwrap();
        let result = read_token_file(&path);
        std::fs::remove_file(&path).unwrap();
        result
    }

    /// The peer token is read as tbctl and `tb-agent hash-token` read a secret
    /// (`tb_proto::auth::secret_from_text`), or the hash in the peers' configs would not match.
    #[test]
    fn reads_one_word_and_refuses_empty_or_several() {
        assert_eq!(read("peer-secret\n").unwrap(), "peer-secret");
        assert!(read(" \n").unwrap_err().to_string().contains("empty"));
        let several = read("peer secret\n").unwrap_err().to_string();
        assert!(several.contains("more than one word"), "{several}");
    }
}
