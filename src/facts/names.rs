//! The names a build is identified by, checked once: a value of these types
//! is valid by construction, so it can go into URLs, object names, labels
//! and service names without further checks.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// Why a text is not a valid name of its kind; `expected` says what is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct NameError {
    pub text: String,
    pub expected: &'static str,
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $expected:expr, $valid:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// What a valid value looks like, for messages.
            pub const EXPECTED: &'static str = $expected;

            /// Whether `text` is a valid value.
            pub fn is_valid(text: &str) -> bool {
                let valid: fn(&str) -> bool = $valid;
                valid(text)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(text: &str) -> Result<Self, NameError> {
                if Self::is_valid(text) {
                    Ok($name(text.to_string()))
                } else {
                    Err(NameError {
                        text: text.to_string(),
                        expected: $expected,
                    })
                }
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// A GitHub owner (user or organisation) or repository name:
    /// `[A-Za-z0-9_.-]{1,100}`, not `.` or `..`.
    RepoName,
    "a GitHub owner or repository name (letters, digits, `_`, `.`, `-`)",
    is_repo_name
);

name_type!(
    /// A full commit id: 40 (SHA-1) or 64 (SHA-256) hexadecimal digits.
    CommitId,
    "a full 40- or 64-character hexadecimal commit id",
    |t| matches!(t.len(), 40 | 64) && t.bytes().all(|b| b.is_ascii_hexdigit())
);

name_type!(
    /// An action of `.forge.yml` (`execute`, `lint`, ...): starts with a
    /// letter or digit, then letters, digits, `_`, `.`, `-`.
    ActionName,
    "an action name (a letter or digit, then letters, digits, `_`, `.`, `-`)",
    |t| {
        t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }
);

name_type!(
    /// A build id (part of object and service names):
    /// `[A-Za-z0-9_.-]{1,100}`, not `.` or `..`.
    BuildId,
    "a build id (letters, digits, `_`, `.`, `-`)",
    is_repo_name
);

fn is_repo_name(text: &str) -> bool {
    !text.is_empty()
        && text != "."
        && text != ".."
        && text.len() <= 100
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl ActionName {
    /// The action every build runs unless told otherwise.
    pub fn execute() -> ActionName {
        ActionName("execute".into())
    }

    /// The commit status context of this action's builds: `forge/{action}`.
    pub fn status_context(&self) -> String {
        format!("forge/{}", self.0)
    }
}

impl BuildId {
    /// `20261125T043000Z`, from the time given: sortable, and safe in object
    /// and service names.
    pub fn from_time(time: std::time::SystemTime) -> BuildId {
        let rfc = humantime::format_rfc3339_seconds(time).to_string();
        BuildId(rfc.replace(['-', ':'], ""))
    }
}

impl CommitId {
    /// The first 7 characters, as git shows a commit.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn repository_names_follow_githubs_rules() {
        for good in ["octo", "hello-world", "a.b_c", "1"] {
            assert!(good.parse::<RepoName>().is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(101)] {
            let err = bad.parse::<RepoName>().unwrap_err();
            assert_eq!(err.text, bad);
        }
    }

    #[test]
    fn commit_ids_are_full_hex() {
        assert!(CommitId::is_valid(&"a".repeat(40)));
        assert!(CommitId::is_valid(&"0F".repeat(32)));
        assert!(!CommitId::is_valid("abc"));
        assert!(!CommitId::is_valid(&"g".repeat(40)));
        let id: CommitId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        assert_eq!(id.short(), "0123456");
    }

    #[test]
    fn action_names_start_with_a_letter_or_digit() {
        assert!(ActionName::is_valid("lint"));
        assert!(ActionName::is_valid("1.x-y_z"));
        assert!(!ActionName::is_valid("-x"));
        assert!(!ActionName::is_valid("a b"));
        assert!(!ActionName::is_valid(""));
        assert_eq!(ActionName::execute().status_context(), "forge/execute");
    }

    #[test]
    fn build_ids_from_time_are_compact_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_045_000);
        assert_eq!(BuildId::from_time(t).as_str(), "20251125T043000Z");
    }
}
