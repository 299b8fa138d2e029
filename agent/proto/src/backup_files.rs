//! File work for backups, all blocking (run it on the blocking pool): reflink-or-copy, hashing,
//! compression, verification and restore.

use std::fs::File;
use std::fs::OpenOptions;
use std::io::{BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::{Whence, lseek};

/// Streaming buffers: large enough for sequential throughput, small enough for the agent's RSS.
const CHUNK_SIZE_BYTES: usize = 1024 * 1024;
/// The unit of zero detection: a filesystem block (4 KiB on ext4 and XFS), the unit a hole can
/// save.
const BLOCK_SIZE_BYTES: usize = 4096;
const _: () = assert!(CHUNK_SIZE_BYTES % BLOCK_SIZE_BYTES == 0);
/// Backup files are a full copy of a financial ledger: owner only.
pub const FILE_MODE: u32 = 0o600;

/// Creates a new file owner-only (`FILE_MODE`), failing if it exists.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Copies `source` to a new owner-only file `destination`: an atomic reflink clone (FICLONE)
/// where the filesystem supports it, else a sparse copy (`copy_sparse`). Both end with fsync.
/// Returns whether the clone was a reflink. Once `cancel` is set, the copy stops at its next
/// chunk with an error (a reflink is one call and is not interrupted).
pub fn clone_or_copy(
    source: &Path,
    destination: &Path,
    cancel: &AtomicBool,
) -> std::io::Result<bool> {
    let input = File::open(source)?;
    let output = create_private_file(destination)?;
    // SAFETY: both descriptors are open for the duration of the call.
    let cloned = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) } == 0;
    if cloned {
        output.sync_all()?;
        return Ok(true);
    }
    copy_sparse(&input, &output, cancel)?;
    output.sync_all()?;
    Ok(false)
}

/// Copies `input` into the empty file `output`, leaving holes where `input` has holes
/// (SEEK_DATA/SEEK_HOLE) or whole blocks of zeros: the content (and so its BLAKE3) is the same,
/// and a TigerBeetle data file, mostly zeros until it fills, copies in a fraction of the time and
/// space, as `cp` does. This copy runs while the replica is stopped, so its time is downtime.
///
/// The data is read with O_DIRECT where the filesystem allows it: straight from the disk into
/// the buffer, without filling the page cache with a file the replica itself reads with
/// O_DIRECT (on a 2-core host the page-cache copy was most of the copy's time). Otherwise, and
/// for any read O_DIRECT refuses, buffered reads. Returns the bytes written (the rest are holes).
/// Checks `cancel` before each chunk: a copy abandoned at its deadline stops reading the data
/// file the restarted replica is using.
pub fn copy_sparse(input: &File, output: &File, cancel: &AtomicBool) -> std::io::Result<u64> {
    copy_sparse_with(ChunkReader::new(input), input, output, cancel)
}

fn copy_sparse_with(
    mut reader: ChunkReader<'_>,
    input: &File,
    output: &File,
    cancel: &AtomicBool,
) -> std::io::Result<u64> {
    let size_bytes = input.metadata()?.len();
    assert_eq!(
        output.metadata()?.len(),
        0,
        "copies only into an empty file"
    );
    let mut written_bytes = 0u64;
    let mut offset = 0u64;
    while offset < size_bytes {
        let data_start = match lseek(input, offset as i64, Whence::SeekData) {
            Ok(start) => start as u64,
            // Nothing but a hole from `offset` to the end.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(errno) => return Err(errno.into()),
        };
        if data_start >= size_bytes {
            break;
        }
        let data_end = match lseek(input, data_start as i64, Whence::SeekHole) {
            Ok(end) => (end as u64).min(size_bytes),
            Err(errno) => return Err(errno.into()),
        };
        assert!(data_start < data_end, "SEEK_HOLE went backwards");
        let mut position = data_start;
        while position < data_end {
            if cancel.load(Ordering::Acquire) {
                return Err(std::io::Error::other("the copy was cancelled"));
            }
            let length = (data_end - position).min(CHUNK_SIZE_BYTES as u64) as usize;
            let chunk = reader.read_at(position, length)?;
            written_bytes += write_non_zero_blocks(output, chunk, position)?;
            position += length as u64;
        }
        offset = data_end;
    }
    // Trailing holes: the length is the source's.
    output.set_len(size_bytes)?;
    Ok(written_bytes)
}

/// Reads chunks of a file at given offsets, with O_DIRECT while the filesystem and the offsets
/// allow it, else buffered.
struct ChunkReader<'a> {
    buffered: &'a File,
    direct: Option<File>,
    /// `CHUNK_SIZE_BYTES` plus room to start at a block-aligned address, as O_DIRECT needs.
    buffer: Vec<u8>,
    aligned_start: usize,
}

impl<'a> ChunkReader<'a> {
    fn new(buffered: &'a File) -> ChunkReader<'a> {
        // The same file, opened again by its /proc/self/fd link: O_DIRECT is set at open.
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", buffered.as_raw_fd()))
            .ok();
        ChunkReader::with(buffered, direct)
    }

    fn with(buffered: &'a File, direct: Option<File>) -> ChunkReader<'a> {
        if direct.is_none() {
            let _ = nix::fcntl::posix_fadvise(
                buffered,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
            );
        }
        let buffer = vec![0u8; CHUNK_SIZE_BYTES + BLOCK_SIZE_BYTES];
        let aligned_start = buffer.as_ptr().align_offset(BLOCK_SIZE_BYTES);
        assert!(aligned_start < BLOCK_SIZE_BYTES);
        ChunkReader {
            buffered,
            direct,
            buffer,
            aligned_start,
        }
    }

    /// The `length` bytes at `position` (all of them: the file does not shrink while its replica
    /// is stopped).
    fn read_at(&mut self, position: u64, length: usize) -> std::io::Result<&[u8]> {
        assert!(length <= CHUNK_SIZE_BYTES);
        let chunk = &mut self.buffer[self.aligned_start..self.aligned_start + CHUNK_SIZE_BYTES];
        if let Some(direct) = &self.direct
            && position % BLOCK_SIZE_BYTES as u64 == 0
        {
            // Whole blocks; past the end of the file the read is simply short.
            let request = length.next_multiple_of(BLOCK_SIZE_BYTES);
            match read_full_at(direct, &mut chunk[..request], position) {
                Ok(read) if read >= length => return Ok(&chunk[..length]),
                Ok(read) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("read {read} of {length} bytes at {position}: the file shrank"),
                    ));
                }
                // The filesystem refuses O_DIRECT here: buffered reads from now on.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(error) => return Err(error),
            }
        }
        self.buffered
            .read_exact_at(&mut chunk[..length], position)?;
        Ok(&chunk[..length])
    }
}

/// Reads into `buffer` at `position` until it is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buffer: &mut [u8], position: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], position + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Writes the runs of `chunk` that are not whole zero blocks at `offset` (plus their position in
/// `chunk`); zero blocks stay holes. Blocks are counted from `offset`, which SEEK_DATA returns
/// block-aligned. Returns the bytes written.
fn write_non_zero_blocks(output: &File, chunk: &[u8], offset: u64) -> std::io::Result<u64> {
    let mut written_bytes = 0u64;
    let mut run_start: Option<usize> = None;
    for (index, block) in chunk.chunks(BLOCK_SIZE_BYTES).enumerate() {
        let block_start = index * BLOCK_SIZE_BYTES;
        match (is_zero(block), run_start) {
            (false, None) => run_start = Some(block_start),
            (true, Some(start)) => {
                output.write_all_at(&chunk[start..block_start], offset + start as u64)?;
                written_bytes += (block_start - start) as u64;
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        output.write_all_at(&chunk[start..], offset + start as u64)?;
        written_bytes += (chunk.len() - start) as u64;
    }
    Ok(written_bytes)
}

/// Whether every byte is zero. OR-folds 16-byte words, which the compiler vectorises; there is no
/// early exit, but a block is only 4 KiB.
fn is_zero(block: &[u8]) -> bool {
    let words = block.chunks_exact(16);
    let rest = words.remainder();
    let folded = words.fold(0u128, |acc, word| {
        acc | u128::from_ne_bytes(word.try_into().expect("16 bytes"))
    });
    folded == 0 && rest.iter().all(|&byte| byte == 0)
}

/// BLAKE3 of a file, hex.
pub fn blake3_file(path: &Path) -> std::io::Result<String> {
    blake3_reader(File::open(path)?)
}

/// BLAKE3 of everything `file` holds from where it is, hex.
pub fn blake3_reader(mut file: File) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
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
    let output = create_private_file(destination)?;
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

/// `extract_file` of the file at `stored`.
pub fn extract(stored: &Path, compression: &str, destination: &Path) -> std::io::Result<String> {
    extract_file(File::open(stored)?, compression, destination)
}

/// Writes the data a stored backup file (`input`, opened by the caller inside the backup's
/// directory) holds into `destination` (a new owner-only file), decompressing when
/// `compression` is `zstd`, and returns the BLAKE3 of what was written. fsyncs the result.
pub fn extract_file(input: File, compression: &str, destination: &Path) -> std::io::Result<String> {
    let output = create_private_file(destination)?;
    let mut writer = HashingWriter {
        inner: output,
        hasher: blake3::Hasher::new(),
        size_bytes: 0,
    };
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
    use std::path::PathBuf;

    /// A new empty directory for one test.
    fn empty_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tb-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn copy_compress_extract_round_trip() {
        let dir = empty_dir("files");
        let source = dir.join("data");
        let mut content = vec![0u8; 3 * CHUNK_SIZE_BYTES + 17];
        for (i, byte) in content.iter_mut().enumerate().step_by(4096) {
            *byte = (i % 251) as u8;
        }
        std::fs::write(&source, &content).unwrap();
        let copy = dir.join("copy");
        clone_or_copy(&source, &copy, &AtomicBool::new(false)).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), content);
        assert!(
            clone_or_copy(&source, &copy, &AtomicBool::new(false)).is_err(),
            "never overwrites"
        );
        let compressed = compress(&copy, &dir.join("copy.zst"), 3).unwrap();
        assert_eq!(compressed.data_blake3, blake3_file(&source).unwrap());
        assert_eq!(
            compressed.stored_blake3,
            blake3_file(&dir.join("copy.zst")).unwrap()
        );
        assert!(compressed.stored_size_bytes < compressed.data_size_bytes / 10);
        let restored = dir.join("restored");
        let hash = extract(&dir.join("copy.zst"), "zstd", &restored).unwrap();
        for path in [&copy, &dir.join("copy.zst"), &restored] {
            let mode = std::fs::metadata(path).unwrap().permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o600,
                "{}",
                path.display()
            );
        }
        assert_eq!(hash, compressed.data_blake3);
        assert_eq!(std::fs::read(&restored).unwrap(), content);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn allocated_bytes(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
    }

    /// A file with a hole, runs of written zeros (allocated) and data, including a zero block
    /// inside a chunk and an odd-sized tail: the copy has the same bytes and hash, and only the
    /// data is allocated.
    #[test]
    fn a_cancelled_copy_stops_before_its_next_chunk() {
        let dir = empty_dir("cancel");
        let source = dir.join("data");
        std::fs::write(&source, vec![7u8; 2 * CHUNK_SIZE_BYTES]).unwrap();
        let output = create_private_file(&dir.join("copy")).unwrap();
        let error = copy_sparse(
            &File::open(&source).unwrap(),
            &output,
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(error.to_string().contains("cancelled"), "{error}");
        assert_eq!(
            output.metadata().unwrap().len(),
            0,
            "wrote after the cancel"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file with data, a hole, written zeros and a data tail: its path and its data bytes.
    fn sparse_source(dir: &Path) -> (PathBuf, u64) {
        let source = dir.join("data");
        let file = File::create(&source).unwrap();
        let mib = 1024 * 1024u64;
        let data = |seed: u8, length: usize| -> Vec<u8> {
            (0..length).map(|i| (i % 253) as u8 ^ seed | 1).collect()
        };
        // 0-2 MiB: data. 2-10 MiB: a hole. 10-18 MiB: written zeros. 18 MiB: one data block,
        // one zero block, one data block. Then 3 MiB of written zeros and a 100-byte data tail.
        file.write_all_at(&data(1, 2 * mib as usize), 0).unwrap();
        file.write_all_at(&vec![0u8; 8 * mib as usize], 10 * mib)
            .unwrap();
        let mut mixed = data(2, 3 * BLOCK_SIZE_BYTES);
        mixed[BLOCK_SIZE_BYTES..2 * BLOCK_SIZE_BYTES].fill(0);
        file.write_all_at(&mixed, 18 * mib).unwrap();
        let tail_at = 18 * mib + 3 * BLOCK_SIZE_BYTES as u64;
        file.write_all_at(&vec![0u8; 3 * mib as usize], tail_at)
            .unwrap();
        file.write_all_at(&data(3, 100), tail_at + 3 * mib).unwrap();
        file.sync_all().unwrap();
        drop(file);
        let size_bytes = std::fs::metadata(&source).unwrap().len();
        assert_eq!(size_bytes, tail_at + 3 * mib + 100);
        let data_bytes = 2 * mib + 2 * BLOCK_SIZE_BYTES as u64 + 100;
        assert!(
            allocated_bytes(&source) > data_bytes + 10 * mib,
            "the written zeros are allocated in the source"
        );
        (source, data_bytes)
    }

    #[test]
    fn sparse_copy_skips_holes_and_zero_runs() {
        let dir = empty_dir("sparse");
        let mib = 1024 * 1024u64;
        let (source, data_bytes) = sparse_source(&dir);

        // Through the backup's entry point (a reflink where the filesystem has them).
        let copy = dir.join("copy");
        clone_or_copy(&source, &copy, &AtomicBool::new(false)).unwrap();
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(&source).unwrap()
        );
        assert_eq!(blake3_file(&copy).unwrap(), blake3_file(&source).unwrap());

        // The sparse copy itself: the bytes written are exactly the non-zero blocks, and only
        // they are allocated (rounded up to blocks, with a little room for filesystem metadata).
        let direct = dir.join("direct");
        let output = create_private_file(&direct).unwrap();
        let written = copy_sparse(
            &File::open(&source).unwrap(),
            &output,
            &AtomicBool::new(false),
        )
        .unwrap();
        output.sync_all().unwrap();
        assert_eq!(written, data_bytes);
        assert_eq!(
            std::fs::read(&direct).unwrap(),
            std::fs::read(&source).unwrap()
        );
        assert_eq!(blake3_file(&direct).unwrap(), blake3_file(&source).unwrap());
        let allocated = allocated_bytes(&direct);
        assert!(
            allocated < allocated_bytes(&source) && allocated <= data_bytes + 64 * 1024,
            "the copy allocated {allocated} bytes for {data_bytes} bytes of data (the source {})",
            allocated_bytes(&source)
        );

        // Buffered reads, as on a filesystem without O_DIRECT, give the same copy.
        let input = File::open(&source).unwrap();
        let output = create_private_file(&dir.join("buffered")).unwrap();
        let written = copy_sparse_with(
            ChunkReader::with(&input, None),
            &input,
            &output,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(written, data_bytes);
        assert_eq!(
            std::fs::read(dir.join("buffered")).unwrap(),
            std::fs::read(&source).unwrap()
        );

        // A file that is all hole, and an empty file.
        for (name, length) in [("hole", 5 * mib), ("empty", 0)] {
            let path = dir.join(name);
            File::create(&path).unwrap().set_len(length).unwrap();
            let copy = dir.join(format!("{name}.copy"));
            clone_or_copy(&path, &copy, &AtomicBool::new(false)).unwrap();
            assert_eq!(std::fs::metadata(&copy).unwrap().len(), length);
            assert_eq!(blake3_file(&copy).unwrap(), blake3_file(&path).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zero_blocks() {
        assert!(is_zero(&[0u8; BLOCK_SIZE_BYTES]));
        assert!(is_zero(&[0u8; 17]));
        for position in [0, 15, 16, 4095] {
            let mut block = [0u8; BLOCK_SIZE_BYTES];
            block[position] = 1;
            assert!(!is_zero(&block), "{position}");
        }
        let mut odd = [0u8; 17];
        odd[16] = 1;
        assert!(!is_zero(&odd));
    }
}
