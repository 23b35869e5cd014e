//! The HTTP client of `--server URL`: the commands that work against a running
//! `strata serve` (append, read, tail, streams, stats, user, token) talk to its
//! HTTP/JSON API here.
//!
//! hyper over plain TCP (`http://`) or rustls (`https://`, trusting only `--ca`; see
//! [`connect`](crate::connect)); responses are JSON, live streams NDJSON. Every request
//! carries the [`Credentials`] (`Authorization: Basic …` or `Bearer …`); a 401 becomes
//! [`CliError::Unauthenticated`], a 403 [`CliError::AccessDenied`] naming what was
//! asked. No secret is ever logged: requests are logged at `debug` with who they are
//! made as, not with what proves it.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use strata::{ContentType, EventData, Position, RecordedEvent, Timestamp};
use uuid::Uuid;

use crate::connect::{client_config, Connector, TlsFiles};
use crate::credentials::{CredentialSource, Credentials};
use crate::error::CliError;
use crate::output::{base64_decode, base64_encode};

/// Longest line of a live stream the client buffers (an event can be 16 MiB, as JSON
/// base64 a little more).
const LINE_BYTES_MAX: usize = 64 << 20;

/// How to reach a server: its URL, the TLS files for `https://`, the credentials.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// The CA file (`--ca`): required for `https://`, ignored for `http://`.
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate and key to present over TLS (`--cert`, `--key`).
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// What to authenticate with (resolved, perhaps at a prompt, once the URL and TLS
    /// files are known to be good).
    pub credentials: CredentialSource,
}

/// A connection to a `strata serve` HTTP API.
pub struct ServerClient {
    base: String,
    client: Client<Connector, Full<Bytes>>,
    credentials: Credentials,
}

/// Whether `host` (from a URL) is this machine: a loopback address or `localhost`.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl ServerClient {
    /// A client for the server at `url` (`http://host:port` or `https://host:port`).
    pub fn new(url: &str, options: ClientOptions) -> Result<ServerClient, CliError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| CliError::Usage(format!("--server {url:?} is not a URL")))?;
        let Some(host) = uri.host() else {
            return Err(CliError::Usage(format!("--server {url:?} names no host")));
        };
        let tls = match uri.scheme_str() {
            Some("http") => {
                if options.credentials.is_some() && !is_loopback(host) {
                    return Err(CliError::Usage(format!(
                        "--server {url:?}: refusing to send credentials in the clear to \
                         another machine; use https:// (with --ca FILE)"
                    )));
                }
                None
            }
            Some("https") => {
                let Some(ca) = options.ca else {
                    return Err(CliError::Usage(format!(
                        "--server {url:?}: https needs --ca FILE (or STRATA_CA), the CA \
                         certificate that signed the server's (ca.pem from `strata certs`); \
                         the platform's trusted roots are not used"
                    )));
                };
                Some(client_config(&TlsFiles {
                    ca,
                    client: options.client_cert,
                })?)
            }
            Some(other) => {
                return Err(CliError::Usage(format!(
                    "--server {url:?}: the {other} scheme is not supported; use \
                     https://HOST:PORT (or http:// for a server without TLS)"
                )))
            }
            None => {
                return Err(CliError::Usage(format!(
                    "--server {url:?}: give the scheme, e.g. https://127.0.0.1:2114"
                )))
            }
        };
        let credentials = options.credentials.resolve()?;
        Ok(ServerClient {
            base: url.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build(Connector::new(tls)),
            credentials,
        })
    }

    /// The server's URL, as given.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The credentials requests are made with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Sends a request; `operation` says what it is for (`read stream "x"`), for the
    /// message of a refusal.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        operation: &str,
    ) -> Result<hyper::Response<Incoming>, CliError> {
        let uri = format!("{}{path}", self.base);
        tracing::debug!(
            method = %method,
            url = %uri,
            auth = %self.credentials.describe(),
            "request"
        );
        let mut request = Request::builder().method(method).uri(&uri);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        if let Some(authorization) = self.credentials.authorization() {
            request = request.header("authorization", authorization);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CliError::Usage(format!("cannot build a request for {uri}: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|source| CliError::Connect {
                url: self.base.clone(),
                message: error_chain(&source),
            })?;
        let status = response.status();
        tracing::debug!(status = status.as_u16(), "response");
        if status.is_success() {
            return Ok(response);
        }
        let body = collect(&self.base, response.into_body()).await?;
        Err(self.refusal(status, &body, operation))
    }

    /// The error of a response that is not a success.
    fn refusal(&self, status: StatusCode, body: &[u8], operation: &str) -> CliError {
        match status {
            StatusCode::UNAUTHORIZED => CliError::Unauthenticated {
                url: self.base.clone(),
                who: self.credentials.describe(),
            },
            StatusCode::FORBIDDEN if error_code(body).as_deref() == Some("access_denied") => {
                let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                CliError::AccessDenied {
                    who: self.credentials.describe(),
                    operation: operation.to_owned(),
                    message: value["error"]["message"]
                        .as_str()
                        .unwrap_or("access denied")
                        .to_owned(),
                }
            }
            _ => remote_error(body),
        }
    }

    /// `GET path`, answered with JSON.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        operation: &str,
    ) -> Result<T, CliError> {
        let response = self.send(Method::GET, path, None, operation).await?;
        let body = collect(&self.base, response.into_body()).await?;
        self.decode(&body)
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        operation: &str,
    ) -> Result<T, CliError> {
        self.write(Method::POST, path, body, operation).await
    }

    /// `PUT path` with a JSON body, answered with JSON.
    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        operation: &str,
    ) -> Result<T, CliError> {
        self.write(Method::PUT, path, body, operation).await
    }

    /// `DELETE path` (no body), answered with JSON or nothing.
    pub async fn delete(&self, path: &str, operation: &str) -> Result<Value, CliError> {
        let response = self.send(Method::DELETE, path, None, operation).await?;
        let body = collect(&self.base, response.into_body()).await?;
        self.decode_or_null(&body)
    }

    /// A write with a JSON body; an empty answer reads as `null`.
    async fn write<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
        operation: &str,
    ) -> Result<T, CliError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| CliError::Usage(format!("cannot encode the request: {e}")))?;
        let response = self.send(method, path, Some(body), operation).await?;
        let body = collect(&self.base, response.into_body()).await?;
        self.decode_or_null(&body)
    }

    /// `GET path` of a live NDJSON stream.
    pub async fn lines(&self, path: &str, operation: &str) -> Result<LineStream, CliError> {
        let response = self.send(Method::GET, path, None, operation).await?;
        Ok(LineStream {
            url: self.base.clone(),
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, CliError> {
        serde_json::from_slice(body).map_err(|e| CliError::Protocol {
            url: self.base.clone(),
            message: format!("unexpected response: {e}"),
        })
    }

    fn decode_or_null<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, CliError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            self.decode(b"null")
        } else {
            self.decode(body)
        }
    }
}

/// The `code` of an error body, if it is one.
fn error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value["error"]["code"].as_str().map(str::to_owned)
}

/// The messages of a source error and its causes (hyper's top error says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

async fn collect(url: &str, body: Incoming) -> Result<Bytes, CliError> {
    body.collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| CliError::Connect {
            url: url.to_owned(),
            message: error_chain(&e),
        })
}

/// The error a server answered with (`{"error": {"code", "message"}}`).
fn remote_error(body: &[u8]) -> CliError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    error_object(&value["error"], body)
}

/// The error of an error object (`{"code", "message"}`), as the API sends it in a
/// response body or in-band on a live stream.
pub fn error_object(error: &Value, body: &[u8]) -> CliError {
    CliError::Remote {
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"]
            .as_str()
            .map_or_else(|| String::from_utf8_lossy(body).into_owned(), str::to_owned),
    }
}

/// One line of a live stream: exactly one of the fields is set.
#[derive(Deserialize)]
pub struct LiveLine {
    /// An event.
    #[serde(default)]
    pub event: Option<Box<RawValue>>,
    /// History is done; what follows is live.
    #[serde(default)]
    pub caught_up: Option<Value>,
    /// The stream ends with this error (`{"code", "message"}`).
    #[serde(default)]
    pub error: Option<Value>,
}

/// An NDJSON response, read line by line.
pub struct LineStream {
    url: String,
    body: Incoming,
    buffer: Vec<u8>,
}

impl LineStream {
    /// The next non-empty line (empty lines are heartbeats); `None` at the end.
    pub async fn next(&mut self) -> Result<Option<LiveLine>, CliError> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=at).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| CliError::Protocol {
                        url: self.url.clone(),
                        message: format!("bad live stream line: {e}"),
                    });
            }
            if self.buffer.len() > LINE_BYTES_MAX {
                return Err(CliError::Protocol {
                    url: self.url.clone(),
                    message: format!("a live stream line is over {LINE_BYTES_MAX} bytes"),
                });
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(CliError::Connect {
                        url: self.url.clone(),
                        message: error_chain(&e),
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Percent-encodes `text` for a path segment or a query value (everything but the
/// unreserved characters).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query string (`?a=1&b=2`, or empty) from pairs.
pub fn query(pairs: &[(&str, String)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", encode(value)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// An event as the server's JSON describes it.
#[derive(Deserialize)]
struct WireEvent {
    stream: String,
    revision: u64,
    position: u64,
    recorded_at: Timestamp,
    id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    content_type: String,
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
    #[serde(default)]
    metadata_base64: Option<String>,
    #[serde(default)]
    valid_at: Option<Timestamp>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// A recorded event from the server's JSON (read as raw text, so data and metadata keep
/// their bytes and key order).
pub fn recorded_event(json: &RawValue) -> Result<RecordedEvent, String> {
    let wire: WireEvent = serde_json::from_str(json.get()).map_err(|e| e.to_string())?;
    let data = match (wire.data, wire.data_base64) {
        (Some(raw), _) => Bytes::copy_from_slice(raw.get().as_bytes()),
        (None, Some(text)) => Bytes::from(base64_decode(&text)?),
        (None, None) => Bytes::new(),
    };
    let metadata = match (wire.metadata, wire.metadata_base64) {
        (Some(raw), _) => Bytes::copy_from_slice(raw.get().as_bytes()),
        (None, Some(text)) => Bytes::from(base64_decode(&text)?),
        (None, None) => Bytes::new(),
    };
    Ok(RecordedEvent {
        stream: wire.stream,
        revision: wire.revision,
        position: Position(wire.position),
        id: wire.id,
        event_type: wire.event_type,
        data,
        metadata,
        content_type: match wire.content_type.as_str() {
            "application/json" => ContentType::Json,
            _ => ContentType::Binary,
        },
        recorded_at: wire.recorded_at,
        valid_at: wire.valid_at,
    })
}

/// The JSON the server takes for an event: JSON data and metadata as JSON, kept byte
/// for byte; anything else as base64.
#[derive(Serialize)]
pub struct EventInput {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_at: Option<Timestamp>,
}

/// Raw JSON of `bytes`, if they are JSON and nothing else (no surrounding whitespace,
/// which the server would drop).
fn raw_json(bytes: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let raw = serde_json::from_str::<Box<RawValue>>(text).ok()?;
    (raw.get().len() == bytes.len()).then_some(raw)
}

impl EventInput {
    /// The wire form of `event`.
    pub fn new(event: &EventData) -> EventInput {
        let data = match event.content_type {
            ContentType::Json => raw_json(&event.data),
            ContentType::Binary => None,
        };
        let (data_base64, content_type) = match data {
            Some(_) => (None, None),
            None => (
                Some(base64_encode(&event.data)),
                Some(event.content_type.mime()),
            ),
        };
        let metadata = raw_json(&event.metadata);
        let metadata_base64 = (metadata.is_none() && !event.metadata.is_empty())
            .then(|| base64_encode(&event.metadata));
        EventInput {
            id: event.id,
            event_type: event.event_type.clone(),
            data,
            data_base64,
            content_type,
            metadata,
            metadata_base64,
            valid_at: event.valid_at,
        }
    }
}
