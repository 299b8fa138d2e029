//! The operations layer: every state-changing action (start, stop, restart, backup, recover,
//! restore, verify, delete) goes through [`launch`], which takes the locks, writes the audit
//! lines, records the job and counts the outcome. It knows no HTTP type: `crate::http` maps its
//! answers and errors to responses.

pub mod backup_schedule;
pub mod error;
pub mod finished;
pub mod guard;
pub mod jobs;
pub mod launch;
pub mod locks;
pub mod schedule_status;
pub mod timeouts;

pub use error::{AppError, io_failure};
pub use finished::{Deleted, Finished, JobDone};
pub use guard::{Override, quorum_guard, wait_ready};
pub use launch::{Answer, Caller, JobHandle, Spec, Wait, launch, record_once, refuse};
pub use locks::{Lock, Locks};
pub use timeouts::Timeouts;
