//! Secret values (the forge token, values the spec marks secret). A
//! [`Secret`] never prints its value through `Debug` or `Display`, so it
//! cannot leak into logs by accident; code that must send it calls
//! [`Secret::expose`] at that one place. [`encoded_forms`] are the other
//! spellings of a secret that the masker also looks for.

use std::fmt;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Secrets at least this long are also masked in their encoded forms.
pub const MIN_ENCODED_LEN: usize = 8;

/// RFC 3986 unreserved characters stay, everything else is encoded.
const URI_STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// JavaScript's `encodeURIComponent`: also keeps `!*'()`.
const URI_COMPONENT: &AsciiSet = &URI_STRICT
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The encoded spellings of `secret` that output may carry, for secrets of
/// [`MIN_ENCODED_LEN`] bytes or more (none for shorter ones):
/// - base64, standard and URL-safe alphabets, with the secret starting at
///   each of the three offsets of a 3-byte group: the characters that
///   depend on the secret alone (one or two at each end may mix in
///   neighbouring bytes and are left);
/// - percent-encoding (RFC 3986 and `encodeURIComponent` sets, upper- and
///   lower-case hex, and form encoding with `+` for space), when it differs
///   from the secret.
pub fn encoded_forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    if bytes.len() < MIN_ENCODED_LEN {
        return Vec::new();
    }
    let mut forms = Vec::new();
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        // Characters wholly inside the secret's bits: from the first whose
        // 6 bits start at or after bit 8*offset, to the last ending by the
        // secret's end.
        let first = (8 * offset).div_ceil(6);
        let end = 8 * (offset + bytes.len()) / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            if let Some(core) = encoded.get(first..end) {
                forms.push(core.to_string());
            }
        }
    }
    for set in [URI_STRICT, URI_COMPONENT] {
        let upper = utf8_percent_encode(secret, set).to_string();
        forms.push(lower_hex(&upper));
        forms.push(upper.replace("%20", "+"));
        forms.push(upper);
    }
    forms.retain(|form| form != secret);
    forms.sort_unstable();
    forms.dedup();
    forms
}

/// `%2F` → `%2f` (other characters unchanged).
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A credential or other value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that sends it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let token = Secret::new("ghp_abc123");
        assert_eq!(format!("{token}"), "***");
        assert_eq!(format!("{token:?}"), "Secret(***)");
        assert_eq!(token.expose(), "ghp_abc123");
    }

    #[test]
    fn base64_forms_cover_every_alignment_and_both_alphabets() {
        let secret = "ghp_Zx9+/?~token";
        let forms = encoded_forms(secret);
        for prefix in ["", "a", "ab", "abc", "\u{ff}\u{fe}"] {
            for suffix in ["", "x", "yz"] {
                let text = format!("{prefix}{secret}{suffix}");
                for engine in [
                    &base64::engine::general_purpose::STANDARD,
                    &base64::engine::general_purpose::URL_SAFE,
                ] {
                    let encoded = engine.encode(text.as_bytes());
                    assert!(
                        forms.iter().any(|f| encoded.contains(f.as_str())),
                        "{encoded} (of {text:?}) holds none of {forms:?}"
                    );
                }
            }
        }
        // Each form is long enough to mean the secret, not a coincidence.
        assert!(
            forms.iter().all(|f| f.len() >= MIN_ENCODED_LEN),
            "{forms:?}"
        );
    }

    #[test]
    fn percent_forms_match_what_encoders_write() {
        let forms = encoded_forms("p@ss word/42!");
        for expected in [
            "p%40ss%20word%2F42%21",
            "p%40ss%20word%2f42%21",
            "p%40ss+word%2F42%21",
            "p%40ss%20word%2F42!",
        ] {
            assert!(
                forms.iter().any(|f| f == expected),
                "{expected} not in {forms:?}"
            );
        }
        assert!(encoded_forms("short").is_empty());
        assert!(
            !encoded_forms("plain_token_123").contains(&"plain_token_123".to_string()),
            "a secret that needs no escaping has no percent form of its own"
        );
    }
}
