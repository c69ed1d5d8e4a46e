//! The client's request body, as the server hands it to the pipeline.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A client's request body: none (a request the HTTP/1.1 fast path served), hyper's stream, or
/// the whole body read ahead (to be hashed for a SigV4 signature).
#[derive(Debug)]
pub enum ClientBody {
    /// The request has no body.
    Empty,
    /// The body as hyper's server receives it.
    Streaming(Incoming),
    /// The body, read whole (`None` once sent), and its share of the buffered-body budget,
    /// given back when the body is dropped.
    Buffered(Option<Bytes>, tokio::sync::OwnedSemaphorePermit),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    /// The body's data. Request trailers (which hyper yields for chunked HTTP/1.1 and for
    /// HTTP/2) are dropped, never forwarded: they arrive after every header rule has run, so a
    /// trailer field `x-user-sub: evil` would reach the upstream next to jwtgate's own identity
    /// header, unstripped. Nothing legitimate is lost: gRPC requests never carry trailers.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Buffered(data, _) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ClientBody::Streaming(body) => loop {
                match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                    Some(Ok(frame)) if frame.is_trailers() => continue,
                    polled => return Poll::Ready(polled),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Buffered(data, _) => data.is_none(),
            ClientBody::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Buffered(data, _) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ClientBody::Streaming(body) => body.size_hint(),
        }
    }
}
