//! An HTTP endpoint on 127.0.0.1:0 for external-authorizer tests: records every request it
//! gets (method, path, headers, body) and answers each as the test says; it can hold its
//! answers until released, to see concurrent requests wait for one call. Stops when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    /// The body as JSON (a Lambda authorizer event).
    pub fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the endpoint answers: status, headers and body.
pub type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

type Answerer = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

pub struct AuthorizerEndpoint {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answers wait for a permit when set (see [`AuthorizerEndpoint::holding`]).
    gate: Option<Arc<Semaphore>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthorizerEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JSON answer with status 200.
pub fn json(value: Value) -> Answer {
    (
        200,
        vec![("content-type", "application/json".into())],
        value.to_string().into_bytes(),
    )
}

impl AuthorizerEndpoint {
    /// Answers each request with `answer(request)`.
    pub async fn start(answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        Self::bind(Arc::new(answer), None).await
    }

    /// Like [`AuthorizerEndpoint::start`], but every answer waits until [`release`] is called.
    ///
    /// [`release`]: AuthorizerEndpoint::release
    pub async fn holding(answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        Self::bind(Arc::new(answer), Some(Arc::new(Semaphore::new(0)))).await
    }

    async fn bind(answer: Answerer, gate: Option<Arc<Semaphore>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, held) = (Arc::clone(&seen), gate.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let (log, answer, held) = (Arc::clone(&log), Arc::clone(&answer), held.clone());
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (log, answer, held) =
                            (Arc::clone(&log), Arc::clone(&answer), held.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                target: parts.uri.to_string(),
                                headers: parts.headers,
                                body: body.to_vec(),
                            };
                            log.lock().unwrap().push(seen.clone());
                            if let Some(gate) = held {
                                gate.acquire().await.unwrap().forget();
                            }
                            let (status, headers, body) = answer(&seen);
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            for (name, value) in headers {
                                response.headers_mut().append(name, value.parse().unwrap());
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AuthorizerEndpoint {
            addr,
            seen,
            gate,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far (answered or held).
    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets `n` held answers go.
    pub fn release(&self, n: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(n);
        }
    }
}

/// A port that accepts connections and never answers (a hung authorizer). Stops when dropped.
pub struct Silent {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Silent {
    pub async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Silent { addr, task }
    }
}
