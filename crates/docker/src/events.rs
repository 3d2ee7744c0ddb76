//! Docker's event stream, read with a cap on every line.
//!
//! bollard's own event decoder keeps an unterminated line in memory and parses it again with
//! every chunk: a Docker (or a socket proxy) that sends one endless line pins a core and grows
//! without bound. This reader makes the same `GET /events` over hyper (the HTTP stack bollard
//! itself uses) and frames the body with tokio-util's `LinesCodec`, which refuses a line longer
//! than [`MAX_EVENT_LINE`] bytes. A refused line, bytes that are not an event, or a status other
//! than 200 end the stream with an error: the caller reconnects and resyncs from a snapshot.

use std::path::Path;
use std::time::Duration;

use bollard::models::EventMessage;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyDataStream, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

/// The longest event line accepted. Docker's events are a few hundred bytes; a container with
/// many labels makes a few kilobytes.
pub const MAX_EVENT_LINE: usize = 256 * 1024;

/// Why the event stream ended.
#[derive(Debug, thiserror::Error)]
pub enum EventStreamError {
    /// The socket could not be reached, or the HTTP exchange failed.
    #[error("{0}")]
    Http(String),
    /// Docker answered the request with another status than 200.
    #[error("Docker answered GET /events with HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// A line longer than [`MAX_EVENT_LINE`].
    #[error("an event line longer than {MAX_EVENT_LINE} bytes")]
    LineTooLong,
    /// A line that is not a JSON event.
    #[error("a line that is not a Docker event ({error}): {start:?}")]
    Garbage {
        /// What the JSON parser said.
        error: String,
        /// The line's first bytes.
        start: String,
    },
}

/// Opens `GET /v{api}/events?{query}` on the unix socket at `socket` (within `deadline`) and
/// yields its events as they come.
pub async fn events(
    socket: &Path,
    api: &str,
    query: &str,
    deadline: Duration,
) -> Result<impl Stream<Item = Result<EventMessage, EventStreamError>>, EventStreamError> {
    let http = |e: &dyn std::fmt::Display| EventStreamError::Http(e.to_string());
    let request = hyper::Request::get(format!("/v{api}/events?{query}"))
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(&e))?;
    let open = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| http(&format!("connecting to {}: {e}", socket.display())))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
        tokio::spawn(connection);
        sender.send_request(request).await.map_err(|e| http(&e))
    };
    let response = tokio::time::timeout(deadline, open)
        .await
        .map_err(|_| http(&format!("no answer to GET /events within {deadline:?}")))??;
    let status = response.status().as_u16();
    let body = BodyDataStream::new(response.into_body());
    if status != 200 {
        return Err(EventStreamError::Status {
            status,
            body: status_body(body, deadline).await,
        });
    }
    let reader = StreamReader::new(body.map(|chunk| chunk.map_err(std::io::Error::other)));
    let lines = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_EVENT_LINE));
    Ok(lines.filter_map(|line| std::future::ready(event_of(line))))
}

/// One framed line as an event; blank lines (keep-alives) are skipped.
fn event_of(
    line: Result<String, LinesCodecError>,
) -> Option<Result<EventMessage, EventStreamError>> {
    let line = match line {
        Ok(line) => line,
        Err(LinesCodecError::MaxLineLengthExceeded) => {
            return Some(Err(EventStreamError::LineTooLong))
        }
        Err(LinesCodecError::Io(e)) => return Some(Err(EventStreamError::Http(e.to_string()))),
    };
    if line.trim().is_empty() {
        return None;
    }
    Some(
        serde_json::from_str(&line).map_err(|e| EventStreamError::Garbage {
            error: e.to_string(),
            start: line.chars().take(80).collect(),
        }),
    )
}

/// The first bytes of an error answer, read within `deadline`.
async fn status_body<S>(mut body: S, deadline: Duration) -> String
where
    S: Stream<Item = Result<Bytes, hyper::Error>> + Unpin,
{
    let first = tokio::time::timeout(deadline, body.next()).await;
    match first {
        Ok(Some(Ok(bytes))) => String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            .trim()
            .to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_events_or_errors() {
        let event = r#"{"Type":"network","Action":"create","Actor":{"ID":"abc","Attributes":{"name":"n"}}}"#;
        let parsed = event_of(Ok(event.to_string())).unwrap().unwrap();
        assert_eq!(parsed.action.as_deref(), Some("create"));
        assert!(event_of(Ok("  ".into())).is_none());
        assert!(matches!(
            event_of(Ok("garbage".into())),
            Some(Err(EventStreamError::Garbage { .. }))
        ));
        assert!(matches!(
            event_of(Err(LinesCodecError::MaxLineLengthExceeded)),
            Some(Err(EventStreamError::LineTooLong))
        ));
    }
}
