//! The encoded /metrics body, kept until a source of change moves (see `super`), and the
//! counters the operations and the scope check increment.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Counters the HTTP layer and control paths increment.
#[derive(Default)]
pub struct Counters {
    /// Monotonic, so its value doubles as its generation in the cache key.
    pub auth_failures_total: AtomicU64,
    control_actions: std::sync::Mutex<BTreeMap<(String, String), u64>>,
    control_generation: AtomicU64,
}

impl Counters {
    pub fn record_control(&self, action: &str, outcome: &str) {
        let mut actions = self.control_actions.lock().expect("not poisoned");
        *actions
            .entry((action.to_string(), outcome.to_string()))
            .or_default() += 1;
        drop(actions);
        self.control_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// How many actions ended with which outcome, by (action, outcome).
    pub fn control_actions(&self) -> BTreeMap<(String, String), u64> {
        self.control_actions.lock().expect("not poisoned").clone()
    }

    /// Moves on every recorded action (a source of change of the cached body).
    pub fn control_generation(&self) -> u64 {
        self.control_generation.load(Ordering::Acquire)
    }
}

/// The longest a cached body is served when no source signalled a change: bounds the age of the
/// figures read at encode time (replica VmRSS, VmLck and state, data file size) and of readiness,
/// which turns stale with time alone (StatsD age, probe age).
pub const BODY_AGE_MAX: Duration = Duration::from_secs(1);

/// What the cached body was encoded from: one generation per source of change.
pub type ChangeKey = [u64; 8];

struct Cached {
    key: ChangeKey,
    encoded: Instant,
    body: Bytes,
    /// The same figures in the Prometheus text format, converted on the first scrape that asks.
    text: Option<Bytes>,
}

/// The two exposition formats, negotiated on `Accept` as Prometheus' own exporters
/// (client_golang) do: the text format 0.0.4 unless the client asks for OpenMetrics, which
/// Prometheus itself does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    pub const TEXT_CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
    pub const OPENMETRICS_CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => Format::TEXT_CONTENT_TYPE,
            Format::OpenMetrics => Format::OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The format of the first media range in order of preference (`q`, then position) that
    /// names one; the text format when none does (no `Accept`, `*/*`, `text/plain`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut ranges: Vec<(f32, usize, String)> = accept
            .unwrap_or("")
            .split(',')
            .enumerate()
            .filter_map(|(position, range)| {
                let mut parts = range.split(';');
                let media_type = parts.next()?.trim().to_ascii_lowercase();
                let quality = parts
                    .filter_map(|parameter| parameter.trim().strip_prefix("q="))
                    .find_map(|value| value.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (quality > 0.0).then_some((quality, position, media_type))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges
            .iter()
            .find_map(|(_, _, media_type)| match media_type.as_str() {
                "application/openmetrics-text" => Some(Format::OpenMetrics),
                "text/plain" | "text/*" | "*/*" => Some(Format::Text),
                _ => None,
            })
            .unwrap_or(Format::Text)
    }
}

/// The OpenMetrics body in the Prometheus text format 0.0.4: no `# EOF` or `# UNIT` lines, a
/// counter's HELP and TYPE name its sample (`x_total`, where OpenMetrics names the family `x`),
/// and `unknown` is `untyped`. Samples are the same lines in both formats.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
        match comment {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                let tail = if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                text.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// The encoded /metrics body, re-encoded only when something changed.
#[derive(Default)]
pub struct Cache {
    /// An async mutex: while one scrape re-encodes (about a millisecond), the others wait for its
    /// result instead of encoding the same body in parallel, without blocking runtime threads.
    cached: tokio::sync::Mutex<Option<Cached>>,
    encodes_total: AtomicU64,
}

impl Cache {
    /// The body in `format`, encoded anew by `render` (OpenMetrics) when `key` moved or the
    /// cached body is older than `BODY_AGE_MAX`.
    pub async fn body_as(
        &self,
        key: ChangeKey,
        format: Format,
        render: impl FnOnce() -> String,
    ) -> Bytes {
        let mut cached = self.cached.lock().await;
        // The key is read before encoding: a change that lands during the encode moves it again,
        // so the next scrape encodes anew.
        let fresh = cached
            .as_ref()
            .is_some_and(|current| current.key == key && current.encoded.elapsed() < BODY_AGE_MAX);
        if !fresh {
            self.encodes_total.fetch_add(1, Ordering::Relaxed);
            *cached = Some(Cached {
                key,
                encoded: Instant::now(),
                body: Bytes::from(render()),
                text: None,
            });
        }
        let current = cached.as_mut().expect("filled above");
        match format {
            Format::OpenMetrics => current.body.clone(),
            Format::Text => current
                .text
                .get_or_insert_with(|| {
                    let openmetrics = std::str::from_utf8(&current.body).expect("encoded as UTF-8");
                    Bytes::from(openmetrics_to_text(openmetrics))
                })
                .clone(),
        }
    }

    /// How many times the body was encoded (for tests and the bench).
    pub fn encodes_total(&self) -> u64 {
        self.encodes_total.load(Ordering::Relaxed)
    }
}
