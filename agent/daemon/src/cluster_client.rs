//! The agent's one long-lived TigerBeetle client, shared by the probe and the lease.
//!
//! One client per agent: a client opened per request would churn the cluster's client sessions
//! (64, least recently used evicted) and could evict applications. The probe replaces the client
//! when the cluster evicted it or it got stuck; every user holds an `Arc` of the client it took,
//! so a replaced one lives until its last request ends.

use std::sync::{Arc, Mutex};

use tigerbeetle_unofficial::Client;
use tigerbeetle_unofficial::error::NewClientError;

/// The TigerBeetle client library refused to make a client (bad addresses, no memory).
#[derive(Debug, thiserror::Error)]
#[error("cannot create the TigerBeetle client: {0}")]
pub struct CannotCreate(#[source] NewClientError);

/// A client that is dropped on a thread of its own: dropping joins the client's I/O thread,
/// which must not block the async runtime.
pub struct Shared(Option<Client>);

impl std::ops::Deref for Shared {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            std::thread::spawn(move || drop(client));
        }
    }
}

pub struct ClusterClient {
    cluster_id: u128,
    addresses: String,
    slot: Mutex<Option<Arc<Shared>>>,
}

impl ClusterClient {
    pub fn new(cluster_id: u128, addresses: String) -> ClusterClient {
        ClusterClient {
            cluster_id,
            addresses,
            slot: Mutex::new(None),
        }
    }

    /// The current client, made first when there is none.
    pub fn get(&self) -> Result<Arc<Shared>, CannotCreate> {
        let mut slot = self.slot.lock().expect("not poisoned");
        if let Some(client) = slot.as_ref() {
            return Ok(Arc::clone(client));
        }
        let client = Client::new(self.cluster_id, &self.addresses).map_err(CannotCreate)?;
        let client = Arc::new(Shared(Some(client)));
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Stops handing out `client` (evicted, or stuck): the next `get` makes a new one.
    pub fn discard(&self, client: &Arc<Shared>) {
        let mut slot = self.slot.lock().expect("not poisoned");
        if slot.as_ref().is_some_and(|held| Arc::ptr_eq(held, client)) {
            *slot = None;
        }
    }
}
