//! The one way the integration tests wait: observe a condition until a deadline, never sleep a
//! guessed time. A wait that times out names what it waited for and what it saw last, so a
//! failure says which state never came, not only that time ran out.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How a wait that never saw its condition ended: what was seen last, and after how long.
#[derive(Debug)]
pub struct TimedOut<E> {
    pub last: E,
    pub waited: Duration,
}

/// Calls `observe` every `interval` until it returns `Ok`, for at most `timeout`; returns the
/// value and how long it took, or, at the deadline, the last observation. It is observed once
/// more at the deadline, so a condition that holds by then is not missed.
pub fn poll<T, E>(
    timeout: Duration,
    interval: Duration,
    mut observe: impl FnMut() -> Result<T, E>,
) -> Result<(T, Duration), TimedOut<E>> {
    let started = Instant::now();
    loop {
        let seen = observe();
        let waited = started.elapsed();
        match seen {
            Ok(value) => return Ok((value, waited)),
            Err(last) if waited >= timeout => return Err(TimedOut { last, waited }),
            Err(_) => std::thread::sleep(interval.min(timeout - waited)),
        }
    }
}

/// [`poll`], panicking at the deadline with `what` and the last observation (`Err` of `observe`:
/// make it say what the test needs to see when the wait fails).
pub fn wait_for<T, E: Debug>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    observe: impl FnMut() -> Result<T, E>,
) -> T {
    match poll(timeout, interval, observe) {
        Ok((value, _)) => value,
        Err(TimedOut { last, waited }) => {
            panic!("timed out after {waited:?} waiting for {what}; last seen: {last:?}")
        }
    }
}

/// [`wait_for`] a condition that carries nothing to show; returns how long it took.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let observe = || if condition() { Ok(()) } else { Err("not yet") };
    match poll(timeout, interval, observe) {
        Ok(((), took)) => took,
        Err(TimedOut { waited, .. }) => panic!("timed out after {waited:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(1);

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = wait_for("the third call", Duration::from_secs(10), SHORT, || {
            calls += 1;
            if calls == 3 { Ok(calls) } else { Err(calls) }
        });
        assert_eq!(value, 3);
    }

    #[test]
    fn a_timeout_names_what_and_the_last_observation() {
        let panic = std::panic::catch_unwind(|| {
            wait_for("the job to end", Duration::from_millis(30), SHORT, || {
                Err::<(), _>("state running")
            })
        })
        .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("waiting for the job to end"), "{message}");
        assert!(
            message.contains("last seen: \"state running\""),
            "{message}"
        );
    }

    #[test]
    fn observes_once_more_at_the_deadline() {
        let started = Instant::now();
        let timeout = Duration::from_millis(50);
        // The interval is longer than the timeout: the second observation is at the deadline.
        let result = poll(timeout, Duration::from_secs(10), || {
            if started.elapsed() >= timeout {
                Ok(())
            } else {
                Err(())
            }
        });
        assert!(result.is_ok());
    }
}
