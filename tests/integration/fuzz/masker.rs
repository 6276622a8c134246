//! The masker: a secret written raw, base64 (standard or URL-safe, at any
//! offset of a 3-byte group) or percent-encoded, inside any text, split
//! across any read sizes and cut inside long lines, never reaches the
//! output whole.

use std::io::Read;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use forgexec::run::output::{LineBuffer, Masker, OutputSink, SharedBuffer};
use forgexec::secret::encoded_forms;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

use super::fuzz;

/// How the secret is written into the output.
#[derive(Debug, Clone)]
enum Form {
    Raw,
    /// Base64 of `prefix + secret + suffix`.
    Base64 {
        url_safe: bool,
        prefix: Vec<u8>,
        suffix: Vec<u8>,
    },
    Percent {
        lower: bool,
    },
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        Just(Form::Raw),
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..5),
            proptest::collection::vec(any::<u8>(), 0..5)
        )
            .prop_map(|(url_safe, prefix, suffix)| Form::Base64 {
                url_safe,
                prefix,
                suffix
            }),
        any::<bool>().prop_map(|lower| Form::Percent { lower }),
    ]
}

fn write_form(secret: &str, form: &Form) -> String {
    match form {
        Form::Raw => secret.to_string(),
        Form::Base64 {
            url_safe,
            prefix,
            suffix,
        } => {
            let mut bytes = prefix.clone();
            bytes.extend_from_slice(secret.as_bytes());
            bytes.extend_from_slice(suffix);
            if *url_safe {
                URL_SAFE.encode(bytes)
            } else {
                STANDARD.encode(bytes)
            }
        }
        Form::Percent { lower } => {
            let upper = utf8_percent_encode(secret, NON_ALPHANUMERIC)
                .to_string()
                .replace("%2D", "-")
                .replace("%2E", ".")
                .replace("%5F", "_")
                .replace("%7E", "~");
            if *lower {
                let mut out = String::new();
                let mut hex = 0;
                for c in upper.chars() {
                    if c == '%' {
                        hex = 2;
                        out.push(c);
                    } else if hex > 0 {
                        hex -= 1;
                        out.push(c.to_ascii_lowercase());
                    } else {
                        out.push(c);
                    }
                }
                out
            } else {
                upper
            }
        }
    }
}

/// A reader handing out `data` in the given chunk sizes (cycled).
struct Chunked {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_secret_in_any_form_and_any_chunking_is_masked() {
    // No `*` (the mask) and no newline in secrets or the text around them.
    // Secrets are trimmed like the masker trims them.
    let secret = "[A-Za-z0-9!#$%&()+,./:;<=>?@^_{|}~é-][A-Za-z0-9 !#$%&()+,./:;<=>?@^_{|}~é-]{6,38}[A-Za-z0-9!#$%&()+,./:;<=>?@^_{|}~é-]";
    let junk = "[A-Za-z0-9 =:,.+/_-]{0,300}";
    let case = (
        secret,
        proptest::collection::vec((junk, form()), 1..4),
        junk,
        proptest::collection::vec(1usize..64, 1..8),
        0usize..400,
    );
    fuzz(
        "masker_forms_and_chunks",
        case,
        |(secret, pieces, tail, sizes, extra_capacity)| {
            let masker = Masker::new([secret.as_str()]);
            let mut text = String::new();
            for (junk, form) in &pieces {
                text.push_str(junk);
                text.push_str(&write_form(&secret, form));
            }
            text.push_str(&tail);
            // Every pattern must fit twice in the line buffer for a cut to
            // be able to avoid it (the real buffer is 128 KiB).
            let mut patterns = encoded_forms(&secret);
            patterns.push(secret.clone());
            let longest = patterns.iter().map(String::len).max().unwrap_or(0);
            let capacity = 2 * longest + 2 + extra_capacity;

            let console = SharedBuffer::default();
            let sink = OutputSink::new(Box::new(console.clone()), None, masker.clone());
            let mut lines = LineBuffer::with_capacity(capacity);
            let mut reader = Chunked {
                data: text.clone().into_bytes(),
                at: 0,
                sizes,
                turn: 0,
            };
            while lines
                .read_from(&sink, &mut reader)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                > 0
            {}
            lines
                .finish(&sink)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Cuts add line breaks; the text had none of its own.
            let streamed = console.contents().replace('\n', "");
            let whole = masker.mask_str(&text);
            for pattern in &patterns {
                prop_assert!(
                    !streamed.contains(pattern.as_str()),
                    "{pattern:?} of {secret:?} in streamed output {streamed:?}"
                );
                prop_assert!(
                    !whole.contains(pattern.as_str()),
                    "{pattern:?} in {whole:?}"
                );
            }
            Ok(())
        },
    );
}
