//! DogStatsD lines into Prometheus series.

const LABELS_MAX: usize = 8;

/// A StatsD line's type: `|g` or `|c`.
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
pub(crate) fn sanitize_name(raw: &str) -> Option<String> {
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
