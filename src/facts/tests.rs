use super::*;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn raw(pairs: &[(&str, &str)]) -> RawFacts {
    RawFacts::from_vars(pairs.iter().copied())
}

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("FORGE_OWNER", "octo"),
        ("FORGE_REPO", "hello"),
        ("FORGE_SHA", SHA),
    ]
}

fn container(pairs: &[(&str, &str)]) -> Result<BuildContext, FactsError> {
    validate(&raw(pairs), Mode::Container, |_| false)
}

#[test]
fn minimal_environment_gets_defaults() {
    let ctx = container(&base()).unwrap();
    assert_eq!(ctx.action, "execute");
    assert_eq!(ctx.status_context, "forge/execute");
    assert_eq!(ctx.api_url, DEFAULT_API_URL);
    assert_eq!(ctx.workspace, PathBuf::from(DEFAULT_WORKSPACE));
    assert_eq!(ctx.grace, DEFAULT_GRACE);
    assert_eq!(ctx.token_source, TokenSource::None);
    assert_eq!(ctx.build_id.len(), "20261125T043000Z".len());
}

#[test]
fn every_problem_is_named_by_its_variable() {
    let err = container(&[
        ("FORGE_REPO", "a b"),
        ("FORGE_SHA", "abc"),
        ("FORGE_PULL_REQUEST", "x1"),
        ("FORGE_STATUS_URL", "ftp://x"),
    ])
    .unwrap_err();
    let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(
        names,
        [
            "FORGE_OWNER",
            "FORGE_REPO",
            "FORGE_SHA",
            "FORGE_PULL_REQUEST",
            "FORGE_STATUS_URL"
        ]
    );
    let text = err.to_string();
    assert!(
        text.contains("environment: FORGE_OWNER: is not set\n  help: set it to"),
        "{text}"
    );
    assert!(text.contains("FORGE_SHA: `abc` is malformed"), "{text}");
    assert_eq!(
        err.summary(),
        "invalid build environment: FORGE_OWNER is not set (+4 more)"
    );
}

#[test]
fn bad_optional_facts_are_reported_with_the_required_ones() {
    let mut pairs = base();
    pairs.push(("FORGE_ACTION", "-x"));
    pairs.push(("FORGE_BUILD_ID", "a/b"));
    pairs.push(("FORGE_GRACE", "soon"));
    let err = container(&pairs).unwrap_err();
    let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(names, ["FORGE_ACTION", "FORGE_BUILD_ID", "FORGE_GRACE"]);
}

#[test]
fn token_file_is_default_when_present_and_deleted_after_reading() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "ghs_secret\n").unwrap();
    let mut pairs = base();
    let path_text = token_path.display().to_string();
    pairs.push(("FORGE_TOKEN_FILE", &path_text));
    let mut ctx = container(&pairs).unwrap();
    let token = ctx.take_token().unwrap().unwrap();
    assert_eq!(token.expose(), "ghs_secret");
    assert!(
        !token_path.exists(),
        "token file must be gone before commands run"
    );

    let ctx = validate(&raw(&base()), Mode::Container, |p| {
        p == Path::new(DEFAULT_TOKEN_FILE)
    })
    .unwrap();
    assert_eq!(
        ctx.token_source,
        TokenSource::File(DEFAULT_TOKEN_FILE.into())
    );
}

#[test]
fn a_local_token_file_is_kept_and_the_default_file_is_not_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "ghp_mine\n").unwrap();
    let mut pairs = base();
    let path_text = token_path.display().to_string();
    pairs.push(("FORGE_TOKEN_FILE", &path_text));
    let mut ctx = validate(&raw(&pairs), Mode::Local, |_| true).unwrap();
    assert_eq!(ctx.take_token().unwrap().unwrap().expose(), "ghp_mine");
    assert!(token_path.exists(), "a developer's token file is kept");

    let ctx = validate(&raw(&base()), Mode::Local, |_| true).unwrap();
    assert_eq!(ctx.token_source, TokenSource::None);
}

#[test]
fn build_facts_never_include_the_token() {
    let mut pairs = base();
    pairs.push(("FORGE_TOKEN", "ghp_x"));
    pairs.push(("FORGE_PULL_REQUEST", "7"));
    let ctx = container(&pairs).unwrap();
    let facts = ctx.build_facts();
    assert!(facts
        .iter()
        .all(|(k, v)| !k.contains("TOKEN") && v != "ghp_x"));
    assert!(facts.contains(&("FORGE_PULL_REQUEST".into(), "7".into())));
    assert!(facts.contains(&("CI".into(), "true".into())));
}

#[test]
fn the_variables_of_a_context_give_the_same_context_back() {
    let mut pairs = base();
    pairs.extend([
        ("FORGE_PULL_REQUEST", "42"),
        ("FORGE_COMMIT_COUNT", "3"),
        ("FORGE_INSTALL_ID", "99"),
        ("FORGE_ACTION", "lint"),
        ("FORGE_STATUS_URL", "https://api.example.com/s"),
        ("FORGE_API_URL", "https://ghe.example.com/api/v3/"),
        ("FORGE_ARTIFACTS_URL", "https://store.example.com/b"),
        ("FORGE_BUILD_ID", "20261125T043000123-00ff"),
        ("FORGE_GRACE", "30s"),
        ("FORGE_TOKEN", "ghp_never_a_variable"),
    ]);
    let ctx = container(&pairs).unwrap();
    let vars = ctx.to_vars();
    assert!(vars
        .iter()
        .all(|(k, v)| !k.contains("TOKEN") && !v.contains("ghp_")));
    let again = container(
        &vars
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(format!("{:?}", again.to_vars()), format!("{vars:?}"));
    assert_eq!(again.api_url, "https://ghe.example.com/api/v3");
    assert_eq!(again.status_context, "forge/lint");
    assert_eq!(again.grace, Duration::from_secs(30));
    // Defaults are not written out: the container applies its own.
    let minimal = container(&base()).unwrap().to_vars();
    let names: Vec<_> = minimal.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "FORGE_OWNER",
            "FORGE_REPO",
            "FORGE_SHA",
            "FORGE_ACTION",
            "FORGE_BUILD_ID"
        ]
    );
}

#[test]
fn an_invalid_environment_can_still_report_where_its_status_goes() {
    let pairs = [
        ("FORGE_STATUS_URL", "https://api.example.com/s"),
        ("FORGE_ACTION", "lint"),
        ("FORGE_TARGET_URL", "not a url"),
    ];
    let raw = raw(&pairs);
    let err = validate(&raw, Mode::Container, |_| false).unwrap_err();
    let reporting = ErrorReporting::from_raw(&raw, &err).unwrap();
    assert_eq!(reporting.status_context, "forge/lint");
    assert_eq!(reporting.target_url, None);
    assert_eq!(reporting.api_url, DEFAULT_API_URL);

    let bad_url = RawFacts::from_vars([("FORGE_STATUS_URL", "ftp://x")]);
    let err = validate(&bad_url, Mode::Container, |_| false).unwrap_err();
    assert!(ErrorReporting::from_raw(&bad_url, &err).is_none());
}

#[test]
fn the_token_never_goes_to_a_remote_host_over_plain_http() {
    let mut pairs = base();
    pairs.push(("FORGE_API_URL", "http://forge.example/api/v3"));
    pairs.push((
        "FORGE_STATUS_URL",
        "http://forge.example/api/v3/repos/o/r/statuses/abc",
    ));
    pairs.push((
        "FORGE_ARTIFACTS_URL",
        "http://user:PASSWORD@store.example/b",
    ));
    let err = container(&pairs).unwrap_err();
    let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(
        names,
        ["FORGE_API_URL", "FORGE_STATUS_URL", "FORGE_ARTIFACTS_URL"]
    );
    let text = err.to_string();
    assert!(text.contains("FORGE_INSECURE_HTTP=1"), "{text}");
    assert!(text.contains("unencrypted"), "{text}");
    assert!(!text.contains("PASSWORD"), "{text}");

    pairs.push(("FORGE_INSECURE_HTTP", "1"));
    let ctx = container(&pairs).unwrap();
    assert!(ctx.insecure_http);
    assert!(ctx
        .to_vars()
        .contains(&("FORGE_INSECURE_HTTP", "1".to_string())));

    for local in [
        "http://127.0.0.1:8080",
        "http://localhost/api",
        "http://[::1]:99",
        "http://127.1.2.3",
        "https://forge.example",
    ] {
        let mut pairs = base();
        pairs.push(("FORGE_API_URL", local));
        assert!(container(&pairs).is_ok(), "{local}");
    }
    let mut pairs = base();
    pairs.push(("FORGE_ARTIFACTS_URL", "http://store.example/b"));
    assert!(container(&pairs).is_ok(), "no credential, no refusal");
    pairs.push(("FORGE_INSECURE_HTTP", "maybe"));
    assert_eq!(
        container(&pairs).unwrap_err().problems[0].variable,
        "FORGE_INSECURE_HTTP"
    );
}

#[test]
fn a_token_file_that_is_a_link_is_refused_and_left_alone() {
    // Deleting the link would leave the token it points to readable by
    // the build: the build does not run instead.
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-token");
    std::fs::write(&real, "ghs_secret\n").unwrap();
    let link = dir.path().join("token");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = TokenSource::File(link.clone()).take().unwrap_err();
    assert!(
        matches!(&err, TokenError::Refused(FsReadError::Symlink { .. })),
        "{err}"
    );
    assert!(err.is_invalid_input());
    assert_eq!(err.exit_code(), crate::exit::INVALID);
    assert!(
        err.to_string().contains(&link.display().to_string()),
        "{err}"
    );
    assert!(link.symlink_metadata().is_ok() && real.exists());
    // A developer's own token file may be a link (it is kept anyway).
    let token = TokenSource::KeptFile(link).take().unwrap().unwrap();
    assert_eq!(token.expose(), "ghs_secret");
}

#[test]
fn a_token_file_that_is_not_a_small_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let started = std::time::Instant::now();
    let err = TokenSource::File(fifo.clone()).take().unwrap_err();
    assert!(err.to_string().contains("named pipe (FIFO)"), "{err}");
    assert!(fifo.exists(), "a refused file is not deleted");
    let err = TokenSource::File("/dev/zero".into()).take().unwrap_err();
    assert!(err.to_string().contains("character device"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'a'; MAX_TOKEN_FILE_BYTES as usize + 1]).unwrap();
    let err = TokenSource::File(big).take().unwrap_err();
    assert!(
        matches!(&err, TokenError::Refused(FsReadError::TooLarge { .. })),
        "{err}"
    );
    // A missing file is not the same mistake: it cannot be read.
    let err = TokenSource::File(dir.path().join("missing"))
        .take()
        .unwrap_err();
    assert!(matches!(err, TokenError::Read(_)), "{err}");
    assert_eq!(err.exit_code(), crate::exit::INFRASTRUCTURE);
}

#[test]
fn unpack_limits_have_defaults_and_variables_that_raise_them() {
    assert_eq!(
        container(&base()).unwrap().unpack_limits,
        UnpackLimits::DEFAULT
    );
    let mut pairs = base();
    pairs.push(("FORGE_UNPACK_MAX_BYTES", "32GiB"));
    pairs.push(("FORGE_UNPACK_MAX_ENTRIES", "2000000"));
    pairs.push(("FORGE_UNPACK_MAX_RATIO", "1000"));
    let ctx = container(&pairs).unwrap();
    let raised = UnpackLimits {
        max_bytes: 32 << 30,
        max_entries: 2_000_000,
        max_ratio: 1000,
    };
    assert_eq!(ctx.unpack_limits, raised);
    // The launcher hands them on to the build container.
    let vars = ctx.to_vars();
    assert!(vars.contains(&("FORGE_UNPACK_MAX_BYTES", (32u64 << 30).to_string())));
    let again = container(
        &vars
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(again.unpack_limits, raised);

    let mut pairs = base();
    pairs.push(("FORGE_UNPACK_MAX_BYTES", "lots"));
    pairs.push(("FORGE_UNPACK_MAX_ENTRIES", "0"));
    pairs.push(("FORGE_UNPACK_MAX_RATIO", "-5"));
    let err = container(&pairs).unwrap_err();
    let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(
        names,
        [
            "FORGE_UNPACK_MAX_BYTES",
            "FORGE_UNPACK_MAX_ENTRIES",
            "FORGE_UNPACK_MAX_RATIO"
        ]
    );
    assert!(err.to_string().contains("`lots` is not a positive limit"));
}

#[test]
fn sizes_are_bytes_or_binary_units() {
    assert_eq!(parse_size("1000"), Some(1000));
    assert_eq!(parse_size("512MiB"), Some(512 << 20));
    assert_eq!(parse_size("16G"), Some(16 << 30));
    assert_eq!(parse_size("2 TiB"), Some(2 << 40));
    assert_eq!(parse_size("1.5GiB"), None);
    assert_eq!(parse_size("GiB"), None);
    assert_eq!(parse_size("99999999999T"), None);
}
