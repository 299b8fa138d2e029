//! The agent is the DogStatsD receiver of its replica (`--statsd=127.0.0.1:PORT`).
//!
//! TigerBeetle sends `tb.NAME:VALUE|g|#cluster:C,replica:R,k:v` lines every 10 s. Gauges keep
//! their latest value; counters (`|c`, reset by TigerBeetle at every emit) are summed so they
//! can be exposed as Prometheus counters.
//!
//! Readiness (and so the quorum guard of every peer) trusts these values, and any local process
//! can send UDP to loopback. So a datagram is accepted only when its source address is a UDP
//! socket owned by the replica's current process: TigerBeetle connects one UDP socket to the
//! agent at startup and sends every datagram from it (src/trace/statsd.zig), so its source
//! address is stable for the life of the process and no other socket can be bound to it. Its
//! lines must also carry this replica's `cluster` and `replica` tags. Every failure mode of the
//! check (a /proc file that cannot be read, a lookup budget spent) rejects: a spoofer can at worst
//! keep a replica looking unready, never make it look ready.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

pub mod origin;
pub mod parse;

use origin::{RejectReason, SourceCheck};
use parse::parse_line;
pub use parse::{Kind, Sample, SeriesKey};

/// Distinct series kept; TigerBeetle 0.16 emits a few hundred. Beyond this, new series are dropped.
pub const SERIES_MAX: usize = 4096;
/// A UDP datagram larger than this is not from TigerBeetle (it sends at most 1400 bytes).
const DATAGRAM_SIZE_MAX_BYTES: usize = 9000;

/// A series' latest sample and when it arrived: freshness is per series, so a datagram that
/// carries some metrics does not make others look fresh.
#[derive(Debug, Clone, Copy)]
struct Entry {
    sample: Sample,
    received: Instant,
}

#[derive(Default)]
struct State {
    /// The replica process whose datagrams are accepted; None while none runs.
    replica_pid: Option<u32>,
    series: BTreeMap<SeriesKey, Entry>,
    packets_total: u64,
    dropped_total: u64,
    rejected_total: [u64; RejectReason::ALL.len()],
    /// The latest rejection since the current replica process started, for readiness details.
    last_rejection: Option<(RejectReason, SocketAddr)>,
    last_packet: Option<(Instant, SystemTime)>,
}

/// The latest values received from the replica.
pub struct Store {
    /// `cluster` tag TigerBeetle writes: the cluster id as 32 lowercase hex digits.
    cluster_tag: String,
    /// `replica` tag: the replica index in decimal.
    replica_tag: String,
    state: Mutex<State>,
    /// Bumped on every change a scrape could see (the /metrics cache key).
    generation: AtomicU64,
}

pub struct Snapshot {
    pub series: Vec<(SeriesKey, Sample)>,
    pub packets_total: u64,
    pub dropped_total: u64,
    pub rejected_total: Vec<(RejectReason, u64)>,
    pub last_packet_unix_seconds: Option<f64>,
}

impl Store {
    pub fn new(cluster_id: u128, replica_index: u8) -> Store {
        Store {
            cluster_tag: format!("{cluster_id:032x}"),
            replica_tag: replica_index.to_string(),
            state: Mutex::new(State::default()),
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A new replica process (or none): forgets every value, so readiness never relies on what a
    /// previous process reported, and from now on accepts datagrams only from `pid`'s sockets.
    pub fn set_replica_process(&self, pid: Option<u32>) {
        let mut state = self.state.lock().expect("not poisoned");
        state.replica_pid = pid;
        state.series.clear();
        state.last_packet = None;
        state.last_rejection = None;
        drop(state);
        self.changed();
    }

    pub fn replica_pid(&self) -> Option<u32> {
        self.state.lock().expect("not poisoned").replica_pid
    }

    /// The latest gauge value of `name` (a Prometheus name such as `tb_replica_status`) and the
    /// age of that series.
    pub fn gauge(&self, name: &str) -> Option<(i64, Duration)> {
        let state = self.state.lock().expect("not poisoned");
        state
            .series
            .iter()
            .find(|(key, entry)| key.name == name && entry.sample.kind == Kind::Gauge)
            .map(|(_, entry)| (entry.sample.value as i64, entry.received.elapsed()))
    }

    /// Age of the latest accepted datagram.
    pub fn last_packet_age(&self) -> Option<Duration> {
        let state = self.state.lock().expect("not poisoned");
        state.last_packet.map(|(received, _)| received.elapsed())
    }

    /// The latest rejection since the replica process started, and the total rejected so far.
    pub fn last_rejection(&self) -> Option<(RejectReason, SocketAddr, u64)> {
        let state = self.state.lock().expect("not poisoned");
        let (reason, from) = state.last_rejection?;
        Some((reason, from, state.rejected_total.iter().sum()))
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.state.lock().expect("not poisoned");
        Snapshot {
            series: state
                .series
                .iter()
                .map(|(key, entry)| (key.clone(), entry.sample))
                .collect(),
            packets_total: state.packets_total,
            dropped_total: state.dropped_total,
            rejected_total: RejectReason::ALL
                .iter()
                .map(|reason| (*reason, state.rejected_total[reason.index()]))
                .collect(),
            last_packet_unix_seconds: state.last_packet.map(|(_, wall)| {
                wall.duration_since(UNIX_EPOCH)
                    .map_or(0.0, |duration| duration.as_secs_f64())
            }),
        }
    }

    pub fn reject(&self, reason: RejectReason, from: SocketAddr) {
        let mut state = self.state.lock().expect("not poisoned");
        state.rejected_total[reason.index()] += 1;
        state.last_rejection = Some((reason, from));
        drop(state);
        self.changed();
    }

    /// Ingests a datagram verified to come from a socket of process `pid`. Refused if `pid` is
    /// no longer the replica's process (it was replaced between the check and now) or if a line
    /// carries another cluster's or replica's tags; then nothing of it is kept.
    pub fn ingest(&self, pid: u32, from: SocketAddr, datagram: &[u8]) -> Result<(), RejectReason> {
        let text = String::from_utf8_lossy(datagram);
        let mut parsed = Vec::new();
        let mut malformed: u64 = 0;
        for line in text.split('\n').filter(|line| !line.is_empty()) {
            match parse_line(line) {
                Some((key, sample)) => {
                    if !self.tags_match(&key) {
                        self.reject(RejectReason::WrongTags, from);
                        return Err(RejectReason::WrongTags);
                    }
                    parsed.push((key, sample));
                }
                None => malformed += 1,
            }
        }
        let mut state = self.state.lock().expect("not poisoned");
        if state.replica_pid != Some(pid) {
            drop(state);
            self.reject(RejectReason::NotReplicaSocket, from);
            return Err(RejectReason::NotReplicaSocket);
        }
        let now = Instant::now();
        state.packets_total += 1;
        state.dropped_total += malformed;
        state.last_packet = Some((now, SystemTime::now()));
        for (key, sample) in parsed {
            let series_count = state.series.len();
            match state.series.get_mut(&key) {
                Some(existing) if sample.kind == Kind::Counter => {
                    existing.sample.value += sample.value;
                    existing.received = now;
                }
                Some(existing) => {
                    *existing = Entry {
                        sample,
                        received: now,
                    }
                }
                None if series_count >= SERIES_MAX => state.dropped_total += 1,
                None => {
                    state.series.insert(
                        key,
                        Entry {
                            sample,
                            received: now,
                        },
                    );
                }
            }
        }
        drop(state);
        self.changed();
        Ok(())
    }

    fn tags_match(&self, key: &SeriesKey) -> bool {
        let tag = |name: &str| {
            key.labels
                .iter()
                .find(|(label, _)| label == name)
                .map(|(_, value)| value.as_str())
        };
        tag("cluster") == Some(self.cluster_tag.as_str())
            && tag("replica") == Some(self.replica_tag.as_str())
    }
}

/// Receives datagrams until the task is dropped.
pub async fn receive(socket: UdpSocket, store: std::sync::Arc<Store>) {
    let mut buffer = vec![0u8; DATAGRAM_SIZE_MAX_BYTES];
    let mut sources = SourceCheck::default();
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((size, from)) => {
                if let Err(reason) = accept(&store, &mut sources, from, &buffer[..size]) {
                    tracing::debug!(%from, reason = reason.as_str(), "statsd datagram rejected");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "statsd receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts one datagram from `from` into `store` if it comes from the replica's current process
/// and carries its tags; counts it as rejected otherwise.
pub fn accept(
    store: &Store,
    sources: &mut SourceCheck,
    from: SocketAddr,
    datagram: &[u8],
) -> Result<(), RejectReason> {
    let checked = if !from.ip().is_loopback() {
        Err(RejectReason::NotLoopback)
    } else {
        match store.replica_pid() {
            None => Err(RejectReason::NoReplica),
            Some(pid) => sources.check(pid, from).map(|()| pid),
        }
    };
    match checked {
        // ingest counts its own rejections (tags, a pid replaced meanwhile).
        Ok(pid) => store.ingest(pid, from, datagram),
        Err(reason) => {
            store.reject(reason, from);
            Err(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::origin::{LOOKUPS_PER_SECOND_MAX, parse_proc_net_udp_line, socket_owned_by};
    use super::*;
    use std::net::Ipv6Addr;

    const CLUSTER_TAG: &str = "0000000000000000000000000000002a";

    fn line(name_value_kind: &str) -> String {
        format!("{name_value_kind}|#cluster:{CLUSTER_TAG},replica:1")
    }

    fn store_for(pid: u32) -> Store {
        let store = Store::new(42, 1);
        store.set_replica_process(Some(pid));
        store
    }

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn parses_tigerbeetle_lines() {
        let (key, sample) = parse_line(&line("tb.replica_status:0|g")).unwrap();
        assert_eq!(key.name, "tb_replica_status");
        assert_eq!(
            key.labels,
            vec![
                ("cluster".into(), CLUSTER_TAG.into()),
                ("replica".into(), "1".into())
            ]
        );
        assert_eq!(sample.kind, Kind::Gauge);
        let (key, sample) = parse_line(
            "tb.replica_request_us.count:7|c|#cluster:00,replica:0,operation:lookup_accounts",
        )
        .unwrap();
        assert_eq!(key.name, "tb_replica_request_us_count_total");
        assert_eq!(sample.value, 7.0);
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("tb.x:NaN|g").is_none());
        assert!(parse_line("tb.x:1|h").is_none());
    }

    #[test]
    fn counters_accumulate_gauges_replace_and_a_new_process_forgets() {
        let pid = 4242;
        let store = store_for(pid);
        let from = loopback(40000);
        let datagram = format!("{}\n{}\n", line("tb.a:1|c"), line("tb.s:2|g"));
        store.ingest(pid, from, datagram.as_bytes()).unwrap();
        let datagram = format!("{}\n{}\nbad-line\n", line("tb.a:2|c"), line("tb.s:0|g"));
        store.ingest(pid, from, datagram.as_bytes()).unwrap();
        let snapshot = store.snapshot();
        assert_eq!(snapshot.packets_total, 2);
        assert_eq!(snapshot.dropped_total, 1);
        let value = |name: &str| {
            snapshot
                .series
                .iter()
                .find(|(key, _)| key.name == name)
                .map(|(_, sample)| sample.value)
        };
        assert_eq!(value("tb_a_total"), Some(3.0));
        assert_eq!(value("tb_s"), Some(0.0));
        assert_eq!(store.gauge("tb_s").map(|(value, _)| value), Some(0));
        let generation = store.generation();
        store.set_replica_process(Some(pid + 1));
        assert!(store.generation() > generation);
        assert!(store.gauge("tb_s").is_none());
        // The previous process's datagrams no longer count.
        let datagram = line("tb.s:0|g");
        assert_eq!(
            store.ingest(pid, from, datagram.as_bytes()),
            Err(RejectReason::NotReplicaSocket)
        );
        assert!(store.gauge("tb_s").is_none());
    }

    #[test]
    fn other_clusters_and_replicas_and_untagged_lines_are_rejected_whole() {
        let pid = 4242;
        let store = store_for(pid);
        let from = loopback(40000);
        for bad in [
            "tb.replica_status:0|g|#cluster:0000000000000000000000000000002b,replica:1",
            "tb.replica_status:0|g|#cluster:0000000000000000000000000000002a,replica:2",
            "tb.replica_status:0|g|#cluster:2a,replica:1",
            "tb.replica_status:0|g|#replica:1",
            "tb.replica_status:0|g",
        ] {
            // A good line before the bad one is not kept either.
            let datagram = format!("{}\n{bad}\n", line("tb.replica_sync_stage:0|g"));
            assert_eq!(
                store.ingest(pid, from, datagram.as_bytes()),
                Err(RejectReason::WrongTags),
                "{bad}"
            );
        }
        assert!(store.gauge("tb_replica_status").is_none());
        assert!(store.gauge("tb_replica_sync_stage").is_none());
        let snapshot = store.snapshot();
        assert_eq!(snapshot.packets_total, 0);
        let wrong_tags = snapshot
            .rejected_total
            .iter()
            .find(|(reason, _)| *reason == RejectReason::WrongTags)
            .map(|(_, count)| *count);
        assert_eq!(wrong_tags, Some(5));
    }

    #[test]
    fn freshness_is_per_series() {
        let pid = 4242;
        let store = store_for(pid);
        let from = loopback(40000);
        store
            .ingest(pid, from, line("tb.replica_status:0|g").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        store
            .ingest(pid, from, line("tb.other:1|g").as_bytes())
            .unwrap();
        let (_, status_age) = store.gauge("tb_replica_status").unwrap();
        let (_, other_age) = store.gauge("tb_other").unwrap();
        assert!(status_age >= Duration::from_millis(200), "{status_age:?}");
        assert!(other_age < Duration::from_millis(200), "{other_age:?}");
        assert!(store.last_packet_age().unwrap() < Duration::from_millis(200));
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_proc_net_udp() {
        let v4 = "  917: 0100007F:04D2 0100007F:1FBD 01 00000000:00000000 00:00000000 00000000 \
                  0        0 123456 2 0000000000000000 0";
        assert_eq!(parse_proc_net_udp_line(v4), Some((loopback(1234), 123456)));
        let v6 = "  917: 00000000000000000000000001000000:04D2 \
                  00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 \
                  00000000     0        0 654321 2 0000000000000000 0";
        assert_eq!(
            parse_proc_net_udp_line(v6),
            Some((SocketAddr::from((Ipv6Addr::LOCALHOST, 1234)), 654321))
        );
        assert_eq!(
            parse_proc_net_udp_line("  sl  local_address rem_address"),
            None
        );
    }

    /// A process that is not this one and holds no UDP socket: a stand-in for "another local
    /// process".
    struct OtherProcess(std::process::Child);

    impl OtherProcess {
        fn start() -> OtherProcess {
            OtherProcess(
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap(),
            )
        }
        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for OtherProcess {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn only_sockets_of_the_replica_process_are_accepted() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let replica_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        replica_socket
            .connect(receiver.local_addr().unwrap())
            .unwrap();
        let source = replica_socket.local_addr().unwrap();
        let own_pid = std::process::id();
        let other = OtherProcess::start();

        // The socket's address is this process's, not another's.
        assert!(socket_owned_by(own_pid, source).unwrap());
        assert!(!socket_owned_by(other.pid(), source).unwrap());
        // Same port on another loopback address: not the replica's socket.
        let elsewhere = SocketAddr::from(([127, 0, 0, 2], source.port()));
        assert!(!socket_owned_by(own_pid, elsewhere).unwrap());

        let datagram = line("tb.replica_status:0|g");
        // The replica is this process: accepted, then served from the cache.
        let store = store_for(own_pid);
        let mut sources = SourceCheck::default();
        for _ in 0..3 {
            accept(&store, &mut sources, source, datagram.as_bytes()).unwrap();
        }
        assert_eq!(sources.accepted, Some(source));
        assert_eq!(store.snapshot().packets_total, 3);

        // The replica is another process: the same datagrams are rejected and change nothing.
        store.set_replica_process(Some(other.pid()));
        let lookups_before = sources.budget_used;
        for _ in 0..3 {
            assert_eq!(
                accept(&store, &mut sources, source, datagram.as_bytes()),
                Err(RejectReason::NotReplicaSocket)
            );
        }
        assert!(store.gauge("tb_replica_status").is_none());
        assert_eq!(sources.accepted, None);
        // Remembered as rejected: one lookup, not one per datagram.
        assert_eq!(sources.budget_used, lookups_before + 1);
        let (reason, from, total) = store.last_rejection().unwrap();
        assert_eq!(
            (reason, from, total),
            (RejectReason::NotReplicaSocket, source, 3)
        );

        // No replica process, or a sender off loopback: rejected before any lookup.
        store.set_replica_process(None);
        assert_eq!(
            accept(&store, &mut sources, source, datagram.as_bytes()),
            Err(RejectReason::NoReplica)
        );
        store.set_replica_process(Some(own_pid));
        assert_eq!(
            accept(
                &store,
                &mut sources,
                SocketAddr::from(([192, 0, 2, 1], source.port())),
                datagram.as_bytes()
            ),
            Err(RejectReason::NotLoopback)
        );
    }

    #[test]
    fn lookups_per_second_are_bounded() {
        let other = OtherProcess::start();
        let mut sources = SourceCheck::default();
        let mut owner_unknown = 0;
        for port in 0..(LOOKUPS_PER_SECOND_MAX as u16 + 10) {
            match sources.check(other.pid(), loopback(50000 + port)) {
                Err(RejectReason::NotReplicaSocket) => {}
                Err(RejectReason::OwnerUnknown) => owner_unknown += 1,
                result => panic!("{result:?}"),
            }
        }
        assert_eq!(owner_unknown, 10);
    }
}
