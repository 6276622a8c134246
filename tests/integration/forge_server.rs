//! Proves the test ForgeServer speaks HTTP/1.1 and GitHub's API shapes, using
//! a raw std TcpStream client (no HTTP library in between).

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{Fault, ForgeServer, Route};
use serde_json::Value;

const TOKEN: &str = "s3cr3t-token";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

struct Resp {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(server: &ForgeServer) -> Client {
        let stream = TcpStream::connect(server.addr()).expect("connect to ForgeServer");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, raw: &[u8]) -> Resp {
        self.writer.write_all(raw).expect("write request");
        self.read_response()
    }

    fn read_response(&mut self) -> Resp {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read status line");
        assert!(line.starts_with("HTTP/1.1 "), "bad status line {line:?}");
        assert!(line.ends_with("\r\n"), "status line not CRLF-terminated");
        let code: u16 = line[9..12].parse().expect("status code");
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).expect("read header");
            assert!(h.ends_with("\r\n"), "header not CRLF-terminated: {h:?}");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').expect("header has a colon");
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            code,
            headers,
            body: Vec::new(),
        };
        if code != 100 {
            let len: usize = resp
                .header("content-length")
                .expect("every response has Content-Length")
                .parse()
                .unwrap();
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body).expect("read body");
        }
        resp
    }
}

fn post_status(auth: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /repos/acme/widget/statuses/{SHA} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn status_is_created_and_recorded() {
    let server = ForgeServer::start(TOKEN);
    let mut c = Client::connect(&server);
    let body = r#"{"state":"pending","description":"Build started","target_url":"http://ci/1","context":"forge/build"}"#;
    let r = c.send(&post_status(&format!("Bearer {TOKEN}"), body));
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let j = r.json();
    assert_eq!(j["state"], "pending");
    assert_eq!(j["description"], "Build started");
    assert_eq!(j["target_url"], "http://ci/1");
    assert_eq!(j["context"], "forge/build");
    assert!(j["id"].as_u64().is_some());
    let created = j["created_at"].as_str().unwrap();
    assert_eq!(created.len(), 20, "ISO 8601 UTC like GitHub: {created}");
    assert!(created.ends_with('Z') && created.as_bytes()[10] == b'T');

    let statuses = server.statuses(SHA);
    assert_eq!(statuses, vec![j]);
    assert!(server.statuses("other").is_empty());

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].target, format!("/repos/acme/widget/statuses/{SHA}"));
    assert_eq!(reqs[0].route, Some(Route::Statuses));
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(reqs[0].body, body.as_bytes());
    assert_eq!(reqs[0].json.as_ref().unwrap()["state"], "pending");
}

#[test]
fn keep_alive_serves_several_requests_including_chunked_bodies() {
    let server = ForgeServer::start(TOKEN);
    let mut c = Client::connect(&server);
    let r = c.send(&post_status(
        &format!("token {TOKEN}"),
        r#"{"state":"success"}"#,
    ));
    assert_eq!(r.code, 201);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(r.json()["context"], "default");

    // Same connection, chunked body split mid-JSON, with a chunk extension
    // and a trailer.
    let json = r#"{"state":"failure","description":"2 tests failed"}"#;
    let (a, b) = json.split_at(10);
    let raw = format!(
        "POST /repos/acme/widget/statuses/{SHA} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n",
        a.len(),
        b.len()
    );
    let r = c.send(raw.as_bytes());
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["description"], "2 tests failed");

    // Expect: 100-continue gets an interim response first.
    let body = r#"{"state":"error"}"#;
    c.writer
        .write_all(
            format!(
                "POST /repos/acme/widget/statuses/{SHA} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let interim = c.read_response();
    assert_eq!(interim.code, 100);
    let r = c.send(body.as_bytes());
    assert_eq!(r.code, 201);

    // Connection: close is honoured.
    let r = c.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.code, 404);
    assert_eq!(r.header("connection"), Some("close"));
    let mut rest = Vec::new();
    c.reader.read_to_end(&mut rest).expect("server closes");
    assert!(rest.is_empty());

    let states: Vec<Value> = server
        .statuses(SHA)
        .iter()
        .map(|s| s["state"].clone())
        .collect();
    assert_eq!(states, ["success", "failure", "error"]);
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn bad_credentials_are_rejected_like_github() {
    let server = ForgeServer::start(TOKEN);
    let mut c = Client::connect(&server);
    for auth in ["Bearer wrong", "Basic abc", "token", ""] {
        let r = c.send(&post_status(auth, r#"{"state":"success"}"#));
        assert_eq!(r.code, 401, "auth {auth:?}");
        assert_eq!(r.json()["message"], "Bad credentials");
        assert_eq!(
            r.json()["documentation_url"],
            "https://docs.github.com/rest"
        );
    }
    let r = c.send(b"GET /repos/acme/widget/zipball/abc HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.code, 401);
    assert!(server.statuses(SHA).is_empty());
}

#[test]
fn invalid_status_bodies_get_422() {
    let server = ForgeServer::start(TOKEN);
    let mut c = Client::connect(&server);
    let auth = format!("Bearer {TOKEN}");
    let r = c.send(&post_status(&auth, r#"{"state":"passed"}"#));
    assert_eq!(r.code, 422);
    let j = r.json();
    assert_eq!(j["message"], "Validation Failed");
    assert_eq!(j["errors"][0]["field"], "state");
    assert_eq!(j["errors"][0]["code"], "custom");
    assert_eq!(
        j["errors"][0]["message"],
        "state is not included in the list"
    );

    let long = "é".repeat(141);
    let r = c.send(&post_status(
        &auth,
        &format!(r#"{{"state":"success","description":"{long}"}}"#),
    ));
    assert_eq!(r.code, 422);
    assert_eq!(r.json()["errors"][0]["field"], "description");

    let exact = "é".repeat(140);
    let r = c.send(&post_status(
        &auth,
        &format!(r#"{{"state":"success","description":"{exact}"}}"#),
    ));
    assert_eq!(r.code, 201, "140 characters are allowed");

    let r = c.send(&post_status(&auth, "not json"));
    assert_eq!(r.code, 400);
    assert_eq!(server.statuses(SHA).len(), 1);
}

#[test]
fn zipball_redirects_to_codeload_bytes() {
    let server = ForgeServer::start(TOKEN);
    let zip = b"PK\x03\x04 pretend zip \x00\xff".to_vec();
    server.set_zipball(zip.clone());
    let mut c = Client::connect(&server);
    let r = c.send(
        format!("GET /repos/acme/widget/zipball/{SHA} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.code, 302);
    let location = r.header("location").unwrap().to_string();
    assert_eq!(
        location,
        format!("{}/codeload/acme/widget/legacy.zip/{SHA}", server.url())
    );
    let path = location.strip_prefix(&server.url()).unwrap();
    let r = c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("application/zip"));
    assert_eq!(r.body, zip);
}

#[test]
fn contents_are_base64_with_newlines_like_github() {
    let server = ForgeServer::start(TOKEN);
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    server.set_file(".forge.yml", data.clone());
    let mut c = Client::connect(&server);
    let r = c.send(
        format!("GET /repos/acme/widget/contents/.forge.yml?ref={SHA} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.code, 200);
    let j = r.json();
    assert_eq!(j["type"], "file");
    assert_eq!(j["encoding"], "base64");
    assert_eq!(j["size"], 1000);
    let content = j["content"].as_str().unwrap();
    let lines: Vec<&str> = content.lines().collect();
    assert!(lines.len() > 1);
    assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 60));
    let joined: String = lines.concat();
    assert_eq!(decode_base64(&joined), data);
    // Known vector.
    assert_eq!(common::forge_server::base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(common::forge_server::base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(common::forge_server::base64(b"foob"), "Zm9vYg==");

    let r = c.send(
        format!("GET /repos/acme/widget/contents/missing.yml?ref={SHA} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.code, 404);
    assert_eq!(r.json()["message"], "Not Found");
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 char {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for &c in chunk {
            n = (n << 6) | if c == b'=' { 0 } else { val(c) };
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

#[test]
fn scripted_faults_are_consumed_in_order() {
    let server = ForgeServer::start(TOKEN);
    server.fault(Route::Statuses, Fault::status(502));
    server.fault(Route::Statuses, Fault::rate_limited(1));
    server.fault(Route::Statuses, Fault::Delay(Duration::from_millis(50)));
    assert_eq!(server.pending_faults(Route::Statuses), 3);
    let mut c = Client::connect(&server);
    let auth = format!("Bearer {TOKEN}");
    let body = r#"{"state":"success"}"#;

    let r = c.send(&post_status(&auth, body));
    assert_eq!(r.code, 502);
    assert_eq!(r.json()["message"], "Bad Gateway");
    let r = c.send(&post_status(&auth, body));
    assert_eq!(r.code, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        server.statuses(SHA).is_empty(),
        "faulted requests create nothing"
    );
    let r = c.send(&post_status(&auth, body));
    assert_eq!(r.code, 201, "a delay still answers normally");
    let r = c.send(&post_status(&auth, body));
    assert_eq!(r.code, 201);
    assert_eq!(server.pending_faults(Route::Statuses), 0);
    assert_eq!(server.statuses(SHA).len(), 2);
    assert_eq!(server.requests().len(), 4, "faulted requests are recorded");

    // A fault on another route does not touch statuses.
    server.fault(Route::Contents, Fault::status(503));
    let r = c.send(&post_status(&auth, body));
    assert_eq!(r.code, 201);
    assert_eq!(server.pending_faults(Route::Contents), 1);
}

#[test]
fn reset_fault_sends_tcp_rst() {
    let server = ForgeServer::start(TOKEN);
    server.fault(Route::Statuses, Fault::Reset);
    let mut c = Client::connect(&server);
    c.writer
        .write_all(&post_status(
            &format!("Bearer {TOKEN}"),
            r#"{"state":"success"}"#,
        ))
        .unwrap();
    let mut buf = [0u8; 64];
    let err = c
        .reader
        .read(&mut buf)
        .expect_err("a reset connection must not read cleanly");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(server.statuses(SHA).is_empty());

    // The next connection is served normally.
    let mut c = Client::connect(&server);
    let r = c.send(&post_status(
        &format!("Bearer {TOKEN}"),
        r#"{"state":"success"}"#,
    ));
    assert_eq!(r.code, 201);
}

#[test]
fn wait_for_statuses_sees_statuses_posted_by_another_thread() {
    let server = ForgeServer::start(TOKEN);
    let addr = server.addr();
    let poster = std::thread::spawn(move || {
        for state in ["pending", "success"] {
            let stream = TcpStream::connect(addr).unwrap();
            let mut c = Client {
                writer: stream.try_clone().unwrap(),
                reader: BufReader::new(stream),
            };
            std::thread::sleep(Duration::from_millis(30));
            let r = c.send(&post_status(
                &format!("Bearer {TOKEN}"),
                &format!(r#"{{"state":"{state}"}}"#),
            ));
            assert_eq!(r.code, 201);
        }
    });
    let got = server.wait_for_statuses(2, Duration::from_secs(30));
    poster.join().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["state"], "pending");
    assert_eq!(got[1]["state"], "success");
    assert_eq!(server.all_statuses(), got);
}

#[test]
fn wait_for_statuses_fails_loudly_on_timeout() {
    let server = ForgeServer::start(TOKEN);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        server.wait_for_statuses(1, Duration::from_millis(50))
    }));
    let err = result.expect_err("must panic when statuses do not arrive");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("expected 1 statuses"), "{msg}");
}

#[test]
fn rate_limits_answer_like_github() {
    let server = ForgeServer::start(TOKEN);
    server.fault(Route::Statuses, Fault::secondary_rate_limit(403, "60"));
    server.fault(
        Route::Statuses,
        Fault::primary_rate_limit(429, Duration::from_secs(30)),
    );
    server.fault(Route::Statuses, Fault::forbidden());
    server.fault_final_status(Fault::status(502));
    let mut c = Client::connect(&server);
    let auth = format!("Bearer {TOKEN}");
    let pending = r#"{"state":"pending"}"#;

    let r = c.send(&post_status(&auth, r#"{"state":"success"}"#));
    assert_eq!(
        r.code, 502,
        "a final status takes the final-status fault first"
    );

    let r = c.send(&post_status(&auth, pending));
    assert_eq!(r.code, 403);
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_ne!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("You have exceeded a secondary rate limit"));

    let r = c.send(&post_status(&auth, pending));
    assert_eq!(r.code, 429);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 25..=now + 31).contains(&reset), "{reset} vs {now}");
    assert!(r.header("retry-after").is_none());

    let r = c.send(&post_status(&auth, pending));
    assert_eq!(r.code, 403);
    assert!(r.header("retry-after").is_none());
    assert_eq!(
        r.json()["message"],
        "Resource not accessible by integration"
    );

    let r = c.send(&post_status(&auth, pending));
    assert_eq!(r.code, 201);
}
