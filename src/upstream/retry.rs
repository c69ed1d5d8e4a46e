//! Whether a failed upstream request is sent again on a new connection, decided in one place.
//!
//! A pooled connection can be closed by the upstream (its keep-alive timeout, a restart, an
//! HTTP/2 GOAWAY) at any moment, and the request that meets the close did nothing wrong. It is
//! sent again, once, on a new connection when that is safe: when it never left, or when it is
//! idempotent and not one byte of response came back (RFC 9110 §9.2.2). A request that failed on
//! a connection opened for it is never retried: the upstream itself is failing.

/// What went wrong with a request on a connection, as far as retrying it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not written at all: the connection had closed, and handed the request back.
    Unwritten,
    /// HTTP/2: the connection refused the stream before it was sent (it is going away).
    Refused,
    /// Written, perhaps in part, and the connection ended before one byte of response came back.
    NoResponse,
    /// Some of the response came back, or the failure cannot be placed (hyper's client does not
    /// say whether a byte arrived, and a request body it sent is gone).
    Partial,
}

/// What to do about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Send it again, on a new connection.
    NewConnection,
    /// Report the failure.
    Fail,
}

/// Whether a request that met `failure` is sent again: `idempotent` is its method's
/// (RFC 9110 §9.2.2), `reused` whether the connection came from the pool (or is the shared
/// HTTP/2 connection) rather than being opened for this request.
pub fn decide(idempotent: bool, reused: bool, failure: Failure) -> Retry {
    if !reused {
        return Retry::Fail;
    }
    match failure {
        Failure::Unwritten | Failure::Refused => Retry::NewConnection,
        Failure::NoResponse if idempotent => Retry::NewConnection,
        Failure::NoResponse | Failure::Partial => Retry::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::Failure::*;
    use super::Retry::*;
    use super::*;

    #[test]
    fn the_decision_table() {
        // (idempotent, reused, failure, decision)
        let table = [
            // A pooled connection the upstream closed: what never left goes again, any method.
            (true, true, Unwritten, NewConnection),
            (false, true, Unwritten, NewConnection),
            (true, true, Refused, NewConnection),
            (false, true, Refused, NewConnection),
            // Written, nothing back: only an idempotent request may have been lost harmlessly.
            (true, true, NoResponse, NewConnection),
            (false, true, NoResponse, Fail),
            // Part of a response: the upstream acted on it.
            (true, true, Partial, Fail),
            (false, true, Partial, Fail),
        ];
        for (idempotent, reused, failure, want) in table {
            assert_eq!(
                decide(idempotent, reused, failure),
                want,
                "idempotent {idempotent}, reused {reused}, {failure:?}"
            );
        }
    }

    #[test]
    fn a_new_connection_is_never_retried() {
        // So a request is retried at most once: its second try is on a new connection.
        for failure in [Unwritten, Refused, NoResponse, Partial] {
            for idempotent in [true, false] {
                assert_eq!(decide(idempotent, false, failure), Fail, "{failure:?}");
            }
        }
    }
}
