//! The outbound calls to Cognito, STS and the credential endpoints of a pod or instance:
//! one client per source with a total timeout, no redirects, and answers read up to a bound.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;

use super::error::AwsError;

/// Largest answer read from any credential endpoint, bytes. Real answers are a few KiB.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A client for one source: `timeout` bounds each call from connect to the last byte. Fails
/// only when the TLS backend cannot start.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends `request` and reads its answer, at most [`MAX_ANSWER_BYTES`]. Transport failures
/// (timeout, refused connection) are [`AwsError::Unavailable`]; the error never quotes the
/// URL or the body sent.
pub(crate) async fn send(
    service: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, Bytes), AwsError> {
    let mut response = request.send().await.map_err(|e| transport(service, &e))?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(AwsError::malformed(service, "answer too large"));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(service, &e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(AwsError::malformed(service, "answer too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body.freeze()))
}

/// A transport failure, named without its URL.
fn transport(service: &'static str, e: &reqwest::Error) -> AwsError {
    let cause = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "answer broke off"
    } else {
        "request failed"
    };
    AwsError::unavailable(service, cause)
}

/// An answer that is neither success nor a documented error: 429 and 5xx are worth a retry,
/// other statuses mean the call itself is wrong.
pub(crate) fn unexpected_status(service: &'static str, status: StatusCode) -> AwsError {
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        AwsError::unavailable(service, format!("status {}", status.as_u16()))
    } else {
        AwsError::malformed(service, format!("status {}", status.as_u16()))
    }
}
