//! The raw input of the build facts: every `FORGE_*` variable as text, all
//! optional. Each source fills one: the process environment
//! ([`RawFacts::from_vars`]), git for local builds, a webhook event and the
//! command-line flags in the launcher; [`RawFacts::or`] layers them (the
//! first wins) and [`super::validate`] turns the result into a
//! [`super::BuildContext`] or reports every problem at once.

use std::fmt;

macro_rules! raw_facts {
    ($($(#[$doc:meta])* $field:ident => $constant:ident = $variable:literal,)*) => {
        /// The `FORGE_*` variable names, each written once.
        pub mod var {
            $(pub const $constant: &str = $variable;)*
            /// Every `FORGE_*` variable forgexec reads.
            pub const ALL: &[&str] = &[$($variable,)*];
        }

        /// Every build fact as text, as a source gave it (empty = unset).
        #[derive(Clone, Default, PartialEq, Eq)]
        pub struct RawFacts {
            $($(#[$doc])* pub $field: Option<String>,)*
        }

        impl RawFacts {
            fn slot(&mut self, variable: &str) -> Option<&mut Option<String>> {
                match variable {
                    $($variable => Some(&mut self.$field),)*
                    _ => None,
                }
            }

            /// These facts, with the gaps filled from `lower`.
            pub fn or(self, lower: RawFacts) -> RawFacts {
                RawFacts { $($field: self.$field.or(lower.$field),)* }
            }

            /// `(variable, value)` for every fact that is set, credentials
            /// included: callers that hand variables on use
            /// [`super::BuildContext::to_vars`], which never has them.
            fn pairs(&self) -> Vec<(&'static str, &str)> {
                let mut pairs = Vec::new();
                $(if let Some(value) = &self.$field {
                    pairs.push(($variable, value.as_str()));
                })*
                pairs
            }
        }
    };
}

raw_facts! {
    owner => OWNER = "FORGE_OWNER",
    repo => REPO = "FORGE_REPO",
    sha => SHA = "FORGE_SHA",
    pull_request => PULL_REQUEST = "FORGE_PULL_REQUEST",
    commit_count => COMMIT_COUNT = "FORGE_COMMIT_COUNT",
    install_id => INSTALL_ID = "FORGE_INSTALL_ID",
    action => ACTION = "FORGE_ACTION",
    status_url => STATUS_URL = "FORGE_STATUS_URL",
    status_context => STATUS_CONTEXT = "FORGE_STATUS_CONTEXT",
    target_url => TARGET_URL = "FORGE_TARGET_URL",
    api_url => API_URL = "FORGE_API_URL",
    ca_cert => CA_CERT = "FORGE_CA_CERT",
    workspace => WORKSPACE = "FORGE_WORKSPACE",
    artifacts_url => ARTIFACTS_URL = "FORGE_ARTIFACTS_URL",
    build_id => BUILD_ID = "FORGE_BUILD_ID",
    grace => GRACE = "FORGE_GRACE",
    /// `1`: the token may go to a non-loopback `http://` forge.
    insecure_http => INSECURE_HTTP = "FORGE_INSECURE_HTTP",
    /// Unpacking limits of the source zipball (docs/environment.md, "Limits").
    unpack_max_bytes => UNPACK_MAX_BYTES = "FORGE_UNPACK_MAX_BYTES",
    unpack_max_entries => UNPACK_MAX_ENTRIES = "FORGE_UNPACK_MAX_ENTRIES",
    unpack_max_ratio => UNPACK_MAX_RATIO = "FORGE_UNPACK_MAX_RATIO",
    /// The credential itself (weaker than a file: see docs/environment.md).
    token => TOKEN = "FORGE_TOKEN",
    /// A file holding the credential.
    token_file => TOKEN_FILE = "FORGE_TOKEN_FILE",
}

/// Variables that carry the credential and never reach commands.
pub const CREDENTIAL_VARS: [&str; 2] = [var::TOKEN, var::TOKEN_FILE];

impl RawFacts {
    /// The `FORGE_*` facts among `vars` (other variables are ignored; an
    /// empty value counts as unset).
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> RawFacts
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut raw = RawFacts::default();
        for (name, value) in vars {
            let value = value.as_ref();
            if value.is_empty() {
                continue;
            }
            if let Some(slot) = raw.slot(name.as_ref()) {
                *slot = Some(value.to_string());
            }
        }
        raw
    }

    /// The facts of this process's environment.
    pub fn from_env() -> RawFacts {
        // Variables that are not valid UTF-8 cannot be FORGE_* values we
        // understand; validation reports a FORGE_* one as unset.
        RawFacts::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The facts that are set, as `FORGE_*` variables, credentials left out.
    pub fn to_vars(&self) -> Vec<(&'static str, String)> {
        self.pairs()
            .into_iter()
            .filter(|(name, _)| !CREDENTIAL_VARS.contains(name))
            .map(|(name, value)| (name, value.to_string()))
            .collect()
    }
}

impl fmt::Debug for RawFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.pairs() {
            if name == var::TOKEN {
                map.entry(&name, &"***");
            } else {
                map.entry(&name, &value);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forge_variables_with_values_are_read() {
        let raw = RawFacts::from_vars([
            ("FORGE_OWNER", "octo"),
            ("FORGE_REPO", ""),
            ("HOME", "/root"),
            ("FORGE_TOKEN", "ghp_secret"),
        ]);
        assert_eq!(raw.owner.as_deref(), Some("octo"));
        assert_eq!(raw.repo, None);
        assert_eq!(raw.token.as_deref(), Some("ghp_secret"));
        assert!(!format!("{raw:?}").contains("ghp_secret"));
        assert_eq!(raw.to_vars(), vec![("FORGE_OWNER", "octo".to_string())]);
    }

    #[test]
    fn layers_fill_gaps_and_the_first_wins() {
        let flags = RawFacts {
            owner: Some("flag".into()),
            ..RawFacts::default()
        };
        let env = RawFacts::from_vars([("FORGE_OWNER", "env"), ("FORGE_REPO", "r")]);
        let merged = flags.or(env);
        assert_eq!(merged.owner.as_deref(), Some("flag"));
        assert_eq!(merged.repo.as_deref(), Some("r"));
    }

    #[test]
    fn every_variable_has_a_slot() {
        let mut raw = RawFacts::default();
        for name in var::ALL {
            assert!(raw.slot(name).is_some(), "{name}");
        }
        assert_eq!(var::ALL.len(), 22);
    }
}
