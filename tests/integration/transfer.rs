//! The network and file-transfer half of forgexec against real servers on
//! 127.0.0.1: commit statuses and zipballs with the test ForgeServer
//! (including its scripted faults), artifact uploads to nginx WebDAV, and
//! archives read back with the zip crate and Info-ZIP's `unzip`.

use crate::common;

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Fault, ForgeServer, Nginx, Route};
use forgexec::artifacts::{collect, object_prefix, pack, ArtifactError, ArtifactStore, Checksum};
use forgexec::forge::{CommitStatus, ForgeClient, ForgeError, StatusState};
use forgexec::http::{HttpClient, HttpError, RetryPolicy};
use forgexec::secret::Secret;
use forgexec::spec::{Artifacts, When};
use forgexec::workspace::{UnpackLimits, WorkspaceError};
use serde_json::json;
use zip::write::SimpleFileOptions;
use zip::{ZipArchive, ZipWriter};

const TOKEN: &str = "ghs_test-token-123";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Quick retries: the tests prove retrying, not patience.
fn http() -> HttpClient {
    HttpClient::new(None)
        .expect("HTTP client")
        .with_retry_policy(RetryPolicy::new(
            4,
            Duration::from_millis(10),
            Duration::from_secs(2),
        ))
}

fn forge(server: &ForgeServer, token: &str) -> ForgeClient {
    ForgeClient::new(&server.url(), Some(Secret::new(token)), http())
}

fn statuses_url(server: &ForgeServer) -> String {
    format!("{}/repos/octo/hello/statuses/{SHA}", server.url())
}

fn status() -> CommitStatus {
    CommitStatus::new(
        StatusState::Pending,
        "forgexec/execute",
        "Build started",
        Some("http://logs.example/build.log".into()),
    )
}

/// Captures `tracing` output of the current thread.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut log) = self.0.lock() {
            log.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().map(|l| l.clone()).unwrap_or_default()).into_owned()
    }

    /// Run `f` with warnings of this thread logged into the buffer. One
    /// global subscriber routes each thread's events to that thread's
    /// buffer: per-thread default subscribers lose events when tests run in
    /// parallel, because tracing caches callsite interest globally.
    fn capture<T>(&self, f: impl FnOnce() -> T) -> T {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(|| ThreadLog)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        CURRENT_LOG.with(|current| *current.borrow_mut() = Some(self.clone()));
        let result = f();
        CURRENT_LOG.with(|current| *current.borrow_mut() = None);
        result
    }
}

thread_local! {
    static CURRENT_LOG: std::cell::RefCell<Option<LogBuffer>> = const { std::cell::RefCell::new(None) };
}

/// Writes into the calling thread's capture buffer, if any.
struct ThreadLog;

impl Write for ThreadLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CURRENT_LOG.with(|current| match current.borrow_mut().as_mut() {
            Some(log) => log.write(buf),
            None => Ok(buf.len()),
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn status_is_posted_with_github_json_and_bearer_token() {
    let server = ForgeServer::start(TOKEN);
    forge(&server, TOKEN)
        .post_status(&statuses_url(&server), &status())
        .expect("status posted");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path(), format!("/repos/octo/hello/statuses/{SHA}"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        request.header("accept"),
        Some("application/vnd.github+json")
    );
    assert!(request
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("forgexec/")));
    assert_eq!(
        request.json,
        Some(json!({
            "state": "pending",
            "context": "forgexec/execute",
            "description": "Build started",
            "target_url": "http://logs.example/build.log"
        }))
    );
    let accepted = server.statuses(SHA);
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["state"], "pending");
}

#[test]
fn long_descriptions_are_accepted_after_truncation() {
    let server = ForgeServer::start(TOKEN);
    let long = CommitStatus::new(StatusState::Failure, "ctx", "é".repeat(500), None);
    forge(&server, TOKEN)
        .post_status(&statuses_url(&server), &long)
        .expect("truncated description accepted by the forge");
    let accepted = server.statuses(SHA);
    let description = accepted[0]["description"].as_str().unwrap_or_default();
    assert_eq!(description.chars().count(), 140);
    assert!(description.ends_with('…'));
}

#[test]
fn bad_gateway_then_created_is_retried() {
    let server = ForgeServer::start(TOKEN);
    server.fault(Route::Statuses, Fault::status(502));
    forge(&server, TOKEN)
        .post_status(&statuses_url(&server), &status())
        .expect("second attempt succeeds");
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.statuses(SHA).len(), 1);
    assert_eq!(server.pending_faults(Route::Statuses), 0);
}

#[test]
fn rate_limit_with_retry_after_is_honoured() {
    let server = ForgeServer::start(TOKEN);
    server.fault(Route::Statuses, Fault::rate_limited(1));
    let log = LogBuffer::default();
    log.capture(|| {
        forge(&server, TOKEN)
            .post_status(&statuses_url(&server), &status())
            .expect("posted after the rate limit")
    });
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.statuses(SHA).len(), 1);
    let text = log.text();
    // The wait is the server's Retry-After (1 s), not the 10 ms backoff.
    assert!(text.contains("retrying in 1.0 s"), "log: {text}");
    assert!(text.contains("HTTP 429"), "log: {text}");
    assert!(!text.contains(TOKEN), "the token never reaches the log");
}

#[test]
fn retry_after_is_capped_by_the_policy() {
    let server = ForgeServer::start(TOKEN);
    server.fault(Route::Statuses, Fault::rate_limited(3600));
    let log = LogBuffer::default();
    log.capture(|| {
        forge(&server, TOKEN)
            .post_status(&statuses_url(&server), &status())
            .expect("posted after the capped wait")
    });
    let text = log.text();
    assert!(text.contains("retrying in 2.0 s"), "log: {text}");
}

#[test]
fn connection_reset_is_retried() {
    let server = ForgeServer::start(TOKEN);
    server.fault(Route::Statuses, Fault::Reset);
    forge(&server, TOKEN)
        .post_status(&statuses_url(&server), &status())
        .expect("posted after a reset");
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.statuses(SHA).len(), 1);
}

#[test]
fn persistent_server_errors_give_up_after_the_attempts() {
    let server = ForgeServer::start(TOKEN);
    for _ in 0..6 {
        server.fault(Route::Statuses, Fault::status(503));
    }
    let error = forge(&server, TOKEN)
        .post_status(&statuses_url(&server), &status())
        .expect_err("503 every time");
    assert_eq!(server.requests().len(), 4, "the policy's 4 attempts");
    assert_eq!(error.status(), Some(503));
    let text = error.to_string();
    assert!(text.contains("gave up after 4 attempts"), "{text}");
    assert!(text.contains("Service Unavailable"), "{text}");
}

#[test]
fn bad_credentials_are_final_and_reported() {
    let server = ForgeServer::start(TOKEN);
    let error = forge(&server, "wrong-token")
        .post_status(&statuses_url(&server), &status())
        .expect_err("401");
    assert_eq!(server.requests().len(), 1, "401 is not retried");
    assert_eq!(error.status(), Some(401));
    let text = error.to_string();
    assert!(text.contains("401 Bad credentials"), "{text}");
    assert!(!text.contains("wrong-token"), "{text}");
}

#[test]
fn validation_failures_are_final_and_carry_the_forge_message() {
    let server = ForgeServer::start(TOKEN);
    server.fault(
        Route::Statuses,
        Fault::Status {
            code: 422,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: json!({
                "message": "Validation Failed",
                "errors": [{"resource": "Status", "code": "custom", "field": "state",
                            "message": "state is not included in the list"}],
                "documentation_url": "https://docs.github.com/rest"
            })
            .to_string(),
        },
    );
    let error = forge(&server, TOKEN)
        .post_status(&statuses_url(&server), &status())
        .expect_err("422");
    assert_eq!(server.requests().len(), 1, "422 is not retried");
    match &error {
        ForgeError::Http(HttpError::Status { code, message, .. }) => {
            assert_eq!(*code, 422);
            assert_eq!(
                message,
                "Validation Failed: state is not included in the list"
            );
        }
        other => panic!("expected a 422 status error, got {other:?}"),
    }
    assert!(error
        .to_string()
        .contains("422 Validation Failed: state is not included in the list"));
}

#[test]
fn unreachable_forge_is_a_network_error_after_retries() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let client = ForgeClient::new(&format!("http://127.0.0.1:{port}"), None, http());
    let error = client
        .post_status(
            &format!("http://127.0.0.1:{port}/repos/o/r/statuses/{SHA}"),
            &status(),
        )
        .expect_err("nothing listens");
    match &error {
        ForgeError::Http(HttpError::GaveUp { attempts, last }) => {
            assert_eq!(*attempts, 4);
            assert!(matches!(**last, HttpError::Network { .. }), "{last:?}");
        }
        other => panic!("expected retries to give up, got {other:?}"),
    }
}

enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Link(&'a str, &'a str),
}

fn zipball(entries: &[Entry]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.set_comment(SHA).expect("comment");
    for entry in entries {
        match entry {
            Entry::Dir(name) => zip
                .add_directory(*name, SimpleFileOptions::default().unix_permissions(0o755))
                .expect("dir"),
            Entry::File(name, content, mode) => {
                zip.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode))
                    .expect("file");
                zip.write_all(content).expect("content");
            }
            Entry::Link(name, target) => zip
                .add_symlink(*name, *target, SimpleFileOptions::default())
                .expect("link"),
        }
    }
    zip.finish().expect("zip").into_inner()
}

#[test]
fn zipball_is_fetched_through_the_redirect_and_unpacked() {
    let server = ForgeServer::start(TOKEN);
    let top = format!("octo-hello-{}", &SHA[..7]);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    server.set_zipball(zipball(&[
        Entry::Dir(&format!("{top}/")),
        Entry::File(&format!("{top}/README.md"), b"# hello\n", 0o644),
        Entry::Dir(&format!("{top}/scripts/")),
        Entry::File(
            &format!("{top}/scripts/build.sh"),
            b"#!/bin/sh\necho ok\n",
            0o755,
        ),
        Entry::File(&format!("{top}/data/big.bin"), &big, 0o644),
        Entry::Link(&format!("{top}/docs"), "README.md"),
    ]));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("workspace");
    let summary = forge(&server, TOKEN)
        .download_zipball("octo", "hello", SHA, &dest, &UnpackLimits::DEFAULT)
        .expect("zipball unpacked");
    assert_eq!(summary.top, top);
    assert_eq!((summary.files, summary.symlinks), (3, 1));
    assert_eq!(
        fs::read_to_string(dest.join("README.md")).expect("README"),
        "# hello\n"
    );
    assert_eq!(fs::read(dest.join("data/big.bin")).expect("big"), big);
    let mode = |p: &str| {
        fs::metadata(dest.join(p))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("scripts/build.sh"), 0o755);
    assert_eq!(mode("README.md"), 0o644);
    assert_eq!(
        fs::read_link(dest.join("docs")).expect("link"),
        Path::new("README.md")
    );
    assert!(!dest.join(&top).exists(), "top folder stripped");
    // Only the workspace is left beside it: the temporary archive is gone.
    let beside: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
    assert_eq!(beside.len(), 1);

    let requests = server.requests();
    let routes: Vec<_> = requests.iter().map(|r| r.route).collect();
    assert_eq!(routes, [Some(Route::Zipball), Some(Route::Codeload)]);
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        requests[1].header("authorization"),
        None,
        "the token is not forwarded through the redirect"
    );
}

#[test]
fn zipball_download_is_retried_on_archive_host_errors() {
    let server = ForgeServer::start(TOKEN);
    server.set_zipball(zipball(&[Entry::File("o-r-1/a.txt", b"a", 0o644)]));
    server.fault(Route::Codeload, Fault::status(502));
    server.fault(Route::Zipball, Fault::Reset);
    let dir = tempfile::tempdir().expect("tempdir");
    forge(&server, TOKEN)
        .download_zipball(
            "o",
            "r",
            SHA,
            &dir.path().join("ws"),
            &UnpackLimits::DEFAULT,
        )
        .expect("unpacked after retries");
    assert_eq!(
        fs::read_to_string(dir.path().join("ws/a.txt")).expect("a"),
        "a"
    );
    assert_eq!(server.pending_faults(Route::Codeload), 0);
    assert_eq!(server.pending_faults(Route::Zipball), 0);
}

#[test]
fn missing_zipball_is_a_final_not_found() {
    let server = ForgeServer::start(TOKEN);
    let dir = tempfile::tempdir().expect("tempdir");
    let error = forge(&server, TOKEN)
        .download_zipball(
            "o",
            "r",
            SHA,
            &dir.path().join("ws"),
            &UnpackLimits::DEFAULT,
        )
        .expect_err("no zipball set");
    assert_eq!(error.status(), Some(404));
}

fn refused(entries: &[Entry]) -> (WorkspaceError, tempfile::TempDir) {
    let server = ForgeServer::start(TOKEN);
    server.set_zipball(zipball(entries));
    let dir = tempfile::tempdir().expect("tempdir");
    let error = forge(&server, TOKEN)
        .download_zipball(
            "o",
            "r",
            SHA,
            &dir.path().join("ws"),
            &UnpackLimits::DEFAULT,
        )
        .expect_err("unsafe zipball refused");
    assert!(
        !dir.path().join("ws").exists(),
        "nothing unpacked from a refused archive"
    );
    match error {
        ForgeError::Unpack { source, .. } => (source, dir),
        other => panic!("expected an unpack refusal, got {other:?}"),
    }
}

#[test]
fn zipball_with_dot_dot_entry_is_refused() {
    let (error, dir) = refused(&[
        Entry::File("o-r-1/ok.txt", b"ok", 0o644),
        Entry::File("o-r-1/../../x", b"evil", 0o644),
    ]);
    assert!(
        matches!(&error, WorkspaceError::UnsafeEntry { entry, .. } if entry == "o-r-1/../../x"),
        "{error}"
    );
    assert!(!dir.path().join("x").exists());
    assert!(error.to_string().contains("o-r-1/../../x"));
}

#[test]
fn zipball_with_absolute_entry_is_refused() {
    let (error, _dir) = refused(&[Entry::File("/tmp/forgexec-evil", b"evil", 0o644)]);
    assert!(
        matches!(&error, WorkspaceError::UnsafeEntry { entry, .. } if entry == "/tmp/forgexec-evil"),
        "{error}"
    );
    assert!(!Path::new("/tmp/forgexec-evil").exists());
}

#[test]
fn zipball_with_escaping_symlink_is_refused() {
    let (error, _dir) = refused(&[
        Entry::Dir("o-r-1/"),
        Entry::Link("o-r-1/etc", "../../../../etc"),
        Entry::File("o-r-1/etc/passwd", b"evil", 0o644),
    ]);
    assert!(
        matches!(&error, WorkspaceError::SymlinkEscape { entry, target } if entry == "o-r-1/etc" && target == "../../../../etc"),
        "{error}"
    );
}

#[test]
fn zipball_with_entries_outside_the_top_folder_is_refused() {
    let (error, _dir) = refused(&[
        Entry::File("o-r-1/a", b"a", 0o644),
        Entry::File("elsewhere/b", b"b", 0o644),
    ]);
    assert!(
        matches!(&error, WorkspaceError::NotUnderTop { entry, .. } if entry == "elsewhere/b"),
        "{error}"
    );
}

/// A small build output tree.
fn build_tree(root: &Path) {
    for (path, content, mode) in [
        ("target/app", "ELF pretend binary".repeat(1000), 0o755),
        ("target/app.d", "deps".to_string(), 0o644),
        ("reports/junit.xml", "<testsuite/>".to_string(), 0o644),
        ("reports/html/index.html", "<html/>".repeat(200), 0o644),
        ("src/main.rs", "fn main() {}".to_string(), 0o644),
    ] {
        let path = root.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, content).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

fn artifacts_spec() -> Artifacts {
    Artifacts {
        paths: vec!["target/app".into(), "reports".into()],
        exclude: vec!["**/*.html".into()],
        when: When::Always,
    }
}

fn zip_listing(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut archive = ZipArchive::new(fs::File::open(path).expect("open zip")).expect("zip");
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).expect("entry");
            let mut content = Vec::new();
            entry.read_to_end(&mut content).expect("read entry");
            (
                entry.name().expect("name").into_owned(),
                entry.unix_mode().unwrap_or(0) & 0o777,
                content,
            )
        })
        .collect()
}

#[test]
fn artifacts_are_packed_and_put_to_webdav() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = dir.path().join("ws");
    build_tree(&workspace);
    let files = collect(&workspace, &artifacts_spec()).expect("collect");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["reports/junit.xml", "target/app"]);
    let out = dir.path().join("artifacts.zip");
    let summary = pack(&files, &out, Checksum::Compute).expect("pack");
    assert_eq!(summary.files, 2);

    let store =
        ArtifactStore::from_base(&format!("{}/store/", nginx.url()), http()).expect("store");
    let prefix = object_prefix("octo", "hello", SHA, "execute", "42");
    let url = store
        .put_file(&format!("{prefix}/artifacts.zip"), &out)
        .expect("PUT artifacts");
    assert_eq!(
        url,
        format!(
            "{}/store/octo/hello/{SHA}/execute/42/artifacts.zip",
            nginx.url()
        )
    );
    let stored = nginx
        .root()
        .join(format!("store/octo/hello/{SHA}/execute/42/artifacts.zip"));
    assert_eq!(
        fs::read(&stored).expect("stored zip"),
        fs::read(&out).expect("local zip"),
        "byte-identical upload"
    );
    let listing = zip_listing(&stored);
    assert_eq!(
        listing
            .iter()
            .map(|(n, m, _)| (n.as_str(), *m))
            .collect::<Vec<_>>(),
        [("reports/junit.xml", 0o644), ("target/app", 0o755)]
    );
    assert_eq!(listing[1].2, "ELF pretend binary".repeat(1000).into_bytes());

    let log = dir.path().join("build.log");
    fs::write(&log, "step 1 ok\n").expect("log");
    store
        .put_file(&format!("{prefix}/build.log"), &log)
        .expect("PUT log");
    assert_eq!(
        fs::read_to_string(
            nginx
                .root()
                .join(format!("store/octo/hello/{SHA}/execute/42/build.log"))
        )
        .expect("stored log"),
        "step 1 ok\n"
    );
    let access = nginx.wait_for_access_log("\"PUT /store/octo/hello/", 2);
    assert_eq!(
        access.matches("\"PUT /store/octo/hello/").count(),
        2,
        "{access}"
    );
}

#[test]
fn upload_server_errors_are_retried_then_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.zip");
    fs::write(&file, "x").expect("write");
    let nginx = Nginx::start();
    // A file where nginx must create a directory: 500 on every attempt.
    fs::write(nginx.root().join("blocker"), "file").expect("blocker");
    let store = ArtifactStore::from_base(&nginx.url(), http()).expect("store");
    let error = store
        .put_file("blocker/inner/f.zip", &file)
        .expect_err("cannot create a directory over a file");
    match &error {
        ArtifactError::Upload(http_error) => assert_eq!(http_error.status(), Some(500), "{error}"),
        other => panic!("expected an upload error, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains("blocker/inner/f.zip"), "{text}");
    assert!(text.contains("gave up after 4 attempts"), "{text}");
    let access = nginx.wait_for_access_log("\"PUT /blocker/inner/f.zip", 4);
    assert_eq!(
        access.matches("\"PUT /blocker/inner/f.zip").count(),
        4,
        "{access}"
    );
}

#[test]
fn upload_client_errors_are_final() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.zip");
    fs::write(&file, "x").expect("write");
    let nginx = Nginx::start();
    fs::create_dir_all(nginx.root().join("adir")).expect("mkdir");
    let store = ArtifactStore::from_base(&nginx.url(), http()).expect("store");
    let error = store
        .put_file("adir", &file)
        .expect_err("PUT over a directory");
    match &error {
        ArtifactError::Upload(http_error) => assert_eq!(http_error.status(), Some(409), "{error}"),
        other => panic!("expected an upload error, got {other:?}"),
    }
    assert!(error.to_string().contains("HTTP 409 Conflict"), "{error}");
    // Give a (wrong) retry time to show up in the log before counting.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let access = nginx.wait_for_access_log("\"PUT /adir", 1);
    assert_eq!(
        access.matches("\"PUT /adir").count(),
        1,
        "409 is not retried: {access}"
    );
}

#[test]
fn file_base_stores_into_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = dir.path().join("ws");
    build_tree(&workspace);
    let files = collect(&workspace, &artifacts_spec()).expect("collect");
    let out = dir.path().join("artifacts.zip");
    pack(&files, &out, Checksum::Skip).expect("pack");
    let base = format!("file://{}", dir.path().join("store").display());
    let store = ArtifactStore::from_base(&base, http()).expect("file store");
    let prefix = object_prefix("octo", "hello", SHA, "release/v1", "7");
    let dest = store
        .put_file(&format!("{prefix}/artifacts.zip"), &out)
        .expect("stored");
    let expected = dir.path().join(format!(
        "store/octo/hello/{SHA}/release%2Fv1/7/artifacts.zip"
    ));
    assert_eq!(dest, expected.display().to_string());
    assert_eq!(
        fs::read(&expected).expect("stored"),
        fs::read(&out).expect("zip")
    );
}

#[test]
fn six_hundred_mixed_files_pack_and_unzip_correctly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = dir.path().join("ws");
    let mut rng = fastrand::Rng::with_seed(600);
    let mut expected = Vec::new();
    for i in 0..600 {
        let (name, content): (String, Vec<u8>) = match i % 6 {
            0 => (
                format!("out/text/{i:03}.txt"),
                format!("line {i} of a text file\n")
                    .repeat(rng.usize(1..400))
                    .into_bytes(),
            ),
            1 => (
                format!("out/bin/{i:03}.bin"),
                (0..rng.usize(0..200_000)).map(|_| rng.u8(..)).collect(),
            ),
            2 => (
                format!("out/img/{i:03}.png"),
                (0..rng.usize(100..50_000)).map(|_| rng.u8(..)).collect(),
            ),
            3 => (format!("out/empty/{i:03}.log"), Vec::new()),
            4 => (
                format!("out/deep/a/b/c/{i:03}.json"),
                format!("{{\"n\": {i}, \"items\": [{}]}}", "1, ".repeat(i)).into_bytes(),
            ),
            _ => (
                format!("out/mixed/{i:03}.dat"),
                (0..rng.usize(1000..300_000))
                    .map(|j| {
                        if j % 7 == 0 {
                            rng.u8(..)
                        } else {
                            b'a' + (j % 13) as u8
                        }
                    })
                    .collect(),
            ),
        };
        let path = workspace.join(&name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, &content).expect("write");
        let mode = if i % 10 == 0 { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        expected.push((name, mode, content));
    }
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let spec = Artifacts {
        paths: vec!["out".into()],
        exclude: vec![],
        when: When::Always,
    };
    let files = collect(&workspace, &spec).expect("collect");
    assert_eq!(files.len(), 600);
    let out = dir.path().join("artifacts.zip");
    let summary = pack(&files, &out, Checksum::Compute).expect("pack");
    assert_eq!(summary.files, 600);
    assert_eq!(
        summary.input_bytes,
        expected.iter().map(|e| e.2.len() as u64).sum::<u64>()
    );
    assert_eq!(summary.zip_bytes, fs::metadata(&out).expect("zip").len());
    assert_eq!(zip_listing(&out), expected);

    // Info-ZIP agrees the archive is sound.
    common::require_program("unzip", "apt-get install unzip");
    let test = Command::new("unzip")
        .arg("-tq")
        .arg(&out)
        .output()
        .expect("run unzip");
    assert!(
        test.status.success(),
        "unzip -t failed: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn a_large_archive_is_hashed_while_packed_and_uploaded_with_its_checksum() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = dir.path().join("ws");
    let mut rng = fastrand::Rng::with_seed(11);
    // 24 MB in 48 files: several chunks, merged front to back.
    for i in 0..48 {
        let path = workspace.join(format!("out/{i:02}.bin"));
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let content: Vec<u8> = if i % 2 == 0 {
            (0..500_000).map(|_| rng.u8(..)).collect()
        } else {
            format!("line {i}\n").repeat(60_000).into_bytes()
        };
        fs::write(&path, content).expect("write");
    }
    let spec = Artifacts {
        paths: vec!["out".into()],
        exclude: vec![],
        when: When::Always,
    };
    let files = collect(&workspace, &spec).expect("collect");
    pack_hashed_and_upload(
        &nginx,
        &files,
        &dir.path().join("artifacts.zip"),
        "big",
        "a merged archive is hashed while written",
    );
}

/// Packs `files` into `out` with the checksum computed while packing
/// (`why` says why that must work), checks it, uploads the zip under
/// `store/{object}/` and checks what nginx got.
fn pack_hashed_and_upload(
    nginx: &Nginx,
    files: &[forgexec::artifacts::ArtifactFile],
    out: &Path,
    object: &str,
    why: &str,
) {
    let summary = pack(files, out, Checksum::Compute).expect("pack");
    let digest = summary.sha256.expect(why);
    assert_eq!(hex::encode(digest), common::sha256sum(out));
    let store = ArtifactStore::from_base(&format!("{}/store", nginx.url()), http()).expect("store");
    store
        .put_file_with_digest(&format!("{object}/artifacts.zip"), out, summary.sha256)
        .expect("PUT");
    let stored = nginx.root().join(format!("store/{object}/artifacts.zip"));
    assert_eq!(
        nginx.checksum_header(&format!("/store/{object}/artifacts.zip")),
        common::sha256sum(&stored)
    );
    assert_eq!(
        fs::read(&stored).expect("stored"),
        fs::read(out).expect("local")
    );
}

#[test]
fn a_single_large_stored_file_is_hashed_while_packed_and_uploaded_with_its_checksum() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = dir.path().join("ws");
    let mut rng = fastrand::Rng::with_seed(12);
    // One 16 MB release bundle: a single part, stored, its header patched
    // after its data; the CRC-32 read first lets the hash run while packing.
    let path = workspace.join("dist/bundle.tar.gz");
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let content: Vec<u8> = (0..16_000_000).map(|_| rng.u8(..)).collect();
    fs::write(&path, &content).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let spec = Artifacts {
        paths: vec!["dist/*.tar.gz".into()],
        exclude: vec![],
        when: When::Always,
    };
    let files = collect(&workspace, &spec).expect("collect");
    let out = dir.path().join("artifacts.zip");
    pack_hashed_and_upload(
        &nginx,
        &files,
        &out,
        "one",
        "a stored file is hashed while written",
    );
    assert_eq!(
        zip_listing(&out),
        vec![("dist/bundle.tar.gz".to_string(), 0o644, content)]
    );
    common::require_program("unzip", "apt-get install unzip");
    common::run_ok(Command::new("unzip").arg("-tq").arg(&out));
}

/// A private CA (`forge-ca.pem`) and a server certificate for 127.0.0.1
/// (`server.pem`, `server.key`).
fn private_pki(dir: &Path) {
    common::pki::make_ca(dir, "forge");
    common::pki::make_cert(dir, "forge", "server", "subjectAltName=IP:127.0.0.1\n");
}

/// `openssl s_server -www` on 127.0.0.1: a real TLS server answering GET.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl TlsServer {
    fn start(dir: &Path) -> TlsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-cert", "server.pem", "-key", "server.key"])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "openssl s_server did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsServer { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn private_ca_from_forge_ca_cert_is_trusted_in_addition_to_web_roots() {
    let dir = tempfile::tempdir().expect("tempdir");
    private_pki(dir.path());
    let server = TlsServer::start(dir.path());
    let url = format!("https://127.0.0.1:{}/", server.port);

    let trusting = HttpClient::new(Some(&dir.path().join("forge-ca.pem"))).expect("client with CA");
    let response = trusting
        .send("GET", &url, |agent, _| agent.get(&url).call())
        .expect("TLS verified against the private CA");
    assert_eq!(response.status().as_u16(), 200);
    // s_server serves one connection at a time: finish this one.
    let mut body = String::new();
    response
        .into_body()
        .into_reader()
        .read_to_string(&mut body)
        .expect("read the page");
    assert!(body.contains("s_server"), "{body}");

    // Without the private CA the certificate is rejected, finally (no retries).
    let plain = HttpClient::new(None)
        .expect("client")
        .with_retry_policy(RetryPolicy::new(
            4,
            Duration::from_millis(10),
            Duration::from_secs(1),
        ));
    let error = plain
        .send("GET", &url, |agent, _| agent.get(&url).call())
        .expect_err("unknown issuer");
    assert!(matches!(error, HttpError::Request { .. }), "{error:?}");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}
