//! Why jwtgate, or a configuration it was handed, could not start.
//!
//! Each message carries its cause's text, as the command line has always printed it, so causes
//! are not also exposed as `source()`: the CLI prints an error with its chain, and would print
//! them twice.

use std::io;

use crate::compile::ConfigErrors;

/// A failure to build the running state from a checked configuration (at start or on reload),
/// or to start the demo.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration has problems (the demo's built-in one).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// An HTTP client (key fetches, sign-in) cannot be built.
    #[error("{0}")]
    HttpClient(reqwest::Error),
    /// The upstream client cannot be built.
    #[error("{0}")]
    Upstream(String),
    /// The session store cannot be set up (an invalid Redis URL).
    #[error("{0}")]
    SessionStore(String),
    /// The OTLP span exporter cannot start.
    #[error("{0}")]
    Tracing(String),
    /// A socket or listener failed.
    #[error("{0}")]
    Io(io::Error),
    /// A demo server's address is taken.
    #[error("cannot start the demo {what} on {addr}: {error} (is another demo running?)")]
    DemoListen {
        /// Which server.
        what: &'static str,
        /// Its fixed address.
        addr: &'static str,
        /// Why binding failed.
        error: io::Error,
    },
    /// The demo configuration does not trust the demo issuer.
    #[error("config/demo.toml does not name the demo issuer {0}")]
    DemoIssuer(String),
    /// A demo user is missing from the development issuer.
    #[error("demo user {0}")]
    DemoUser(&'static str),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The text is what the CLI printed when these were strings, and no `source()` repeats it.
    #[test]
    fn messages_are_the_causes_text_and_print_once() {
        let e = StartError::DemoListen {
            what: "issuer",
            addr: "127.0.0.1:9000",
            error: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "cannot start the demo issuer on 127.0.0.1:9000: {} (is another demo running?)",
                io::Error::from(io::ErrorKind::AddrInUse)
            )
        );
        assert!(e.source().is_none());
        let e = StartError::SessionStore("invalid Redis URL: bad".into());
        assert_eq!(e.to_string(), "invalid Redis URL: bad");
        assert!(e.source().is_none());
        let e = StartError::from(ConfigErrors(vec!["a.toml:1:1: x: bad".into()]));
        assert_eq!(e.to_string(), "a.toml:1:1: x: bad");
        assert!(e.source().is_none());
    }
}
