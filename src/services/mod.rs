//! Sidecar services seen from inside the build: the launcher starts them in
//! the build container's network namespace, and forgexec waits until each
//! declared port accepts a TCP connection on 127.0.0.1 before `setup`, up
//! to each service's `wait:`. Waiting never blocks cancellation.
//!
//! Their output reaches the build log through [`wrapper`] (the sidecar's
//! entrypoint, `forgexec sidecar`), [`wire`] (what it and the build say on
//! an abstract unix socket) and [`logs`] (the build's side).

pub mod logs;
pub mod wire;
pub mod wrapper;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use humantime::format_duration;
use nix::sys::signal::Signal;

use crate::run::cancel::Cancellation;
use crate::spec::Service;

/// Longest a single connection attempt may take (loopback answers at once;
/// this bounds a filtered port).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause between rounds of attempts.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Why the services were not all ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceWaitError {
    #[error("service `{service}` not ready on :{port} after {}", format_duration(*.waited))]
    NotReady {
        service: String,
        port: u16,
        waited: Duration,
    },
    #[error("cancelled by {} while waiting for services", .0.as_str())]
    Cancelled(Signal),
}

/// Every (service, port) to wait for, in file order.
fn awaited(services: &[Service]) -> impl Iterator<Item = (&Service, u16)> {
    services
        .iter()
        .flat_map(|s| s.ports.iter().map(move |port| (s, *port)))
}

/// `db:5432, web:8080`: what the pending status says is awaited.
pub fn describe(services: &[Service]) -> String {
    awaited(services)
        .map(|(s, port)| format!("{}:{port}", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `db (postgres:16): waits for 127.0.0.1:5432 up to 1m30s`, for `--list`.
pub fn summary(service: &Service) -> String {
    let ports: Vec<String> = service
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    if ports.is_empty() {
        format!("{} ({}): no ports to wait for", service.name, service.image)
    } else {
        format!(
            "{} ({}): waits for {} up to {}",
            service.name,
            service.image,
            ports.join(", "),
            format_duration(service.wait)
        )
    }
}

/// Whether any service declares a port to wait for.
pub fn any_ports(services: &[Service]) -> bool {
    services.iter().any(|s| !s.ports.is_empty())
}

/// A TCP connection to `127.0.0.1:port` succeeds.
pub fn accepts_connections(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).is_ok()
}

/// Waits until every declared port of every service is `ready` (in
/// production [`accepts_connections`]), each service within its own
/// `wait`, all at once. Returns how long it took.
pub fn wait_until_ready(
    services: &[Service],
    cancel: &Cancellation,
    ready: impl Fn(u16) -> bool,
) -> Result<Duration, ServiceWaitError> {
    let started = Instant::now();
    let mut pending: Vec<(&Service, u16)> = awaited(services).collect();
    loop {
        if let Some(signal) = cancel.signal() {
            return Err(ServiceWaitError::Cancelled(signal));
        }
        pending.retain(|(_, port)| !ready(*port));
        if pending.is_empty() {
            return Ok(started.elapsed());
        }
        let waited = started.elapsed();
        if let Some((service, port)) = pending.iter().find(|(s, _)| waited >= s.wait) {
            return Err(ServiceWaitError::NotReady {
                service: service.name.clone(),
                port: *port,
                waited: round_to_seconds(service.wait),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `1m30s`, not `1m30s 2ms 117us`, in messages.
fn round_to_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::net::TcpListener;

    use super::*;

    fn service(name: &str, ports: &[u16], wait: Duration) -> Service {
        Service {
            name: name.to_string(),
            image: "busybox".to_string(),
            command: None,
            entrypoint: None,
            environment: BTreeMap::new(),
            ports: ports.to_vec(),
            wait,
            line: 1,
        }
    }

    #[test]
    fn ready_when_every_port_accepts() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let services = [service("web", &[port], Duration::from_secs(5))];
        let waited = wait_until_ready(
            &services,
            &Cancellation::new(Duration::ZERO),
            accepts_connections,
        )
        .expect("ready");
        assert!(waited < Duration::from_secs(5));
    }

    #[test]
    fn a_port_that_opens_late_is_waited_for() {
        let calls = Cell::new(0);
        let services = [service("db", &[5432], Duration::from_secs(5))];
        wait_until_ready(&services, &Cancellation::new(Duration::ZERO), |_| {
            calls.set(calls.get() + 1);
            calls.get() > 3
        })
        .expect("ready after a few tries");
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn a_service_that_never_listens_is_named_with_its_port_and_wait() {
        let services = [
            service("web", &[8080], Duration::from_secs(5)),
            service("db", &[5432], Duration::from_millis(100)),
        ];
        let err = wait_until_ready(&services, &Cancellation::new(Duration::ZERO), |port| {
            port == 8080
        })
        .expect_err("db never listens");
        assert_eq!(err.to_string(), "service `db` not ready on :5432 after 1s");
    }

    #[test]
    fn cancellation_ends_the_wait() {
        let cancel = Cancellation::new(Duration::ZERO);
        cancel.cancel(Signal::SIGTERM);
        let services = [service("db", &[5432], Duration::from_secs(60))];
        let err = wait_until_ready(&services, &cancel, |_| false).expect_err("cancelled");
        assert_eq!(err, ServiceWaitError::Cancelled(Signal::SIGTERM));
    }

    #[test]
    fn describes_every_awaited_port() {
        let services = [
            service("db", &[5432], Duration::from_secs(1)),
            service("web", &[8080, 8443], Duration::from_secs(1)),
            service("worker", &[], Duration::from_secs(1)),
        ];
        assert_eq!(describe(&services), "db:5432, web:8080, web:8443");
        assert!(any_ports(&services));
        assert!(!any_ports(&services[2..]));
    }
}
