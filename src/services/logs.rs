//! The build's side of its sidecars' output: a thread per service holds a
//! `watch` connection to learn when it exits (reported in the build log at
//! once, with its exit code), and [`ServiceLogs::tail`] fetches a service's
//! last lines when the build needs them (a service not ready, a failed
//! build). All of it goes through the build's output sink, so `secrets:`
//! are masked. Every wait is bounded and none blocks the build.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wire::{self, Report, ServiceLogError, State};
use crate::run::output::OutputSink;
use crate::spec::Service;

/// How long an answer may take once it has begun.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// How often a watcher looks for its service's socket (the launcher starts
/// sidecars after the build container), and whether the build ended.
const RETRY: Duration = Duration::from_millis(200);

/// The sidecars of one build, as its forgexec sees them.
pub struct ServiceLogs {
    build_id: String,
    /// Final reports of services that exited, by name.
    exited: Arc<Mutex<HashMap<String, Report>>>,
    stop: Arc<AtomicBool>,
}

impl ServiceLogs {
    /// Starts watching every service of the build for its exit.
    pub fn watch(build_id: &str, services: &[Service], sink: &Arc<OutputSink>) -> ServiceLogs {
        let logs = ServiceLogs {
            build_id: build_id.to_string(),
            exited: Arc::default(),
            stop: Arc::default(),
        };
        for service in services {
            let name = service.name.clone();
            let socket = wire::socket_name(build_id, &name);
            let exited = Arc::clone(&logs.exited);
            let stop = Arc::clone(&logs.stop);
            let sink = Arc::clone(sink);
            std::thread::spawn(move || {
                if let Some(report) = watch_one(&socket, &stop) {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let State::Exited(code) = report.state {
                        sink.line(&format!(
                            "==> service `{name}` exited with code {code} during the build"
                        ));
                    }
                    exited
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name, report);
                }
            });
        }
        logs
    }

    /// Service `name`'s state and last lines: the final ones when it has
    /// exited, else asked for now.
    pub fn tail(&self, name: &str) -> Result<Report, ServiceLogError> {
        if let Some(report) = self
            .exited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(report.clone());
        }
        wire::tail(&wire::socket_name(&self.build_id, name), ANSWER_WITHIN)
    }

    /// Writes service `name`'s last lines into the build log, each as
    /// `[name] line`, or why they are missing.
    pub fn write_tail(&self, name: &str, sink: &OutputSink) {
        match self.tail(name) {
            Ok(report) => write_report(name, &report, sink),
            Err(err) => sink.line(&format!(
                "==> no output of service `{name}`: {}",
                crate::render::Renderer::new(sink.masker().clone()).error(&err)
            )),
        }
    }

    /// The build ended: exits are no longer reported.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for ServiceLogs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a report's lines; a cut line loses the bytes that could be the
/// start of a secret cut in two.
pub fn write_report(name: &str, report: &Report, sink: &OutputSink) {
    let state = match report.state {
        State::Running => "running".to_string(),
        State::Exited(code) => format!("exited with code {code}"),
    };
    if report.lines.is_empty() {
        sink.line(&format!("==> service `{name}` ({state}) printed nothing"));
        return;
    }
    sink.line(&format!(
        "==> last {} line(s) of service `{name}` ({state}):",
        report.lines.len()
    ));
    for line in &report.lines {
        let (text, note) = if line.cut {
            let keep = sink.masker().safe_cut(&line.text, line.text.len());
            (&line.text[..keep], " [...]")
        } else {
            (&line.text[..], "")
        };
        sink.line(&format!("[{name}] {}{note}", String::from_utf8_lossy(text)));
    }
}

/// Holds a `watch` connection until the service's final report, the
/// connection's end, or `stop`.
fn watch_one(socket: &str, stop: &AtomicBool) -> Option<Report> {
    let mut stream = loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match wire::request(socket, "watch") {
            Ok(stream) => break stream,
            Err(_) => std::thread::sleep(RETRY),
        }
    };
    if stream.set_read_timeout(Some(RETRY)).is_err() {
        return None;
    }
    let mut first = [0u8; 1];
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match std::io::Read::read(&mut stream, &mut first) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(e) if wire::is_timeout(&e) || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    wire::read_answer(&mut stream, first.to_vec(), ANSWER_WITHIN).ok()
}
