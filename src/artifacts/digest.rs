//! SHA-256 of the artifact zip, computed while the zip is written so the
//! upload's `X-Checksum-Sha256` header costs no second read of a file that
//! may be gigabytes. Bytes written front to back are copied into recycled
//! blocks and handed to a hashing thread, which runs beside the writer. A
//! write anywhere else (the zip writer seeking back to patch a header)
//! spoils the running hash, and the caller then hashes the finished file
//! instead, unless the writer was told the final bytes in advance
//! ([`HashingWriter::expect_rewrite`]): those are hashed in place of the
//! first ones, and the rewrite must bring exactly them. SHA-256 is ring's
//! (already linked for TLS).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use ring::digest::{Context, SHA256};

/// Blocks in flight between the writer and the hashing thread; the writer
/// waits when all are queued. Blocks are reused: a fresh allocation of this
/// size per write (musl maps each one anew) costs more than the hash.
const BLOCKS: usize = 8;
/// Size of a block; larger writes are split.
const BLOCK_BYTES: usize = 256 * 1024;

/// A SHA-256 as the upload header carries it.
pub type Sha256Digest = [u8; 32];

/// A file writer that hashes what it writes, as long as it is written in
/// order.
pub struct HashingWriter<W> {
    inner: W,
    /// Where the next write lands.
    position: u64,
    /// How many leading bytes have been hashed; writes at this offset extend
    /// the hash.
    hashed: u64,
    hasher: Option<Hasher>,
    /// Announced rewrites (a shared borrow announces them: the zip writer
    /// only lends its inner writer that way).
    rewrites: RefCell<Vec<Rewrite>>,
}

/// Bytes that are written once and rewritten later with values known in
/// advance.
struct Rewrite {
    offset: u64,
    bytes: Vec<u8>,
    /// Which of `bytes` the rewrite has brought so far.
    rewritten: Vec<bool>,
}

impl Rewrite {
    fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.bytes.len() as u64
    }
}

struct Hasher {
    /// Filled blocks, to the hashing thread.
    full: SyncSender<Vec<u8>>,
    /// Hashed blocks, back for reuse.
    empty: Receiver<Vec<u8>>,
    /// Blocks allocated so far (at most [`BLOCKS`]).
    allocated: usize,
    thread: JoinHandle<Sha256Digest>,
}

impl Hasher {
    fn start() -> Option<Hasher> {
        let (full, to_hash) = sync_channel::<Vec<u8>>(BLOCKS);
        let (give_back, empty) = sync_channel::<Vec<u8>>(BLOCKS);
        let thread = std::thread::Builder::new()
            .name("zip-sha256".into())
            .spawn(move || {
                let mut sha = Context::new(&SHA256);
                for block in to_hash {
                    sha.update(&block);
                    // The writer may be gone (spoiled hash); then drop it.
                    let _ = give_back.try_send(block);
                }
                digest_bytes(sha)
            })
            .ok()?;
        Some(Hasher {
            full,
            empty,
            allocated: 0,
            thread,
        })
    }

    /// Queues a copy of `data`, which lands at `offset` of the file, with
    /// the final bytes of `rewrites` in place of what it holds there; false
    /// when the thread is gone.
    fn send(&mut self, offset: u64, data: &[u8], rewrites: &[Rewrite]) -> bool {
        let mut piece_offset = offset;
        for piece in data.chunks(BLOCK_BYTES) {
            let mut block = match self.empty.try_recv() {
                Ok(block) => block,
                Err(_) if self.allocated < BLOCKS => {
                    self.allocated += 1;
                    Vec::with_capacity(BLOCK_BYTES)
                }
                Err(_) => match self.empty.recv() {
                    Ok(block) => block,
                    Err(_) => return false,
                },
            };
            block.clear();
            block.extend_from_slice(piece);
            let piece_range = piece_offset..piece_offset + piece.len() as u64;
            for rewrite in rewrites {
                let range = rewrite.range();
                let (start, end) = (
                    range.start.max(piece_range.start),
                    range.end.min(piece_range.end),
                );
                if start < end {
                    let to = (start - piece_offset) as usize..(end - piece_offset) as usize;
                    let from = (start - range.start) as usize..(end - range.start) as usize;
                    block[to].copy_from_slice(&rewrite.bytes[from]);
                }
            }
            piece_offset = piece_range.end;
            if self.full.send(block).is_err() {
                return false;
            }
        }
        true
    }

    fn finish(self) -> Option<Sha256Digest> {
        drop(self.full);
        self.thread.join().ok()
    }
}

fn digest_bytes(sha: Context) -> Sha256Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(sha.finish().as_ref());
    out
}

impl<W: Write + Seek> HashingWriter<W> {
    /// Wraps `inner`, positioned at its start.
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            // Without a thread, the caller hashes the file afterwards.
            hasher: Hasher::start(),
            ..HashingWriter::unhashed(inner)
        }
    }

    /// Wraps `inner` without hashing (the same type for a writer that is
    /// known to seek back, so hashing would be wasted).
    pub fn unhashed(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            position: 0,
            hashed: 0,
            hasher: None,
            rewrites: RefCell::new(Vec::new()),
        }
    }

    /// Where the next write lands.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Announces that `bytes.len()` bytes at `offset`, not written yet, will
    /// be written and later rewritten as `bytes`: they are hashed as
    /// `bytes` the first time, and the rewrite must bring exactly `bytes`,
    /// all of them, before [`HashingWriter::finish`], or the hash is
    /// spoiled. False (and nothing announced) when the hash is spoiled
    /// already or `offset` has been written.
    pub fn expect_rewrite(&self, offset: u64, bytes: &[u8]) -> bool {
        if self.hasher.is_none() || offset < self.hashed {
            return false;
        }
        self.rewrites.borrow_mut().push(Rewrite {
            offset,
            bytes: bytes.to_vec(),
            rewritten: vec![false; bytes.len()],
        });
        true
    }

    /// The inner writer, and the SHA-256 of everything it holds if every
    /// byte was written in order exactly once and the file is not longer
    /// than what was hashed.
    pub fn finish(mut self) -> io::Result<(W, Option<Sha256Digest>)> {
        let end = self.inner.seek(SeekFrom::End(0))?;
        let rewritten = self
            .rewrites
            .get_mut()
            .iter()
            .all(|r| r.rewritten.iter().all(|done| *done));
        let digest = match self.hasher.take() {
            Some(hasher) => hasher.finish().filter(|_| end == self.hashed && rewritten),
            None => None,
        };
        Ok((self.inner, digest))
    }
}

impl<W> HashingWriter<W> {
    fn spoil(&mut self) {
        // Dropping the sender ends the thread; its result is never read.
        self.hasher = None;
    }
}

/// Whether `data`, written at `offset` behind the hashed end, is (part of)
/// one of `rewrites` with the announced bytes; records it.
fn is_announced_rewrite(rewrites: &mut [Rewrite], offset: u64, data: &[u8]) -> bool {
    let end = offset + data.len() as u64;
    let Some(rewrite) = rewrites
        .iter_mut()
        .find(|r| r.range().start <= offset && end <= r.range().end)
    else {
        return false;
    };
    let at = (offset - rewrite.offset) as usize;
    if rewrite.bytes[at..at + data.len()] != *data {
        return false;
    }
    rewrite.rewritten[at..at + data.len()].fill(true);
    true
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        let data = &buf[..written];
        if let Some(hasher) = &mut self.hasher {
            let rewrites = self.rewrites.get_mut();
            let kept = if self.position == self.hashed {
                self.hashed += written as u64;
                hasher.send(self.position, data, rewrites)
            } else {
                self.position + written as u64 <= self.hashed
                    && is_announced_rewrite(rewrites, self.position, data)
            };
            if !kept {
                self.spoil();
            }
        }
        self.position += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write + Seek> Seek for HashingWriter<W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let position = self.inner.seek(pos)?;
        if position > self.hashed {
            // A gap would be zeros the hash never saw.
            self.spoil();
        }
        self.position = position;
        Ok(position)
    }
}

/// SHA-256 of a file, read in a streaming fashion.
pub fn sha256_file(path: &Path) -> io::Result<Sha256Digest> {
    let mut file = File::open(path)?;
    let mut sha = Context::new(&SHA256);
    let mut buf = vec![0u8; BLOCK_BYTES];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha.update(&buf[..n]);
    }
    Ok(digest_bytes(sha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sha(data: &[u8]) -> Sha256Digest {
        let mut sha = Context::new(&SHA256);
        sha.update(data);
        digest_bytes(sha)
    }

    #[test]
    fn in_order_writes_are_hashed() {
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        w.write_all(b"hello ").unwrap();
        // A seek to where the writer already is (stream_position) is harmless.
        assert_eq!(w.stream_position().unwrap(), 6);
        w.seek(SeekFrom::End(0)).unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest) = w.finish().unwrap();
        assert_eq!(inner.into_inner(), b"hello world");
        assert_eq!(digest, Some(sha(b"hello world")));
    }

    #[test]
    fn large_writes_are_split_into_reused_blocks() {
        let data: Vec<u8> = (0..BLOCK_BYTES * 3 * BLOCKS + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        for piece in data.chunks(BLOCK_BYTES * 2 + 5) {
            w.write_all(piece).unwrap();
        }
        let (inner, digest) = w.finish().unwrap();
        assert_eq!(inner.into_inner(), data);
        assert_eq!(digest, Some(sha(&data)));
    }

    #[test]
    fn a_patch_behind_the_end_spoils_the_hash() {
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        w.write_all(b"header body").unwrap();
        w.seek(SeekFrom::Start(0)).unwrap();
        w.write_all(b"HEADER").unwrap();
        w.seek(SeekFrom::End(0)).unwrap();
        w.write_all(b" tail").unwrap();
        let (inner, digest) = w.finish().unwrap();
        assert_eq!(inner.into_inner(), b"HEADER body tail");
        assert_eq!(digest, None);
    }

    #[test]
    fn a_seek_back_without_a_write_keeps_the_hash() {
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        w.write_all(b"abc").unwrap();
        w.seek(SeekFrom::Start(1)).unwrap();
        w.seek(SeekFrom::End(0)).unwrap();
        w.write_all(b"def").unwrap();
        assert_eq!(w.finish().unwrap().1, Some(sha(b"abcdef")));
    }

    /// Writes `HEAD0000body`, rewrites the zeros with `patch` in two
    /// pieces, appends ` tail`; returns the file and the digest.
    fn write_with_rewrite(announced: &[u8], patch: &[u8]) -> (Vec<u8>, Option<Sha256Digest>) {
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        assert!(w.expect_rewrite(4, announced));
        w.write_all(b"HEAD0000body").unwrap();
        w.seek(SeekFrom::Start(4)).unwrap();
        w.write_all(&patch[..2]).unwrap();
        w.write_all(&patch[2..]).unwrap();
        w.seek(SeekFrom::End(0)).unwrap();
        w.write_all(b" tail").unwrap();
        let (inner, digest) = w.finish().unwrap();
        (inner.into_inner(), digest)
    }

    #[test]
    fn an_announced_rewrite_keeps_the_hash() {
        let (file, digest) = write_with_rewrite(b"1234", b"1234");
        assert_eq!(file, b"HEAD1234body tail");
        assert_eq!(digest, Some(sha(&file)));
    }

    #[test]
    fn a_rewrite_with_other_bytes_spoils_the_hash() {
        let (file, digest) = write_with_rewrite(b"1234", b"1235");
        assert_eq!(file, b"HEAD1235body tail");
        assert_eq!(digest, None);
    }

    #[test]
    fn an_announced_rewrite_that_never_comes_spoils_the_hash() {
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        assert!(w.expect_rewrite(2, b"xy"));
        w.write_all(b"abcdef").unwrap();
        assert_eq!(w.finish().unwrap().1, None);
        // Half of it is not enough either.
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        assert!(w.expect_rewrite(2, b"xy"));
        w.write_all(b"abcdef").unwrap();
        w.seek(SeekFrom::Start(2)).unwrap();
        w.write_all(b"x").unwrap();
        assert_eq!(w.finish().unwrap().1, None);
    }

    #[test]
    fn a_rewrite_announced_too_late_is_refused() {
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        w.write_all(b"abcdef").unwrap();
        assert!(
            !w.expect_rewrite(2, b"xy"),
            "those bytes are hashed already"
        );
        assert!(w.expect_rewrite(6, b"gh"), "the end is not written yet");
        let unhashed = HashingWriter::unhashed(Cursor::new(Vec::new()));
        assert!(!unhashed.expect_rewrite(0, b"x"));
    }

    #[test]
    fn a_rewrite_across_blocks_is_substituted_in_each() {
        let mut data: Vec<u8> = (0..BLOCK_BYTES * 2).map(|i| (i % 199) as u8).collect();
        let at = BLOCK_BYTES - 3;
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        assert!(w.expect_rewrite(at as u64, b"REWRITE"));
        w.write_all(&data).unwrap();
        w.seek(SeekFrom::Start(at as u64)).unwrap();
        w.write_all(b"REWRITE").unwrap();
        data[at..at + 7].copy_from_slice(b"REWRITE");
        let (inner, digest) = w.finish().unwrap();
        assert_eq!(inner.into_inner(), data);
        assert_eq!(digest, Some(sha(&data)));
    }

    #[test]
    fn a_gap_spoils_the_hash() {
        let mut w = HashingWriter::new(Cursor::new(Vec::new()));
        w.write_all(b"abc").unwrap();
        w.seek(SeekFrom::Start(10)).unwrap();
        w.write_all(b"x").unwrap();
        assert_eq!(w.finish().unwrap().1, None);
    }

    #[test]
    fn file_hash_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            hex::encode(sha256_file(&path).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
