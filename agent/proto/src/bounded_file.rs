//! Reading a whole file that must be small (an inventory, a configuration or settings file):
//! at most one byte past the bound is read, so a file that grows after any size check, or a
//! device or a pipe with no size, is refused instead of read whole. No size check comes before
//! the read: the read itself is the bound.

use std::io::Read;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BoundedReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {size_max_bytes} bytes")]
    TooLarge { size_max_bytes: u64 },
}

/// The file's text when it holds at most `size_max_bytes` bytes of UTF-8.
pub fn read_to_string(path: &Path, size_max_bytes: u64) -> Result<String, BoundedReadError> {
    assert!(size_max_bytes > 0 && size_max_bytes < u64::MAX);
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(size_max_bytes + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > size_max_bytes {
        return Err(BoundedReadError::TooLarge { size_max_bytes });
    }
    Ok(text)
}
