//! `--metrics-listen ADDR`: an HTTP/1 server (hyper) that answers `GET /metrics` with the
//! agent's metrics. Each scrape asks the main loop, which owns the kernel socket, for the text
//! over a channel; the main loop reads the kernel's counters and answers.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::CONTENT_TYPE;

/// A scrape waiting for its text: the main loop sends it (or what failed) back.
pub(super) type Scrape = oneshot::Sender<Result<String, String>>;

/// Binds `address`; then serves every connection until the process ends, each scrape going to
/// `scrapes`.
pub(super) async fn bind(
    address: SocketAddr,
    scrapes: mpsc::Sender<Scrape>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let scrapes = scrapes.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| answer(request, scrapes.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
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
