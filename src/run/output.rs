//! Build output: every line a command prints is masked for secrets, then
//! written to the console (forgexec's stdout, which `docker logs` keeps) and
//! to the build log that is uploaded at the end. Lines are processed in a
//! fixed-size buffer, so memory stays constant whatever the volume; an
//! over-long line is cut into chunks without ever splitting a secret.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};

/// What replaces a secret in output.
pub const MASK: &str = "***";
/// Secrets shorter than this are not masked: they would blank out ordinary
/// text (a secret `1` would mask every digit).
pub const MIN_SECRET_LEN: usize = 4;
/// Longest line emitted in one piece; longer lines are cut.
const MAX_LINE: usize = 64 * 1024;
/// Most output kept of one command in [`ConsoleMode::FailingCommand`]: the
/// tail is kept, the head is cut (the build log still has everything).
const MAX_CAPTURE: usize = 8 * 1024 * 1024;

/// What reaches the console (the build log always gets everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleMode {
    /// Every line as it comes (CI, `forgexec run`).
    #[default]
    Stream,
    /// Nothing as it comes: each command's output is held back, and the
    /// caller prints it with [`OutputSink::take_command_output`] when the
    /// command failed (the pre-push hook).
    FailingCommand,
}
/// Bytes of command output read at once.
const READ_BUFFER: usize = 128 * 1024;

/// Replaces known secret values with [`MASK`].
#[derive(Clone, Default)]
pub struct Masker {
    matcher: Option<Arc<AhoCorasick>>,
    longest: usize,
}

impl Masker {
    /// Builds a masker for these values and their encoded forms
    /// ([`crate::secret::encoded_forms`]: base64 and percent-encoding of
    /// values of 8 bytes or more). Multi-line values (keys, PEM) are masked
    /// line by line, because output is processed by line.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets {
            let lines: Vec<&str> = secret.lines().map(str::trim).collect();
            if lines.len() > 1 {
                patterns.extend(crate::secret::encoded_forms(secret));
            }
            for line in lines.into_iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
                patterns.push(line.to_string());
                patterns.extend(crate::secret::encoded_forms(line));
            }
        }
        patterns.retain(|p| p.len() >= MIN_SECRET_LEN && !p.contains('\n'));
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Masker::default();
        }
        let longest = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok();
        Masker {
            matcher: matcher.map(Arc::new),
            longest,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Writes `text` to `out` with every secret replaced.
    pub fn write_masked(&self, text: &[u8], out: &mut impl Write) -> io::Result<()> {
        let Some(matcher) = &self.matcher else {
            return out.write_all(text);
        };
        let mut last = 0;
        for m in matcher.find_iter(text) {
            out.write_all(&text[last..m.start()])?;
            out.write_all(MASK.as_bytes())?;
            last = m.end();
        }
        out.write_all(&text[last..])
    }

    /// Masks a string (for messages and statuses).
    pub fn mask_str(&self, text: &str) -> String {
        let mut out = Vec::with_capacity(text.len());
        // Writing to a Vec cannot fail.
        let _ = self.write_masked(text.as_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Where an over-long chunk of `pending` can be cut: at `wanted` unless a
    /// secret overlaps it, then before that secret, so no secret is split.
    pub fn safe_cut(&self, pending: &[u8], wanted: usize) -> usize {
        let Some(matcher) = &self.matcher else {
            return wanted;
        };
        // A secret may also start within the last `longest - 1` bytes and be
        // completed by data not read yet: keep that tail back.
        let mut cut = wanted.min(pending.len().saturating_sub(self.longest.saturating_sub(1)));
        for m in matcher.find_iter(pending) {
            if m.start() < cut && m.end() > cut {
                cut = m.start();
            }
        }
        cut
    }
}

/// Where output goes: the console and the build log, both masked.
pub struct OutputSink {
    inner: Mutex<SinkInner>,
    masker: Masker,
    mode: ConsoleMode,
    /// A line buffer kept between commands.
    spare: Mutex<Option<LineBuffer>>,
}

struct SinkInner {
    console: Box<dyn Write + Send>,
    log: Option<BufWriter<File>>,
    log_error: Option<io::Error>,
    /// In [`ConsoleMode::FailingCommand`]: whether a command is running, and
    /// its output so far (masked), with how many leading bytes were cut.
    in_command: bool,
    captured: Vec<u8>,
    cut: usize,
}

impl OutputSink {
    /// `console` is usually stdout; `log` the build log file, if any.
    pub fn new(console: Box<dyn Write + Send>, log: Option<File>, masker: Masker) -> Arc<Self> {
        Self::with_mode(console, log, masker, ConsoleMode::Stream)
    }

    /// Like [`OutputSink::new`], choosing what reaches the console.
    pub fn with_mode(
        console: Box<dyn Write + Send>,
        log: Option<File>,
        masker: Masker,
        mode: ConsoleMode,
    ) -> Arc<Self> {
        Arc::new(OutputSink {
            inner: Mutex::new(SinkInner {
                console,
                log: log.map(|f| BufWriter::with_capacity(256 * 1024, f)),
                log_error: None,
                in_command: false,
                captured: Vec::new(),
                cut: 0,
            }),
            masker,
            mode,
            spare: Mutex::new(None),
        })
    }

    pub fn mode(&self) -> ConsoleMode {
        self.mode
    }

    /// A command starts: in [`ConsoleMode::FailingCommand`], its output
    /// (from here to [`OutputSink::end_command`]) is held back.
    pub fn begin_command(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.in_command = true;
        inner.captured.clear();
        inner.cut = 0;
    }

    /// The command ended; later output (from processes it left behind)
    /// goes to the build log only.
    pub fn end_command(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.in_command = false;
    }

    /// The held-back output of the last command (empty in
    /// [`ConsoleMode::Stream`]), with a note when its head was cut.
    pub fn take_command_output(&self) -> Vec<u8> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        if inner.cut > 0 {
            out.extend_from_slice(
                format!(
                    "[... the first {} bytes of this command's output are only in the build log]\n",
                    inner.cut
                )
                .as_bytes(),
            );
        }
        out.append(&mut inner.captured);
        inner.cut = 0;
        out
    }

    /// Writes to the console (not the build log): progress lines of
    /// forgexec's own, masked like everything else.
    pub fn console_line(&self, text: &str) {
        let mut chunk = Vec::with_capacity(text.len() + 1);
        let _ = self.masker.write_masked(text.as_bytes(), &mut chunk);
        chunk.push(b'\n');
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = inner.console.write_all(&chunk);
        let _ = inner.console.flush();
    }

    /// Writes raw bytes to the console only (already masked text).
    pub fn console_bytes(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = inner.console.write_all(bytes);
        let _ = inner.console.flush();
    }

    /// Creates the build log file at `path` and a sink writing to stdout and it.
    pub fn stdout_and_log(path: &Path, masker: Masker) -> io::Result<Arc<Self>> {
        let file = File::create(path)?;
        let console = BufWriter::with_capacity(64 * 1024, io::stdout());
        Ok(Self::new(Box::new(console), Some(file), masker))
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Writes one complete line of forgexec's own (a header, a result).
    pub fn line(&self, text: &str) {
        let mut chunk = Vec::with_capacity(text.len() + 1);
        let _ = self.masker.write_masked(text.as_bytes(), &mut chunk);
        chunk.push(b'\n');
        self.write_raw(&chunk, true);
    }

    /// Writes already-masked bytes to both outputs.
    fn write_raw(&self, bytes: &[u8], flush: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match self.mode {
            ConsoleMode::Stream => {
                // The console may be gone (closed stdout); the log still matters.
                let _ = inner.console.write_all(bytes);
                if flush {
                    let _ = inner.console.flush();
                }
            }
            ConsoleMode::FailingCommand if inner.in_command => {
                inner.captured.extend_from_slice(bytes);
                if inner.captured.len() > MAX_CAPTURE {
                    // Keep the tail, cut at a line start.
                    let excess = inner.captured.len() - MAX_CAPTURE;
                    let cut = inner.captured[excess..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(excess, |p| excess + p + 1);
                    inner.captured.drain(..cut);
                    inner.cut += cut;
                }
            }
            ConsoleMode::FailingCommand => {}
        }
        if let Some(log) = inner.log.as_mut() {
            if let Err(err) = log.write_all(bytes) {
                inner.log = None;
                inner.log_error = Some(err);
            }
        }
    }

    /// Flushes both outputs; reports a failed build log write.
    pub fn finish(&self) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = inner.console.flush();
        if let Some(err) = inner.log_error.take() {
            return Err(err);
        }
        if let Some(log) = inner.log.as_mut() {
            log.flush()?;
        }
        Ok(())
    }

    /// Copies a command's output stream into the sink until EOF: masks each
    /// line, flushes the console whenever no more input is waiting, so
    /// output appears as it comes while large volumes are batched.
    pub fn pump(&self, mut source: impl Read) -> io::Result<u64> {
        let mut lines = self.line_buffer();
        let mut total = 0u64;
        let result = loop {
            match lines.read_from(self, &mut source) {
                Ok(0) => break lines.finish(self),
                Ok(n) => total += n as u64,
                Err(e) => break Err(e),
            }
        };
        self.recycle(lines);
        result.map(|()| total)
    }

    /// A line buffer for one command's output: the one kept from an earlier
    /// command when there is one (saves allocating and faulting in its
    /// pages for every command), else a new one.
    pub fn line_buffer(&self) -> LineBuffer {
        self.spare
            .lock()
            .ok()
            .and_then(|mut spare| spare.take())
            .unwrap_or_default()
    }

    /// Keeps an emptied line buffer for the next command.
    pub fn recycle(&self, mut lines: LineBuffer) {
        lines.filled = 0;
        lines.out.clear();
        if let Ok(mut spare) = self.spare.lock() {
            *spare = Some(lines);
        }
    }
}

/// Bytes of a command's output not emitted yet: complete lines are masked
/// and written to the sink as they arrive, a partial last line waits for
/// its end (or is cut when it fills the buffer).
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes in `buf[..filled]` not yet emitted.
    filled: usize,
    /// Masked output being assembled.
    out: Vec<u8>,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer {
            buf: vec![0u8; READ_BUFFER],
            filled: 0,
            out: Vec::with_capacity(READ_BUFFER + 1024),
        }
    }
}

impl LineBuffer {
    /// A buffer of `bytes` (the default is 128 KiB): lines longer than
    /// this are cut. Small ones let tests and fuzzing cut often.
    pub fn with_capacity(bytes: usize) -> LineBuffer {
        LineBuffer {
            buf: vec![0u8; bytes.max(1)],
            filled: 0,
            out: Vec::with_capacity(bytes + 1024),
        }
    }

    /// Reads once from `source` (retrying an interrupted read) and writes
    /// every line completed by it to `sink`. Returns the bytes read, 0 at
    /// EOF.
    pub fn read_from(&mut self, sink: &OutputSink, source: &mut impl Read) -> io::Result<usize> {
        let masker = &sink.masker;
        if self.filled == self.buf.len() {
            // No newline in a full buffer: emit a chunk of the long line.
            let filled = self.filled;
            let cut = masker
                .safe_cut(&self.buf[..filled], MAX_LINE.min(filled))
                .max(1);
            masker.write_masked(&self.buf[..cut], &mut self.out)?;
            self.out.push(b'\n');
            sink.write_raw(&self.out, false);
            self.out.clear();
            self.buf.copy_within(cut..filled, 0);
            self.filled -= cut;
        }
        let n = loop {
            match source.read(&mut self.buf[self.filled..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(0);
        }
        let scan_from = self.filled;
        self.filled += n;
        let filled = self.filled;
        // Emit every complete line; keep the partial last line.
        if let Some(last_nl) = self.buf[scan_from..filled]
            .iter()
            .rposition(|&b| b == b'\n')
        {
            let end = scan_from + last_nl + 1;
            if masker.is_empty() {
                sink.write_raw(&self.buf[..end], true);
            } else {
                // All complete lines in one pass: no secret pattern holds a
                // newline, so no match can span two lines.
                masker.write_masked(&self.buf[..end], &mut self.out)?;
                sink.write_raw(&self.out, true);
                self.out.clear();
            }
            self.buf.copy_within(end..filled, 0);
            self.filled -= end;
        }
        Ok(n)
    }

    /// At EOF: emits a last line that had no newline.
    pub fn finish(&mut self, sink: &OutputSink) -> io::Result<()> {
        if self.filled > 0 {
            sink.masker
                .write_masked(&self.buf[..self.filled], &mut self.out)?;
            self.out.push(b'\n');
            sink.write_raw(&self.out, true);
            self.out.clear();
            self.filled = 0;
        }
        Ok(())
    }
}

/// A `Write` that appends into a shared buffer (tests and captured consoles).
#[derive(Clone, Default)]
pub struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pumped(masker: Masker, input: &[u8]) -> String {
        let console = SharedBuffer::default();
        let sink = OutputSink::new(Box::new(console.clone()), None, masker);
        sink.pump(input).unwrap();
        console.contents()
    }

    #[test]
    fn masks_every_occurrence_and_each_line_of_multiline_secrets() {
        let masker = Masker::new(["hunter22", "line-one\nline-two", "ab"]);
        let out = pumped(
            masker,
            b"pw=hunter22 again hunter22\nline-one\nx line-two y\nab stays\n",
        );
        assert_eq!(out, "pw=*** again ***\n***\nx *** y\nab stays\n");
    }

    #[test]
    fn a_final_line_without_newline_is_kept() {
        assert_eq!(pumped(Masker::default(), b"a\nb"), "a\nb\n");
    }

    #[test]
    fn long_lines_are_cut_without_splitting_a_secret() {
        let secret = "S3CRET-VALUE-0123456789";
        let masker = Masker::new([secret]);
        // Place secrets across every plausible cut point of a 1 MiB line.
        let mut line = Vec::new();
        while line.len() < 1024 * 1024 {
            line.extend_from_slice(b"xxxxxxxxxxxxx");
            line.extend_from_slice(secret.as_bytes());
        }
        line.push(b'\n');
        let out = pumped(masker, &line);
        assert!(!out.contains(secret), "a secret leaked through a cut");
        assert!(
            !out.contains("S3CRET"),
            "part of a secret leaked through a cut"
        );
        assert!(out.lines().count() > 1, "the long line was cut");
        assert!(out.lines().all(|l| l.len() <= MAX_LINE + 3 * secret.len()));
    }

    #[test]
    fn failing_command_mode_holds_back_each_commands_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.log");
        let console = SharedBuffer::default();
        let sink = OutputSink::with_mode(
            Box::new(console.clone()),
            Some(File::create(&path).unwrap()),
            Masker::new(["tok3n-value"]),
            ConsoleMode::FailingCommand,
        );
        sink.line("header");
        sink.begin_command();
        sink.pump(&b"first tok3n-value\n"[..]).unwrap();
        sink.end_command();
        sink.begin_command();
        sink.pump(&b"second\n"[..]).unwrap();
        sink.end_command();
        sink.line("after");
        assert_eq!(
            console.contents(),
            "",
            "nothing reaches the console by itself"
        );
        assert_eq!(sink.take_command_output(), b"second\n");
        sink.console_line("progress tok3n-value");
        assert_eq!(console.contents(), "progress ***\n");
        sink.finish().unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        assert_eq!(log, "header\nfirst ***\nsecond\nafter\n");
    }

    #[test]
    fn build_log_gets_the_same_masked_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.log");
        let console = SharedBuffer::default();
        let sink = OutputSink::new(
            Box::new(console.clone()),
            Some(File::create(&path).unwrap()),
            Masker::new(["tok3n-value"]),
        );
        sink.line("==> test: echo tok3n-value");
        sink.pump(&b"tok3n-value\n"[..]).unwrap();
        sink.finish().unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        assert_eq!(log, "==> test: echo ***\n***\n");
        assert_eq!(console.contents(), log);
    }
}
