//! What every HTTP request goes through first: a request id (the client's
//! `x-request-id` if it is sane, a fresh one otherwise) echoed in the response and
//! attached to every log line of the request; one log line per failed (5xx) or slow
//! request; and a timeout on reading the request body, so a client that trickles a
//! body (or stops sending one) cannot hold a handler for ever.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;
use tokio::time::Sleep;
use tracing::Instrument as _;
use uuid::Uuid;

use super::HttpState;

/// The header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-supplied request id kept; longer or odd ones are replaced.
const REQUEST_ID_LEN_MAX: usize = 128;

/// The request body did not make progress within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms of the previous part", timeout.as_millis())]
pub struct BodyReadTimeout {
    /// The timeout.
    pub timeout: Duration,
}

/// The middleware: request id, span, body timeout, and a log line for 5xx and slow
/// requests (slow: the answer's head took longer than `slow_request_threshold`; a
/// live stream counts until its head is sent, not while it streams).
pub async fn trace(State(http): State<HttpState>, request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_sane_request_id(id))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("http", %request_id, %method, %path);
    let timeout = http.state.options.http_body_read_timeout;
    let request = request.map(|body| Body::new(TimeoutBody::new(body, timeout)));
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let _entered = span.enter();
    let elapsed_ms = elapsed.as_millis() as u64;
    let logged = response
        .extensions()
        .get::<super::error::FailureLogged>()
        .is_some();
    if status.is_server_error() && !logged {
        tracing::warn!(status = status.as_u16(), elapsed_ms, "request failed");
    } else if elapsed >= http.state.options.slow_request_threshold {
        tracing::info!(status = status.as_u16(), elapsed_ms, "slow request");
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Printable ASCII without spaces, of a sane length: safe to log and echo.
fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= REQUEST_ID_LEN_MAX && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A request body whose every frame must arrive within `timeout` of the handler
/// starting to wait for it.
struct TimeoutBody {
    inner: Body,
    timeout: Duration,
    /// Armed while the handler waits for a frame; disarmed when one arrives.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl TimeoutBody {
    fn new(inner: Body, timeout: Duration) -> TimeoutBody {
        TimeoutBody {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl http_body::Body for TimeoutBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline = None;
                Poll::Ready(frame.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(BodyReadTimeout { timeout }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::is_sane_request_id;

    #[test]
    fn request_ids_from_clients_are_kept_only_when_safe_to_log() {
        assert!(is_sane_request_id("abc-123"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id("line\nbreak"));
        assert!(!is_sane_request_id(&"x".repeat(129)));
    }
}
