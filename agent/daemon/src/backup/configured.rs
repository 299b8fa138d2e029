//! The `[backup]` section this agent runs with, the store it names, and file work off the async
//! runtime: what every backup operation starts from.

use super::store::Store;
use crate::config;
use crate::ops::AppError;
use crate::state::AgentState;

pub fn backup_config(state: &AgentState) -> Result<&config::Backup, AppError> {
    state.config.backup.as_ref().ok_or(AppError::NotConfigured)
}

pub fn store(state: &AgentState) -> Result<Store, AppError> {
    Ok(Store {
        dir: backup_config(state)?.dir.clone(),
    })
}

/// File work off the async runtime: runs `work` on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        AppError::Failed(format!("internal: file work ended abnormally: {error}"))
    })?
}
