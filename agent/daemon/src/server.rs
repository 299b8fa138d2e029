//! The HTTP API: routes, authentication, body limits, timeouts, and a bounded accept loop with
//! optional TLS (and client-certificate verification).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::api::{ControlRequest, ErrorBody, StatusReport};
use crate::auth::{Scope, Verdict};
use crate::control::{self, Action, ControlError};
use crate::state::AgentState;
use crate::{api, audit, backup, health, metrics};

/// Time a client gets to send its request headers (slowloris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

type AppState = Arc<AgentState>;

pub fn router(state: AppState) -> Router {
    let config = &state.config;
    let read_timeout = Duration::from_millis(config.server.request_timeout_ms);
    // Restart waits for readiness, so control requests get the ready timeout plus the stop time.
    let control_timeout =
        Duration::from_millis(config.control.ready_timeout_ms + config.control.stop_timeout_ms)
            + Duration::from_secs(30);
    let require = |scopes: &'static [Scope]| {
        axum::middleware::from_fn_with_state((Arc::clone(&state), scopes), require_scope)
    };
    let (backup_reads, backup_quick) = backup::routes::quick_routes();
    let (backup_slow, recover, restore) = backup::routes::slow_routes();
    let reads = Router::new()
        .route("/v1/health/ready", get(ready))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .merge(backup_reads)
        .route_layer(require(&[Scope::Read]))
        .merge(backup_quick.route_layer(require(&[Scope::Backup])))
        // Liveness says only that the agent runs (like Patroni's /liveness): no token needed.
        .route("/v1/health/live", get(live))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            read_timeout,
        ));
    let controls = Router::new()
        .route("/v1/replica/{action}", post(replica_control))
        .merge(recover)
        .route_layer(require(&[Scope::Control]))
        .merge(backup_slow.route_layer(require(&[Scope::Backup])))
        .merge(restore.route_layer(require(&[Scope::Control, Scope::Backup])))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            control_timeout,
        ));
    reads
        .merge(controls)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(
            config.server.body_size_max_bytes as usize,
        ))
        .with_state(state)
}

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: code.to_string(),
        message: message.into(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The token's name when it holds every one of `scopes`, else the error response.
// Handlers return the error response as is; boxing it would only add noise at every call site.
#[allow(clippy::result_large_err)]
fn authorize(
    state: &AgentState,
    headers: &HeaderMap,
    remote: SocketAddr,
    scopes: &[Scope],
) -> Result<String, Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let refuse = |status, code, message: String| {
        state
            .counters
            .auth_failures_total
            .fetch_add(1, Ordering::Relaxed);
        Err(error(status, code, message))
    };
    let scope_names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
    match state.auth.check(header, remote.ip(), scopes) {
        Verdict::Allowed(name) => Ok(name),
        Verdict::Unauthenticated => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing or unknown bearer token".into(),
        ),
        Verdict::Forbidden(name) => {
            tracing::warn!(token = %name, %remote, scopes = ?scope_names, "token lacks a scope");
            refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {name:?} lacks a scope this needs: {}",
                    scope_names.join(" and ")
                ),
            )
        }
        Verdict::Throttled => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            "too many failed authentications from this address; wait a minute".into(),
        ),
    }
}

/// The name of the token that authorised a request, for audit lines.
#[derive(Clone)]
pub struct TokenName(pub String);

/// Route layer: lets a request through only with a token that holds every one of `scopes`.
async fn require_scope(
    State((state, scopes)): State<(AppState, &'static [Scope])>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorize(&state, request.headers(), remote, scopes) {
        Ok(name) => {
            request.extensions_mut().insert(TokenName(name));
            next.run(request).await
        }
        Err(response) => response,
    }
}

async fn live() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    let report = health::ready_report(&state);
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(report)).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&state),
    )
        .into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    axum::Json(status_report(&state)).into_response()
}

pub fn status_report(state: &AgentState) -> StatusReport {
    let config = &state.config;
    let info = state.replica.process_info();
    let identity = state.binary_identity();
    let health = &config.health;
    let verdict = state.prober.verdict(
        Duration::from_millis(health.probe_timeout_ms),
        Duration::from_millis(health.probe_interval_ms),
    );
    let now_unix_seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |duration| duration.as_secs_f64());
    StatusReport {
        agent: api::AgentStatus {
            version: crate::AGENT_VERSION.to_string(),
            tigerbeetle_client_version: crate::TIGERBEETLE_CLIENT_VERSION.to_string(),
            uptime_seconds: state.started.elapsed().as_secs(),
        },
        host: (*state.host.latest()).clone(),
        replica: api::ReplicaStatus {
            cluster_id: config.replica.cluster_id.clone(),
            index: config.replica.index,
            count: config.replica.count,
            addresses: config.replica.addresses.clone(),
            run_mode: state.replica.mode_name().to_string(),
            running: info.is_some(),
            pid: info.as_ref().map(|info| info.pid),
            uptime_seconds: info
                .as_ref()
                .and_then(|info| info.start_time_unix_seconds)
                .map(|start| (now_unix_seconds - start).max(0.0) as u64),
            resident_bytes: info.as_ref().map(|info| info.resident_bytes),
            locked_bytes: info.as_ref().map(|info| info.locked_bytes),
            memlock_limit_bytes: info.as_ref().and_then(|info| info.memlock_limit_bytes),
            binary: state.replica.binary().display().to_string(),
            binary_version: identity
                .as_ref()
                .and_then(|identity| identity.version.clone()),
            binary_sha256: identity
                .as_ref()
                .and_then(|identity| identity.sha256.clone()),
            data_file: config.replica.data_file.display().to_string(),
            data_file_size_bytes: std::fs::metadata(&config.replica.data_file)
                .ok()
                .map(|metadata| metadata.len()),
            replica_status: state
                .statsd
                .gauge("tb_replica_status")
                .map(|(value, _)| value),
            replica_sync_stage: state
                .statsd
                .gauge("tb_replica_sync_stage")
                .map(|(value, _)| value),
            statsd_age_ms: state
                .statsd
                .last_packet_age()
                .map(|age| age.as_millis() as u64),
            probe_latency_ms: verdict.latency.map(|latency| latency.as_millis() as u64),
            probe_ok: verdict.ok,
            version_skew: verdict.version_skew,
        },
    }
}

async fn replica_control(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    axum::Extension(TokenName(token)): axum::Extension<TokenName>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let action = match action.as_str() {
        "start" => Action::Start,
        "stop" => Action::Stop,
        "restart" => Action::Restart,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "actions are start, stop and restart",
            );
        }
    };
    let request = match parse_body::<ControlRequest>(&headers, body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let outcome = control::act(&state, action, request.force).await;
    let (outcome_name, detail) = match &outcome {
        Ok(response) => (response.outcome.as_str(), response.detail.clone()),
        Err(ControlError::Busy) => ("busy", "another control operation is running".to_string()),
        Err(ControlError::Refused(why) | ControlError::Failed(why)) => (
            outcome.as_ref().err().map_or("", ControlError::outcome),
            why.clone(),
        ),
    };
    state.counters.record_control(action.as_str(), outcome_name);
    state.audit.record(&audit::Entry {
        token: &token,
        remote,
        action: action.as_str(),
        outcome: outcome_name,
        forced: request.force,
        detail: &detail,
    });
    match outcome {
        Ok(response) => axum::Json(response).into_response(),
        Err(ControlError::Busy) => error(StatusCode::CONFLICT, "busy", detail),
        Err(ControlError::Refused(_)) => error(StatusCode::CONFLICT, "refused", detail),
        Err(ControlError::Failed(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, "failed", detail),
    }
}

/// An optional JSON body: empty means defaults; otherwise it must be JSON of the exact shape.
#[allow(clippy::result_large_err)]
pub fn parse_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, Response> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        error(status, code, rejection.body_text())
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    serde_json::from_slice(&body).map_err(|parse_error| {
        let status = match parse_error.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        let code = if status == StatusCode::BAD_REQUEST {
            "malformed_json"
        } else {
            "invalid_body"
        };
        error(status, code, format!("request body: {parse_error}"))
    })
}

/// TLS settings from the config: server certificate and, optionally, required client certificates.
fn tls_acceptor(tls: &crate::config::Tls) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let read_certs = |path: &std::path::Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| anyhow::anyhow!("server.tls: {}: {error}", path.display()))
    };
    let certs = read_certs(&tls.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|error| {
        anyhow::anyhow!("server.tls.key_file: {}: {error}", tls.key_file.display())
    })?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &tls.client_ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca_file)? {
                roots.add(cert)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves until `shutdown` turns true, then lets in-flight requests finish (bounded).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = Arc::clone(&state.config);
    let tls = config.server.tls.as_ref().map(tls_acceptor).transpose()?;
    if tls.is_none() && !config.server.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.server.listen,
            "PLAIN HTTP ON A NON-LOOPBACK ADDRESS: bearer tokens cross the network in clear text. \
             Configure [server.tls]."
        );
    }
    let app = router(state);
    let connections = Arc::new(Semaphore::new(config.server.connections_max as usize));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: the API has no use for HTTP/2, and one protocol is one less attack surface.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        // Wait for a free connection slot before accepting: excess clients queue in the kernel.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit?,
            _ = shutdown.changed() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let http = http.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                Some(tls) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let connection = http.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(connection).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%remote, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => {
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the shutdown grace period");
    }
    Ok(())
}
