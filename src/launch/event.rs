//! The facts of a build request: a GitHub `pull_request` webhook payload
//! (the whole event or just its `pull_request` object), overridden by
//! command-line flags.

use serde_json::Value;

use super::LaunchError;

/// What the launcher needs to know about the pull request to build.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullRequest {
    /// Owner of the repository holding the head commit.
    pub owner: String,
    /// Name of that repository.
    pub repo: String,
    pub number: u64,
    /// Head commit to build.
    pub sha: String,
    /// Where commit statuses for the head commit are posted.
    pub statuses_url: Option<String>,
    /// Number of commits in the pull request.
    pub commits: Option<u64>,
    /// GitHub App installation id, when the event carries one.
    pub install_id: Option<String>,
}

/// The same facts given as flags; every present field overrides the event.
#[derive(Debug, Clone, Default)]
pub struct FactFlags {
    /// `OWNER/NAME`
    pub repo: Option<String>,
    pub pr: Option<u64>,
    pub sha: Option<String>,
    pub status_url: Option<String>,
    pub commits: Option<u64>,
    pub install_id: Option<String>,
}

/// Parses a webhook payload. `label` names the source in messages.
pub fn parse_event(label: &str, bytes: &[u8]) -> Result<PartialFacts, LaunchError> {
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
    let number = pr
        .get("number")
        .or_else(|| root.get("number"))
        .and_then(Value::as_u64);
    let install_id = root
        .get("installation")
        .and_then(|i| i.get("id"))
        .and_then(|id| match id {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        });
    Ok(PartialFacts {
        owner: str_at(head, &["repo", "owner", "login"]),
        repo: str_at(head, &["repo", "name"]),
        number,
        sha: str_at(head, &["sha"]),
        statuses_url: str_at(pr, &["statuses_url"]),
        commits: pr.get("commits").and_then(Value::as_u64),
        install_id,
    })
}

/// Facts as read from an event, any of which may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialFacts {
    pub owner: Option<String>,
    pub repo: Option<String>,
    pub number: Option<u64>,
    pub sha: Option<String>,
    pub statuses_url: Option<String>,
    pub commits: Option<u64>,
    pub install_id: Option<String>,
}

impl PartialFacts {
    /// Applies the flags over the event's facts and checks that every
    /// required fact is present and safe to put into names and URLs.
    pub fn resolve(mut self, flags: &FactFlags) -> Result<PullRequest, LaunchError> {
        if let Some(full) = &flags.repo {
            let (owner, repo) = split_repo(full)?;
            self.owner = Some(owner);
            self.repo = Some(repo);
        }
        if flags.pr.is_some() {
            self.number = flags.pr;
        }
        if flags.sha.is_some() {
            self.sha.clone_from(&flags.sha);
        }
        if flags.status_url.is_some() {
            self.statuses_url.clone_from(&flags.status_url);
        }
        if flags.commits.is_some() {
            self.commits = flags.commits;
        }
        if flags.install_id.is_some() {
            self.install_id.clone_from(&flags.install_id);
        }
        let owner = self.owner.ok_or(LaunchError::MissingFact {
            what: "repository owner",
            flag: "--repo OWNER/NAME",
        })?;
        let repo = self.repo.ok_or(LaunchError::MissingFact {
            what: "repository name",
            flag: "--repo OWNER/NAME",
        })?;
        check_name("--repo", &owner)?;
        check_name("--repo", &repo)?;
        let number = self.number.ok_or(LaunchError::MissingFact {
            what: "pull request number",
            flag: "--pr N",
        })?;
        let sha = self.sha.ok_or(LaunchError::MissingFact {
            what: "head commit sha",
            flag: "--sha SHA",
        })?;
        check_sha(&sha)?;
        Ok(PullRequest {
            owner,
            repo,
            number,
            sha,
            statuses_url: self.statuses_url,
            commits: self.commits,
            install_id: self.install_id,
        })
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
    check_name("--repo", owner)?;
    check_name("--repo", repo)?;
    Ok((owner.to_string(), repo.to_string()))
}

/// Owner and repository names as GitHub allows them: letters, digits, `-`,
/// `_` and `.`, not `.` or `..`. They go into labels, URLs and paths.
fn check_name(flag: &'static str, name: &str) -> Result<(), LaunchError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(LaunchError::Flag {
            flag,
            value: name.to_string(),
            reason: "owner and repository names may contain only letters, digits, '-', '_' and '.'"
                .into(),
        })
    }
}

fn check_sha(sha: &str) -> Result<(), LaunchError> {
    if matches!(sha.len(), 40 | 64) && sha.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(LaunchError::Flag {
            flag: "--sha",
            value: sha.to_string(),
            reason: "expected a full commit id: 40 (SHA-1) or 64 (SHA-256) hex digits".into(),
        })
    }
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

    #[test]
    fn parses_a_bare_pull_request_object() {
        let pr = parse_event("pr.json", PR.as_bytes())
            .unwrap()
            .resolve(&FactFlags::default())
            .unwrap();
        assert_eq!(pr.owner, "octo");
        assert_eq!(pr.repo, "widget");
        assert_eq!(pr.number, 42);
        assert_eq!(pr.commits, Some(3));
        assert!(pr
            .statuses_url
            .unwrap()
            .ends_with("/statuses/0123456789abcdef0123456789abcdef01234567"));
        assert_eq!(pr.install_id, None);
    }

    #[test]
    fn parses_a_whole_event_with_installation() {
        let event = format!(
            r#"{{"action":"synchronize","number":42,"pull_request":{PR},"installation":{{"id":977}}}}"#
        );
        let pr = parse_event("-", event.as_bytes())
            .unwrap()
            .resolve(&FactFlags::default())
            .unwrap();
        assert_eq!(pr.number, 42);
        assert_eq!(pr.install_id.as_deref(), Some("977"));
    }

    #[test]
    fn flags_override_the_event() {
        let flags = FactFlags {
            repo: Some("other/thing".into()),
            pr: Some(7),
            sha: Some("abcdef1234abcdef1234abcdef1234abcdef1234".into()),
            ..FactFlags::default()
        };
        let pr = parse_event("pr.json", PR.as_bytes())
            .unwrap()
            .resolve(&flags)
            .unwrap();
        assert_eq!(
            (pr.owner.as_str(), pr.repo.as_str(), pr.number),
            ("other", "thing", 7)
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
        let pr = PartialFacts::default().resolve(&flags).unwrap();
        assert_eq!(pr.owner, "o");
        assert_eq!(pr.statuses_url, None);
    }

    #[test]
    fn missing_facts_name_the_flag() {
        let err = PartialFacts::default()
            .resolve(&FactFlags::default())
            .unwrap_err();
        assert!(err.to_string().contains("--repo OWNER/NAME"), "{err}");
        assert_eq!(err.exit_code(), 2);
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
        let err = PartialFacts::default().resolve(&flags).unwrap_err();
        assert!(err.to_string().contains("--sha"), "{err}");
    }
}
