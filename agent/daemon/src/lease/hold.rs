//! The lease an operation that stops a replica holds from before its quorum guard until the
//! replica is back: its own, or the caller's (`lease_id` in the request), renewed in the
//! background while the operation runs, released at its end when it was its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tb_proto::api::LeaseFields;
use tb_proto::lease::{self as contract, Operation};

use crate::audit;
use crate::ops::{AppError, JobHandle};
use crate::state::AgentState;

const RELEASE_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// After a failed renewal the next comes this soon (the deadline has not moved).
const RENEWAL_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Renewals are never closer than this (a lease at its end gets a few tries, not a busy loop).
const RENEWAL_PAUSE_MIN: Duration = Duration::from_millis(500);

/// How the operation stands with the lease.
pub enum Standing {
    /// Under the lease (its own or the caller's).
    Leased(OperationLease),
    /// The lease is disabled in the configuration: the quorum guard alone protects.
    Disabled,
    /// The lease could not be had and the caller confirmed with the cluster id.
    WithoutLease(String),
}

impl Standing {
    /// For the operation's result and audit line.
    pub fn describe(&self) -> String {
        match self {
            Standing::Leased(lease) => format!("under maintenance lease {}", lease.lease_id_hex()),
            Standing::Disabled => "the maintenance lease is disabled: quorum guard only".into(),
            Standing::WithoutLease(why) => format!(
                "WITHOUT the maintenance lease, confirmed with the cluster id ({why}); quorum \
                 guard only"
            ),
        }
    }

    /// Ends the operation's hold: its own lease is released now (the next operation must find
    /// it free); a release the cluster cannot answer now is retried in the background.
    pub async fn finish(self) {
        if let Standing::Leased(lease) = self {
            lease.finish().await;
        }
    }

    /// Refuses to begin stopping the replica unless the lease outlasts `needed` (the stop and
    /// the wait for ready) and was not lost. Going on, records on the job what it knew of the
    /// lease (its closing audit line carries it).
    pub fn check_time_left(&self, job: &JobHandle, needed: Duration) -> Result<(), AppError> {
        let Standing::Leased(lease) = self else {
            return Ok(());
        };
        if lease.lost.load(Ordering::Acquire) {
            return Err(AppError::LeaseLost(format!(
                "maintenance lease {} was lost before the replica was stopped; nothing was \
                 stopped",
                lease.lease_id_hex()
            )));
        }
        let deadline = *lease.deadline.lock().expect("not poisoned");
        let now = Instant::now();
        enough_left(deadline, now, needed).map_err(|why| {
            AppError::Refused(format!("maintenance lease {} {why}", lease.lease_id_hex()))
        })?;
        let acted_unix_ms = audit::unix_ms_now();
        let left_ms = deadline.saturating_duration_since(now).as_millis() as u64;
        job.record_lease_act(audit::LeaseAct {
            lease_id: lease.lease_id_hex(),
            lease_taken_unix_ms: lease.taken_unix_ms,
            lease_acted_unix_ms: acted_unix_ms,
            lease_deadline_unix_ms: acted_unix_ms + left_ms,
        });
        Ok(())
    }
}

/// A lease that ends before the operation could be done with the replica (read after the
/// lease's id: "maintenance lease ID has ...").
#[derive(Debug, thiserror::Error)]
#[error(
    "has {left_ms} ms left by this agent's clock, but stopping and waiting for the replica \
     can take {needed_ms} ms: nothing was stopped. Renew it with a longer ttl and ask again"
)]
struct TooShort {
    left_ms: u128,
    needed_ms: u128,
}

/// Whether a lease whose holder's deadline is `deadline` outlasts `needed` from `now`.
fn enough_left(deadline: Instant, now: Instant, needed: Duration) -> Result<(), TooShort> {
    let left = deadline.saturating_duration_since(now);
    if left < needed {
        return Err(TooShort {
            left_ms: left.as_millis(),
            needed_ms: needed.as_millis(),
        });
    }
    Ok(())
}

pub struct OperationLease {
    state: Arc<AgentState>,
    lease_id: u128,
    owned: bool,
    /// When the operation took (or borrowed) it, unix ms.
    taken_unix_ms: u64,
    deadline: Arc<Mutex<Instant>>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl OperationLease {
    pub fn lease_id_hex(&self) -> String {
        contract::format_id(self.lease_id)
    }

    async fn finish(mut self) {
        self.renewer.abort();
        if !self.owned {
            return;
        }
        match self.state.lease.release(self.lease_id).await {
            // Released: nothing left for Drop to do.
            Ok(_) => self.owned = false,
            Err(error) => tracing::warn!(%error, lease = %self.lease_id_hex(),
                "releasing the maintenance lease failed; retrying in the background"),
        }
    }
}

impl Drop for OperationLease {
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.owned {
            return;
        }
        let (state, lease_id) = (Arc::clone(&self.state), self.lease_id);
        let give_up = *self.deadline.lock().expect("not poisoned") + state.lease.margin * 2;
        // Released in a task of its own: the operation may end by a panic or a dropped future.
        // A release the cluster cannot answer now (a stopped single replica) is tried again
        // until the lease would have expired anyway.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                while let Err(error) = state.lease.release(lease_id).await {
                    if Instant::now() >= give_up {
                        tracing::warn!(%error, lease = %contract::format_id(lease_id),
                            "releasing the maintenance lease failed; it expires at its ttl");
                        return;
                    }
                    tokio::time::sleep(RELEASE_RETRY_INTERVAL).await;
                }
            });
        }
    }
}

/// Releases `lease_id` if it holds the pool, trying until its ttl has passed: for an acquire
/// whose answer did not come (the cluster may still grant it).
fn release_in_background(state: Arc<AgentState>, lease_id: u128, ttl_s: u32) {
    let give_up = Instant::now() + Duration::from_secs(ttl_s.into());
    tokio::spawn(async move {
        while Instant::now() < give_up {
            if state.lease.release(lease_id).await.is_ok() {
                return;
            }
            tokio::time::sleep(RELEASE_RETRY_INTERVAL * 5).await;
        }
    });
}

/// What the lease must cover for an operation that stops the replica: the stop and the wait for
/// ready. Longer operations are covered by renewal.
pub fn needed(state: &AgentState) -> Duration {
    state.timeouts.stop + state.timeouts.ready
}

/// The lease, then the quorum guard (never forced: backups and recover), then the time left:
/// the standing of an operation that may begin stopping its replica. A refusal releases the
/// lease before it answers.
pub async fn take_guarded(
    job: &JobHandle,
    operation: Operation,
    fields: &LeaseFields,
) -> Result<Standing, AppError> {
    let standing = take(job, operation, fields).await?;
    let checked = async {
        job.step("asking the peers (quorum guard)");
        crate::ops::quorum_guard(&job.state, crate::ops::Override::NotOffered).await?;
        standing.check_time_left(job, needed(&job.state))
    }
    .await;
    match checked {
        Ok(()) => Ok(standing),
        Err(error) => {
            standing.finish().await;
            Err(error)
        }
    }
}

/// Takes the operation's standing with the lease, before its quorum guard.
pub async fn take(
    job: &JobHandle,
    operation: Operation,
    fields: &LeaseFields,
) -> Result<Standing, AppError> {
    let state = &job.state;
    let service = &state.lease;
    if !service.enabled {
        return Ok(Standing::Disabled);
    }
    job.step("taking the cluster's maintenance lease");
    let needed = needed(state);
    // The holder's deadline is the send time plus the ttl less one margin, and the quorum guard
    // (and an acquire's retries after an expiry) run between the send and the stop: a third
    // margin leaves them room before `check_time_left`.
    let ttl_s = ttl_covering(needed + service.margin * 3);
    let taken = match &fields.lease_id {
        Some(text) => {
            let lease_id = contract::parse_id(text).map_err(AppError::bad_request)?;
            borrow(state, lease_id).await.map(|held| (held, false))
        }
        None => {
            let holder = format!("{} ({})", job.caller_token, job.id);
            // Chosen here, so that an acquire whose outcome is unknown (no answer in time) can
            // be released if the cluster granted it after all.
            let ids = (contract::new_lease_id(), service.ids.fresh_transfer());
            let taken = service.acquire(&holder, operation, ttl_s, Some(ids)).await;
            if let Err(AppError::LeaseUnavailable(_)) = &taken {
                release_in_background(Arc::clone(state), ids.0, ttl_s);
            }
            taken.map(|held| (held, true))
        }
    };
    match taken {
        Ok((held, owned)) => {
            let lease_id = contract::parse_id(&held.view.lease_id).expect("formatted by us");
            // A borrowed lease keeps its holder's ttl: renewals never shorten it.
            let renew_ttl_s = held.view.ttl_s;
            Ok(Standing::Leased(hold(
                state,
                lease_id,
                owned,
                held.deadline,
                renew_ttl_s,
            )))
        }
        Err(AppError::LeaseUnavailable(why)) => without_lease(service.cluster_id(), fields, why),
        Err(other) => Err(other),
    }
}

/// The caller's lease: it must hold the pool now. It is not extended here: the holder chose its
/// ttl and renews it (`tbctl lease run`); `check_time_left` refuses one about to expire.
async fn borrow(state: &AgentState, lease_id: u128) -> Result<super::Held, AppError> {
    let service = &state.lease;
    let Some(current) = service.current_of(lease_id).await? else {
        return Err(AppError::LeaseLost(format!(
            "lease {} does not hold the cluster's maintenance lease (it expired, or was \
             released or broken)",
            contract::format_id(lease_id)
        )));
    };
    let left = current
        .expires()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Ok(super::Held {
        view: service.view(&current),
        deadline: Instant::now() + left.saturating_sub(service.margin),
    })
}

fn without_lease(
    cluster_id: &str,
    fields: &LeaseFields,
    why: String,
) -> Result<Standing, AppError> {
    match &fields.without_lease {
        Some(confirmed) if confirmed == cluster_id => Ok(Standing::WithoutLease(why)),
        Some(other) => Err(AppError::Refused(format!(
            "without_lease names cluster {other}, but this replica belongs to cluster \
             {cluster_id}; nothing was done"
        ))),
        None => Err(AppError::LeaseUnavailable(format!(
            "the cluster's maintenance lease cannot be had: {why}. Without it, another agent \
             could stop a replica at the same moment. If you know no other operation runs \
             (a disaster recovery, a cluster of 1 or 2 replicas, an upgrade from an older \
             release), send \"without_lease\": \"{cluster_id}\" (tbctl --without-lease \
             {cluster_id}); the quorum guard still runs"
        ))),
    }
}

fn ttl_covering(duration: Duration) -> u32 {
    let seconds = duration.as_millis().div_ceil(1000);
    seconds.clamp(contract::TTL_MIN_S.into(), contract::TTL_MAX_S.into()) as u32
}

/// Renews the lease every third of its ttl while the operation runs.
fn hold(
    state: &Arc<AgentState>,
    lease_id: u128,
    owned: bool,
    deadline: Instant,
    ttl_s: u32,
) -> OperationLease {
    let deadline = Arc::new(Mutex::new(deadline));
    let lost = Arc::new(AtomicBool::new(false));
    let renewer = tokio::spawn(renew_forever(
        Arc::clone(state),
        lease_id,
        ttl_s,
        Arc::clone(&deadline),
        Arc::clone(&lost),
    ));
    OperationLease {
        state: Arc::clone(state),
        lease_id,
        owned,
        taken_unix_ms: audit::unix_ms_now(),
        deadline,
        lost,
        renewer,
    }
}

async fn renew_forever(
    state: Arc<AgentState>,
    lease_id: u128,
    ttl_s: u32,
    deadline: Arc<Mutex<Instant>>,
    lost: Arc<AtomicBool>,
) {
    let period = Duration::from_secs(ttl_s.into()) / 3;
    let mut failed = false;
    loop {
        let left = deadline
            .lock()
            .expect("not poisoned")
            .saturating_duration_since(Instant::now());
        tokio::time::sleep(renewal_pause(period, left, failed)).await;
        match state.lease.renew(lease_id, ttl_s).await {
            Ok(held) => {
                *deadline.lock().expect("not poisoned") = held.deadline;
                failed = false;
            }
            Err(AppError::LeaseLost(why)) => {
                tracing::error!(lease = %contract::format_id(lease_id), %why,
                    "the maintenance lease was lost while an operation held it");
                lost.store(true, Ordering::Release);
                return;
            }
            // Unavailable for now: the deadline stays; try again soon.
            Err(error) => {
                tracing::warn!(%error, "renewing the maintenance lease failed");
                failed = true;
            }
        }
    }
}

/// Until the next renewal: a third of the ttl, but never more than half of what is left (a
/// borrowed lease may have little left), and soon after a failure.
fn renewal_pause(period: Duration, left: Duration, failed: bool) -> Duration {
    let pause = period.min(left / 2);
    let pause = if failed {
        pause.min(RENEWAL_RETRY_INTERVAL)
    } else {
        pause
    };
    pause.max(RENEWAL_PAUSE_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_never_begins_on_a_lease_about_to_expire() {
        let now = Instant::now();
        let needed = Duration::from_secs(130);
        assert!(enough_left(now + Duration::from_secs(131), now, needed).is_ok());
        let refused = enough_left(now + Duration::from_secs(129), now, needed).unwrap_err();
        assert!(refused.to_string().contains("129000 ms left"), "{refused}");
        assert!(enough_left(now, now + Duration::from_secs(1), needed).is_err());
    }

    #[test]
    fn renewals_come_before_half_of_what_is_left_and_soon_after_a_failure() {
        let period = Duration::from_secs(200);
        let s = Duration::from_secs;
        assert_eq!(renewal_pause(period, s(595), false), s(200));
        // A borrowed lease with 150 s left of its holder's 600 s ttl: renewed at 75 s.
        assert_eq!(renewal_pause(period, s(150), false), s(75));
        assert_eq!(renewal_pause(period, s(150), true), RENEWAL_RETRY_INTERVAL);
        assert_eq!(
            renewal_pause(period, Duration::ZERO, false),
            RENEWAL_PAUSE_MIN
        );
    }

    #[test]
    fn ttls_cover_the_duration_in_whole_seconds() {
        assert_eq!(ttl_covering(Duration::from_millis(140_001)), 141);
        assert_eq!(ttl_covering(Duration::ZERO), contract::TTL_MIN_S);
        assert_eq!(
            ttl_covering(Duration::from_secs(10 * 86_400)),
            contract::TTL_MAX_S
        );
    }
}
