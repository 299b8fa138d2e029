//! File work for backups, all blocking (run it on the blocking pool): reflink-or-copy, hashing,
//! compression, verification and restore.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Streaming buffers: large enough for sequential throughput, small enough for the agent's RSS.
const CHUNK_SIZE_BYTES: usize = 1024 * 1024;

/// Copies `source` to a new file `destination`: an atomic reflink clone (FICLONE) where the
/// filesystem supports it, else a streamed copy. Both end with fsync. Returns whether the clone
/// was a reflink.
pub fn clone_or_copy(source: &Path, destination: &Path) -> std::io::Result<bool> {
    let input = File::open(source)?;
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(destination)?;
    // SAFETY: both descriptors are open for the duration of the call.
    let cloned = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) } == 0;
    if cloned {
        output.sync_all()?;
        return Ok(true);
    }
    // std::io::copy between two files uses copy_file_range on Linux: the kernel moves the
    // bytes (in-filesystem copy offload where supported) without a trip through user space.
    let (mut reader, mut writer) = (input, output);
    std::io::copy(&mut reader, &mut writer)?;
    writer.sync_all()?;
    Ok(false)
}

/// BLAKE3 of a file, hex.
pub fn blake3_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; CHUNK_SIZE_BYTES];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finalize().to_hex().to_string());
        }
        hasher.update(&buffer[..read]);
    }
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    size_bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.size_bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub struct Compressed {
    pub data_blake3: String,
    pub data_size_bytes: u64,
    pub stored_blake3: String,
    pub stored_size_bytes: u64,
}

/// Compresses `source` into a new file `destination` with zstd, hashing both sides in the same
/// pass, and fsyncs the result.
pub fn compress(source: &Path, destination: &Path, level: i32) -> std::io::Result<Compressed> {
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(destination)?;
    let stored = HashingWriter {
        inner: output,
        hasher: blake3::Hasher::new(),
        size_bytes: 0,
    };
    let mut encoder = zstd::stream::write::Encoder::new(stored, level)?;
    let mut data_hasher = blake3::Hasher::new();
    let mut data_size_bytes = 0u64;
    let mut input = File::open(source)?;
    let mut buffer = vec![0u8; CHUNK_SIZE_BYTES];
    loop {
        let read = input.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        data_hasher.update(&buffer[..read]);
        data_size_bytes += read as u64;
        encoder.write_all(&buffer[..read])?;
    }
    let stored = encoder.finish()?;
    stored.inner.sync_all()?;
    Ok(Compressed {
        data_blake3: data_hasher.finalize().to_hex().to_string(),
        data_size_bytes,
        stored_blake3: stored.hasher.finalize().to_hex().to_string(),
        stored_size_bytes: stored.size_bytes,
    })
}

/// Writes the data a stored backup file holds into `destination` (a new file), decompressing
/// when `compression` is `zstd`, and returns the BLAKE3 of what was written. fsyncs the result.
pub fn extract(stored: &Path, compression: &str, destination: &Path) -> std::io::Result<String> {
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(destination)?;
    let mut writer = HashingWriter {
        inner: output,
        hasher: blake3::Hasher::new(),
        size_bytes: 0,
    };
    let input = File::open(stored)?;
    match compression {
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(input)?;
            std::io::copy(&mut decoder, &mut writer)?;
        }
        "none" => {
            let mut reader = BufReader::with_capacity(CHUNK_SIZE_BYTES, input);
            std::io::copy(&mut reader, &mut writer)?;
        }
        other => {
            return Err(std::io::Error::other(format!(
                "unknown compression {other:?}"
            )));
        }
    }
    writer.inner.sync_all()?;
    Ok(writer.hasher.finalize().to_hex().to_string())
}

/// Free bytes for unprivileged writers on the filesystem holding `path`.
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_compress_extract_round_trip() {
        let dir = std::env::temp_dir().join(format!("tb-agent-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("data");
        let mut content = vec![0u8; 3 * CHUNK_SIZE_BYTES + 17];
        for (i, byte) in content.iter_mut().enumerate().step_by(4096) {
            *byte = (i % 251) as u8;
        }
        std::fs::write(&source, &content).unwrap();
        let copy = dir.join("copy");
        clone_or_copy(&source, &copy).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), content);
        assert!(clone_or_copy(&source, &copy).is_err(), "never overwrites");
        let compressed = compress(&copy, &dir.join("copy.zst"), 3).unwrap();
        assert_eq!(compressed.data_blake3, blake3_file(&source).unwrap());
        assert_eq!(
            compressed.stored_blake3,
            blake3_file(&dir.join("copy.zst")).unwrap()
        );
        assert!(compressed.stored_size_bytes < compressed.data_size_bytes / 10);
        let restored = dir.join("restored");
        let hash = extract(&dir.join("copy.zst"), "zstd", &restored).unwrap();
        assert_eq!(hash, compressed.data_blake3);
        assert_eq!(std::fs::read(&restored).unwrap(), content);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
