//! The listener: a bounded accept loop with optional TLS (and client-certificate verification),
//! per-address connection slots, header timeouts and a graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::config::Config;

/// How long in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// TLS settings from the config: server certificate and, optionally, required client certificates.
fn tls_acceptor(tls: &crate::config::Tls) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let read_certs = |field: &str, path: &std::path::Path| {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| anyhow::anyhow!("{field}: {}: {error}", path.display()))?;
        // rustls would only say "no certificates" at the first handshake, naming no file.
        anyhow::ensure!(
            !certs.is_empty(),
            "{field}: {}: no PEM certificate (BEGIN CERTIFICATE) in the file",
            path.display()
        );
        Ok(certs)
    };
    let certs = read_certs("server.tls.cert_file", &tls.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|error| {
        anyhow::anyhow!("server.tls.key_file: {}: {error}", tls.key_file.display())
    })?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &tls.client_ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("server.tls.client_ca_file", ca_file)? {
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

/// What every connection is served with.
struct Connection {
    app: Router,
    http: http1::Builder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_read_timeout: Duration,
}

impl Connection {
    /// Serves one accepted connection in a task of its own; its slots (`held`) are given back
    /// when it ends, the address's before the global one (tuple fields drop in order).
    fn spawn(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        watcher: Watcher,
        held: (AddressSlot, OwnedSemaphorePermit),
    ) {
        let service = self.app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let http = self.http.clone();
        let tls = self.tls.clone();
        let header_read_timeout = self.header_read_timeout;
        tokio::spawn(async move {
            let _held = held;
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
}

/// The bound listener with everything it serves with, built before the agent reports itself
/// ready: a certificate or key that cannot be read fails the start, not the first connection.
pub struct Server {
    listener: TcpListener,
    connection: Connection,
    connections: Arc<Semaphore>,
    address_slots: Arc<AddressSlots>,
}

/// Reads the TLS material and builds the connection settings for `app` on `listener`.
pub fn prepare(listener: TcpListener, app: Router, config: &Config) -> anyhow::Result<Server> {
    let tls = config.server.tls.as_ref().map(tls_acceptor).transpose()?;
    if tls.is_none() && !config.server.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.server.listen,
            "PLAIN HTTP ON A NON-LOOPBACK ADDRESS: bearer tokens cross the network in clear text. \
             Configure [server.tls]."
        );
    }
    let connections = Arc::new(Semaphore::new(config.server.connections_max as usize));
    let address_slots = AddressSlots::new(config.server.connections_per_address_max());
    // A slow client (slowloris: headers a byte at a time, or nothing at all) holds its slot at
    // most this long; the same bound covers the TLS handshake and idle keep-alive connections.
    let header_read_timeout = Duration::from_millis(config.server.header_read_timeout_ms);
    // HTTP/1.1 only: the API has no use for HTTP/2, and one protocol is one less attack surface.
    let mut http = http1::Builder::new();
    // The header timeout only runs with a timer.
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = Connection {
        app,
        http,
        tls,
        header_read_timeout,
    };
    Ok(Server {
        listener,
        connection,
        connections,
        address_slots,
    })
}

impl Server {
    /// Serves until `shutdown` turns true, then lets in-flight requests finish (bounded).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let Server {
            listener,
            connection,
            connections,
            address_slots,
        } = self;
        let graceful = GracefulShutdown::new();
        serve_until(
            &listener,
            &connection,
            &connections,
            &address_slots,
            &graceful,
            &mut shutdown,
        )
        .await?;
        drop(listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within the shutdown grace period");
        }
        Ok(())
    }
}

async fn serve_until(
    listener: &TcpListener,
    connection: &Connection,
    connections: &Arc<Semaphore>,
    address_slots: &Arc<AddressSlots>,
    graceful: &GracefulShutdown,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        // Wait for a free connection slot before accepting: excess clients queue in the kernel.
        let permit = tokio::select! {
            permit = Arc::clone(connections).acquire_owned() => permit?,
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
        connection.spawn(stream, remote, graceful.watcher(), (address_slot, permit));
    }
    Ok(())
}
