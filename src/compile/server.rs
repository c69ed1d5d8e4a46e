//! `[server]`: the listeners, their limits, the trusted proxies, and `[server.tls]`.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::diags::{Diags, strings};
use crate::config::{self, RawServer};
use crate::settings::Limits;
use crate::tls::ServerTls;

/// Default `[server].max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest `max_header_bytes` (hyper's lower bound for its read buffer).
pub const MIN_MAX_HEADER_BYTES: usize = 8192;
/// Default `[server].max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default `[server].header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[server].max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `[server].max_buffered_body_bytes`.
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: usize = 256 * 1024 * 1024;
/// Default `[server].drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `[server]`, checked.
pub(super) struct Server {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Listener limits.
    pub limits: Limits,
    /// Networks whose `X-Forwarded-*` headers are believed (they go to `[headers]`' plan).
    pub trusted_proxies: Vec<IpNet>,
}

/// `[server]` but its `tls` table (see [`tls`]).
pub(super) fn compile(d: &mut Diags<'_>, s: &RawServer) -> Server {
    let listen = d.socket(&s.listen, "server.listen", config::DEFAULT_LISTEN);
    let admin_listen = d.socket(
        &s.admin_listen,
        "server.admin_listen",
        config::DEFAULT_ADMIN_LISTEN,
    );
    let limits = Limits {
        max_header_bytes: d.bounded(
            &s.max_header_bytes,
            "server.max_header_bytes",
            MIN_MAX_HEADER_BYTES as u64..1024 * 1024 + 1,
            DEFAULT_MAX_HEADER_BYTES,
        ),
        max_headers: d.bounded(
            &s.max_headers,
            "server.max_headers",
            1..1001,
            DEFAULT_MAX_HEADERS,
        ),
        header_read_timeout: d.duration(
            &s.header_read_timeout,
            "server.header_read_timeout",
            DEFAULT_HEADER_READ_TIMEOUT,
        ),
        max_connections: d.bounded(
            &s.max_connections,
            "server.max_connections",
            1..1_000_001,
            DEFAULT_MAX_CONNECTIONS,
        ),
        drain_timeout: d.duration(
            &s.drain_timeout,
            "server.drain_timeout",
            DEFAULT_DRAIN_TIMEOUT,
        ),
        shutdown_delay: d.duration(&s.shutdown_delay, "server.shutdown_delay", Duration::ZERO),
        max_buffered_body_bytes: d.bounded(
            &s.max_buffered_body_bytes,
            "server.max_buffered_body_bytes",
            1024..(1 << 40) + 1,
            DEFAULT_MAX_BUFFERED_BODY_BYTES,
        ),
    };
    if limits.header_read_timeout.is_zero() {
        if let Some(v) = &s.header_read_timeout {
            d.err(
                v.span(),
                "server.header_read_timeout",
                "must be more than 0",
            );
        }
    }
    let mut trusted_proxies = Vec::new();
    for cidr in strings(&s.trusted_proxies) {
        let text = cidr.get_ref();
        match text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => d.err(
                cidr.span(),
                "server.trusted_proxies",
                format!("{text:?} is not a CIDR like 10.0.0.0/8"),
            ),
        }
    }
    Server {
        listen,
        admin_listen,
        limits,
        trusted_proxies,
    }
}

/// `[server.tls]`, with the certificate, key and client CA loaded now, so `check` reports a bad
/// one with its position.
pub(super) fn tls(d: &mut Diags<'_>, s: &RawServer) -> Option<ServerTls> {
    let t = s.tls.as_ref()?.get_ref();
    let client_cert_required = d.choice(
        &t.client_auth,
        "server.tls.client_auth",
        &[("required", true), ("optional", false)],
        true,
    );
    if t.client_auth.is_some() && t.client_ca_file.is_none() {
        if let Some(v) = &t.client_auth {
            d.err(v.span(), "server.tls.client_auth", "needs client_ca_file");
        }
    }
    let settings = ServerTls {
        cert_file: t.cert_file.get_ref().into(),
        key_file: t.key_file.get_ref().into(),
        client_ca_file: t.client_ca_file.as_ref().map(|c| c.get_ref().into()),
        client_cert_required,
    };
    if let Err(e) = crate::tls::certified_key(&settings.cert_file, &settings.key_file) {
        d.err(t.cert_file.span(), "server.tls.cert_file", e);
        return None;
    }
    if let Err(e) = crate::tls::Acceptor::new(&settings) {
        let span = t
            .client_ca_file
            .as_ref()
            .map_or(t.cert_file.span(), Spanned::span);
        d.err(span, "server.tls", e);
        return None;
    }
    Some(settings)
}
