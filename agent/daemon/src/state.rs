//! Everything the agent's tasks and handlers share.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::host::HostMonitor;
use crate::metrics::cache::Counters;
use crate::peers::Peers;
use crate::probe::Prober;
use crate::replica::Replica;
use crate::statsd;
use tb_proto::tigerbeetle::BinaryIdentity;

pub struct AgentState {
    pub config: Arc<Config>,
    pub started: Instant,
    pub auth: Authenticator,
    pub audit: AuditLog,
    pub counters: Counters,
    /// The encoded /metrics body, re-encoded only when something changed.
    pub metrics_cache: crate::metrics::cache::Cache,
    pub statsd: Arc<statsd::Store>,
    pub prober: Arc<Prober>,
    /// The one TigerBeetle client of the agent (probe and lease).
    pub cluster_client: Arc<crate::cluster_client::ClusterClient>,
    /// The maintenance lease: this agent's view of it and the leases it granted.
    pub lease: crate::lease::LeaseService,
    pub host: Arc<HostMonitor>,
    /// The last firewall record read (health.firewall_record).
    pub firewall: crate::firewall::Monitor,
    pub replica: Arc<Replica>,
    pub peers: Option<Arc<Peers>>,
    /// One operation on the replica at a time, one per backup; a second one gets 409 busy.
    pub locks: crate::ops::Locks,
    /// The operations' durations, parsed once from the config.
    pub timeouts: crate::ops::Timeouts,
    pub jobs: crate::ops::jobs::Jobs,
    /// What the backup scheduler plans and what became of its last run.
    pub backup_schedule: crate::ops::schedule_status::ScheduleStatus,
    /// `tigerbeetle version` and the binary's SHA-256, kept current in the background.
    pub binary_identity: RwLock<Option<BinaryIdentity>>,
}

impl AgentState {
    pub fn new(config: Config) -> anyhow::Result<Arc<AgentState>> {
        let config = Arc::new(config);
        let statsd = Arc::new(statsd::Store::new(
            config.cluster_id(),
            config.replica.index,
        ));
        let cluster_client = Arc::new(crate::cluster_client::ClusterClient::new(
            config.cluster_id(),
            config.replica.addresses.join(","),
        ));
        let peers = Peers::new(&config)?.map(Arc::new);
        Ok(Arc::new(AgentState {
            auth: Authenticator::new(&config.tokens, config.server.auth_failures_per_minute_max),
            audit: AuditLog::open(config.server.audit_log.as_deref())?,
            counters: Counters::default(),
            metrics_cache: Default::default(),
            prober: Arc::new(Prober::default()),
            lease: crate::lease::LeaseService::new(
                &config,
                Arc::clone(&cluster_client),
                peers.clone(),
            ),
            cluster_client,
            host: Arc::new(HostMonitor::default()),
            firewall: Default::default(),
            replica: Replica::new(Arc::clone(&config), Arc::clone(&statsd)),
            peers,
            statsd,
            locks: Default::default(),
            timeouts: crate::ops::Timeouts::from_config(&config),
            jobs: Default::default(),
            backup_schedule: crate::ops::schedule_status::ScheduleStatus::new(
                config
                    .backup
                    .as_ref()
                    .and_then(|backup| backup.schedule.as_ref())
                    .map(|schedule| schedule.expression().to_string()),
            ),
            binary_identity: RwLock::new(None),
            started: Instant::now(),
            config,
        }))
    }
}

impl AgentState {
    pub fn binary_identity(&self) -> Option<BinaryIdentity> {
        self.binary_identity.read().expect("not poisoned").clone()
    }
}
