//! An echo upstream: answers every request with a JSON description of what it received
//! (method, path, headers, body size) and records it, so the demo shows the injected claim
//! headers and tests can assert exactly what got through. Bodies are counted as they stream,
//! never buffered. Query parameters shape the answer: `sleep_ms=N` delays it, `status=N` sets
//! the status, `bytes=N` streams an N-byte body instead of the JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::spawn_server;

/// Requests remembered (the oldest are forgotten first).
const MAX_RECORDED: usize = 10_000;
/// Chunk size of generated bodies.
const CHUNK: usize = 64 * 1024;

/// What the echo upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body size, bytes.
    pub body_bytes: u64,
}

/// The running echo upstream.
pub struct EchoUpstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoUpstream {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await?)
    }

    /// Starts on a bound listener.
    pub fn start_on(listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = spawn_server(listener, move |req| {
            let log = Arc::clone(&log);
            async move { echo(req, &log).await }
        });
        Ok(EchoUpstream {
            addr,
            received,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.lock().len()
    }

    /// Every request received, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.lock().clone()
    }

    /// The latest request.
    pub fn last(&self) -> Option<Received> {
        self.lock().last().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn param(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

async fn echo(
    req: Request<Incoming>,
    log: &Mutex<Vec<Received>>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let uri = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), ToString::to_string);
    let query = parts.uri.query();
    if let Some(ms) = param(query, "sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = param(query, "status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let description = json!({
        "method": parts.method.as_str(), "path": uri, "headers": headers, "body_bytes": body_bytes,
    });
    {
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= MAX_RECORDED {
            log.remove(0);
        }
        log.push(Received {
            method: parts.method.to_string(),
            uri,
            headers: parts.headers,
            body_bytes,
        });
    }
    let body = match param(query, "bytes") {
        Some(total) => generated(total),
        None => Full::new(Bytes::from(format!("{description:#}\n"))).boxed(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// A streamed body of `total` bytes, produced chunk by chunk.
fn generated(total: u64) -> BoxBody<Bytes, Infallible> {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..n))),
                left - n as u64,
            ))
        }
    });
    StreamBody::new(stream).boxed()
}
