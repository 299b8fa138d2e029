//! Shipping hooks: commands run in a complete backup's directory (e.g. to copy it off the host);
//! their results are recorded beside the backup, which stays (unshipped) when one fails.

use std::path::Path;
use std::time::{Duration, Instant};

use super::store::{self, Store, write_json_atomically};
use crate::api::HookResult;
use crate::config;
use crate::ops::JobHandle;

/// Bytes of a hook's output kept in the backup's record.
const HOOK_OUTPUT_KEPT_BYTES: usize = 16 * 1024;

pub async fn run_hooks(job: &JobHandle, hooks: &[config::Hook], store: &Store, backup_id: &str) {
    if hooks.is_empty() {
        return;
    }
    job.step("running shipping hooks");
    let dir = store.backup_dir(backup_id);
    let mut results = Vec::new();
    for hook in hooks {
        let result = run_hook(hook, &dir, backup_id).await;
        if !result.ok {
            tracing::warn!(hook = %hook.name, error = ?result.error, backup = %backup_id, "hook failed; the backup stays, unshipped");
        }
        results.push(result);
    }
    if let Err(error) = write_json_atomically(&dir.join(store::HOOKS_FILE), &results) {
        tracing::error!(%error, "cannot record hook results");
    }
}

async fn run_hook(hook: &config::Hook, dir: &Path, backup_id: &str) -> HookResult {
    let started = Instant::now();
    let child = tokio::process::Command::new(&hook.command[0])
        .args(&hook.command[1..])
        .current_dir(dir)
        .env("TB_BACKUP_ID", backup_id)
        .env("TB_BACKUP_DIR", dir)
        .env("TB_BACKUP_MANIFEST", dir.join(store::MANIFEST_FILE))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let result = match child {
        Err(error) => Err(format!("cannot start {}: {error}", hook.command[0])),
        Ok(mut child) => {
            let stdout = child.stdout.take().expect("piped");
            let stderr = child.stderr.take().expect("piped");
            // The output is read as it comes and only its tail kept: a hook that prints
            // gigabytes costs the agent no more than the kept bytes. On a timeout the child is
            // dropped, which kills it.
            let run = async {
                let (stdout, stderr, status) = tokio::join!(
                    read_tail(stdout, HOOK_OUTPUT_KEPT_BYTES),
                    read_tail(stderr, HOOK_OUTPUT_KEPT_BYTES),
                    child.wait()
                );
                Ok::<_, std::io::Error>((stdout?, stderr?, status?))
            };
            match tokio::time::timeout(Duration::from_millis(hook.timeout_ms), run).await {
                Err(_) => Err(format!("timed out after {} ms", hook.timeout_ms)),
                Ok(Err(error)) => Err(error.to_string()),
                Ok(Ok(output)) => Ok(output),
            }
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Err(error) => HookResult {
            name: hook.name.clone(),
            ok: false,
            exit_code: None,
            duration_ms,
            output: String::new(),
            error: Some(error),
        },
        Ok((stdout, stderr, status)) => {
            let mut bytes = stdout;
            bytes.extend_from_slice(&stderr);
            let mut cut = bytes.len().saturating_sub(HOOK_OUTPUT_KEPT_BYTES);
            // Start on a character, not inside one (UTF-8 continuation bytes are 0b10xxxxxx).
            while cut < bytes.len() && bytes[cut] & 0xC0 == 0x80 {
                cut += 1;
            }
            let text = String::from_utf8_lossy(&bytes[cut..]).into_owned();
            HookResult {
                name: hook.name.clone(),
                ok: status.success(),
                exit_code: status.code(),
                duration_ms,
                output: text,
                error: (!status.success()).then(|| format!("exited with {status}")),
            }
        }
    }
}

/// Reads `reader` to its end, keeping only the last `kept_bytes` bytes: memory stays bounded by
/// `kept_bytes` plus one read buffer, whatever the amount read.
async fn read_tail(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    kept_bytes: usize,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut kept: std::collections::VecDeque<u8> =
        std::collections::VecDeque::with_capacity(kept_bytes);
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        let fresh = &buffer[read.saturating_sub(kept_bytes)..read];
        let overflow = (kept.len() + fresh.len()).saturating_sub(kept_bytes);
        kept.drain(..overflow);
        kept.extend(fresh);
        assert!(kept.len() <= kept_bytes);
    }
    Ok(kept.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hook_output_keeps_the_tail() {
        for (total, kept) in [
            (0usize, 16),
            (10, 16),
            (16, 16),
            (100_000, 16),
            (100_000, 16 * 1024),
        ] {
            let input: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            let tail = read_tail(&input[..], kept).await.unwrap();
            assert_eq!(tail, input[total.saturating_sub(kept)..], "{total} {kept}");
        }
    }
}
