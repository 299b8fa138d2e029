//! The part of a backup that stops the replica: stop, copy the data file, start. Every way out
//! of "stopped for a backup" starts the replica again: a failed stop, a failed or slow copy (it
//! has a deadline, after which it is abandoned), a panic, and a cancelled task (a drop guard
//! starts it).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ops::{AppError, io_failure};
use crate::replica::Replica;

/// What the sequence needs of a replica: the real one is [`Replica`]; the unit tests below use a
/// stand-in whose stop can fail.
pub trait StopStart: Send + Sync + 'static {
    fn is_running(&self) -> bool;
    fn stop(self: &Arc<Self>) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn start(self: &Arc<Self>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl StopStart for Replica {
    fn is_running(&self) -> bool {
        self.pid().is_some()
    }
    fn stop(self: &Arc<Self>) -> impl Future<Output = anyhow::Result<()>> + Send {
        Replica::stop(self)
    }
    fn start(self: &Arc<Self>) -> impl Future<Output = anyhow::Result<()>> + Send {
        Replica::start(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Whether the copy was an atomic reflink clone.
    pub reflink: bool,
    /// Whether the replica had been running (and was stopped and started again).
    pub was_running: bool,
    /// From the stop request until the replica process ran again.
    pub stopped_ms: u64,
    pub copy_ms: u64,
}

/// Starts the replica again if dropped while armed: a panic or a cancelled task on the way out
/// of the stopped state cannot skip the start.
struct StartOnDrop<R: StopStart> {
    replica: Option<Arc<R>>,
}

impl<R: StopStart> StartOnDrop<R> {
    /// The structured way out: starts the replica and disarms the guard.
    async fn start(mut self) -> anyhow::Result<()> {
        let replica = self.replica.take().expect("armed until started");
        replica.start().await
    }
}

impl<R: StopStart> Drop for StartOnDrop<R> {
    fn drop(&mut self) {
        let Some(replica) = self.replica.take() else {
            return;
        };
        tracing::error!("left the stopped state of a backup abnormally; starting the replica");
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = replica.start().await {
                        tracing::error!(%error, "cannot start the replica after a backup");
                    }
                });
            }
            Err(_) => tracing::error!("no runtime to start the replica after a backup"),
        }
    }
}

/// Runs `copy` (blocking: it gets a thread of its own) while the replica is stopped, at most
/// `deadline`, and starts the replica again whatever happened. `before_stop` runs first (the
/// crash marker); an error there leaves the replica untouched. A copy past its deadline is
/// abandoned: `abandoned` runs (on a blocking thread) once its thread has ended, to remove what
/// it wrote. `step` names what happens now.
pub async fn copy_while_stopped<R: StopStart>(
    replica: &Arc<R>,
    before_stop: impl FnOnce() -> Result<(), AppError>,
    copy: impl FnOnce(&AtomicBool) -> std::io::Result<bool> + Send + 'static,
    abandoned: impl FnOnce() + Send + 'static,
    deadline: Duration,
    step: impl Fn(&str),
) -> Result<Copied, AppError> {
    let was_running = replica.is_running();
    if !was_running {
        step("copying the data file");
        let copy_started = Instant::now();
        let reflink = copy_with_deadline(copy, abandoned, deadline).await?;
        return Ok(Copied {
            reflink,
            was_running,
            stopped_ms: 0,
            copy_ms: copy_started.elapsed().as_millis() as u64,
        });
    }
    step("stopping the replica");
    before_stop()?;
    let down_since = Instant::now();
    let restart = StartOnDrop {
        replica: Some(Arc::clone(replica)),
    };
    let (copied, copy_ms) = match replica.stop().await {
        // The process may or may not be gone: it is started again below either way.
        Err(error) => (
            Err(AppError::Failed(format!("stopping the replica: {error}"))),
            0,
        ),
        Ok(()) => {
            step("copying the data file");
            let copy_started = Instant::now();
            let copied = copy_with_deadline(copy, abandoned, deadline).await;
            (copied, copy_started.elapsed().as_millis() as u64)
        }
    };
    step("starting the replica");
    let started = restart.start().await;
    let stopped_ms = down_since.elapsed().as_millis() as u64;
    match (copied, started) {
        (Ok(reflink), Ok(())) => Ok(Copied {
            reflink,
            was_running,
            stopped_ms,
            copy_ms,
        }),
        (Err(copy), Ok(())) => Err(AppError::Failed(format!(
            "{copy}; the replica was started again"
        ))),
        (copied, Err(start)) => Err(AppError::Failed(format!(
            "{}starting the replica again: {start}",
            copied
                .err()
                .map_or(String::new(), |copy| format!("{copy}; "))
        ))),
    }
}

/// The copy on a blocking thread, waited for at most `deadline`. Past it, the copy is abandoned:
/// its cancel flag is set (the copy checks it between chunks, so it stops reading the data file
/// the restarted replica uses), and `abandoned` removes what it wrote once its thread has ended.
async fn copy_with_deadline(
    copy: impl FnOnce(&AtomicBool) -> std::io::Result<bool> + Send + 'static,
    abandoned: impl FnOnce() + Send + 'static,
    deadline: Duration,
) -> Result<bool, AppError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let thread_cancel = Arc::clone(&cancel);
    let mut thread = tokio::task::spawn_blocking(move || copy(&thread_cancel));
    match tokio::time::timeout(deadline, &mut thread).await {
        Err(_) => {
            cancel.store(true, Ordering::Release);
            tokio::spawn(async move {
                let _ = thread.await;
                let _ = tokio::task::spawn_blocking(abandoned).await;
            });
            Err(AppError::Failed(format!(
                "the copy did not finish within backup.copy_timeout_ms ({} ms) and was abandoned",
                deadline.as_millis()
            )))
        }
        Ok(Err(join_error)) => Err(AppError::Failed(format!(
            "copying the data file: {join_error}"
        ))),
        Ok(Ok(Err(error))) => Err(io_failure("copying the data file")(error)),
        Ok(Ok(Ok(reflink))) => Ok(reflink),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    /// A stand-in for the replica (a real one needs a cluster: see tests/tests/backups.rs).
    #[derive(Default)]
    struct StandInReplica {
        running: AtomicBool,
        stop_fails: bool,
        starts: AtomicU32,
        events: Mutex<Vec<&'static str>>,
    }

    impl StopStart for StandInReplica {
        fn is_running(&self) -> bool {
            self.running.load(Ordering::SeqCst)
        }
        async fn stop(self: &Arc<Self>) -> anyhow::Result<()> {
            self.events.lock().unwrap().push("stop");
            self.running.store(false, Ordering::SeqCst);
            if self.stop_fails {
                anyhow::bail!("systemctl stop failed (stand-in)");
            }
            Ok(())
        }
        async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
            self.events.lock().unwrap().push("start");
            self.starts.fetch_add(1, Ordering::SeqCst);
            self.running.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    fn running(stop_fails: bool) -> Arc<StandInReplica> {
        Arc::new(StandInReplica {
            running: AtomicBool::new(true),
            stop_fails,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn an_error_while_stopping_still_starts_the_replica() {
        let replica = running(true);
        let copied = Arc::new(AtomicBool::new(false));
        let copy_flag = Arc::clone(&copied);
        let result = copy_while_stopped(
            &replica,
            || Ok(()),
            move |_| {
                copy_flag.store(true, Ordering::SeqCst);
                Ok(false)
            },
            || {},
            Duration::from_secs(10),
            |_| {},
        )
        .await;
        let error = result.unwrap_err().to_string();
        assert!(error.contains("stopping the replica"), "{error}");
        assert!(error.contains("started again"), "{error}");
        assert!(
            !copied.load(Ordering::SeqCst),
            "copied a file that may be in use"
        );
        assert_eq!(*replica.events.lock().unwrap(), ["stop", "start"]);
        assert!(replica.is_running());
    }

    #[tokio::test]
    async fn a_copy_past_its_deadline_is_abandoned_cancelled_and_the_replica_started() {
        let replica = running(false);
        let started = Instant::now();
        // The stand-in copy runs for 10 s unless cancelled; its end is recorded so that the
        // clean-up can prove it ran after the copy, never under it.
        let copy_ended = Arc::new(AtomicBool::new(false));
        let cleaned = Arc::new(AtomicBool::new(false));
        let (copy_ended_flag, cleaned_flag) = (Arc::clone(&copy_ended), Arc::clone(&cleaned));
        let result = copy_while_stopped(
            &replica,
            || Ok(()),
            move |cancel| {
                let copy_started = Instant::now();
                while !cancel.load(Ordering::Acquire)
                    && copy_started.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                copy_ended_flag.store(true, Ordering::SeqCst);
                Err(std::io::Error::other("the copy was cancelled"))
            },
            move || cleaned_flag.store(copy_ended.load(Ordering::SeqCst), Ordering::SeqCst),
            Duration::from_millis(50),
            |_| {},
        )
        .await;
        let error = result.unwrap_err().to_string();
        assert!(error.contains("copy_timeout_ms"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited for the abandoned copy: {:?}",
            started.elapsed()
        );
        assert_eq!(replica.starts.load(Ordering::SeqCst), 1);
        assert!(replica.is_running());
        // The cancelled copy stops within a poll of its flag (not after its 10 s), and what it
        // wrote is removed after it ended.
        for _ in 0..200 {
            if cleaned.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            cleaned.load(Ordering::SeqCst),
            "the abandoned copy was not cancelled, or cleaned up before it ended"
        );
    }

    #[tokio::test]
    async fn a_panicking_copy_and_a_failed_copy_start_the_replica() {
        for panics in [true, false] {
            let replica = running(false);
            let result = copy_while_stopped(
                &replica,
                || Ok(()),
                move |_| {
                    assert!(!panics, "copy panicked (on purpose)");
                    Err(std::io::Error::other("disk full (on purpose)"))
                },
                || {},
                Duration::from_secs(10),
                |_| {},
            )
            .await;
            assert!(result.is_err());
            assert_eq!(replica.starts.load(Ordering::SeqCst), 1, "panics: {panics}");
        }
    }

    #[tokio::test]
    async fn a_cancelled_sequence_starts_the_replica_from_its_drop_guard() {
        let replica = running(false);
        let task_replica = Arc::clone(&replica);
        let task = tokio::spawn(async move {
            copy_while_stopped(
                &task_replica,
                || Ok(()),
                |_| {
                    std::thread::sleep(Duration::from_secs(2));
                    Ok(false)
                },
                || {},
                Duration::from_secs(60),
                |_| {},
            )
            .await
        });
        while replica.is_running() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        let _ = task.await;
        for _ in 0..200 {
            if replica.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            replica.is_running(),
            "a cancelled backup left the replica stopped"
        );
    }

    #[tokio::test]
    async fn a_failed_marker_leaves_the_replica_untouched() {
        let replica = running(false);
        let result = copy_while_stopped(
            &replica,
            || {
                Err(io_failure("writing the marker")(std::io::Error::other(
                    "read-only (on purpose)",
                )))
            },
            |_| Ok(false),
            || {},
            Duration::from_secs(10),
            |_| {},
        )
        .await;
        assert!(result.is_err());
        assert!(replica.events.lock().unwrap().is_empty());
    }
}
