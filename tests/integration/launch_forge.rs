//! The launcher's forge client against the test forge: it retries, honours
//! rate limits and reports typed, masked errors like forgexec's client.

use std::time::{Duration, Instant};

use forgexec::forge::{CommitStatus, ForgeError, StatusState};
use forgexec::launch::forge::{Forge, SpecFetch};
use forgexec::render::Renderer;
use forgexec::secret::Secret;

use crate::common::{Fault, ForgeServer, Route};

const TOKEN: &str = "ghs_LaunchToken0123456789abcdef";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn the_spec_download_retries_5xx_and_rate_limits() {
    let server = ForgeServer::start(TOKEN);
    server.set_file(".forge.yml", "image: busybox\nexecute:\n  - true\n");
    server.fault(Route::Contents, Fault::status(502));
    server.fault(Route::Contents, Fault::secondary_rate_limit(403, "1"));
    let forge = Forge::new(Some(Secret::new(TOKEN))).expect("client");
    let started = Instant::now();
    let fetched = runtime()
        .block_on(forge.fetch_spec(&server.url(), "acme", "widget", SHA))
        .expect("fetched after retries");
    let SpecFetch::Found(bytes) = fetched else {
        panic!("the file exists: {fetched:?}");
    };
    assert_eq!(bytes, b"image: busybox\nexecute:\n  - true\n");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the rate limit's retry-after was honoured"
    );
    assert_eq!(server.pending_faults(Route::Contents), 0);

    let empty = ForgeServer::start(TOKEN);
    let missing = runtime()
        .block_on(forge.fetch_spec(&empty.url(), "acme", "widget", SHA))
        .expect("a 404 is an answer");
    assert!(matches!(missing, SpecFetch::Missing));
}

#[test]
fn status_errors_are_typed_final_for_a_plain_403_and_masked() {
    use base64::Engine;
    let server = ForgeServer::start(TOKEN);
    let forge = Forge::new(Some(Secret::new(TOKEN))).expect("client");
    let url = format!("{}/repos/acme/widget/statuses/{SHA}", server.url());
    let status = CommitStatus::new(
        StatusState::Error,
        "forge/execute",
        "no image",
        Some("https://user:pw@logs.example/b/1?X-Amz-Signature=abc".into()),
    );

    server.fault(Route::Statuses, Fault::forbidden());
    let err = runtime()
        .block_on(forge.post_status(&url, &status))
        .expect_err("a plain 403 is final");
    assert!(matches!(err, ForgeError::Http(_)), "{err:?}");
    assert_eq!(err.status(), Some(403));
    assert_eq!(server.requests().len(), 1, "not retried");

    let b64 = base64::engine::general_purpose::STANDARD.encode(TOKEN);
    let echo = serde_json::json!({
        "message": format!("Bad credentials: Bearer {TOKEN} b64={b64}")
    })
    .to_string();
    server.fault(Route::Statuses, Fault::answer(401, &[], &echo));
    let err = runtime()
        .block_on(forge.post_status(&url, &status))
        .expect_err("401");
    let text = Renderer::new(forge.masker().clone()).error(&err);
    assert!(text.contains("Bad credentials: Bearer ***"), "{text}");
    assert!(!text.contains(TOKEN) && !text.contains(&b64), "{text}");

    server.fault(Route::Statuses, Fault::status(503));
    runtime()
        .block_on(forge.post_status(&url, &status))
        .expect("posted after a 503");
    let posted = server.statuses(SHA);
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0]["target_url"],
        serde_json::Value::Null,
        "a link with credentials is left out"
    );
}
