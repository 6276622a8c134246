//! Proves the test nginx accepts WebDAV PUTs (with missing parent folders)
//! and serves the file back, using a raw std TcpStream client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::Nginx;

fn request(nginx: &Nginx, raw: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", nginx.port())).expect("connect to nginx");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read nginx response");
    let text = String::from_utf8_lossy(&all);
    let code: u16 = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {text}"));
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    (code, all[split + 4..].to_vec())
}

#[test]
fn put_creates_file_with_parents_and_get_returns_it() {
    let nginx = Nginx::start();
    assert!(nginx.url().starts_with("http://127.0.0.1:"));
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut raw = format!(
        "PUT /builds/acme/widget/42/artifacts.zip HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let (code, _) = request(&nginx, &raw);
    assert_eq!(code, 201, "error log:\n{}", nginx.error_log());

    let on_disk = nginx.root().join("builds/acme/widget/42/artifacts.zip");
    assert_eq!(std::fs::read(&on_disk).unwrap(), body);

    let (code, got) = request(
        &nginx,
        b"GET /builds/acme/widget/42/artifacts.zip HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    assert_eq!(got, body);

    // Overwrite answers 204; DELETE removes it.
    let (code, _) = request(
        &nginx,
        b"PUT /builds/acme/widget/42/artifacts.zip HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(code, 204);
    assert_eq!(std::fs::read(&on_disk).unwrap(), b"hi");
    let (code, _) = request(
        &nginx,
        b"DELETE /builds/acme/widget/42/artifacts.zip HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 204);
    assert!(!on_disk.exists());
    assert!(nginx
        .wait_for_access_log("PUT /builds/acme/widget/42/artifacts.zip", 1)
        .contains("PUT /builds/acme/widget/42/artifacts.zip"));
}

#[test]
fn two_servers_run_side_by_side() {
    let a = Nginx::start();
    let b = Nginx::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.root(), b.root());
    let port = a.port();
    drop(a);
    // Drop kills nginx: nothing listens on its port any more.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let (code, _) = request(
        &b,
        b"PUT /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    );
    assert_eq!(code, 201);
}
