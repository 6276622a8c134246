//! Secret values (the forge token, values the spec marks secret). A
//! [`Secret`] never prints its value through `Debug` or `Display`, so it
//! cannot leak into logs by accident; code that must send it calls
//! [`Secret::expose`] at that one place.

use std::fmt;

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
}
