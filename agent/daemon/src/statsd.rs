//! The agent is the DogStatsD receiver of its replica (`--statsd=127.0.0.1:PORT`).
//!
//! TigerBeetle sends `tb.NAME:VALUE|g|#cluster:C,replica:R,k:v` lines every 10 s. Gauges keep
//! their latest value; counters (`|c`, reset by TigerBeetle at every emit) are summed so they
//! can be exposed as Prometheus counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

/// Distinct series kept; TigerBeetle 0.16 emits a few hundred. Beyond this, new series are dropped.
pub const SERIES_MAX: usize = 4096;
/// A UDP datagram larger than this is not from TigerBeetle (it sends at most 1400 bytes).
const DATAGRAM_SIZE_MAX_BYTES: usize = 9000;
const LABELS_MAX: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Gauge,
    Counter,
}

/// A series key: Prometheus metric name and sorted labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub kind: Kind,
    pub value: f64,
}

#[derive(Default)]
struct State {
    series: BTreeMap<SeriesKey, Sample>,
    packets_total: u64,
    dropped_total: u64,
    last_packet: Option<(Instant, SystemTime)>,
}

/// The latest values received from the replica.
#[derive(Default)]
pub struct Store {
    state: Mutex<State>,
}

pub struct Snapshot {
    pub series: Vec<(SeriesKey, Sample)>,
    pub packets_total: u64,
    pub dropped_total: u64,
    pub last_packet_unix_seconds: Option<f64>,
}

impl Store {
    /// Forgets all values: called when a new replica process starts, so readiness never relies on
    /// what a previous process reported.
    pub fn reset(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        state.series.clear();
        state.last_packet = None;
    }

    /// The latest gauge value of `name` (a Prometheus name such as `tb_replica_status`) and its age.
    pub fn gauge(&self, name: &str) -> Option<(i64, std::time::Duration)> {
        let state = self.state.lock().expect("not poisoned");
        let (received, _) = state.last_packet?;
        state
            .series
            .iter()
            .find(|(key, sample)| key.name == name && sample.kind == Kind::Gauge)
            .map(|(_, sample)| (sample.value as i64, received.elapsed()))
    }

    pub fn last_packet_age(&self) -> Option<std::time::Duration> {
        let state = self.state.lock().expect("not poisoned");
        state.last_packet.map(|(received, _)| received.elapsed())
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.state.lock().expect("not poisoned");
        Snapshot {
            series: state
                .series
                .iter()
                .map(|(key, sample)| (key.clone(), *sample))
                .collect(),
            packets_total: state.packets_total,
            dropped_total: state.dropped_total,
            last_packet_unix_seconds: state.last_packet.map(|(_, wall)| {
                wall.duration_since(UNIX_EPOCH)
                    .map_or(0.0, |duration| duration.as_secs_f64())
            }),
        }
    }

    pub fn ingest(&self, datagram: &[u8]) {
        let text = String::from_utf8_lossy(datagram);
        let mut state = self.state.lock().expect("not poisoned");
        state.packets_total += 1;
        state.last_packet = Some((Instant::now(), SystemTime::now()));
        for line in text.split('\n').filter(|line| !line.is_empty()) {
            let Some((key, sample)) = parse_line(line) else {
                state.dropped_total += 1;
                continue;
            };
            let series_count = state.series.len();
            match state.series.get_mut(&key) {
                Some(existing) if sample.kind == Kind::Counter => existing.value += sample.value,
                Some(existing) => *existing = sample,
                None if series_count >= SERIES_MAX => state.dropped_total += 1,
                None => {
                    state.series.insert(key, sample);
                }
            }
        }
    }
}

/// Parses one DogStatsD line into a Prometheus series, or None if it is malformed.
pub fn parse_line(line: &str) -> Option<(SeriesKey, Sample)> {
    let mut sections = line.split('|');
    let (name, value) = sections.next()?.split_once(':')?;
    let kind = match sections.next()? {
        "g" => Kind::Gauge,
        "c" => Kind::Counter,
        _ => return None,
    };
    let value: f64 = value.parse().ok().filter(|value: &f64| value.is_finite())?;
    let mut labels = Vec::new();
    for section in sections {
        let Some(tags) = section.strip_prefix('#') else {
            continue; // Sample rates (`@0.5`) are not used by TigerBeetle.
        };
        for tag in tags.split(',').filter(|tag| !tag.is_empty()) {
            let (key, value) = tag.split_once(':').unwrap_or((tag, ""));
            labels.push((sanitize_name(key)?, value.to_string()));
        }
    }
    if labels.len() > LABELS_MAX {
        return None;
    }
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    let mut name = sanitize_name(name)?;
    if kind == Kind::Counter {
        name.push_str("_total");
    }
    Some((SeriesKey { name, labels }, Sample { kind, value }))
}

/// `tb.replica_request_us.max` → `tb_replica_request_us_max`; None if nothing valid remains.
fn sanitize_name(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > 200 {
        return None;
    }
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    Some(name)
}

/// Receives datagrams until the task is dropped.
pub async fn receive(socket: UdpSocket, store: std::sync::Arc<Store>) {
    let mut buffer = vec![0u8; DATAGRAM_SIZE_MAX_BYTES];
    loop {
        match socket.recv_from(&mut buffer).await {
            // Only our own replica on loopback may feed readiness.
            Ok((size, from)) if from.ip().is_loopback() => store.ingest(&buffer[..size]),
            Ok((_, from)) => {
                tracing::warn!(%from, "statsd datagram from a non-loopback address ignored")
            }
            Err(error) => {
                tracing::warn!(%error, "statsd receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tigerbeetle_lines() {
        let (key, sample) =
            parse_line("tb.replica_status:0|g|#cluster:0000000000000000000000000000002a,replica:1")
                .unwrap();
        assert_eq!(key.name, "tb_replica_status");
        assert_eq!(
            key.labels,
            vec![
                ("cluster".into(), "0000000000000000000000000000002a".into()),
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
    fn counters_accumulate_gauges_replace_and_reset_forgets() {
        let store = Store::default();
        store.ingest(b"tb.a:1|c|#replica:0\ntb.s:2|g|#replica:0\n");
        store.ingest(b"tb.a:2|c|#replica:0\ntb.s:0|g|#replica:0\nbad-line\n");
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
        store.reset();
        assert!(store.gauge("tb_s").is_none());
    }
}
