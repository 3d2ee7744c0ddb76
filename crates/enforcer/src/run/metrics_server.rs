//! `--metrics-listen ADDR`: an HTTP/1 server (hyper) that answers `GET /metrics` with the
//! agent's metrics. Each scrape asks the main loop, which owns the kernel socket, for the text
//! over a channel; the main loop reads the kernel's counters and answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::CONTENT_TYPE;

/// A scrape waiting for its text: the main loop sends it (or what failed) back.
pub(super) type Scrape = oneshot::Sender<Result<String, String>>;

/// Connections served at once; more wait to be accepted (a local program opening many must
/// not take the descriptors the agent's own sockets need).
const CONNECTIONS: usize = 8;
/// How long a connection may take to send a request's headers, and to be answered.
const DEADLINE: Duration = Duration::from_secs(10);
/// The pause after a failed accept (out of descriptors, say), so that it does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Binds `address`; then serves every connection until the process ends, each scrape going to
/// `scrapes`.
pub(super) async fn bind(
    address: SocketAddr,
    scrapes: mpsc::Sender<Scrape>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address).await?;
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let scrapes = scrapes.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| answer(request, scrapes.clone()));
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(DEADLINE)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(DEADLINE, connection).await;
                drop(slot);
            });
        }
    }))
}

async fn answer(
    request: Request<Incoming>,
    scrapes: mpsc::Sender<Scrape>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let respond = |status, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        Ok(response)
    };
    if request.method() != hyper::Method::GET || request.uri().path() != "/metrics" {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try GET /metrics\n".into(),
        );
    }
    let (reply, text) = oneshot::channel();
    if scrapes.send(reply).await.is_err() {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the agent is stopping\n".into(),
        );
    }
    match text.await {
        Ok(Ok(text)) => respond(StatusCode::OK, CONTENT_TYPE, text),
        Ok(Err(error)) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            error + "\n",
        ),
        Err(_) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the agent is stopping\n".into(),
        ),
    }
}
