//! serve's HTTP side (hyper, HTTP/1.1): `POST` (any path) takes a webhook
//! delivery, `GET /healthz` says whether the swarm answers, `GET /metrics`
//! is Prometheus text. Every read is bounded: headers within 10 s, a body
//! within 30 s and 25 MiB, at most 512 connections at once.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::builds::{self, Lanes};
use super::webhook::{check_content_type, classify, Event, Rejection, Trigger, MAX_BODY};
use super::Serve;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: usize = 512;
/// How long open connections get to finish their request on shutdown.
const DRAIN: Duration = Duration::from_secs(10);

type Reply = Response<Full<Bytes>>;

/// Accepts connections until `shutdown` resolves, then lets the open ones
/// finish their current request (bounded).
pub async fn serve(serve: Arc<Serve>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!("{MAX_CONNECTIONS} connections open; refusing one");
                    continue;
                };
                let state = Arc::clone(&serve);
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(slot);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, value);
    }
    resp
}

fn message(status: StatusCode, text: &str) -> Reply {
    let body = serde_json::json!({ "message": text }).to_string();
    reply(status, "application/json", body)
}

async fn handle(serve: Arc<Serve>, req: Request<Incoming>) -> Reply {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => healthz().await,
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            serve.metrics.encode(),
        ),
        (&Method::POST, _) => delivery(serve, req).await,
        _ => message(StatusCode::NOT_FOUND, "not found"),
    }
}

/// 200 when the swarm manager answers.
async fn healthz() -> Reply {
    let answer = async {
        let docker = crate::launch::node::connect_manager().await.ok()?;
        let info = docker.info().await.ok()?;
        let state = info.swarm?.local_node_state?;
        (state == bollard::models::LocalNodeState::ACTIVE).then_some(())
    };
    match tokio::time::timeout(Duration::from_secs(5), answer).await {
        Ok(Some(())) => message(StatusCode::OK, "ok"),
        _ => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "the swarm manager does not answer",
        ),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A delivery id usable as a label value: GitHub's GUIDs.
fn delivery_id(headers: &HeaderMap) -> Option<String> {
    header(headers, "x-github-delivery")
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
}

fn refuse(serve: &Serve, event: &str, rejection: &Rejection) -> Reply {
    let outcome = match rejection {
        Rejection::Unsigned | Rejection::BadSignature => {
            serve.metrics.signature_failures.inc();
            "unauthorized"
        }
        Rejection::TooLarge => "too_large",
        Rejection::NotJson(_) => "unsupported_media_type",
        Rejection::BadPayload(_) | Rejection::NoEvent => "bad_request",
    };
    serve.metrics.delivery(event, outcome);
    tracing::info!("delivery refused ({event}): {rejection}");
    let status = StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
    message(status, &rejection.to_string())
}

async fn delivery(serve: Arc<Serve>, req: Request<Incoming>) -> Reply {
    let accepted = Instant::now();
    let headers = req.headers().clone();
    let event = header(&headers, "x-github-event").unwrap_or("").to_string();
    let declared = header(&headers, CONTENT_LENGTH.as_str()).and_then(|l| l.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return refuse(&serve, &event, &Rejection::TooLarge);
    }
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return refuse(&serve, &event, &Rejection::TooLarge)
        }
        Ok(Err(e)) => return message(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
        Err(_) => return message(StatusCode::REQUEST_TIMEOUT, "the body came too slowly"),
    };
    // Nothing of the body is looked at before its signature is checked.
    if let Err(r) = serve
        .key
        .verify(header(&headers, "x-hub-signature-256"), &body)
    {
        return refuse(&serve, &event, &r);
    }
    if let Err(r) = check_content_type(header(&headers, CONTENT_TYPE.as_str())) {
        return refuse(&serve, &event, &r);
    }
    if event.is_empty() {
        return refuse(&serve, &event, &Rejection::NoEvent);
    }
    let what = match classify(&event, &body, &serve.opts.push) {
        Ok(what) => what,
        Err(r) => return refuse(&serve, &event, &r),
    };
    let id = delivery_id(&headers);
    match what {
        Event::Ping => {
            serve.metrics.delivery(&event, "ping");
            message(StatusCode::OK, "pong")
        }
        Event::Ignored(why) => {
            serve.metrics.delivery(&event, "ignored");
            tracing::debug!("delivery {} ignored: {why}", id.as_deref().unwrap_or("-"));
            reply(StatusCode::NO_CONTENT, "text/plain", Bytes::new())
        }
        work => {
            if let Some(id) = &id {
                let fresh = serve
                    .recent
                    .lock()
                    .map(|mut recent| recent.insert(id))
                    .unwrap_or(true);
                if !fresh {
                    serve.metrics.delivery(&event, "duplicate");
                    return message(StatusCode::OK, "delivery already received");
                }
            }
            serve.metrics.delivery(&event, "accepted");
            match work {
                Event::Build(req) => {
                    let inflight = builds::InFlight::new(&serve);
                    let key = Lanes::key(&req.owner, &req.repo, Some(&req.trigger));
                    let ticket = Lanes::enter(&serve, key);
                    tokio::spawn(builds::launch(
                        Arc::clone(&serve),
                        inflight,
                        ticket,
                        *req,
                        id,
                        accepted,
                    ));
                }
                Event::Close {
                    owner,
                    repo,
                    number,
                    install_id,
                } => {
                    let inflight = builds::InFlight::new(&serve);
                    let trigger = Trigger::PullRequest { number };
                    let ticket = Lanes::enter(&serve, Lanes::key(&owner, &repo, Some(&trigger)));
                    tokio::spawn(builds::close(
                        Arc::clone(&serve),
                        inflight,
                        ticket,
                        owner,
                        repo,
                        number,
                        install_id,
                    ));
                }
                Event::Ping | Event::Ignored(_) => {}
            }
            message(StatusCode::ACCEPTED, "accepted")
        }
    }
}
