//! A webhook delivery: its signature (HMAC-SHA256 of the raw body, checked
//! in constant time before anything is parsed), its content type, and what
//! the event asks for. The facts of a build come from
//! [`crate::launch::event::parse_event`] like `forge-launch swarm`'s, with
//! the repository taken from the payload's base `repository` (a fork's pull
//! request is built, and reported, on the repository it targets).

use ring::hmac;
use serde_json::Value;

use crate::facts::RawFacts;
use crate::launch::event::parse_event;

/// GitHub's cap on a delivery's payload.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// Why a delivery is refused before it is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no X-Hub-Signature-256 header: configure the webhook's secret")]
    Unsigned,
    #[error("X-Hub-Signature-256 does not match the body and the webhook secret")]
    BadSignature,
    #[error("payload larger than {} MiB", MAX_BODY >> 20)]
    TooLarge,
    #[error("content type {0:?} is not supported: choose `application/json` as the webhook's content type")]
    NotJson(String),
    #[error("the payload is not a JSON object: {0}")]
    BadPayload(String),
    #[error("no X-GitHub-Event header")]
    NoEvent,
}

impl Rejection {
    /// The HTTP status that answers it.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Unsigned | Rejection::BadSignature => 401,
            Rejection::TooLarge => 413,
            Rejection::NotJson(_) => 415,
            Rejection::BadPayload(_) | Rejection::NoEvent => 400,
        }
    }
}

/// The webhook secret as an HMAC key.
pub struct WebhookKey(hmac::Key);

impl WebhookKey {
    pub fn new(secret: &[u8]) -> WebhookKey {
        WebhookKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Checks `X-Hub-Signature-256: sha256=<hex>` against `body`.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), Rejection> {
        let header = header.ok_or(Rejection::Unsigned)?;
        let tag = header
            .trim()
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or(Rejection::BadSignature)?;
        hmac::verify(&self.0, body, &tag).map_err(|_| Rejection::BadSignature)
    }

    /// The header value for `body` (tests and benchmarks sign with it).
    pub fn sign(&self, body: &[u8]) -> String {
        format!("sha256={}", hex::encode(hmac::sign(&self.0, body).as_ref()))
    }
}

/// `application/json` with any parameters; GitHub's other choice
/// (`application/x-www-form-urlencoded`) is refused.
pub fn check_content_type(value: Option<&str>) -> Result<(), Rejection> {
    let value = value.unwrap_or("");
    let media = value.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Rejection::NotJson(value.to_string()))
    }
}

/// What a pull request or push delivery builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    PullRequest { number: u64 },
    Push { branch: String },
}

/// A build a delivery asks for: its facts (owner and repository are the
/// base repository's), whether its head is in a fork, and the App
/// installation it came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub raw: RawFacts,
    pub owner: String,
    pub repo: String,
    pub trigger: Trigger,
    pub fork: bool,
    pub install_id: Option<u64>,
}

/// What a verified delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ping,
    Build(Box<BuildRequest>),
    /// A pull request was closed: cancel its running builds.
    Close {
        owner: String,
        repo: String,
        number: u64,
        install_id: Option<u64>,
    },
    /// Nothing to do; the text says why (logged at debug).
    Ignored(String),
}

/// Which pushes are built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushPolicy {
    /// Empty: the repository's default branch.
    pub branches: Vec<String>,
}

/// Reads a verified delivery of event `kind` (`X-GitHub-Event`).
pub fn classify(kind: &str, body: &[u8], push: &PushPolicy) -> Result<Event, Rejection> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| Rejection::BadPayload(e.to_string()))?;
    if !root.is_object() {
        return Err(Rejection::BadPayload("expected an object".into()));
    }
    match kind {
        "ping" => Ok(Event::Ping),
        "pull_request" => pull_request(&root, body),
        "push" => push_event(&root, push),
        other => Ok(Event::Ignored(format!("event `{other}` is not built"))),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str()
}

fn base_repository(root: &Value) -> Result<(String, String), Rejection> {
    let owner = str_at(root, &["repository", "owner", "login"])
        .or_else(|| str_at(root, &["repository", "owner", "name"]));
    match (owner, str_at(root, &["repository", "name"])) {
        (Some(owner), Some(name)) => Ok((owner.to_string(), name.to_string())),
        _ => Err(Rejection::BadPayload(
            "no `repository.owner.login` and `repository.name`".into(),
        )),
    }
}

fn install_id(root: &Value) -> Option<u64> {
    root.get("installation")?.get("id")?.as_u64()
}

fn pull_request(root: &Value, body: &[u8]) -> Result<Event, Rejection> {
    let action = str_at(root, &["action"]).unwrap_or("");
    let (owner, repo) = base_repository(root)?;
    let number = root
        .get("number")
        .or_else(|| root.get("pull_request")?.get("number"))
        .and_then(Value::as_u64)
        .ok_or_else(|| Rejection::BadPayload("no pull request `number`".into()))?;
    match action {
        "opened" | "synchronize" | "reopened" => {}
        "closed" => {
            return Ok(Event::Close {
                owner,
                repo,
                number,
                install_id: install_id(root),
            })
        }
        other => {
            return Ok(Event::Ignored(format!(
                "pull_request action `{other}` is not built"
            )))
        }
    }
    let raw =
        parse_event("the delivery", body).map_err(|e| Rejection::BadPayload(e.to_string()))?;
    let head_repo = str_at(root, &["pull_request", "head", "repo", "full_name"]);
    let fork = head_repo != Some(format!("{owner}/{repo}").as_str());
    let raw = RawFacts {
        owner: Some(owner.clone()),
        repo: Some(repo.clone()),
        // Statuses go to the configured API, never to a URL from the payload.
        status_url: None,
        ..raw
    };
    Ok(Event::Build(Box::new(BuildRequest {
        raw,
        owner,
        repo,
        trigger: Trigger::PullRequest { number },
        fork,
        install_id: install_id(root),
    })))
}

fn push_event(root: &Value, policy: &PushPolicy) -> Result<Event, Rejection> {
    let (owner, repo) = base_repository(root)?;
    let git_ref = str_at(root, &["ref"]).unwrap_or("");
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(Event::Ignored(format!("push of {git_ref} is not a branch")));
    };
    let after = str_at(root, &["after"]).unwrap_or("");
    if root.get("deleted").and_then(Value::as_bool) == Some(true)
        || after.bytes().all(|b| b == b'0')
    {
        return Ok(Event::Ignored(format!("branch {branch} was deleted")));
    }
    let built = if policy.branches.is_empty() {
        str_at(root, &["repository", "default_branch"]) == Some(branch)
    } else {
        policy.branches.iter().any(|b| b == branch)
    };
    if !built {
        return Ok(Event::Ignored(format!(
            "push to {branch}, which is not a built branch"
        )));
    }
    let raw = RawFacts {
        owner: Some(owner.clone()),
        repo: Some(repo.clone()),
        sha: Some(after.to_string()),
        install_id: install_id(root).map(|id| id.to_string()),
        ..RawFacts::default()
    };
    Ok(Event::Build(Box::new(BuildRequest {
        raw,
        owner,
        repo,
        trigger: Trigger::Push {
            branch: branch.to_string(),
        },
        fork: false,
        install_id: install_id(root),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENED: &[u8] =
        include_bytes!("../../../tests/fixtures/webhooks/pull_request-opened.json");
    const CLOSED: &[u8] =
        include_bytes!("../../../tests/fixtures/webhooks/pull_request-closed.json");
    const PUSH: &[u8] = include_bytes!("../../../tests/fixtures/webhooks/push-payload.json");
    const PING: &[u8] = include_bytes!("../../../tests/fixtures/webhooks/ping-payload.json");

    #[test]
    fn signatures_are_checked_on_the_raw_body() {
        let key = WebhookKey::new(b"It's a Secret to Everybody");
        // GitHub's documented example.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(key.sign(b"Hello, World!"), sig);
        assert_eq!(key.verify(Some(sig), b"Hello, World!"), Ok(()));
        assert_eq!(
            key.verify(Some(sig), b"Hello, World?"),
            Err(Rejection::BadSignature)
        );
        assert_eq!(key.verify(None, b"x"), Err(Rejection::Unsigned));
        assert_eq!(
            key.verify(Some("sha1=abc"), b"x"),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            key.verify(Some("sha256=zz"), b"x"),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn only_json_is_accepted() {
        assert!(check_content_type(Some("application/json")).is_ok());
        assert!(check_content_type(Some("Application/JSON; charset=utf-8")).is_ok());
        let err = check_content_type(Some("application/x-www-form-urlencoded")).unwrap_err();
        assert_eq!(err.status(), 415);
        assert!(err.to_string().contains("application/json"), "{err}");
        assert!(check_content_type(None).is_err());
    }

    #[test]
    fn github_examples_classify() {
        let policy = PushPolicy::default();
        assert_eq!(classify("ping", PING, &policy), Ok(Event::Ping));
        let Event::Build(b) = classify("pull_request", OPENED, &policy).unwrap() else {
            panic!("opened is a build");
        };
        assert_eq!(
            (b.owner.as_str(), b.repo.as_str()),
            ("Codertocat", "Hello-World")
        );
        assert_eq!(b.trigger, Trigger::PullRequest { number: 2 });
        assert!(!b.fork);
        assert_eq!(b.install_id, Some(1));
        assert_eq!(
            b.raw.sha.as_deref(),
            Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821")
        );
        assert_eq!(b.raw.status_url, None);
        assert!(matches!(
            classify("pull_request", CLOSED, &policy),
            Ok(Event::Close { number: 2, .. })
        ));
        // the example push deletes a tag
        assert!(matches!(
            classify("push", PUSH, &policy),
            Ok(Event::Ignored(_))
        ));
        assert!(matches!(
            classify("issues", PING, &policy),
            Ok(Event::Ignored(_))
        ));
        assert!(matches!(
            classify("push", b"[]", &policy),
            Err(Rejection::BadPayload(_))
        ));
    }

    #[test]
    fn pushes_to_built_branches_only() {
        let mut push: Value = serde_json::from_slice(PUSH).unwrap();
        push["ref"] = "refs/heads/master".into();
        push["deleted"] = false.into();
        push["after"] = "0123456789abcdef0123456789abcdef01234567".into();
        let body = push.to_string();
        let Event::Build(b) = classify("push", body.as_bytes(), &PushPolicy::default()).unwrap()
        else {
            panic!("a push to the default branch is built");
        };
        assert_eq!(
            b.trigger,
            Trigger::Push {
                branch: "master".into()
            }
        );
        let only_main = PushPolicy {
            branches: vec!["main".into()],
        };
        assert!(matches!(
            classify("push", body.as_bytes(), &only_main),
            Ok(Event::Ignored(_))
        ));
    }

    #[test]
    fn fork_pull_requests_are_marked() {
        let mut pr: Value = serde_json::from_slice(OPENED).unwrap();
        pr["pull_request"]["head"]["repo"]["full_name"] = "someone/Hello-World".into();
        pr["pull_request"]["head"]["repo"]["owner"]["login"] = "someone".into();
        let Event::Build(b) = classify(
            "pull_request",
            pr.to_string().as_bytes(),
            &PushPolicy::default(),
        )
        .unwrap() else {
            panic!("a fork's pull request is a build");
        };
        assert!(b.fork);
        assert_eq!(b.raw.owner.as_deref(), Some("Codertocat"));
    }
}
