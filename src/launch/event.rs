//! The facts of a build request: a GitHub `pull_request` webhook payload
//! (the whole event or just its `pull_request` object) and command-line
//! flags, each turned into [`RawFacts`] and validated by the same step as
//! forgexec's own ([`crate::facts::validate`]), so a launch and the build it
//! starts agree on every fact.

use serde_json::Value;

use super::LaunchError;
use crate::facts::{self, var, BuildContext, BuildId, FactProblem, FactsError, Mode, RawFacts};

/// The facts given as flags; every present one overrides the event.
#[derive(Debug, Clone, Default)]
pub struct FactFlags {
    /// `OWNER/NAME`
    pub repo: Option<String>,
    pub pr: Option<u64>,
    pub sha: Option<String>,
    pub status_url: Option<String>,
    pub commits: Option<u64>,
    pub install_id: Option<String>,
    pub action: Option<String>,
    pub api_url: Option<String>,
    pub artifacts_url: Option<String>,
    pub target_url: Option<String>,
    /// `FORGE_INSECURE_HTTP` of the launcher's environment: lets the
    /// token travel over plain HTTP to a forge that is not on loopback
    /// (a trusted network); the build gets the same setting.
    pub insecure_http: Option<String>,
}

impl FactFlags {
    /// `FORGE_INSECURE_HTTP` as the launcher's environment sets it.
    pub fn insecure_http_from_env() -> Option<String> {
        std::env::var(var::INSECURE_HTTP)
            .ok()
            .filter(|v| !v.is_empty())
    }

    /// The flags as raw facts (`--repo` split into owner and name).
    pub fn to_raw(&self) -> Result<RawFacts, LaunchError> {
        let (owner, repo) = match &self.repo {
            Some(full) => {
                let (owner, repo) = split_repo(full)?;
                (Some(owner), Some(repo))
            }
            None => (None, None),
        };
        Ok(RawFacts {
            owner,
            repo,
            sha: self.sha.clone(),
            pull_request: self.pr.map(|n| n.to_string()),
            commit_count: self.commits.map(|n| n.to_string()),
            install_id: self.install_id.clone(),
            action: self.action.clone(),
            status_url: self.status_url.clone(),
            api_url: self.api_url.clone(),
            artifacts_url: self.artifacts_url.clone(),
            target_url: self.target_url.clone(),
            insecure_http: self.insecure_http.clone(),
            ..RawFacts::default()
        })
    }
}

/// Parses a webhook payload into the facts it carries. `label` names the
/// source in messages.
pub fn parse_event(label: &str, bytes: &[u8]) -> Result<RawFacts, LaunchError> {
    let bad = |reason: String| LaunchError::Event {
        label: label.to_string(),
        reason,
    };
    let root: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    if !root.is_object() {
        return Err(bad("expected a JSON object".into()));
    }
    let pr = match root.get("pull_request") {
        Some(pr) if pr.is_object() => pr,
        Some(_) => return Err(bad("`pull_request` is not an object".into())),
        None => &root,
    };
    let head = pr
        .get("head")
        .filter(|h| h.is_object())
        .ok_or_else(|| bad("no `head` object (is this a pull_request event?)".into()))?;
    let str_at = |v: &Value, path: &[&str]| -> Option<String> {
        let mut cur = v;
        for key in path {
            cur = cur.get(key)?;
        }
        cur.as_str().map(str::to_string)
    };
    let number = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    };
    Ok(RawFacts {
        owner: str_at(head, &["repo", "owner", "login"]),
        repo: str_at(head, &["repo", "name"]),
        pull_request: number(pr.get("number").or_else(|| root.get("number"))),
        sha: str_at(head, &["sha"]),
        status_url: str_at(pr, &["statuses_url"]),
        commit_count: number(pr.get("commits")),
        install_id: number(root.get("installation").and_then(|i| i.get("id"))),
        ..RawFacts::default()
    })
}

/// Checks the facts of a launch and makes the build's context, with the
/// launcher's build id. A swarm build (`needs_pull_request`) is one of a
/// pull request. Every problem is reported, each by the flag that fixes it.
pub fn resolve(
    raw: RawFacts,
    build_id: &BuildId,
    needs_pull_request: bool,
) -> Result<BuildContext, LaunchError> {
    let raw = RawFacts {
        build_id: Some(build_id.to_string()),
        ..raw
    };
    // The launcher's own files never reach the container: no file checks.
    let result = facts::validate(&raw, Mode::Container, |_| false);
    let mut problems = match &result {
        Ok(_) => Vec::new(),
        Err(err) => err.problems.clone(),
    };
    if needs_pull_request && raw.pull_request.is_none() {
        problems.push(FactProblem {
            variable: var::PULL_REQUEST,
            problem: "is not set".into(),
            fix: "the pull request number".into(),
        });
    }
    match result {
        Ok(ctx) if problems.is_empty() => Ok(ctx),
        _ => Err(LaunchError::Facts(super::error::FactFlagsError(
            FactsError { problems },
        ))),
    }
}

/// The flag that gives a fact.
pub fn flag_of(variable: &str) -> &'static str {
    match variable {
        var::OWNER | var::REPO => "--repo OWNER/NAME",
        var::SHA => "--sha SHA",
        var::PULL_REQUEST => "--pr N",
        var::STATUS_URL => "--status-url URL",
        var::COMMIT_COUNT => "--commits N",
        var::INSTALL_ID => "--install-id ID",
        var::ACTION => "--action NAME",
        var::API_URL => "--api-url URL",
        var::ARTIFACTS_URL => "--artifacts-url URL",
        var::TARGET_URL => "--target-url URL",
        _ => "the flags",
    }
}

/// Splits `OWNER/NAME`.
pub fn split_repo(full: &str) -> Result<(String, String), LaunchError> {
    let bad = |reason: &str| LaunchError::Flag {
        flag: "--repo",
        value: full.to_string(),
        reason: reason.to_string(),
    };
    let (owner, repo) = full
        .split_once('/')
        .ok_or_else(|| bad("expected OWNER/NAME"))?;
    if owner.is_empty() || repo.is_empty() || repo.contains('/') {
        return Err(bad("expected OWNER/NAME"));
    }
    for name in [owner, repo] {
        if !facts::RepoName::is_valid(name) {
            return Err(bad(
                "owner and repository names may contain only letters, digits, '-', '_' and '.'",
            ));
        }
    }
    Ok((owner.to_string(), repo.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PR: &str = r#"{
        "number": 42,
        "statuses_url": "https://api.github.com/repos/octo/widget/statuses/0123456789abcdef0123456789abcdef01234567",
        "commits": 3,
        "head": {"sha": "0123456789abcdef0123456789abcdef01234567",
                 "repo": {"name": "widget", "owner": {"login": "octo"}}}
    }"#;

    fn build_id() -> BuildId {
        "20261125T043000123-00ff".parse().unwrap()
    }

    fn resolved(raw: RawFacts) -> Result<BuildContext, LaunchError> {
        resolve(raw, &build_id(), true)
    }

    #[test]
    fn parses_a_bare_pull_request_object() {
        let pr = resolved(parse_event("pr.json", PR.as_bytes()).unwrap()).unwrap();
        assert_eq!(pr.owner, "octo");
        assert_eq!(pr.repo, "widget");
        assert_eq!(pr.pull_request, Some(42));
        assert_eq!(pr.commit_count, Some(3));
        assert!(pr
            .status_url
            .unwrap()
            .ends_with("/statuses/0123456789abcdef0123456789abcdef01234567"));
        assert_eq!(pr.install_id, None);
        assert_eq!(pr.build_id, build_id());
    }

    #[test]
    fn parses_a_whole_event_with_installation() {
        let event = format!(
            r#"{{"action":"synchronize","number":42,"pull_request":{PR},"installation":{{"id":977}}}}"#
        );
        let pr = resolved(parse_event("-", event.as_bytes()).unwrap()).unwrap();
        assert_eq!(pr.pull_request, Some(42));
        assert_eq!(pr.install_id, Some(977));
    }

    #[test]
    fn flags_override_the_event() {
        let flags = FactFlags {
            repo: Some("other/thing".into()),
            pr: Some(7),
            sha: Some("abcdef1234abcdef1234abcdef1234abcdef1234".into()),
            ..FactFlags::default()
        };
        let raw = flags
            .to_raw()
            .unwrap()
            .or(parse_event("pr.json", PR.as_bytes()).unwrap());
        let pr = resolved(raw).unwrap();
        assert_eq!(
            (pr.owner.as_str(), pr.repo.as_str(), pr.pull_request),
            ("other", "thing", Some(7))
        );
        assert_eq!(pr.sha, "abcdef1234abcdef1234abcdef1234abcdef1234");
    }

    #[test]
    fn flags_alone_are_enough() {
        let flags = FactFlags {
            repo: Some("o/r".into()),
            pr: Some(1),
            sha: Some("abcdef1234abcdef1234abcdef1234abcdef1234".into()),
            ..FactFlags::default()
        };
        let pr = resolved(flags.to_raw().unwrap()).unwrap();
        assert_eq!(pr.owner, "o");
        assert_eq!(pr.status_url, None);
    }

    #[test]
    fn forge_insecure_http_allows_a_plain_http_forge_on_the_network() {
        let flags = |insecure: Option<&str>| FactFlags {
            repo: Some("o/r".into()),
            pr: Some(1),
            sha: Some("abcdef1234abcdef1234abcdef1234abcdef1234".into()),
            api_url: Some("http://10.0.0.9:8080".into()),
            insecure_http: insecure.map(String::from),
            ..FactFlags::default()
        };
        let err = resolved(flags(None).to_raw().unwrap()).unwrap_err();
        assert!(err.to_string().contains("FORGE_INSECURE_HTTP=1"), "{err}");
        let ok = resolved(flags(Some("1")).to_raw().unwrap()).unwrap();
        assert!(ok.insecure_http);
        assert_eq!(ok.api_url, "http://10.0.0.9:8080");
        assert!(resolved(flags(Some("maybe")).to_raw().unwrap()).is_err());
    }

    #[test]
    fn missing_facts_name_the_flag() {
        let err = resolved(RawFacts::default()).unwrap_err();
        assert!(err.to_string().contains("--repo OWNER/NAME"), "{err}");
        assert!(err.to_string().contains("--pr N"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let local = resolve(
            FactFlags {
                repo: Some("o/r".into()),
                sha: Some("abcdef1234abcdef1234abcdef1234abcdef1234".into()),
                ..FactFlags::default()
            }
            .to_raw()
            .unwrap(),
            &build_id(),
            false,
        );
        assert!(local.is_ok(), "a local build needs no pull request");
    }

    #[test]
    fn rejects_payloads_that_are_not_pull_requests() {
        let err = parse_event("push.json", br#"{"ref":"refs/heads/main"}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("push.json: not a pull_request"),
            "{err}"
        );
        let err = parse_event("x", b"[1]").unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
    }

    #[test]
    fn rejects_unsafe_names_and_shas() {
        assert!(split_repo("a/b/c").is_err());
        assert!(split_repo("a b/c").is_err());
        assert!(split_repo("../x").is_err());
        let flags = FactFlags {
            repo: Some("o/r".into()),
            pr: Some(1),
            sha: Some("not-a-sha".into()),
            ..FactFlags::default()
        };
        let err = resolved(flags.to_raw().unwrap()).unwrap_err();
        assert!(err.to_string().contains("--sha"), "{err}");
    }
}
