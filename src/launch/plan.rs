//! Pure decisions of a launch: the build id, the Docker-safe service name,
//! the container environment, the labels and label filters that find the
//! services of one pull request, and which of several racing services wins.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use crate::facts::BuildContext;

/// Label keys put on every build service.
pub mod label {
    pub const REPO: &str = "forge.repo";
    pub const PULL_REQUEST: &str = "forge.pull_request";
    pub const SHA: &str = "forge.sha";
    pub const ACTION: &str = "forge.action";
    pub const BUILD_ID: &str = "forge.build_id";
    /// The branch of a push build: pushes to different branches are
    /// separate lines of builds, each superseding only its own.
    pub const BRANCH: &str = "forge.branch";
    /// On a build launched again after its node went down: which retry.
    pub const RETRY: &str = "forge.retry";
}

/// Docker's limit for service names (they must be valid DNS labels).
pub const MAX_NAME_LEN: usize = 63;

/// A build id: UTC `YYYYMMDDTHHMMSSmmm` plus four random hex digits, so two
/// launches in the same millisecond (even on two hosts) still differ. It is
/// the timestamp part of the service name and `FORGE_BUILD_ID`.
pub fn build_id(now: SystemTime, random: u16) -> String {
    let t = crate::clock::utc(now).unwrap_or(crate::clock::Utc {
        year: 1970,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        millis: 0,
    });
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}-{random:04x}",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
    )
}

/// A new build id: the launch time and a random part.
pub fn new_build_id() -> crate::facts::BuildId {
    build_id(SystemTime::now(), fastrand::u16(..))
        .parse()
        .expect("build_id makes digits, `T` and `-` only")
}

/// `forge-{owner}-{repo}-{pr}-{build_id}`, made valid for Docker: characters
/// other than letters, digits, `-` and `_` become `-`, runs of `-` collapse,
/// and the owner/repo part is truncated so the whole fits in 63 characters.
/// The pull request number and build id are never truncated, so names stay
/// unique.
pub fn service_name(owner: &str, repo: &str, pr: u64, build_id: &str) -> String {
    let suffix = sanitize(&format!("-{pr}-{build_id}"));
    let prefix = sanitize(&format!("forge-{owner}-{repo}"));
    let room = MAX_NAME_LEN.saturating_sub(suffix.len());
    let mut prefix: String = prefix.chars().take(room).collect();
    while prefix.ends_with(['-', '_']) {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out
}

/// The container environment: the spec's `environment` first, then the
/// build's `FORGE_*` facts (which win over the spec). Sorted by name.
pub fn environment(
    spec_env: &BTreeMap<String, String>,
    build: &BuildContext,
) -> BTreeMap<String, String> {
    let mut env = spec_env.clone();
    for (name, value) in build.to_vars() {
        env.insert(name.to_string(), value);
    }
    // Every other build fact is set empty (forgexec reads empty as unset):
    // otherwise the image's own ENV, which the pull request chooses, would
    // fill it in: a FORGE_API_URL that sends the token elsewhere, or a
    // FORGE_TOKEN_FILE that leaves /forge/token undeleted for the build.
    for name in crate::facts::var::ALL {
        env.entry(name.to_string()).or_default();
    }
    env
}

/// `NAME=VALUE` strings for the Docker API.
pub fn env_list(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Labels of a build service.
pub fn labels(build: &BuildContext) -> HashMap<String, String> {
    HashMap::from([
        (
            label::REPO.to_string(),
            format!("{}/{}", build.owner, build.repo),
        ),
        (
            label::PULL_REQUEST.to_string(),
            build.pull_request.unwrap_or(0).to_string(),
        ),
        (label::SHA.to_string(), build.sha.to_string()),
        (label::ACTION.to_string(), build.action.to_string()),
        (label::BUILD_ID.to_string(), build.build_id.to_string()),
    ])
}

/// The service (or container) name of a build.
pub fn build_name(build: &BuildContext) -> String {
    service_name(
        &build.owner,
        &build.repo,
        build.pull_request.unwrap_or(0),
        &build.build_id,
    )
}

/// The list filter matching every service of one pull request.
pub fn pull_request_filter(owner: &str, repo: &str, pr: u64) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={owner}/{repo}", label::REPO),
            format!("{}={pr}", label::PULL_REQUEST),
        ],
    )])
}

/// The list filter matching the builds a new one supersedes: those of its
/// pull request or, for a push build with a `forge.branch` label among
/// `labels`, those of its branch.
pub fn lane_filter(
    build: &BuildContext,
    labels: &HashMap<String, String>,
) -> HashMap<String, Vec<String>> {
    let mut filter =
        pull_request_filter(&build.owner, &build.repo, build.pull_request.unwrap_or(0));
    if build.pull_request.is_none() {
        if let Some(branch) = labels.get(label::BRANCH) {
            if let Some(values) = filter.get_mut("label") {
                values.push(format!("{}={branch}", label::BRANCH));
            }
        }
    }
    filter
}

/// The list filter matching every build service of one repository.
pub fn repo_filter(owner: &str, repo: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![format!("{}={owner}/{repo}", label::REPO)],
    )])
}

/// The list filter matching every forge build service.
pub fn all_builds_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![label::REPO.to_string()])])
}

/// A Docker RFC 3339 timestamp with its fraction padded to nanoseconds, so
/// that timestamps of the same zone compare correctly as strings (Docker
/// drops trailing zeros: `…:36.1Z` vs `…:36.09Z`).
pub fn normalize_timestamp(ts: &str) -> String {
    let Some(body) = ts.strip_suffix('Z') else {
        return ts.to_string();
    };
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    let mut frac: String = frac.chars().take(9).collect();
    while frac.len() < 9 {
        frac.push('0');
    }
    format!("{secs}.{frac}Z")
}

/// Of the services of one pull request (`(created_at, id)` pairs), the one
/// that keeps running: the newest by creation time, ties broken by id. Every
/// launcher decides with this same order after creating its own service, so
/// racing launches agree and exactly one build survives.
pub fn winner(services: &[(String, String)]) -> Option<&(String, String)> {
    services
        .iter()
        .max_by_key(|(created, id)| (normalize_timestamp(created), id.clone()))
}

/// Parses Docker's UTC RFC 3339 timestamps (`2026-05-07T21:09:36.12Z`).
pub fn parse_timestamp(ts: &str) -> Option<SystemTime> {
    crate::clock::parse_utc(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RawFacts;
    use std::time::{Duration, UNIX_EPOCH};

    fn pr_with(extra: &[(&str, &str)]) -> BuildContext {
        let mut vars = vec![
            ("FORGE_OWNER", "octo"),
            ("FORGE_REPO", "widget"),
            ("FORGE_PULL_REQUEST", "42"),
            ("FORGE_SHA", "0123456789abcdef0123456789abcdef01234567"),
            ("FORGE_STATUS_URL", "http://127.0.0.1:1/statuses/x"),
            ("FORGE_COMMIT_COUNT", "3"),
            ("FORGE_BUILD_ID", "B1"),
        ];
        vars.extend_from_slice(extra);
        crate::facts::validate(
            &RawFacts::from_vars(vars),
            crate::facts::Mode::Container,
            |_| false,
        )
        .unwrap()
    }

    fn pr() -> BuildContext {
        pr_with(&[])
    }

    #[test]
    fn build_id_is_utc_with_millis_and_random() {
        // 2021-03-04T05:06:07.089Z
        let t = UNIX_EPOCH + Duration::from_millis(1_614_834_367_089);
        assert_eq!(build_id(t, 0xab1), "20210304T050607089-0ab1");
        assert_eq!(build_id(UNIX_EPOCH, 0), "19700101T000000000-0000");
        // leap day
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert!(build_id(t, 0).starts_with("20000229T"));
    }

    #[test]
    fn service_names_are_docker_safe_and_keep_the_unique_part() {
        let id = "20210304T050607089-0ab1";
        assert_eq!(
            service_name("octo", "widget", 42, id),
            "forge-octo-widget-42-20210304T050607089-0ab1"
        );
        let name = service_name("my.org", "a..b", 7, id);
        assert_eq!(name, "forge-my-org-a-b-7-20210304T050607089-0ab1");
        let long = "x".repeat(100);
        let name = service_name(&long, &long, 123456, id);
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(name.ends_with("-123456-20210304T050607089-0ab1"), "{name}");
        // truncation never leaves a separator before the suffix
        let name = service_name("abcdefghijklmnopqrstuvwxyz-ab", "c", 1, id);
        assert!(!name.contains("--"), "{name}");
        for c in name.chars() {
            assert!(c.is_ascii_alphanumeric() || c == '-' || c == '_', "{name}");
        }
    }

    #[test]
    fn environment_adds_forge_facts_over_the_spec() {
        let spec = BTreeMap::from([
            ("CARGO_TERM_COLOR".to_string(), "always".to_string()),
            ("FORGE_SHA".to_string(), "spoofed".to_string()),
        ]);
        let build = pr_with(&[("FORGE_API_URL", "http://127.0.0.1:9/api")]);
        let env = environment(&spec, &build);
        assert_eq!(env["CARGO_TERM_COLOR"], "always");
        assert_eq!(env["FORGE_SHA"], pr().sha.as_str());
        assert_eq!(env["FORGE_PULL_REQUEST"], "42");
        assert_eq!(env["FORGE_COMMIT_COUNT"], "3");
        assert_eq!(env["FORGE_BUILD_ID"], "B1");
        assert_eq!(env["FORGE_ACTION"], "execute");
        assert_eq!(env["FORGE_API_URL"], "http://127.0.0.1:9/api");
        // Facts not given are set empty (unset for forgexec), so that an
        // image's ENV cannot supply them.
        assert_eq!(env["FORGE_ARTIFACTS_URL"], "");
        assert_eq!(env["FORGE_INSTALL_ID"], "");
        assert_eq!(env["FORGE_CA_CERT"], "");
        assert!(env_list(&env).contains(&"FORGE_OWNER=octo".to_string()));
        // nothing that looks like a credential: those are set empty
        assert_eq!(env["FORGE_TOKEN"], "");
        assert_eq!(env["FORGE_TOKEN_FILE"], "");
        assert!(env
            .iter()
            .all(|(k, v)| !k.contains("TOKEN") || v.is_empty()));
    }

    #[test]
    fn labels_and_filters_agree() {
        let labels = labels(&pr_with(&[("FORGE_ACTION", "lint")]));
        let filter = pull_request_filter("octo", "widget", 42);
        for wanted in &filter["label"] {
            let (k, v) = wanted.split_once('=').unwrap();
            assert_eq!(labels[k], v);
        }
        assert_eq!(labels[label::ACTION], "lint");
        assert_eq!(labels[label::SHA], pr().sha.as_str());
    }

    #[test]
    fn push_builds_supersede_only_their_own_branch() {
        let branch = HashMap::from([(label::BRANCH.to_string(), "release".to_string())]);
        // A pull request's lane ignores any branch label.
        let lane = lane_filter(&pr(), &branch);
        assert_eq!(lane, pull_request_filter("octo", "widget", 42));
        let mut push = pr();
        push.pull_request = None;
        let lane = lane_filter(&push, &branch);
        assert!(lane["label"].contains(&"forge.pull_request=0".to_string()));
        assert!(lane["label"].contains(&"forge.branch=release".to_string()));
        // Without a branch: every push build of the repository.
        assert_eq!(
            lane_filter(&push, &HashMap::new()),
            pull_request_filter("octo", "widget", 0)
        );
    }

    #[test]
    fn timestamps_compare_after_normalizing() {
        assert_eq!(
            normalize_timestamp("2026-05-07T21:09:36.1Z"),
            "2026-05-07T21:09:36.100000000Z"
        );
        assert_eq!(
            normalize_timestamp("2026-05-07T21:09:36Z"),
            "2026-05-07T21:09:36.000000000Z"
        );
        assert!(
            normalize_timestamp("2026-05-07T21:09:36.1Z")
                > normalize_timestamp("2026-05-07T21:09:36.09Z")
        );
    }

    #[test]
    fn parses_docker_timestamps() {
        let t = parse_timestamp("2021-03-04T05:06:07.089Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_millis(1_614_834_367_089));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z").unwrap(), UNIX_EPOCH);
        assert!(parse_timestamp("yesterday").is_none());
        assert!(parse_timestamp("2021-13-04T05:06:07Z").is_none());
        // round trip with build ids across many days
        for day in (0..30_000u64).step_by(997) {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 3_723);
            let u = crate::clock::utc(t).unwrap();
            let ts = format!("{:04}-{:02}-{:02}T01:02:03Z", u.year, u.month, u.day);
            assert_eq!(parse_timestamp(&ts).unwrap(), t, "{ts}");
        }
    }

    #[test]
    fn the_newest_service_wins_ties_by_id() {
        let s = |c: &str, id: &str| (c.to_string(), id.to_string());
        let all = [
            s("2026-05-07T21:09:36.1Z", "a"),
            s("2026-05-07T21:09:36.09Z", "z"),
        ];
        assert_eq!(winner(&all).unwrap().1, "a");
        let tie = [
            s("2026-05-07T21:09:36.5Z", "b"),
            s("2026-05-07T21:09:36.5Z", "c"),
        ];
        assert_eq!(winner(&tie).unwrap().1, "c");
        assert_eq!(winner(&[]), None);
    }
}
