//! The HTTP client of the agent API. One bounded request per call, never retried here, and
//! every failure classified so that its message says what to fix.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

use tb_proto::auth::Scope;
use tb_proto::endpoints::{Endpoint, Method};
use tb_proto::{api, lease};

/// Answers are small JSON documents; a larger body is not an agent talking.
const BODY_SIZE_MAX_BYTES: usize = 1024 * 1024;
/// A backup list: up to 1000 records (the agent's cap), each with up to 8 hooks whose output
/// it keeps up to 16 KiB.
const BACKUP_LIST_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// A secret file holds one hex secret; anything larger is the wrong file.
const SECRET_FILE_SIZE_MAX_BYTES: u64 = 4 * 1024;
/// A CA bundle, a client certificate chain or its key: a few PEM blocks.
const CA_FILE_SIZE_MAX_BYTES: u64 = 1024 * 1024;
/// Connecting is quick or hopeless; a long request timeout (restart) must not stretch it.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Error bodies quoted in messages are cut to this length.
const DETAIL_LENGTH_MAX: usize = 300;

/// The bearer secret, and where it came from so errors can point there.
#[derive(Clone)]
pub struct Token {
    secret: String,
    source: String,
}

impl Token {
    pub fn from_file(path: &Path) -> anyhow::Result<Token> {
        let secret = read_secret_file(path)?;
        Ok(Token {
            secret,
            source: format!("--token-file {}", path.display()),
        })
    }

    pub fn from_env(name: &str) -> anyhow::Result<Token> {
        let secret = std::env::var(name).map_err(|_| {
            anyhow::anyhow!(
                "no agent token: pass --token-file FILE, or set TBCTL_TOKEN_FILE or {name}"
            )
        })?;
        let secret = match tb_proto::auth::secret_from_text(&secret) {
            Ok(secret) => secret.to_string(),
            Err(tb_proto::auth::SecretTextError::Empty) => anyhow::bail!("{name} is set but empty"),
            Err(error) => anyhow::bail!("{name}: {error}"),
        };
        Ok(Token {
            secret,
            source: name.to_string(),
        })
    }
}

/// Reads a file that holds one secret, trimming surrounding whitespace (editors add newlines).
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let bytes = read_bounded(path, SECRET_FILE_SIZE_MAX_BYTES)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("token file {}: not UTF-8 text", path.display()))?;
    let secret = tb_proto::auth::secret_from_text(&text)
        .map_err(|error| anyhow::anyhow!("token file {}: {error}", path.display()))?;
    Ok(secret.to_string())
}

fn read_bounded(path: &Path, size_max_bytes: u64) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "too large".
    file.take(size_max_bytes + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= size_max_bytes,
        "{}: larger than {size_max_bytes} bytes",
        path.display()
    );
    Ok(bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("token rejected (401): check {0}")]
    TokenRejected(String),
    #[error("token lacks a scope of {scopes} (403): {message}")]
    Forbidden { scopes: String, message: String },
    #[error(
        "too many failed authentications from this address (429): wait a minute, then check {0}"
    )]
    Throttled(String),
    #[error("refused ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("not found (404): {0}")]
    NotFound(String),
    #[error("unexpected answer (HTTP {status}): {detail}")]
    Unexpected { status: u16, detail: String },
}

impl AgentError {
    /// Errors that waiting cannot fix: a wrong token stays wrong.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            AgentError::TokenRejected(_) | AgentError::Forbidden { .. } | AgentError::Throttled(_)
        )
    }
}

/// TLS settings beyond the system's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tls<'a> {
    /// CA certificates trusted for https:// agent URLs (`--ca-file`).
    pub ca_file: Option<&'a Path>,
    /// Client certificate and its key, for agents that require one (`--client-cert`,
    /// `--client-key`).
    pub client_cert: Option<(&'a Path, &'a Path)>,
}

/// An operation's answer: its result (200), or the job to follow (202) when it outlasted the
/// agent's wait and goes on as a job of the agent's own.
pub enum Answer<T> {
    Done(T),
    Accepted(api::JobAccepted),
}

pub type ControlAnswer = Answer<api::ControlResponse>;
pub type RestoreAnswer = Answer<api::RestoreResponse>;

#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    token: Token,
    /// The lease fields every request that stops a replica carries (`--lease-id`,
    /// `--without-lease`).
    lease: api::LeaseFields,
}

impl AgentClient {
    pub fn new(token: Token, tls: Tls) -> anyhow::Result<AgentClient> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // Agents are reached directly: a proxy from the environment would see the token,
            // and would break 127.0.0.1 clusters.
            .no_proxy()
            // A redirect would resend the bearer token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .user_agent(concat!("tbctl/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = tls.ca_file {
            let pem = read_bounded(path, CA_FILE_SIZE_MAX_BYTES)?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-file {}: not PEM certificates", path.display()))?;
            anyhow::ensure!(
                !certificates.is_empty(),
                "--ca-file {}: holds no PEM certificate",
                path.display()
            );
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some((cert_file, key_file)) = tls.client_cert {
            let mut pem = read_bounded(cert_file, CA_FILE_SIZE_MAX_BYTES)?;
            pem.push(b'\n');
            pem.extend(read_bounded(key_file, CA_FILE_SIZE_MAX_BYTES)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|error| {
                anyhow::anyhow!(
                    "--client-cert {} with --client-key {}: {}",
                    cert_file.display(),
                    key_file.display(),
                    root_cause(&error)
                )
            })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(AgentClient {
            http,
            token,
            lease: api::LeaseFields::default(),
        })
    }

    /// Requests that stop a replica act under `lease` (a lease id held by the caller, or the
    /// typed-out cluster id to proceed without one).
    pub fn with_lease(mut self, lease: api::LeaseFields) -> AgentClient {
        self.lease = lease;
        self
    }

    /// `GET /v1/lease`.
    pub async fn lease_status(
        &self,
        url: &str,
        timeout_ms: u64,
    ) -> Result<lease::LeaseStatus, AgentError> {
        self.get(url, Endpoint::LeaseShow, &[], timeout_ms).await
    }

    /// `POST /v1/lease/{init,acquire,renew,release,break}`.
    pub async fn lease_post<T: DeserializeOwned>(
        &self,
        url: &str,
        endpoint: Endpoint,
        body: serde_json::Value,
        timeout_ms: u64,
    ) -> Result<T, AgentError> {
        assert!(endpoint.path().starts_with("/v1/lease/"), "{endpoint:?}");
        self.call(
            url,
            endpoint,
            &[],
            Some(body),
            &[StatusCode::OK],
            timeout_ms,
        )
        .await
    }

    /// `GET /v1/health/ready`: a report whether ready (200) or not (503).
    pub async fn ready(&self, url: &str, timeout_ms: u64) -> Result<api::ReadyReport, AgentError> {
        let accept = [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE];
        self.call(url, Endpoint::HealthReady, &[], None, &accept, timeout_ms)
            .await
    }

    pub async fn status(
        &self,
        url: &str,
        timeout_ms: u64,
    ) -> Result<api::StatusReport, AgentError> {
        self.get(url, Endpoint::Status, &[], timeout_ms).await
    }

    /// `POST /v1/replica/{action}`: the result, or the job to follow when the operation
    /// outlasted the agent's wait (it goes on as a job of the agent's own).
    pub async fn control(
        &self,
        url: &str,
        action: &str,
        force: bool,
        timeout_ms: u64,
    ) -> Result<ControlAnswer, AgentError> {
        let endpoint = Endpoint::ReplicaControl;
        let request = api::ControlRequest {
            force,
            lease_id: self.lease.lease_id.clone(),
            without_lease: self.lease.without_lease.clone(),
        };
        let body = serde_json::to_value(request).expect("plain struct");
        self.done_or_accepted(url, endpoint, &[action], body, timeout_ms)
            .await
    }

    /// Sends `body` and reads a 200 as the result, a 202 as the job to follow.
    async fn done_or_accepted<T: DeserializeOwned>(
        &self,
        url: &str,
        endpoint: Endpoint,
        parameters: &[&str],
        body: serde_json::Value,
        timeout_ms: u64,
    ) -> Result<Answer<T>, AgentError> {
        let response = self
            .send(url, endpoint, parameters, Some(body), timeout_ms)
            .await?;
        let accept = [StatusCode::OK, StatusCode::ACCEPTED];
        let (status, body) = self
            .accepted_body(response, endpoint, &accept, BODY_SIZE_MAX_BYTES, timeout_ms)
            .await?;
        if status == StatusCode::ACCEPTED {
            Ok(Answer::Accepted(parse(status, &body)?))
        } else {
            Ok(Answer::Done(parse(status, &body)?))
        }
    }

    /// `POST /v1/backups` or `POST /v1/replica/recover`: 202 with the job to follow.
    pub async fn start_job(
        &self,
        url: &str,
        endpoint: Endpoint,
        timeout_ms: u64,
    ) -> Result<api::JobAccepted, AgentError> {
        assert!(matches!(
            endpoint,
            Endpoint::BackupCreate | Endpoint::ReplicaRecover
        ));
        let request = api::BackupRequest {
            lease_id: self.lease.lease_id.clone(),
            without_lease: self.lease.without_lease.clone(),
        };
        let body = serde_json::to_value(request).expect("plain struct");
        let accept = [StatusCode::ACCEPTED];
        self.call(url, endpoint, &[], Some(body), &accept, timeout_ms)
            .await
    }

    /// `POST /v1/backups/{id}/restore`: the result once the file is in place, or the job to
    /// follow when the restore outlasted the agent's wait (it goes on as a job of the agent's).
    pub async fn restore(
        &self,
        url: &str,
        backup_id: &str,
        request: &api::RestoreRequest,
        timeout_ms: u64,
    ) -> Result<RestoreAnswer, AgentError> {
        let body = serde_json::to_value(request).expect("plain struct");
        self.done_or_accepted(url, Endpoint::BackupRestore, &[backup_id], body, timeout_ms)
            .await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, url: &str, id: &str, timeout_ms: u64) -> Result<api::Job, AgentError> {
        self.get(url, Endpoint::Job, &[id], timeout_ms).await
    }

    /// `GET /v1/backups`: complete backups, newest first.
    pub async fn backups(
        &self,
        url: &str,
        timeout_ms: u64,
    ) -> Result<Vec<api::BackupRecord>, AgentError> {
        let endpoint = Endpoint::BackupList;
        let response = self.send(url, endpoint, &[], None, timeout_ms).await?;
        let accept = [StatusCode::OK];
        self.answer(
            response,
            endpoint,
            &accept,
            BACKUP_LIST_SIZE_MAX_BYTES,
            timeout_ms,
        )
        .await
    }

    /// `GET /v1/backups/{id}`.
    pub async fn backup(
        &self,
        url: &str,
        id: &str,
        timeout_ms: u64,
    ) -> Result<api::BackupRecord, AgentError> {
        self.get(url, Endpoint::BackupShow, &[id], timeout_ms).await
    }

    /// `GET /v1/backups/{id}/file` into `destination`, a new file. The body must be exactly
    /// `size_bytes` long (the manifest's stored size): more is refused as it arrives, so a
    /// confused agent cannot fill the disk. `timeout_ms` bounds the whole transfer.
    pub async fn download(
        &self,
        url: &str,
        id: &str,
        destination: &Path,
        size_bytes: u64,
        timeout_ms: u64,
    ) -> anyhow::Result<()> {
        let endpoint = Endpoint::BackupFile;
        let mut response = self.send(url, endpoint, &[id], None, timeout_ms).await?;
        if response.status() != StatusCode::OK {
            let error: AgentError = self
                .answer::<serde_json::Value>(
                    response,
                    endpoint,
                    &[],
                    BODY_SIZE_MAX_BYTES,
                    timeout_ms,
                )
                .await
                .expect_err("no status is accepted");
            return Err(error.into());
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(destination)
            .await
            .with_context(|| format!("creating {}", destination.display()))?;
        let mut received_bytes = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| classify(&error, timeout_ms))?
        {
            received_bytes += chunk.len() as u64;
            if received_bytes > size_bytes {
                return Err(AgentError::Unexpected {
                    status: StatusCode::OK.as_u16(),
                    detail: format!("the file is larger than the manifest's {size_bytes} bytes"),
                }
                .into());
            }
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", destination.display()))?;
        }
        anyhow::ensure!(
            received_bytes == size_bytes,
            "the download ended after {received_bytes} of the manifest's {size_bytes} bytes"
        );
        file.sync_all()
            .await
            .with_context(|| format!("syncing {}", destination.display()))?;
        Ok(())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        url: &str,
        endpoint: Endpoint,
        parameters: &[&str],
        timeout_ms: u64,
    ) -> Result<T, AgentError> {
        self.call(
            url,
            endpoint,
            parameters,
            None,
            &[StatusCode::OK],
            timeout_ms,
        )
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        url: &str,
        endpoint: Endpoint,
        parameters: &[&str],
        body: Option<serde_json::Value>,
        accept: &[StatusCode],
        timeout_ms: u64,
    ) -> Result<T, AgentError> {
        let response = self
            .send(url, endpoint, parameters, body, timeout_ms)
            .await?;
        self.answer(response, endpoint, accept, BODY_SIZE_MAX_BYTES, timeout_ms)
            .await
    }

    /// Sends with the token and the timeout, which bounds the body's arrival too.
    async fn send(
        &self,
        url: &str,
        endpoint: Endpoint,
        parameters: &[&str],
        body: Option<serde_json::Value>,
        timeout_ms: u64,
    ) -> Result<reqwest::Response, AgentError> {
        let target = format!("{url}{}", endpoint.path_with(parameters));
        let method = match endpoint.method() {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut request = self.http.request(method, target);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .bearer_auth(&self.token.secret)
            .timeout(Duration::from_millis(timeout_ms))
            .send()
            .await
            .map_err(|error| classify(&error, timeout_ms))
    }

    /// Reads a JSON answer of at most `body_size_max` bytes: the value when the status is in
    /// `accept`, else the error the status and body describe.
    async fn answer<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
        endpoint: Endpoint,
        accept: &[StatusCode],
        body_size_max: usize,
        timeout_ms: u64,
    ) -> Result<T, AgentError> {
        let (status, body) = self
            .accepted_body(response, endpoint, accept, body_size_max, timeout_ms)
            .await?;
        parse(status, &body)
    }

    /// The status and body of an answer whose status is in `accept`, else the error the status
    /// and body describe. Reads at most `body_size_max` bytes.
    async fn accepted_body(
        &self,
        mut response: reqwest::Response,
        endpoint: Endpoint,
        accept: &[StatusCode],
        body_size_max: usize,
        timeout_ms: u64,
    ) -> Result<(StatusCode, Vec<u8>), AgentError> {
        let classify = |error: reqwest::Error| classify(&error, timeout_ms);
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > body_size_max {
                return Err(AgentError::Unexpected {
                    status: status.as_u16(),
                    detail: format!("body larger than {body_size_max} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }

        if accept.contains(&status) {
            return Ok((status, body));
        }
        let error_body: Option<api::ErrorBody> = serde_json::from_slice(&body).ok();
        let message = match &error_body {
            Some(error_body) => error_body.message.clone(),
            None => truncate(&String::from_utf8_lossy(&body)),
        };
        Err(match (status, error_body) {
            (StatusCode::UNAUTHORIZED, _) => AgentError::TokenRejected(self.token.source.clone()),
            (StatusCode::FORBIDDEN, _) => AgentError::Forbidden {
                scopes: scope_names(endpoint.scopes()),
                message,
            },
            (StatusCode::TOO_MANY_REQUESTS, _) => AgentError::Throttled(self.token.source.clone()),
            (StatusCode::CONFLICT, Some(error_body)) => AgentError::Refused {
                code: error_body.error,
                message,
            },
            (StatusCode::NOT_FOUND, Some(_)) => AgentError::NotFound(message),
            _ => AgentError::Unexpected {
                status: status.as_u16(),
                detail: message,
            },
        })
    }
}

fn parse<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|error| AgentError::Unexpected {
        status: status.as_u16(),
        detail: format!("body does not match the agent API: {error}"),
    })
}

fn scope_names(scopes: &[Scope]) -> String {
    let names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
    names.join(" and ")
}

fn classify(error: &reqwest::Error, timeout_ms: u64) -> AgentError {
    if error.is_timeout() {
        return AgentError::Timeout(timeout_ms);
    }
    let cause = root_cause(error);
    if cause.contains("CertificateRequired") {
        return AgentError::Unreachable(format!(
            "{cause}: the agent requires a client certificate; pass --client-cert and \
             --client-key (or set TBCTL_CLIENT_CERT and TBCTL_CLIENT_KEY)"
        ));
    }
    if cause.contains("BadCertificate")
        || cause.contains("UnknownCA")
        || cause.contains("CertificateExpired")
    {
        // The agent's alert: it did not accept the client certificate we presented.
        return AgentError::Unreachable(format!(
            "{cause}: the agent refused the client certificate; check --client-cert against \
             its server.tls.client_ca_file"
        ));
    }
    if cause.contains("certificate") || cause.contains("Certificate") {
        return AgentError::Unreachable(format!("{cause}: check --ca-file"));
    }
    if cause.contains("InvalidContentType") {
        // The TLS handshake got a plain HTTP answer.
        return AgentError::Unreachable(format!(
            "{cause}: the agent does not speak TLS here; try http:// in the inventory"
        ));
    }
    AgentError::Unreachable(cause)
}

/// The innermost error is the informative one ("connection refused"); reqwest's own wrapper
/// only says "error sending request for url (...)", which repeats the URL we already print.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    // "Connection refused (os error 111)": the errno adds nothing for a person.
    let text = match text.find(" (os error ") {
        Some(index) => &text[..index],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_string(),
    }
}

fn truncate(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    match text.char_indices().nth(DETAIL_LENGTH_MAX) {
        Some((index, _)) => format!("{}...", &text[..index]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_cause_is_short_and_lowercase() {
        let io = std::io::Error::from_raw_os_error(111);
        assert_eq!(root_cause(&io), "connection refused");
    }

    #[test]
    fn secret_files_are_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("tbctl-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "  abc123\n").unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), "abc123");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret_file(&path).is_err());
        std::fs::write(&path, "two words").unwrap();
        assert!(read_secret_file(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
