//! Debian's nginx as a WebDAV artifact store for tests: a foreground,
//! single-process nginx on 127.0.0.1 with an ephemeral port, its own temp
//! prefix, config and logs. Dropping the guard kills it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const NOT_INSTALLED: &str = "nginx not installed: run .ci/run or apt-get install nginx-light";

pub struct Nginx {
    child: Child,
    port: u16,
    dir: TempDir,
    root: PathBuf,
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("nginx").is_file() {
                return dir.join("nginx");
            }
        }
    }
    panic!("{NOT_INSTALLED}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port on 127.0.0.1")
}

fn config(dir: &Path, root: &Path, port: u16) -> String {
    let d = dir.display();
    // `user` only works (and is only needed) when nginx starts as root.
    let user = if nix_is_root() { "user root;\n" } else { "" };
    format!(
        r#"{user}daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    # The combined format, plus the checksum header uploads send.
    log_format forge '$remote_addr - $remote_user [$time_local] "$request" $status '
                     '$body_bytes_sent "$http_referer" "$http_user_agent" '
                     'sha256=$http_x_checksum_sha256';
    access_log {d}/access.log forge;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            client_max_body_size 0;
            autoindex on;
        }}
    }}
}}
"#,
        root = root.display()
    )
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Nginx {
    /// Starts nginx and waits until it accepts connections. Panics (never
    /// skips) when nginx is not installed or does not come up, with its
    /// error log.
    pub fn start() -> Nginx {
        let bin = nginx_binary();
        let dir = tempfile::Builder::new()
            .prefix("forgexec-nginx-")
            .tempdir()
            .expect("create nginx temp prefix");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("create nginx root");
        let mut last_log = String::new();
        // A port found free may be taken before nginx binds it: retry.
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), &root, port)).expect("write nginx.conf");
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx {
                        child,
                        port,
                        dir,
                        root,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last_log = format!(
                        "nginx exited ({status}); error.log:\n{}",
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = format!(
                        "nginx did not accept connections on 127.0.0.1:{port} within 15 s; error.log:\n{}",
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("nginx failed to start: {last_log}");
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The document root: a PUT to `{url}/a/b` lands at `{root}/a/b`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The access log so far (one line per request).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits (up to 10 s) until `needle` occurs at least `count` times in the
    /// access log and returns the log: nginx writes a request's line after it
    /// has sent the response, so a client can be ahead of the log.
    pub fn wait_for_access_log(&self, needle: &str, count: usize) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.access_log();
            if log.matches(needle).count() >= count || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The error log so far.
    /// The `X-Checksum-Sha256` header of the last logged request whose
    /// request line contains `path` (`-` when it had none).
    pub fn checksum_header(&self, path: &str) -> String {
        let line = self.wait_for_access_log(path, 1);
        line.lines()
            .rev()
            .find(|l| l.contains(path))
            .and_then(|l| l.rsplit_once(" sha256="))
            .map(|(_, sum)| sum.trim().to_string())
            .unwrap_or_else(|| panic!("no request for {path} in the access log:\n{line}"))
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
