//! SigV4 request signing with AWS's own signer (`aws-sigv4`). Before signing, everything the
//! client may have put there to speak for itself goes: its `Authorization`, every `x-amz-*`
//! header (a forged `x-amz-security-token` or `x-amz-date` would be signed otherwise), and its
//! `Host` (the target's authority is signed instead).

use std::borrow::Cow;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign as aws_sign,
};
use aws_sigv4::sign::v4;
use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderName, HeaderValue};

use super::credentials::Credentials;

/// The payload hash S3 accepts for a body it should not hash (`x-amz-content-sha256`).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Headers never signed: hop-by-hop ones a connection may change, and those AWS's signers
/// leave out (`user-agent`, `expect`, `x-amzn-trace-id`, and botocore's trace context:
/// `traceparent`, `tracestate`, `baggage`; verifiers built on botocore, such as moto's, drop
/// them from the canonical request whatever `SignedHeaders` says).
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "traceparent",
    "tracestate",
    "baggage",
    "expect",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whom a request is signed for, and the service's canonicalisation rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningScope {
    /// Signing name of the service (`s3`, `execute-api`, `lambda`, `es`, `aoss`).
    pub service: String,
    /// Region (`us-east-1`).
    pub region: String,
    /// Remove `.`/`..` segments and repeated slashes from the path before signing (all
    /// services but S3).
    pub normalize_path: bool,
    /// Percent-encode the path a second time (all services but S3).
    pub double_encode: bool,
    /// Send and sign `x-amz-content-sha256` (S3 and OpenSearch Serverless require it; always
    /// sent with `UNSIGNED-PAYLOAD`).
    pub content_sha256_header: bool,
    /// The client's `x-amz-*` headers that are part of the request and are signed with it
    /// (S3 parameters: `x-amz-meta-*`, `x-amz-acl`, …): exact names, or prefixes ending in `*`.
    /// SigV4's own headers ([`SIGV4_HEADERS`]) never are. Default: none.
    pub forward_amz_headers: Vec<String>,
}

/// The headers SigV4 itself sets or reads: the client's are always dropped, whatever
/// `forward_amz_headers` says (a forged `x-amz-security-token` or `x-amz-date` would otherwise
/// be signed).
pub const SIGV4_HEADERS: &[&str] = &[
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-amz-decoded-content-length",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-signature",
    "x-amz-signedheaders",
    "x-amz-expires",
];

/// Whether `pattern` (a name, or a prefix ending in `*`) matches `name`.
pub fn header_pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

impl SigningScope {
    /// The scope for `service` in `region`, with S3's rules for the S3 signing names.
    /// OpenSearch Serverless (`aoss`) refuses requests without `x-amz-content-sha256`, and
    /// its newer endpoints want it signed: it gets the header too.
    pub fn new(service: impl Into<String>, region: impl Into<String>) -> Self {
        let service = service.into();
        let s3 = super::settings::is_s3(&service);
        SigningScope {
            content_sha256_header: s3 || service == "aoss",
            service,
            region: region.into(),
            normalize_path: !s3,
            double_encode: !s3,
            forward_amz_headers: Vec::new(),
        }
    }
}

/// What the signature says about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// `UNSIGNED-PAYLOAD`: only where the service accepts it (S3), so the body can stream.
    Unsigned,
    /// The body's SHA-256, lowercase hex (the body was buffered and hashed).
    Sha256(&'a str),
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The given payload hash is not 64 lowercase hex digits.
    #[error("payload hash is not a lowercase hex SHA-256")]
    PayloadHash,
    /// A header value that is not visible ASCII cannot be canonicalised the way AWS does.
    #[error("header {0} is not visible ASCII")]
    HeaderNotText(HeaderName),
    /// The signer refused the request (scope, URI).
    #[error("signer: {0}")]
    Signer(String),
}

/// Signs `parts` for `scope` with `credentials` at `time`, as a request to `authority`:
/// removes the client's `Authorization` and `x-amz-*` headers, sets `Host`, then adds
/// `x-amz-date`, `Authorization`, and `x-amz-security-token` / `x-amz-content-sha256` where
/// due. The path is signed as it is in `parts.uri`; the query is first rewritten in AWS's
/// canonical encoding, so what is sent is what is signed. Sign the request exactly as it will
/// be sent (after every header is final).
pub fn sign(
    parts: &mut Parts,
    authority: &Authority,
    scope: &SigningScope,
    credentials: &Credentials,
    payload: Payload<'_>,
    time: SystemTime,
) -> Result<(), SignError> {
    let body = match payload {
        Payload::Unsigned => SignableBody::UnsignedPayload,
        Payload::Sha256(hex) => {
            let ok = hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(SignError::PayloadHash);
            }
            SignableBody::Precomputed(hex.to_owned())
        }
    };

    strip_client_credentials(parts, &scope.forward_amz_headers);
    canonical_query(parts)?;
    let host =
        HeaderValue::from_str(authority.as_str()).map_err(|_| SignError::HeaderNotText(HOST))?;
    parts.headers.insert(HOST, host);

    let mut headers = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        if UNSIGNED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let text = value
            .to_str()
            .map_err(|_| SignError::HeaderNotText(name.clone()))?;
        headers.push((name.as_str(), text));
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("https://{authority}{path_and_query}");

    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(UNSIGNED_HEADERS.iter().map(|h| Cow::Borrowed(*h)).collect());
    settings.percent_encoding_mode = if scope.double_encode {
        PercentEncodingMode::Double
    } else {
        PercentEncodingMode::Single
    };
    settings.uri_path_normalization_mode = if scope.normalize_path {
        UriPathNormalizationMode::Enabled
    } else {
        UriPathNormalizationMode::Disabled
    };
    settings.payload_checksum_kind = if scope.content_sha256_header || payload == Payload::Unsigned
    {
        PayloadChecksumKind::XAmzSha256
    } else {
        PayloadChecksumKind::NoHeader
    };

    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id(),
        credentials.secret_access_key().expose(),
        credentials.session_token().map(|t| t.expose().to_owned()),
        None,
        "jwtgate",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&scope.region)
        .name(&scope.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SignError::Signer(e.to_string()))?
        .into();
    let request = SignableRequest::new(parts.method.as_str(), uri, headers.into_iter(), body)
        .map_err(|e| SignError::Signer(e.to_string()))?;
    let (instructions, _signature) = aws_sign(request, &params)
        .map_err(|e| SignError::Signer(e.to_string()))?
        .into_parts();
    let (signed_headers, _params) = instructions.into_parts();
    for header in signed_headers {
        let name = HeaderName::from_bytes(header.name().as_bytes())
            .map_err(|_| SignError::Signer(format!("header name {:?}", header.name())))?;
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| SignError::HeaderNotText(name.clone()))?;
        value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
        parts.headers.insert(name, value);
    }
    Ok(())
}

/// Rewrites the query in AWS's canonical encoding (each name and value decoded as a form
/// would be, then every byte but `A-Za-z0-9-_.~` percent-encoded), in the client's order: the
/// signer canonicalises the query that way, so the service must receive it that way too, or
/// one that compares the query as received (or reads `+` and `/` differently) refuses the
/// signature. AWS's SDKs send their queries so.
fn canonical_query(parts: &mut Parts) -> Result<(), SignError> {
    let Some(query) = parts.uri.query() else {
        return Ok(());
    };
    let mut canonical = String::with_capacity(query.len() + 16);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if !canonical.is_empty() {
            canonical.push('&');
        }
        aws_encode(&name, &mut canonical);
        canonical.push('=');
        aws_encode(&value, &mut canonical);
    }
    if canonical == query {
        return Ok(());
    }
    let path_and_query = format!("{}?{canonical}", parts.uri.path());
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| SignError::Signer("query".into()))?,
    );
    parts.uri = http::Uri::from_parts(uri).map_err(|e| SignError::Signer(e.to_string()))?;
    Ok(())
}

/// Appends `text` percent-encoded as AWS's canonical form wants: unreserved bytes as they are,
/// every other byte `%XX` (upper case).
fn aws_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Removes what the client sent to authenticate itself to AWS: `Authorization`, and every
/// `x-amz-*` header but those `forward` lists (never SigV4's own).
fn strip_client_credentials(parts: &mut Parts, forward: &[String]) {
    let amz: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|n| {
            let name = n.as_str();
            name.starts_with("x-amz-")
                && (SIGV4_HEADERS.contains(&name)
                    || !forward.iter().any(|p| header_pattern_matches(p, name)))
        })
        .cloned()
        .collect();
    for name in amz {
        parts.headers.remove(name);
    }
    parts.headers.remove(AUTHORIZATION);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use aws_lc_rs::digest;

    use super::*;
    use crate::aws::Secret;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sha256_hex(body: &[u8]) -> String {
        hex(digest::digest(&digest::SHA256, body).as_ref())
    }

    /// One case of AWS's suite: the request, its context, the expected signature.
    struct Case {
        name: String,
        request: String,
        context: serde_json::Value,
        signature: String,
    }

    fn cases() -> Vec<Case> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_dir() {
                continue;
            }
            let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap();
            out.push(Case {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                request: read("request.txt"),
                context: serde_json::from_str(&read("context.json")).unwrap(),
                signature: read("header-signature.txt").trim().to_owned(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Cases a proxy cannot meet, and why.
    const NOT_APPLICABLE: &[(&str, &str)] = &[
        // Header values folded over lines (obs-fold) are refused by HTTP parsers.
        ("get-header-value-multiline", "obs-fold"),
        // Raw UTF-8 or a space in the request target: not a valid URI, refused before routing.
        ("get-utf8", "raw UTF-8 path"),
        ("get-vanilla-utf8-query", "raw UTF-8 query"),
        ("get-space-normalized", "raw space in path"),
        ("get-space-unnormalized", "raw space in path"),
        // The token is added after signing there; jwtgate always signs it.
        ("post-sts-header-after", "unsigned session token"),
    ];

    /// Parses `request.txt`: request line, `Name:value` lines, blank line, body.
    fn parse(text: &str) -> (Parts, String, Vec<u8>) {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let mut words = request_line.splitn(3, ' ');
        let method = words.next().unwrap();
        let target = words.next().unwrap();
        let mut builder = http::Request::builder().method(method).uri(target);
        let mut host = String::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("host") {
                host = value.to_owned();
            }
            builder = builder.header(name, value);
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        (parts, host, body.as_bytes().to_vec())
    }

    #[test]
    fn aws_test_suite_signatures() {
        let mut checked = 0;
        for case in cases() {
            if NOT_APPLICABLE.iter().any(|(n, _)| *n == case.name) {
                continue;
            }
            let (mut parts, host, body) = parse(&case.request);
            let ctx = &case.context;
            let creds = &ctx["credentials"];
            let credentials = Credentials::new(
                creds["access_key_id"].as_str().unwrap(),
                Secret::new(creds["secret_access_key"].as_str().unwrap()),
                creds["token"].as_str().map(Secret::new),
                None,
            );
            let mut scope = SigningScope::new(
                ctx["service"].as_str().unwrap(),
                ctx["region"].as_str().unwrap(),
            );
            scope.normalize_path = ctx["normalize"].as_bool().unwrap_or(true);
            scope.content_sha256_header = ctx["sign_body"].as_bool().unwrap_or(false);
            let time = crate::aws::time::parse_rfc3339(ctx["timestamp"].as_str().unwrap()).unwrap();
            let hash = sha256_hex(&body);
            let authority: Authority = host.parse().unwrap();
            sign(
                &mut parts,
                &authority,
                &scope,
                &credentials,
                Payload::Sha256(&hash),
                time,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let auth = parts.headers[AUTHORIZATION].to_str().unwrap();
            let signature = auth.rsplit("Signature=").next().unwrap();
            assert_eq!(signature, case.signature, "case {}: {auth}", case.name);
            if creds["token"].is_string() {
                assert!(
                    parts.headers.contains_key("x-amz-security-token"),
                    "{}",
                    case.name
                );
            }
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} cases ran");
    }

    fn request(headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder()
            .method("PUT")
            .uri("/bucket/a%20b/key.txt?x-id=PutObject");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn client_credentials_are_removed_before_signing() {
        let mut parts = request(&[
            ("authorization", "Bearer eyJuser.token.here"),
            ("x-amz-security-token", "forged"),
            ("x-amz-date", "19990101T000000Z"),
            ("x-amz-meta-note", "client"),
            ("host", "jwtgate.example"),
            ("content-type", "text/plain"),
        ]);
        let creds = Credentials::new("AKID", Secret::new("secret"), None, None);
        let authority: Authority = "bucket.s3.us-east-1.amazonaws.com".parse().unwrap();
        sign(
            &mut parts,
            &authority,
            &SigningScope::new("s3", "us-east-1"),
            &creds,
            Payload::Unsigned,
            SystemTime::now(),
        )
        .unwrap();
        let h = &parts.headers;
        assert_eq!(h[HOST], "bucket.s3.us-east-1.amazonaws.com");
        assert!(
            h[AUTHORIZATION]
                .to_str()
                .unwrap()
                .starts_with("AWS4-HMAC-SHA256 ")
        );
        assert!(h[AUTHORIZATION].is_sensitive());
        assert!(!h.contains_key("x-amz-security-token"));
        assert!(!h.contains_key("x-amz-meta-note"));
        assert_ne!(h["x-amz-date"], "19990101T000000Z");
        assert_eq!(h["x-amz-content-sha256"], UNSIGNED_PAYLOAD);
        assert_eq!(h.get_all(AUTHORIZATION).iter().count(), 1);
    }

    #[test]
    fn opensearch_serverless_gets_the_payload_hash_header_signed() {
        let creds = Credentials::new("AKID", Secret::new("secret"), None, None);
        let hash = sha256_hex(br#"{"query":{"match_all":{}}}"#);
        let signed = |service: &str| {
            let mut parts = request(&[("content-type", "application/json")]);
            let authority: Authority = "abc123.eu-west-1.aoss.amazonaws.com".parse().unwrap();
            let scope = SigningScope::new(service, "eu-west-1");
            sign(
                &mut parts,
                &authority,
                &scope,
                &creds,
                Payload::Sha256(&hash),
                SystemTime::now(),
            )
            .unwrap();
            parts.headers
        };
        let aoss = signed("aoss");
        assert_eq!(aoss["x-amz-content-sha256"], hash.as_str());
        let auth = aoss[AUTHORIZATION].to_str().unwrap();
        assert!(auth.contains("x-amz-content-sha256"), "signed: {auth}");
        // Managed OpenSearch and the other services keep AWS's default: no header.
        assert!(!signed("es").contains_key("x-amz-content-sha256"));
        assert!(!signed("execute-api").contains_key("x-amz-content-sha256"));
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let creds = Credentials::new("AKID", Secret::new("secret"), None, None);
        let authority: Authority = "example.amazonaws.com".parse().unwrap();
        let scope = SigningScope::new("execute-api", "eu-west-1");
        let mut parts = request(&[]);
        assert_eq!(
            sign(
                &mut parts,
                &authority,
                &scope,
                &creds,
                Payload::Sha256("abc"),
                SystemTime::now()
            ),
            Err(SignError::PayloadHash)
        );
        let mut parts = request(&[]);
        parts
            .headers
            .insert("x-note", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        let hash = sha256_hex(b"");
        assert_eq!(
            sign(
                &mut parts,
                &authority,
                &scope,
                &creds,
                Payload::Sha256(&hash),
                SystemTime::now()
            ),
            Err(SignError::HeaderNotText(HeaderName::from_static("x-note")))
        );
    }

    #[test]
    fn the_query_is_sent_as_it_is_signed() {
        let canonical = |target: &str| {
            let (mut parts, ()) = http::Request::get(target).body(()).unwrap().into_parts();
            canonical_query(&mut parts).unwrap();
            parts.uri.to_string()
        };
        assert_eq!(
            canonical("/b?x=1&a=2"),
            "/b?x=1&a=2",
            "order kept, nothing to do"
        );
        assert_eq!(
            canonical("/b?prefix=alice/dir/&list-type=2"),
            "/b?prefix=alice%2Fdir%2F&list-type=2"
        );
        assert_eq!(
            canonical("/b?q=a+b&r=%7e"),
            "/b?q=a%20b&r=~",
            "+ is a space, ~ unreserved"
        );
        assert_eq!(
            canonical("/b?acl"),
            "/b?acl=",
            "a name alone has an empty value"
        );
        assert_eq!(canonical("/b?k=%E2%9C%93"), "/b?k=%E2%9C%93");
        assert_eq!(canonical("/b"), "/b");
    }
}
