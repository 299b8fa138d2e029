//! Where the TigerBeetle client library's log goes. By default it writes its warnings to
//! stderr, and while a cluster starts that is a refused connection per replica several times a
//! second: the drill's own output would drown. tbctl registers a log callback (part of the
//! client's C API, `tb_client_register_log_callback`, which the Rust wrapper does not expose)
//! that appends every line to a file instead.

use std::ffi::c_int;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, Once};

use anyhow::Context;

/// `TB_LOG_LEVEL` of tb_client.h.
const LEVEL_NAMES: [&str; 4] = ["error", "warning", "info", "debug"];
/// `TB_REGISTER_LOG_CALLBACK_SUCCESS`.
const REGISTER_SUCCESS: c_int = 0;

/// The file lines go to; None drops them (the callback is process-wide and outlives any file).
static LOG_FILE: Mutex<Option<File>> = Mutex::new(None);
static REGISTER: Once = Once::new();

unsafe extern "C" {
    /// Linked from the client library that tigerbeetle-unofficial-sys builds.
    fn tb_client_register_log_callback(
        callback: Option<unsafe extern "C" fn(c_int, *const u8, u32)>,
        debug: bool,
    ) -> c_int;
}

/// Called on the client's thread. It must never panic (that would abort across the FFI
/// boundary), so every failure is ignored: a lost log line is the lesser harm.
unsafe extern "C" fn write_line(level: c_int, message: *const u8, length: u32) {
    if message.is_null() {
        return;
    }
    // SAFETY: the client passes a buffer of `length` bytes, valid for this call.
    let message = unsafe { std::slice::from_raw_parts(message, length as usize) };
    let level = usize::try_from(level)
        .ok()
        .and_then(|level| LEVEL_NAMES.get(level))
        .unwrap_or(&"log");
    if let Ok(mut file) = LOG_FILE.lock()
        && let Some(file) = file.as_mut()
    {
        let _ = writeln!(file, "{level}{}", String::from_utf8_lossy(message));
    }
}

/// Sends the client library's log to `path` (appended) from now on.
pub fn redirect_to(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    *LOG_FILE
        .lock()
        .expect("never poisoned: the callback cannot panic") = Some(file);
    let mut status = REGISTER_SUCCESS;
    REGISTER.call_once(|| {
        // SAFETY: `write_line` matches the C signature and lives for the whole process.
        status = unsafe { tb_client_register_log_callback(Some(write_line), false) };
    });
    anyhow::ensure!(
        status == REGISTER_SUCCESS,
        "the TigerBeetle client refused the log callback (status {status})"
    );
    Ok(())
}
