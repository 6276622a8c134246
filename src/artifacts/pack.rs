//! Writing the artifact zip. Files are split, in name order, into chunks of
//! similar size; worker threads compress chunks into temporary zips beside
//! the output, which are then merged into the final archive by raw copy (no
//! recompression), chunk by chunk, so the entry order stays sorted. Files
//! that are already compressed (by extension, or whose first 64 KiB look
//! random) are stored; everything else is deflated. Content is streamed,
//! never held whole in memory. When the caller wants the archive's SHA-256
//! (an upload's checksum header), it is computed as the archive is written
//! (see [`super::digest`]): merged parts are written front to back, and in
//! an archive of one part, stored files have their CRC-32 read first so
//! that the header patch the zip writer makes after their data is known,
//! and hashed, before it happens.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use super::digest::{HashingWriter, Sha256Digest};
use super::{ArtifactError, ArtifactFile};
use crate::fsread::{self, FsReadError, Links};

/// Bytes read ahead of compression to judge whether a file is compressible.
const PROBE_BYTES: usize = 64 * 1024;
/// Probes shorter than this are not judged by entropy (too few samples).
const MIN_PROBE_FOR_ENTROPY: usize = 4096;
/// Shannon entropy (bits per byte) above which content counts as compressed.
const ENTROPY_STORE_THRESHOLD: f64 = 7.5;
/// Deflate level. With zlib-rs, 5 gives Info-ZIP's `-6` archive size
/// (measured on 360 MB of mixed sources, binaries and archives: 98.5 MB
/// both) in about 20% less CPU than 6.
const DEFLATE_LEVEL: i64 = 5;
/// Per-file weight added to its size when balancing chunks (open, headers).
const FILE_OVERHEAD: u64 = 16 * 1024;
/// Chunks per worker thread, so that uneven chunks still balance.
const CHUNKS_PER_WORKER: u64 = 4;
/// Smallest chunk worth a temporary zip of its own.
const MIN_CHUNK_WEIGHT: u64 = 4 * 1024 * 1024;
/// Copy buffer for file content.
const COPY_BUFFER: usize = 256 * 1024;

/// Extensions of formats that are compressed already.
const COMPRESSED_EXTENSIONS: &[&str] = &[
    "zip", "gz", "tgz", "bz2", "tbz", "tbz2", "xz", "txz", "zst", "zstd", "lz", "lz4", "lzma",
    "7z", "rar", "jar", "war", "ear", "apk", "aar", "whl", "egg", "nupkg", "crate", "deb", "rpm",
    "png", "jpg", "jpeg", "gif", "webp", "avif", "heic", "mp3", "mp4", "m4a", "m4v", "mkv", "mov",
    "webm", "ogg", "opus", "flac", "woff", "woff2", "br", "docx", "xlsx", "pptx", "odt", "ods",
    "epub", "pdf",
];

/// Files from this size on get ZIP64 sizes, patched elsewhere in the header.
const ZIP64_SIZE: u64 = u32::MAX as u64;
/// Offset of the CRC-32 in a zip local file header, followed by the
/// compressed and uncompressed sizes (APPNOTE 4.3.7): what the zip writer
/// patches after an entry's data.
const LOCAL_HEADER_CRC_OFFSET: u64 = 14;

/// The archive writer: buffered, and hashing when asked to.
type ZipOut = BufWriter<HashingWriter<File>>;

/// Whether [`pack`] computes the SHA-256 of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// Hash the archive while writing it (an HTTP upload sends the hash).
    Compute,
    /// No hash is needed.
    Skip,
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackSummary {
    pub files: usize,
    /// Total size of the packed files.
    pub input_bytes: u64,
    /// Size of the archive.
    pub zip_bytes: u64,
    /// SHA-256 of the archive, when [`Checksum::Compute`] asked for it and
    /// it could be computed while writing. It can't when an archive of one
    /// part holds a deflated file (its compressed size is known only after
    /// its data) or one of 4 GiB or more; the caller then hashes the file.
    pub sha256: Option<Sha256Digest>,
}

/// Whether a file should be stored rather than deflated: known compressed
/// extension, or a probe of its start that looks random.
pub(crate) fn should_store(name: &str, probe: &[u8]) -> bool {
    if probe.is_empty() {
        return true;
    }
    let extension = name
        .rsplit('/')
        .next()
        .and_then(|base| base.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    if let Some(extension) = extension {
        if COMPRESSED_EXTENSIONS.contains(&extension.as_str()) {
            return true;
        }
    }
    probe.len() >= MIN_PROBE_FOR_ENTROPY && entropy(probe) > ENTROPY_STORE_THRESHOLD
}

/// Shannon entropy of `data` in bits per byte (0 to 8).
fn entropy(data: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for byte in data {
        counts[*byte as usize] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

/// The zip timestamp of a modification time (UTC; 1980 for older, unknown
/// or unrepresentable times, the earliest zip can express).
fn zip_time(modified: Option<SystemTime>) -> DateTime {
    let Some(t) = modified.and_then(crate::clock::utc) else {
        return DateTime::default();
    };
    DateTime::from_date_and_time(t.year, t.month, t.day, t.hour, t.minute, t.second)
        .unwrap_or_default()
}

/// Split `files` (in order) into contiguous chunks of similar weight.
fn chunk_ranges(files: &[ArtifactFile], workers: usize) -> Vec<std::ops::Range<usize>> {
    let weight = |f: &ArtifactFile| f.size + FILE_OVERHEAD;
    let total: u64 = files.iter().map(weight).sum();
    let target = (total / (workers as u64 * CHUNKS_PER_WORKER).max(1)).max(MIN_CHUNK_WEIGHT);
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut acc = 0u64;
    for (index, file) in files.iter().enumerate() {
        acc += weight(file);
        if acc >= target {
            ranges.push(start..index + 1);
            start = index + 1;
            acc = 0;
        }
    }
    if start < files.len() {
        ranges.push(start..files.len());
    }
    ranges
}

/// Append one file to `zip`, streaming its content. While `announcing`,
/// a stored file is read once first for its CRC-32 and size, which are
/// announced to the hashing writer as the header patch to come; the first
/// file that can't be announced ends it (the hash is lost from there).
fn add_file(
    zip: &mut ZipWriter<ZipOut>,
    file: &ArtifactFile,
    buf: &mut [u8],
    out_path: &Path,
    announcing: &mut bool,
) -> Result<(), ArtifactError> {
    let read_error = |source| ArtifactError::Read {
        path: file.source.clone(),
        source,
    };
    // Not a path a build process could have swapped for a FIFO or a link
    // since it was collected, and no more than was collected.
    let (input, size) =
        fsread::open_regular(&file.source, Links::Refuse).map_err(|err| match err {
            FsReadError::Open { source, .. } | FsReadError::Read { source, .. } => {
                read_error(source)
            }
            refused => ArtifactError::Refused(refused),
        })?;
    if size > file.size {
        return Err(ArtifactError::Grew {
            path: file.source.clone(),
            collected: file.size,
            now: size,
        });
    }
    let mut input = input.take(file.size);
    // Fill the probe (a short read is not the end of the file).
    let probe_end = PROBE_BYTES.min(buf.len());
    let mut probe_len = 0;
    while probe_len < probe_end {
        match input.read(&mut buf[probe_len..probe_end]) {
            Ok(0) => break,
            Ok(n) => probe_len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e)),
        }
    }
    let method = if should_store(&file.name, &buf[..probe_len]) {
        CompressionMethod::Stored
    } else {
        CompressionMethod::Deflated
    };
    let mut options = SimpleFileOptions::default()
        .compression_method(method)
        .unix_permissions(file.mode)
        .last_modified_time(zip_time(file.modified))
        .large_file(file.size >= u64::from(u32::MAX));
    if method == CompressionMethod::Deflated {
        options = options.compression_level(Some(DEFLATE_LEVEL));
    }
    *announcing &= method == CompressionMethod::Stored && file.size < ZIP64_SIZE;
    if *announcing {
        *announcing = announce_stored_entry(zip, &mut input, buf, probe_len).map_err(read_error)?;
        // Announced or not, the file was read to its end into `buf` and
        // rewound: the copy starts from the top.
        probe_len = 0;
    }
    let zip_error = |source| ArtifactError::Zip {
        path: out_path.to_path_buf(),
        source,
    };
    let write_error = |source| ArtifactError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    zip.start_file(file.name.as_str(), options)
        .map_err(zip_error)?;
    zip.write_all(&buf[..probe_len]).map_err(write_error)?;
    loop {
        let n = match input.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        zip.write_all(&buf[..n]).map_err(write_error)?;
    }
    Ok(())
}

/// Reads the rest of `input` (after the `probe_len` bytes at the start of
/// `buf`, then into `buf`) for the CRC-32 and size of the stored entry
/// about to start, announces its header patch to the hashing writer under
/// `zip` and rewinds `input`. False when the entry can't be announced
/// (4 GiB or more, or the hash is lost already).
fn announce_stored_entry(
    zip: &ZipWriter<ZipOut>,
    input: &mut io::Take<File>,
    buf: &mut [u8],
    probe_len: usize,
) -> io::Result<bool> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[..probe_len]);
    let mut size = probe_len as u64;
    loop {
        match input.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                crc.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let size_cap = input.limit() + size;
    input.get_mut().rewind()?;
    input.set_limit(size_cap);
    let size = match u32::try_from(size) {
        Ok(size) if u64::from(size) < ZIP64_SIZE => size,
        _ => return Ok(false),
    };
    let Some(out) = zip.get_ref() else {
        return Ok(false);
    };
    // The previous entry is stored and complete, so the next header starts
    // at the end of what was written (buffered or not).
    let header_start = out.get_ref().position() + out.buffer().len() as u64;
    let mut fields = [0u8; 12];
    fields[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    fields[4..8].copy_from_slice(&size.to_le_bytes());
    fields[8..].copy_from_slice(&size.to_le_bytes());
    Ok(out
        .get_ref()
        .expect_rewrite(header_start + LOCAL_HEADER_CRC_OFFSET, &fields))
}

/// Write `files` into a zip file at `out_path`, returning it finished;
/// `announcing` as for [`add_file`].
fn write_zip(
    files: &[ArtifactFile],
    out: ZipOut,
    out_path: &Path,
    mut announcing: bool,
) -> Result<ZipOut, ArtifactError> {
    let mut zip = ZipWriter::new(out);
    let mut buf = vec![0u8; COPY_BUFFER];
    for file in files {
        add_file(&mut zip, file, &mut buf, out_path, &mut announcing)?;
    }
    zip.finish().map_err(|source| ArtifactError::Zip {
        path: out_path.to_path_buf(),
        source,
    })
}

/// Zip `files` into `out_zip` (replaced if present), in parallel across the
/// machine's cores, keeping names, order, modes and modification times.
/// With [`Checksum::Compute`] the archive is hashed as it is written.
pub fn pack(
    files: &[ArtifactFile],
    out_zip: &Path,
    checksum: Checksum,
) -> Result<PackSummary, ArtifactError> {
    let write_error = |source| ArtifactError::Write {
        path: out_zip.to_path_buf(),
        source,
    };
    let zip_error = |source| ArtifactError::Zip {
        path: out_zip.to_path_buf(),
        source,
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    let ranges = chunk_ranges(files, workers);
    let file = File::create(out_zip).map_err(write_error)?;
    let file = match checksum {
        Checksum::Compute => HashingWriter::new(file),
        Checksum::Skip => HashingWriter::unhashed(file),
    };
    let out = BufWriter::with_capacity(COPY_BUFFER, file);

    let out =
        if ranges.len() <= 1 {
            write_zip(files, out, out_zip, checksum == Checksum::Compute)?
        } else {
            let temp_dir = match out_zip.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let parts = compress_chunks(files, &ranges, workers, &temp_dir)?;
            let mut zip = ZipWriter::new(out);
            for part in parts {
                let archive = ZipArchive::new(BufReader::with_capacity(COPY_BUFFER, part))
                    .map_err(|source| ArtifactError::Zip {
                        path: temp_dir.clone(),
                        source,
                    })?;
                zip.merge_archive(archive).map_err(zip_error)?;
            }
            zip.finish().map_err(zip_error)?
        };
    // Not synced: the archive is uploaded from the page cache and deleted
    // with the build's scratch directory (a `file://` store syncs its copy).
    let hashing = out.into_inner().map_err(|e| write_error(e.into_error()))?;
    let (file, sha256) = hashing.finish().map_err(write_error)?;
    let zip_bytes = file.metadata().map_err(write_error)?.len();
    Ok(PackSummary {
        files: files.len(),
        input_bytes: files.iter().map(|f| f.size).sum(),
        zip_bytes,
        sha256,
    })
}

/// Compress each chunk into an anonymous temporary zip in `temp_dir`, on
/// up to `workers` threads; the parts come back in chunk order.
fn compress_chunks(
    files: &[ArtifactFile],
    ranges: &[std::ops::Range<usize>],
    workers: usize,
    temp_dir: &Path,
) -> Result<Vec<File>, ArtifactError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<File>>> = Mutex::new((0..ranges.len()).map(|_| None).collect());
    let failure: Mutex<Option<ArtifactError>> = Mutex::new(None);
    let failed = || failure.lock().map(|f| f.is_some()).unwrap_or(true);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(ranges.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= ranges.len() || failed() {
                    return;
                }
                let result = tempfile::tempfile_in(temp_dir)
                    .map_err(|source| ArtifactError::Write {
                        path: temp_dir.to_path_buf(),
                        source,
                    })
                    .and_then(|temp| {
                        let out =
                            BufWriter::with_capacity(COPY_BUFFER, HashingWriter::unhashed(temp));
                        write_zip(&files[ranges[index].clone()], out, temp_dir, false)
                    })
                    .and_then(|out| {
                        let write_error = |source| ArtifactError::Write {
                            path: temp_dir.to_path_buf(),
                            source,
                        };
                        let unhashed = out.into_inner().map_err(|e| write_error(e.into_error()))?;
                        let (mut temp, _) = unhashed.finish().map_err(write_error)?;
                        temp.rewind().map_err(write_error)?;
                        Ok(temp)
                    });
                match result {
                    Ok(temp) => {
                        if let Ok(mut results) = results.lock() {
                            results[index] = Some(temp);
                        }
                    }
                    Err(error) => {
                        if let Ok(mut failure) = failure.lock() {
                            failure.get_or_insert(error);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(error) = failure
        .into_inner()
        .map_err(|_| ArtifactError::Worker("a packing thread panicked".into()))?
    {
        return Err(error);
    }
    let results = results
        .into_inner()
        .map_err(|_| ArtifactError::Worker("a packing thread panicked".into()))?;
    results
        .into_iter()
        .map(|part| part.ok_or_else(|| ArtifactError::Worker("a chunk was not compressed".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::time::UNIX_EPOCH;

    #[test]
    fn compressed_extensions_are_stored() {
        let text = b"hello hello hello hello";
        for name in [
            "a/b.zip",
            "x.tar.gz",
            "IMG.JPG",
            "font.woff2",
            "lib.jar",
            "v.mp4",
            "a.zst",
        ] {
            assert!(should_store(name, text), "{name}");
        }
        for name in [
            "a/b.txt",
            "main.rs",
            "zip",
            "archive.zip.txt",
            "dir.gz/file.c",
        ] {
            assert!(!should_store(name, text), "{name}");
        }
        assert!(should_store("empty.txt", b""), "empty files are stored");
    }

    #[test]
    fn random_content_is_stored_and_text_deflated() {
        let mut rng = fastrand::Rng::with_seed(42);
        let random: Vec<u8> = (0..PROBE_BYTES).map(|_| rng.u8(..)).collect();
        assert!(entropy(&random) > 7.9);
        assert!(should_store("data.bin", &random));
        let text = "the quick brown fox jumps over the lazy dog\n".repeat(2000);
        assert!(entropy(text.as_bytes()) < 5.0);
        assert!(!should_store("data.bin", text.as_bytes()));
        // Small random files are too short to judge: deflated.
        assert!(!should_store("small.bin", &random[..512]));
    }

    #[test]
    fn civil_dates() {
        let t = zip_time(Some(
            UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200 + 3723),
        ));
        assert_eq!(
            (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            (2024, 1, 1, 1, 2, 2)
        );
        assert_eq!(zip_time(None), DateTime::default());
        // A build can set any modification time: none breaks packing.
        let far = UNIX_EPOCH + std::time::Duration::from_secs(400_000_000_000);
        assert_eq!(zip_time(Some(far)), DateTime::default());
        let before = UNIX_EPOCH - std::time::Duration::from_secs(1);
        assert_eq!(zip_time(Some(before)), DateTime::default());
    }

    fn fake(sizes: &[u64]) -> Vec<ArtifactFile> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, size)| ArtifactFile {
                name: format!("f{i}"),
                source: PathBuf::from(format!("f{i}")),
                size: *size,
                mode: 0o644,
                modified: None,
            })
            .collect()
    }

    #[test]
    fn chunks_cover_all_files_in_order() {
        let files = fake(&[10 << 20, 1, 2, 3 << 20, 50 << 20, 5, 6, 7 << 20, 8, 9]);
        let ranges = chunk_ranges(&files, 2);
        assert!(ranges.len() > 1);
        let mut expected = 0;
        for range in &ranges {
            assert_eq!(range.start, expected);
            assert!(range.end > range.start);
            expected = range.end;
        }
        assert_eq!(expected, files.len());
        // Small inputs stay in one chunk (no merge overhead).
        assert_eq!(chunk_ranges(&fake(&[100, 200, 300]), 8), vec![0..3]);
        assert!(chunk_ranges(&[], 4).is_empty());
    }

    #[test]
    fn packs_and_reads_back_with_methods_and_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        let mut rng = fastrand::Rng::with_seed(3);
        for i in 0..40 {
            let name = format!(
                "d{}/file{i:02}.{}",
                i % 3,
                if i % 4 == 0 { "png" } else { "txt" }
            );
            let path = dir.path().join(format!("src{i}"));
            // Big enough to make several chunks.
            let content: Vec<u8> = if i % 5 == 0 {
                (0..300_000).map(|_| rng.u8(..)).collect()
            } else {
                format!("line {i}\n").repeat(40_000).into_bytes()
            };
            fs::write(&path, &content).expect("write");
            let mode = if i % 2 == 0 { 0o755 } else { 0o644 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            files.push(ArtifactFile {
                name,
                source: path,
                size: content.len() as u64,
                mode,
                modified: Some(SystemTime::now()),
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let out = dir.path().join("out.zip");
        assert!(
            chunk_ranges(&files, 2).len() > 1,
            "the test must exercise merging"
        );
        let summary = pack(&files, &out, Checksum::Compute).expect("pack");
        assert_eq!(summary.files, 40);
        assert_eq!(
            summary.input_bytes,
            files.iter().map(|f| f.size).sum::<u64>()
        );
        assert!(summary.zip_bytes < summary.input_bytes / 2);
        // Merged front to back: hashed while written, and the hash is right.
        assert_eq!(
            summary.sha256,
            Some(super::super::digest::sha256_file(&out).expect("hash"))
        );
        let mut archive = ZipArchive::new(File::open(&out).expect("open")).expect("zip");
        assert_eq!(archive.len(), 40);
        for (index, file) in files.iter().enumerate() {
            let mut entry = archive.by_index(index).expect("entry");
            assert_eq!(entry.name().expect("name"), file.name, "order kept");
            assert_eq!(entry.unix_mode().map(|m| m & 0o777), Some(file.mode));
            let expected_method = if file.name.ends_with(".png") || file.size == 300_000 {
                CompressionMethod::Stored
            } else {
                CompressionMethod::Deflated
            };
            assert_eq!(entry.compression(), expected_method, "{}", file.name);
            let mut content = Vec::new();
            entry.read_to_end(&mut content).expect("read");
            assert_eq!(
                content,
                fs::read(&file.source).expect("source"),
                "{}",
                file.name
            );
        }
    }

    #[test]
    fn missing_source_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = fake(&[1]);
        let error =
            pack(&files, &dir.path().join("o.zip"), Checksum::Compute).expect_err("missing");
        assert!(
            matches!(&error, ArtifactError::Read { path, .. } if path == Path::new("f0")),
            "{error}"
        );
    }
    fn one_file(dir: &Path, name: &str, content: &[u8]) -> ArtifactFile {
        let source = dir.join(format!("src-{}", name.replace('/', "_")));
        fs::write(&source, content).expect("write");
        ArtifactFile {
            name: name.to_string(),
            source,
            size: content.len() as u64,
            mode: 0o640,
            modified: Some(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
        }
    }

    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..len).map(|_| rng.u8(..)).collect()
    }

    /// Packs `files` hashed and plain; checks that the archives are the
    /// same bytes and returns the hashed one's summary and path.
    fn pack_both_ways(dir: &Path, files: &[ArtifactFile]) -> (PackSummary, PathBuf) {
        let hashed = dir.join("hashed.zip");
        let summary = pack(files, &hashed, Checksum::Compute).expect("pack");
        let plain = dir.join("plain.zip");
        assert_eq!(
            pack(files, &plain, Checksum::Skip).expect("pack").sha256,
            None
        );
        let (hashed_bytes, plain_bytes) = (
            fs::read(&hashed).expect("read"),
            fs::read(&plain).expect("read"),
        );
        assert!(hashed_bytes == plain_bytes, "hashing changed the archive");
        (summary, hashed)
    }

    #[test]
    fn a_single_stored_file_is_hashed_while_packed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content = random_bytes(9, 3 * COPY_BUFFER + 123);
        let files = vec![one_file(dir.path(), "dist/ü-bundle.bin", &content)];
        assert_eq!(chunk_ranges(&files, 2).len(), 1, "a single part");
        let (summary, zip) = pack_both_ways(dir.path(), &files);
        assert_eq!(
            summary.sha256,
            Some(super::super::digest::sha256_file(&zip).expect("hash"))
        );
        let mut archive = ZipArchive::new(File::open(&zip).expect("open")).expect("zip");
        let mut entry = archive.by_index(0).expect("entry");
        assert_eq!(entry.name().expect("name"), "dist/ü-bundle.bin");
        assert_eq!(entry.compression(), CompressionMethod::Stored);
        assert_eq!(entry.unix_mode().map(|m| m & 0o777), Some(0o640));
        let mut read = Vec::new();
        // Reading checks the CRC-32.
        entry.read_to_end(&mut read).expect("read");
        assert_eq!(read, content);
    }

    #[test]
    fn small_stored_files_in_one_part_are_hashed_while_packed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = vec![
            one_file(dir.path(), "a.png", b"not really a png"),
            one_file(dir.path(), "b.zip", b""),
            one_file(dir.path(), "c.bin", &random_bytes(1, 70_000)),
        ];
        let (summary, zip) = pack_both_ways(dir.path(), &files);
        assert_eq!(summary.files, 3);
        assert_eq!(
            summary.sha256,
            Some(super::super::digest::sha256_file(&zip).expect("hash"))
        );
    }

    #[test]
    fn a_deflated_file_in_one_part_leaves_the_hash_to_the_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "a line\n".repeat(10_000);
        let files = vec![
            one_file(dir.path(), "a.bin", &random_bytes(2, 70_000)),
            one_file(dir.path(), "log.txt", text.as_bytes()),
            one_file(dir.path(), "z.bin", &random_bytes(3, 70_000)),
        ];
        let (summary, zip) = pack_both_ways(dir.path(), &files);
        assert_eq!(summary.sha256, None);
        let mut archive = ZipArchive::new(File::open(&zip).expect("open")).expect("zip");
        let mut read = String::new();
        let mut entry = archive.by_index(1).expect("entry");
        assert_eq!(entry.compression(), CompressionMethod::Deflated);
        entry.read_to_string(&mut read).expect("read");
        assert_eq!(read, text);
    }

    #[test]
    fn a_file_read_for_an_announcement_that_is_refused_is_still_packed_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content = random_bytes(5, 2 * COPY_BUFFER + 7);
        let files = vec![
            one_file(dir.path(), "a.bin", &content),
            one_file(dir.path(), "b.bin", &random_bytes(6, 100)),
        ];
        // An unhashed writer refuses every announcement, after the read.
        let out = dir.path().join("o.zip");
        let writer = HashingWriter::unhashed(File::create(&out).expect("create"));
        let zip_out = write_zip(&files, BufWriter::new(writer), &out, true).expect("zip");
        assert!(zip_out.into_inner().is_ok(), "flush");
        let mut archive = ZipArchive::new(File::open(&out).expect("open")).expect("zip");
        for (index, file) in files.iter().enumerate() {
            let mut read = Vec::new();
            archive
                .by_index(index)
                .expect("entry")
                .read_to_end(&mut read)
                .expect("read (CRC checked)");
            assert_eq!(
                read,
                fs::read(&file.source).expect("source"),
                "{}",
                file.name
            );
        }
    }

    #[test]
    fn no_hash_when_none_is_wanted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<ArtifactFile> = (0..6)
            .map(|i| one_file(dir.path(), &format!("r{i}.bin"), &random_bytes(i, 3 << 20)))
            .collect();
        assert!(chunk_ranges(&files, 2).len() > 1, "merged");
        let summary = pack(&files, &dir.path().join("o.zip"), Checksum::Skip).expect("pack");
        assert_eq!((summary.files, summary.sha256), (6, None));
    }

    #[test]
    fn a_source_swapped_for_a_fifo_or_a_link_or_grown_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let collected = |name: &str, size: u64| ArtifactFile {
            name: name.to_string(),
            source: dir.path().join(name),
            size,
            mode: 0o644,
            modified: None,
        };
        let out = dir.path().join("out.zip");
        // Collected as a file, then swapped for a FIFO nobody writes to:
        // refused at once, not waited on.
        let fifo = dir.path().join("report.txt");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = pack(&[collected("report.txt", 10)], &out, Checksum::Skip)
            .expect_err("a FIFO is not packed");
        assert!(
            matches!(&err, ArtifactError::Refused(e) if e.is_refusal()),
            "{err}"
        );
        assert!(err.to_string().contains("named pipe"), "{err}");
        // Swapped for a link to a secret.
        fs::write(dir.path().join("secret"), "s3cret").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("app.log"))
            .expect("link");
        let err = pack(&[collected("app.log", 6)], &out, Checksum::Skip)
            .expect_err("a link is not followed");
        assert!(matches!(&err, ArtifactError::Refused(_)), "{err}");
        // Grown since it was collected.
        fs::write(dir.path().join("big.txt"), vec![b'x'; 100]).expect("write");
        let err = pack(&[collected("big.txt", 10)], &out, Checksum::Skip)
            .expect_err("a grown file is refused");
        assert!(
            matches!(
                &err,
                ArtifactError::Grew {
                    collected: 10,
                    now: 100,
                    ..
                }
            ),
            "{err}"
        );
    }
}
