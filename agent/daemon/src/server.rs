//! The HTTP API: routes, authentication, body limits, timeouts, and a bounded accept loop with
//! optional TLS (and client-certificate verification).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::api::{ControlRequest, ControlResponse, ErrorBody, JobKind, StatusReport};
use crate::auth::{Scope, Verdict};
use crate::ops::{self, Answer, AppError, Caller, JsonBody, Lock, Spec, Wait};
use crate::state::AgentState;
use crate::{api, backup, control, health};
use tb_proto::endpoints::{
    Duration as EndpointDuration, Endpoint, Method as EndpointMethod, ReplicaAction,
};
use tb_proto::tigerbeetle::Release;

/// How long in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

type AppState = Arc<AgentState>;

/// The router, built from the endpoint table in `tb_proto::endpoints`: every entry gets its
/// handler, its scope check and the timeout of its duration class, so tbctl, the OpenAPI test and
/// the server cannot disagree on a route.
pub fn router(state: AppState) -> Router {
    let config = &state.config;
    let quick_timeout = Duration::from_millis(config.server.request_timeout_ms);
    // Operations run as tasks of their own and their handlers answer 202 once
    // `answer_wait` has passed, so this is only a backstop that never cuts an operation short.
    let slow_timeout = state.timeouts.answer_wait + Duration::from_secs(10);
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let mut route = handler(endpoint);
        if !endpoint.scopes().is_empty() {
            route = route.route_layer(axum::middleware::from_fn_with_state(
                (Arc::clone(&state), endpoint.scopes()),
                require_scope,
            ));
        }
        let timeout = match endpoint.duration() {
            EndpointDuration::Quick => quick_timeout,
            EndpointDuration::Slow => slow_timeout,
        };
        // Axum merges the method routers of one path (`GET` and `POST /v1/backups`).
        router = router.route(
            endpoint.path(),
            route.layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            )),
        );
    }
    router
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

fn handler(endpoint: Endpoint) -> MethodRouter<AppState> {
    let method = method_filter(endpoint);
    match endpoint {
        // Liveness says only that the agent runs (like Patroni's /liveness): no token needed.
        Endpoint::HealthLive => on(method, live),
        Endpoint::HealthReady => on(method, ready),
        Endpoint::Status => on(method, status),
        Endpoint::Metrics => on(method, metrics_text),
        Endpoint::ReplicaControl => on(method, replica_control),
        Endpoint::ReplicaRecover
        | Endpoint::BackupList
        | Endpoint::BackupCreate
        | Endpoint::BackupShow
        | Endpoint::BackupDelete
        | Endpoint::BackupVerify
        | Endpoint::BackupFile
        | Endpoint::BackupRestore
        | Endpoint::Job => backup::routes::handler(endpoint),
        Endpoint::LeaseShow
        | Endpoint::LeaseInit
        | Endpoint::LeaseAcquire
        | Endpoint::LeaseRenew
        | Endpoint::LeaseRelease
        | Endpoint::LeaseBreak => crate::lease::routes::handler(endpoint),
    }
}

/// The endpoint's method as axum filters it: the table is the one place a method is named.
pub fn method_filter(endpoint: Endpoint) -> MethodFilter {
    match endpoint.method() {
        EndpointMethod::Get => MethodFilter::GET,
        EndpointMethod::Post => MethodFilter::POST,
        EndpointMethod::Delete => MethodFilter::DELETE,
    }
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

async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = crate::metrics::Format::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            // Caches between the scraper and the agent must not serve one format for the other.
            (header::VARY, "Accept"),
        ],
        state.metrics_cache.body_as(&state, format).await,
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
            replica_view: state
                .statsd
                .gauge("tb_replica_view")
                .map(|(value, _)| value),
            running_release: state
                .statsd
                .gauge("tb_release")
                .and_then(|(value, _)| Release::from_packed(value))
                .map(|release| release.to_string()),
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
    caller: Caller,
    Path(action): Path<String>,
    JsonBody(request): JsonBody<ControlRequest>,
) -> Result<Answer<ControlResponse>, AppError> {
    let action = match ReplicaAction::parse(&action) {
        Some(ReplicaAction::Start) => JobKind::Start,
        Some(ReplicaAction::Stop) => JobKind::Stop,
        Some(ReplicaAction::Restart) => JobKind::Restart,
        None => {
            return Err(AppError::NotFound(
                "actions are start, stop and restart".into(),
            ));
        }
    };
    ops::launch(
        &state,
        caller,
        Spec {
            kind: action,
            forced: request.force,
            lock: Lock::Replica,
            wait: Wait::Finish,
            backup_id: None,
        },
        move |job| control::act(job, action, request.lease()),
    )
    .await
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

/// Connections held per client address, so that one address cannot take every slot of the
/// global cap (slowloris from one host, a client leaking connections).
struct AddressSlots {
    per_address_max: u32,
    held: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection's place in `AddressSlots`, given back when the connection ends.
struct AddressSlot {
    slots: Arc<AddressSlots>,
    address: IpAddr,
}

impl AddressSlots {
    fn new(per_address_max: u32) -> Arc<AddressSlots> {
        assert!(per_address_max > 0);
        Arc::new(AddressSlots {
            per_address_max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// IPv4 (also when mapped into IPv6) per address; IPv6 per /64, since one host usually
    /// holds a whole /64 and could otherwise use a fresh address per connection.
    fn key(address: IpAddr) -> IpAddr {
        match address.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
            v4 => v4,
        }
    }

    fn try_acquire(self: &Arc<Self>, remote: IpAddr) -> Option<AddressSlot> {
        let address = AddressSlots::key(remote);
        let mut held = self.held.lock().expect("not poisoned");
        let count = held.entry(address).or_insert(0);
        if *count >= self.per_address_max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: Arc::clone(self),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().expect("not poisoned");
        let count = held
            .get_mut(&self.address)
            .expect("a held slot has an entry");
        assert!(*count > 0);
        *count -= 1;
        if *count == 0 {
            // Entries exist only for addresses with open connections: the table stays bounded
            // by the global connection cap.
            held.remove(&self.address);
        }
    }
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
    let address_slots = AddressSlots::new(config.server.connections_per_address_max());
    // A slow client (slowloris: headers a byte at a time, or nothing at all) holds its slot at
    // most this long; the same bound covers the TLS handshake and idle keep-alive connections.
    let header_read_timeout = Duration::from_millis(config.server.header_read_timeout_ms);
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: the API has no use for HTTP/2, and one protocol is one less attack surface.
    let mut http = hyper::server::conn::http1::Builder::new();
    // The header timeout only runs with a timer.
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
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
        let Some(address_slot) = address_slots.try_acquire(remote.ip()) else {
            // Closed at once, which frees the global slot: other addresses keep being served.
            // Debug level: a flood would otherwise flood the log too.
            tracing::debug!(%remote, "connection closed: too many from this address");
            continue;
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
            let _address_slot = address_slot;
            let result = match tls {
                Some(tls) => {
                    match tokio::time::timeout(header_read_timeout, tls.accept(stream)).await {
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
