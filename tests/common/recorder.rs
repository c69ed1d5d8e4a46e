//! A raw-socket HTTP/1.1 upstream that records the exact bytes of every request it receives
//! (head, body, chunked framing and trailers) and answers each as the test says.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The recording upstream; stops, with its connections, when dropped.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer to a request, given its bytes.
type Answer = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

impl Recorder {
    /// Answers every request with `200 ok`.
    pub async fn start() -> Recorder {
        Self::answering(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()).await
    }

    /// A Cognito Identity stand-in (its JSON protocol: `GetId`, `GetCredentialsForIdentity`):
    /// `answer` gets each call's action (the `x-amz-target` suffix) and JSON body (`null` if
    /// none) and gives the status and JSON text sent back.
    pub async fn cognito_identity(
        answer: impl Fn(&str, &Value) -> (u16, String) + Send + Sync + 'static,
    ) -> Recorder {
        Self::answering(move |request| {
            let (head, body) = request.split_once("\r\n\r\n").unwrap_or((request, ""));
            let target = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("x-amz-target").then(|| v.trim().to_owned())
                })
                .unwrap_or_default();
            let action = target.rsplit('.').next().unwrap_or("");
            let (status, json) = answer(action, &serde_json::from_str(body).unwrap_or(Value::Null));
            format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{json}",
                json.len()
            )
            .into_bytes()
        })
        .await
    }

    /// Answers each request with `answer(request bytes)`.
    pub async fn answering(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Recorder {
        Self::bind("127.0.0.1:0".parse().unwrap(), answer).await
    }

    /// Answers every request with `200 ok`, on `addr` (an upstream coming back on its port).
    pub async fn start_on(addr: SocketAddr) -> Recorder {
        Self::bind(addr, |_| {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
        })
        .await
    }

    async fn bind(
        addr: SocketAddr,
        answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    ) -> Recorder {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let answer: Answer = Arc::new(answer);
        // The connections belong to the accept task: stopping it closes them too, so a dropped
        // recorder is gone as a crashed service is (no keep-alive connection lingers).
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                connections.spawn(serve(stream, Arc::clone(&log), Arc::clone(&answer)));
            }
        });
        Recorder { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, as sent on the wire, and forgets them.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn serve(mut stream: TcpStream, log: Arc<Mutex<Vec<String>>>, answer: Answer) {
    let mut buf = Vec::new();
    loop {
        let Some(len) = request_len(&mut stream, &mut buf).await else {
            return;
        };
        let request: Vec<u8> = buf.drain(..len).collect();
        let request = String::from_utf8_lossy(&request).into_owned();
        let bytes = answer(&request);
        log.lock().unwrap().push(request);
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// Reads until `buf` holds one whole request; its length. `None` once the connection ends.
async fn request_len(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(len) = complete(buf) {
            return Some(len);
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the first whole request in `buf` (framed by Content-Length or chunked).
fn complete(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::trim))
            .map(str::to_owned)
    };
    if field("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut at = head_end;
        loop {
            let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&buf[at..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Trailer fields, then an empty line.
                loop {
                    let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        return Some(at);
                    }
                }
            }
            at += size + 2;
            if at > buf.len() {
                return None;
            }
        }
    }
    let length: usize = field("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + length).then_some(head_end + length)
}

/// `GetCredentialsForIdentity`'s answer: credentials with access key `key`, valid for an hour.
pub fn cognito_credentials(key: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    format!(
        r#"{{"IdentityId":"us-east-1:x","Credentials":{{"AccessKeyId":"{key}","SecretKey":"s","SessionToken":"t","Expiration":{exp}}}}}"#
    )
}
