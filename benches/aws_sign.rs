//! What AWS signing will add to a request (issue 15): SigV4 over a typical S3 GET
//! (`UNSIGNED-PAYLOAD`) and an API Gateway POST (given body hash), and a credential-cache hit.
//! `cargo bench --bench aws_sign`; `cargo test --benches` runs each once so they cannot rot.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::request::Parts;
use jwtgate::aws::{
    CredentialSource, Credentials, DEFAULT_REFRESH_MARGIN, DEFAULT_TIMEOUT, Gateway, Payload,
    Principal, Secret, SigningScope, SourceKind, SourceSettings, sign,
};
use jwtgate::metrics::Metrics;

fn credentials() -> Credentials {
    Credentials::new(
        "ASIAJWTGATEEXAMPLE",
        Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        // A Cognito session token is about 1 KB.
        Some(Secret::new("IQoJb3JpZ2luX2VjE".repeat(60))),
        Some(SystemTime::now() + Duration::from_secs(3600)),
    )
}

/// A browser's request as it reaches the signer (identity headers already stripped).
fn request(method: &str, target: &str, extra: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "files.example.com")
        .header("accept", "*/*")
        .header("accept-encoding", "gzip, deflate, br")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        )
        .header("x-request-id", "3f2b8c1e-1a2b-4c3d-9e8f-a1b2c3d4e5f6")
        .header("x-forwarded-for", "203.0.113.7");
    for (n, v) in extra {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn signing(c: &mut Criterion) {
    let creds = credentials();
    let time = SystemTime::now();
    let s3 = SigningScope::new("s3", "us-east-1");
    let s3_host = "photos.s3.us-east-1.amazonaws.com".parse().unwrap();
    let get = request("GET", "/users/8d5b6c1e/2026/11/IMG_0001.jpg", &[]);
    c.bench_function("sign/s3_get_unsigned_payload", |b| {
        b.iter(|| {
            let mut parts = get.clone();
            sign(&mut parts, &s3_host, &s3, &creds, Payload::Unsigned, time).unwrap();
            black_box(parts)
        });
    });
    let api = SigningScope::new("execute-api", "us-east-1");
    let api_host = "abc123.execute-api.us-east-1.amazonaws.com"
        .parse()
        .unwrap();
    let post = request(
        "POST",
        "/prod/orders?include=items",
        &[
            ("content-type", "application/json"),
            ("content-length", "48"),
        ],
    );
    let hash = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
    c.bench_function("sign/execute_api_post_sha256", |b| {
        b.iter(|| {
            let mut parts = post.clone();
            sign(
                &mut parts,
                &api_host,
                &api,
                &creds,
                Payload::Sha256(hash),
                time,
            )
            .unwrap();
            black_box(parts)
        });
    });
    c.bench_function("sign/baseline_clone_only", |b| {
        b.iter(|| black_box(get.clone()));
    });
}

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let source = CredentialSource::new(
        SourceSettings {
            name: "bench".into(),
            kind: SourceKind::Gateway(Gateway { sts_endpoint: None }),
            timeout: DEFAULT_TIMEOUT,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            cache_max_bytes: 1 << 20,
        },
        Arc::new(Metrics::new()),
    )
    .unwrap()
    .with_env(Arc::new(|name| match name {
        "AWS_ACCESS_KEY_ID" => Some("AKIDBENCH".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
        _ => None,
    }));
    rt.block_on(source.credentials(&Principal::Guest)).unwrap();
    c.bench_function("credentials/cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(source.credentials(&Principal::Guest).await.unwrap()) });
    });
}

criterion_group!(benches, signing, cache_hit);
criterion_main!(benches);
