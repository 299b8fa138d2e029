//! Every duration the operations use, parsed once from the config.

use std::time::Duration;

use crate::config::Config;

/// Every duration the operations use, parsed once from the config.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long the replica gets to stop (process mode: SIGTERM, then SIGKILL).
    pub stop: Duration,
    /// How long a started replica gets to become ready.
    pub ready: Duration,
    /// How long a recover may take, state sync included.
    pub recover: Duration,
    /// How long the copy of a backup may keep the replica stopped.
    pub backup_copy: Duration,
    /// How long a handler waits for an operation before answering 202 with its job.
    pub answer_wait: Duration,
}

impl Timeouts {
    pub fn from_config(config: &Config) -> Timeouts {
        let control = &config.control;
        let stop = Duration::from_millis(control.stop_timeout_ms);
        let ready = Duration::from_millis(control.ready_timeout_ms);
        Timeouts {
            stop,
            ready,
            recover: Duration::from_millis(control.recover_timeout_ms),
            backup_copy: Duration::from_millis(
                config
                    .backup
                    .as_ref()
                    .map_or(u64::MAX / 2, |backup| backup.copy_timeout_ms),
            ),
            // A restart stops, starts and waits for readiness: by default it answers within
            // this, with its result.
            answer_wait: control.answer_wait_ms.map_or(
                stop + ready + Duration::from_secs(30),
                Duration::from_millis,
            ),
        }
    }
}
