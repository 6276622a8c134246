//! The one place an error becomes text. Every error that reaches the
//! console, the build log, a status description or a `tracing` event is
//! rendered here: its message, then each cause that the message does not
//! already include, the whole passed through the masker of every secret the
//! process knows, so that a server echoing a credential back never prints
//! it.

use std::error::Error;

use crate::run::output::Masker;

/// Renders errors and messages, masked.
#[derive(Clone, Default)]
pub struct Renderer {
    masker: Masker,
}

impl Renderer {
    /// A renderer that masks these secrets' values.
    pub fn new(masker: Masker) -> Renderer {
        Renderer { masker }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// The error and its causes, masked (may span lines: diagnostics do).
    pub fn error(&self, err: &(dyn Error + 'static)) -> String {
        let mut text = err.to_string();
        let mut cause = err.source();
        while let Some(err) = cause {
            let part = err.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            cause = err.source();
        }
        self.masker.mask_str(&text)
    }

    /// Any text, masked.
    pub fn text(&self, text: &str) -> String {
        self.masker.mask_str(text)
    }

    /// `{prefix}: {error}` on stderr.
    pub fn report(&self, prefix: &str, err: &(dyn Error + 'static)) {
        eprintln!("{prefix}: {}", self.error(err));
    }

    /// A message on stderr, masked.
    pub fn say(&self, text: &str) {
        eprintln!("{}", self.text(text));
    }
}

/// Whether log lines on stderr get colour: only on a terminal, and never
/// when `NO_COLOR` is set to anything (https://no-color.org).
pub fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".as_ref())));
        assert!(!colour(true, Some("1".as_ref())));
        assert!(!colour(false, None));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("posting the status failed")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("HTTP 401: Bad credentials: Bearer ghp_SeCrEt0123456789")]
    struct Inner;

    #[test]
    fn causes_are_appended_and_secrets_masked() {
        let renderer = Renderer::new(Masker::new(["ghp_SeCrEt0123456789"]));
        assert_eq!(
            renderer.error(&Outer(Inner)),
            "posting the status failed: HTTP 401: Bad credentials: Bearer ***"
        );
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("upload failed: {0}")]
        struct Wraps(#[source] Inner);
        let renderer = Renderer::default();
        let text = renderer.error(&Wraps(Inner));
        assert_eq!(text.matches("HTTP 401").count(), 1, "{text}");
    }
}
