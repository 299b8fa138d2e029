//! The client probe: a real request through the embedded TigerBeetle client.
//!
//! The client never times out a request by itself (it retries until the cluster answers), so a
//! probe is never abandoned: at most one is in flight, and while it waits longer than the
//! timeout the probe counts as failing. Dropping the future would leave the request queued in the
//! client and let probes pile up.
//!
//! Version skew: during an upgrade the cluster may still run an older release than the embedded
//! client (0.16.78). A serving primary then evicts the client (`ClientReleaseTooHigh`). That
//! eviction is an answer from a primary that is processing requests, so the probe counts it as
//! the cluster answering and reports the skew (in `/v1/status` and `tbctl status`); readiness
//! gates keep working across an upgrade. An evicted client is dead, so the probe makes a new one
//! for the next attempt, which succeeds once the cluster runs the client's release.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster_client::ClusterClient;
use tb_proto::tigerbeetle::PROBE_ACCOUNT_ID;
use tigerbeetle_unofficial::error::SendErrorKind;

/// Back-off between attempts to create the client (bad addresses, resource limits).
const CLIENT_CREATE_RETRY: Duration = Duration::from_secs(5);
/// A request unanswered this long makes a new client. A TigerBeetle client retries forever, and
/// some clusters never answer it: after a disaster-recovery restore the cluster has forgotten the
/// client's session and ignores its requests as "newer" than any it knows, so the probe (and
/// with it readiness) would fail until the agent restarts. A new client registers afresh.
const CLIENT_RENEW_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    /// Set while a probe waits for its answer.
    pub in_flight_since: Option<Instant>,
    /// The last completed probe: when, how long it took, and its error if any.
    pub last: Option<ProbeResult>,
    pub failures_total: u64,
}

#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub completed: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The cluster answered the lookup.
    Answered,
    /// A primary evicted the client as newer than the cluster's release: the cluster answers,
    /// and runs an older release than the agent's client.
    ClusterOlderThanClient,
    Failed(String),
}

/// The probe's verdict for readiness and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub ok: bool,
    pub detail: String,
    pub latency: Option<Duration>,
    /// The cluster runs an older release than the embedded client (see the module comment).
    pub version_skew: bool,
}

impl Verdict {
    fn failing(detail: String, latency: Option<Duration>) -> Verdict {
        Verdict {
            ok: false,
            detail,
            latency,
            version_skew: false,
        }
    }
}

#[derive(Default)]
pub struct Prober {
    state: Mutex<ProbeState>,
    /// Bumped when a probe starts or ends (the /metrics cache key).
    generation: AtomicU64,
}

impl Prober {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn state(&self) -> ProbeState {
        self.state.lock().expect("not poisoned").clone()
    }

    /// A probe passes when the last one answered without error recently enough and none is
    /// stuck beyond the timeout.
    pub fn verdict(&self, timeout: Duration, interval: Duration) -> Verdict {
        Self::judge(&self.state(), timeout, interval)
    }

    /// The verdict for readiness of a replica process that started at `process_started`: an
    /// answer from before the start says nothing about the cluster this process has to rejoin
    /// (its peers may have stopped meanwhile, and a restarted replica logs normal status in its
    /// own saved view before it has heard from anyone). Until a probe completes after the start,
    /// the probe fails. Probes run every `interval`, so this costs a restart at most that.
    pub fn verdict_since(
        &self,
        timeout: Duration,
        interval: Duration,
        process_started: Instant,
    ) -> Verdict {
        let state = self.state();
        let verdict = Self::judge(&state, timeout, interval);
        match &state.last {
            Some(result) if verdict.ok && result.completed < process_started => Verdict::failing(
                format!(
                    "{}, {} ms before the agent's record of this replica process began (its \
                     start, or the agent's own start if it found it running): waiting for an \
                     answer after it",
                    verdict.detail,
                    process_started
                        .saturating_duration_since(result.completed)
                        .as_millis()
                ),
                verdict.latency,
            ),
            _ => verdict,
        }
    }

    fn judge(state: &ProbeState, timeout: Duration, interval: Duration) -> Verdict {
        if let Some(since) = state.in_flight_since {
            let waiting = since.elapsed();
            if waiting > timeout {
                return Verdict::failing(
                    format!(
                        "lookup_accounts has had no answer for {} ms (timeout {} ms): the cluster \
                         is not answering clients from this host",
                        waiting.as_millis(),
                        timeout.as_millis()
                    ),
                    None,
                );
            }
        }
        match &state.last {
            None => Verdict::failing("no probe has completed yet".into(), None),
            Some(ProbeResult {
                outcome: Outcome::Failed(error),
                ..
            }) => Verdict::failing(format!("lookup_accounts failed: {error}"), None),
            Some(result) if result.latency > timeout => Verdict::failing(
                format!(
                    "lookup_accounts answered in {} ms, over the {} ms timeout",
                    result.latency.as_millis(),
                    timeout.as_millis()
                ),
                Some(result.latency),
            ),
            Some(result) if result.completed.elapsed() > interval + timeout * 2 => {
                Verdict::failing(
                    format!(
                        "the last probe completed {} ms ago",
                        result.completed.elapsed().as_millis()
                    ),
                    Some(result.latency),
                )
            }
            Some(result) if result.outcome == Outcome::ClusterOlderThanClient => Verdict {
                ok: true,
                detail: format!(
                    "a primary answered in {} ms by evicting this agent's client (release {}) \
                     as newer than the cluster: the cluster serves requests on an older release \
                     (version skew, expected during an upgrade)",
                    result.latency.as_millis(),
                    tb_proto::tigerbeetle::CLIENT_RELEASE
                ),
                latency: Some(result.latency),
                version_skew: true,
            },
            Some(result) => Verdict {
                ok: true,
                detail: format!(
                    "lookup_accounts answered in {} ms",
                    result.latency.as_millis()
                ),
                latency: Some(result.latency),
                version_skew: false,
            },
        }
    }

    fn begin(&self) -> Instant {
        let now = Instant::now();
        self.state.lock().expect("not poisoned").in_flight_since = Some(now);
        self.changed();
        now
    }

    fn finish(&self, started: Instant, outcome: Outcome) {
        let mut state = self.state.lock().expect("not poisoned");
        state.in_flight_since = None;
        if matches!(outcome, Outcome::Failed(_)) {
            state.failures_total += 1;
        }
        state.last = Some(ProbeResult {
            completed: Instant::now(),
            latency: started.elapsed(),
            outcome,
        });
        drop(state);
        self.changed();
    }

    fn fail_to_start(&self, error: String) {
        let mut state = self.state.lock().expect("not poisoned");
        state.failures_total += 1;
        state.last = Some(ProbeResult {
            completed: Instant::now(),
            latency: Duration::ZERO,
            outcome: Outcome::Failed(error),
        });
        drop(state);
        self.changed();
    }
}

/// Probes forever, one request at a time, `interval` apart, through the agent's shared client.
pub async fn run(prober: Arc<Prober>, clients: Arc<ClusterClient>, interval: Duration) {
    loop {
        let client = loop {
            match clients.get() {
                Ok(client) => break client,
                Err(error) => {
                    prober.fail_to_start(error.to_string());
                    tracing::warn!(%error, "retrying");
                    tokio::time::sleep(CLIENT_CREATE_RETRY).await;
                }
            }
        };
        loop {
            let started = prober.begin();
            let result = tokio::time::timeout(
                CLIENT_RENEW_AFTER,
                client.lookup_accounts(vec![PROBE_ACCOUNT_ID]),
            )
            .await;
            let stuck = result.is_err();
            let outcome = match result {
                Err(_) => Outcome::Failed(format!(
                    "no answer within {} s; making a new client",
                    CLIENT_RENEW_AFTER.as_secs()
                )),
                Ok(result) => match result {
                    Ok(accounts) if accounts.is_empty() => Outcome::Answered,
                    Ok(_) => Outcome::Failed(format!(
                        "account {PROBE_ACCOUNT_ID:#x} exists, but that id is reserved for probes"
                    )),
                    Err(error) if matches!(error.kind(), SendErrorKind::ClientReleaseTooHigh) => {
                        Outcome::ClusterOlderThanClient
                    }
                    Err(error) => Outcome::Failed(error.to_string()),
                },
            };
            let evicted = outcome == Outcome::ClusterOlderThanClient;
            prober.finish(started, outcome);
            tokio::time::sleep(interval).await;
            if evicted || stuck {
                // An evicted client answers every later request with the same error without
                // asking the cluster, and a stuck one may never be answered: make a new one.
                // The old one is dropped (on a thread of its own) with its last user.
                clients.discard(&client);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let prober = Prober::default();
        let timeout = Duration::from_millis(100);
        let interval = Duration::from_millis(50);
        assert!(!prober.verdict(timeout, interval).ok);
        let started = prober.begin();
        // In flight but within the timeout: the previous (absent) result decides.
        assert!(!prober.verdict(timeout, interval).ok);
        prober.finish(started, Outcome::Answered);
        assert!(prober.verdict(timeout, interval).ok);
        let started = prober.begin();
        std::thread::sleep(Duration::from_millis(150));
        let verdict = prober.verdict(timeout, interval);
        assert!(!verdict.ok);
        assert!(verdict.detail.contains("no answer"), "{}", verdict.detail);
        prober.finish(started, Outcome::Failed("boom".into()));
        assert!(!prober.verdict(timeout, interval).ok);
        assert_eq!(prober.state().failures_total, 1);
    }

    #[test]
    fn an_answer_from_before_the_process_started_does_not_count_for_it() {
        let prober = Prober::default();
        let timeout = Duration::from_millis(2_000);
        let interval = Duration::from_millis(1_000);
        let started = prober.begin();
        prober.finish(started, Outcome::Answered);
        let process_started = Instant::now() + Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(2));
        assert!(prober.verdict(timeout, interval).ok);
        let verdict = prober.verdict_since(timeout, interval, process_started);
        assert!(!verdict.ok);
        assert!(
            verdict
                .detail
                .contains("before the agent's record of this replica process began"),
            "{}",
            verdict.detail
        );
        // Still in flight after the start: the answer from before still does not count.
        let started = prober.begin();
        assert!(!prober.verdict_since(timeout, interval, process_started).ok);
        prober.finish(started, Outcome::Answered);
        assert!(prober.verdict_since(timeout, interval, process_started).ok);
    }
}
