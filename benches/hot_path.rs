//! Microbenchmarks of the request hot path: the signature check alone, token verification per
//! algorithm (uncached), a stream of distinct tokens (RS256, ES256) through the cache's miss
//! path (its cost over the signature check is jwtgate's own work per new token), the verified-token
//! cache hit, route lookup at 10 / 100 / 1,000 routes, header strip + inject,
//! and a Cedar policy decision on a route with 50 policies (cache miss and hit).
//! `cargo bench --bench hot_path`; CI runs `cargo bench --bench hot_path -- --test` (one
//! iteration each) so they cannot rot.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jsonwebtoken::Algorithm;
use jwtgate::dev::issuer::{SigningKey, sign_with};
use jwtgate::headers::HeaderPlan;
use jwtgate::jwks::{KeySettings, KeySource, KeyStore};
use jwtgate::metrics::Metrics;
use jwtgate::routes::{PathOptions, Pattern, Router, normalize};
use jwtgate::token::{IssuerPolicy, Issuers, TokenCache, unix_now, verify};
use serde_json::json;

const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_BENCH";
const ALGS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];

fn issuers(keys: &[SigningKey], metrics: &Arc<Metrics>) -> (Issuers, Arc<KeyStore>) {
    let jwks = json!({ "keys": keys.iter().map(SigningKey::jwk).collect::<Vec<_>>() }).to_string();
    let settings = KeySettings {
        name: "bench".into(),
        issuer: ISS.into(),
        source: KeySource::Jwks("http://127.0.0.1:9/jwks".into()),
        algorithms: ALGS.to_vec(),
        refresh_interval: Duration::from_secs(600),
        min_refetch_interval: Duration::from_secs(10),
        fetch_timeout: Duration::from_secs(5),
    };
    let store = KeyStore::preloaded(settings, jwks.as_bytes(), Arc::clone(metrics)).unwrap();
    let policy = Arc::new(IssuerPolicy {
        name: "bench".into(),
        issuer: ISS.into(),
        audiences: vec!["client".into()],
        skip_audience_check: false,
        token_use: None,
        algorithms: ALGS.to_vec(),
        leeway_secs: 60,
    });
    (Issuers::new([(policy, Arc::clone(&store))]), store)
}

/// A Cognito-shaped access token.
fn token(key: &SigningKey, n: u64) -> String {
    let now = unix_now();
    let claims = json!({
        "sub": "8d5b6c1e-1a2b-4c3d-9e8f-a1b2c3d4e5f6", "iss": ISS, "client_id": "client",
        "token_use": "access", "scope": "openid api/read", "auth_time": now, "iat": now,
        "exp": now + 3600, "jti": format!("jti-{n}"), "username": "alice", "cognito:groups": ["admins"],
    });
    sign_with(
        key,
        &json!({"alg": format!("{:?}", key.alg), "kid": key.kid}),
        &claims,
    )
}

fn tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let metrics = Arc::new(Metrics::new());
    let keys: Vec<SigningKey> = ALGS
        .iter()
        .map(|a| SigningKey::generate(*a, format!("{a:?}")))
        .collect();
    let (issuers, store) = issuers(&keys, &metrics);

    // The signature check alone, as `verify` makes it: what a new token costs at the least.
    // `verify_distinct` minus this is jwtgate's own work for a token it has not seen.
    let mut group = c.benchmark_group("signature_only");
    for key in keys.iter().take(2) {
        let t = token(key, 0);
        let (signed, signature) = t.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let verifier = store
            .key(Some(&key.kid))
            .now_or_never()
            .expect("a preloaded key store never waits")
            .unwrap();
        group.bench_function(format!("{:?}", key.alg), |b| {
            b.iter(|| {
                assert!(verifier.verify(
                    key.alg,
                    black_box(signed.as_bytes()),
                    black_box(&signature)
                ));
            });
        });
    }
    group.finish();

    let uncached = TokenCache::new(0);
    let mut group = c.benchmark_group("verify_uncached");
    for key in &keys {
        let t = token(key, 0);
        group.bench_function(format!("{:?}", key.alg), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    verify(&issuers, &uncached, &metrics, black_box(&t), unix_now())
                        .await
                        .unwrap(),
                );
            });
        });
    }
    group.finish();

    // Distinct tokens, as a client minting one per call sends them: each is new to the cache
    // (a miss, then noted as seen once, never inserted). A fresh cache starts whenever the
    // list wraps, so no token is ever seen twice.
    const DISTINCT: u64 = 1_000;
    let mut group = c.benchmark_group("verify_distinct");
    for key in keys.iter().take(2) {
        let list: Vec<String> = (0..DISTINCT).map(|n| token(key, n)).collect();
        let mut cache = TokenCache::new(32 << 20);
        let mut next = list.iter().cycle().enumerate();
        group.bench_function(format!("{:?}", key.alg), |b| {
            b.iter(|| {
                let (i, t) = next.next().unwrap();
                if i > 0 && i % list.len() == 0 {
                    cache = TokenCache::new(32 << 20);
                }
                let verified = verify(&issuers, &cache, &metrics, black_box(t), unix_now())
                    .now_or_never()
                    .expect("a preloaded key store never waits")
                    .unwrap();
                black_box(verified);
            });
        });
    }
    group.finish();

    let cache = TokenCache::new(32 << 20);
    let t = token(&keys[0], 1);
    // A token is cached on its second verification.
    for _ in 0..2 {
        rt.block_on(verify(&issuers, &cache, &metrics, &t, unix_now()))
            .unwrap();
    }
    c.bench_function("verify_cached_hit", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                verify(&issuers, &cache, &metrics, black_box(&t), unix_now())
                    .await
                    .unwrap(),
            );
        });
    });
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [10usize, 100, 1000] {
        let mut router = Router::new();
        for i in 0..n {
            let pattern = match i % 3 {
                0 => format!("/service{i}/**"),
                1 => format!("/service{i}/items/*/detail"),
                _ => format!("/service{i}/health"),
            };
            router.push(
                Pattern::parse(&pattern, PathOptions::default()).unwrap(),
                Some(vec![Method::GET, Method::POST]),
                i,
            );
        }
        router.push(
            Pattern::parse("/**", PathOptions::default()).unwrap(),
            None,
            n,
        );
        // The worst case: the request matches only the catch-all at the end.
        let path = normalize("/api/v1/orders/42", PathOptions::default()).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &path, |b, path| {
            b.iter(|| black_box(router.lookup(&Method::GET, black_box(path))));
        });
    }
    group.finish();
    c.bench_function("normalize_path", |b| {
        b.iter(|| {
            normalize(
                black_box("/api//v1/./orders/%34%32/../42"),
                PathOptions::default(),
            )
            .unwrap()
        });
    });
}

fn headers(c: &mut Criterion) {
    let claims_plan: Vec<(HeaderName, String)> = [
        ("x-user-sub", "sub"),
        ("x-user-groups", "cognito:groups"),
        ("x-username", "username"),
    ]
    .iter()
    .map(|(h, c)| (HeaderName::from_static(h), (*c).to_owned()))
    .collect();
    let plan = HeaderPlan {
        identity: claims_plan.iter().map(|(h, _)| h.clone()).collect(),
        claims: claims_plan,
        forward_authorization: true,
        ..HeaderPlan::default()
    };
    let claims =
        json!({"sub": "8d5b6c1e", "cognito:groups": ["admins", "users"], "username": "alice"});
    let claims = claims.as_object().unwrap().clone();
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("authorization", "Bearer x.y.z"),
        ("x-user-sub", "spoofed"),
        ("connection", "keep-alive"),
    ] {
        base.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let peer = "127.0.0.1".parse().unwrap();
    let peer_value = jwtgate::headers::peer_value(peer);
    c.bench_function("headers_strip_inject", |b| {
        b.iter(|| {
            let mut h = base.clone();
            plan.strip_inbound(&mut h, peer, &[]);
            plan.inject_claims(&mut h, || &claims, Some("payload"));
            plan.add_forwarded(&mut h, &peer_value, "http", None);
            black_box(h)
        });
    });
}

/// 50 Cedar policies, every one naming the route's action (the index cannot skip any): 49 that
/// do not apply to the caller (groups, scopes, path parameters, query), then the permit that
/// does.
fn policy_files(dir: &std::path::Path) {
    let mut text = String::new();
    for i in 0..49 {
        let condition = match i % 4 {
            0 => format!(r#"principal in Bench::UserGroup::"us-east-1_BENCH|group{i}""#),
            1 => format!(r#"context.token.scope.contains("api/scope{i}")"#),
            2 => format!(r#"context.pathParameters.petId == "pet{i}""#),
            _ => format!(
                r#"context has queryStringParameters && context.queryStringParameters has q{i}"#
            ),
        };
        text.push_str(&format!(
            "@id(\"p{i}\")\npermit (principal, action == Bench::Action::\"get /pets/{{petId}}\", resource)\nwhen {{ {condition} }};\n\n"
        ));
    }
    text.push_str(
        "@id(\"admins\")\npermit (principal in Bench::UserGroup::\"us-east-1_BENCH|admins\", action == Bench::Action::\"get /pets/{petId}\", resource)\nwhen { context.token.scope.contains(\"api/read\") };\n",
    );
    std::fs::write(dir.join("bench.cedar"), text).unwrap();
}

fn policies(c: &mut Criterion) {
    use jwtgate::policy::{Asked, PolicyStore};
    let dir = std::env::temp_dir().join(format!("jwtgate-bench-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    policy_files(&dir);
    let compiled = |cache: u64| {
        let text = format!(
            r#"
[upstream]
url = "http://127.0.0.1:9"

[[issuers]]
issuer = "{ISS}"
audiences = ["client"]

[[routes]]
path = "/pets/{{petId}}"
policy = true

[policies]
files = ["bench.cedar"]
namespace = "Bench"
cache_entries = {cache}
"#
        );
        jwtgate::compile::compile(&dir.join("bench.toml").display().to_string(), &text).unwrap()
    };
    let (uncached, cached) = (compiled(0), compiled(10_000));
    let now = unix_now();
    let payload = json!({
        "sub": "8d5b6c1e-1a2b-4c3d-9e8f-a1b2c3d4e5f6", "iss": ISS, "client_id": "client",
        "token_use": "access", "scope": "openid api/read", "auth_time": now, "iat": now,
        "exp": now + 3600, "jti": "jti-1", "username": "alice", "cognito:groups": ["admins"],
    });
    let claims =
        jwtgate::token::Claims::from_payload(payload.as_object().unwrap().clone()).unwrap();
    let decide = |config: &jwtgate::settings::Config, store: &PolicyStore| {
        let matched = config.routes.find(&Method::GET, "/pets/42").unwrap();
        let asked = Asked {
            claims: &claims,
            token_key: Some("payload-of-the-token"),
            method: "get",
            template: "/pets/{petId}",
            captures: matched.captures,
            query: Some("view=full"),
        };
        store.decide(&asked, now).allowed
    };
    let mut group = c.benchmark_group("policy_50");
    let store = &uncached.policies[0];
    assert!(decide(&uncached, store), "the last permit applies");
    group.bench_function("miss", |b| b.iter(|| black_box(decide(&uncached, store))));
    // The miss, in its two parts: the entities and request, then Cedar's evaluation.
    let matched = uncached.routes.find(&Method::GET, "/pets/42").unwrap();
    let asked = Asked {
        claims: &claims,
        token_key: None,
        method: "get",
        template: "/pets/{petId}",
        captures: matched.captures,
        query: Some("view=full"),
    };
    let action = PolicyStore::action_id("get", "/pets/{petId}");
    group.bench_function("build", |b| {
        b.iter(|| black_box(store.build(&asked, &action).unwrap()))
    });
    let built = store.build(&asked, &action).unwrap();
    group.bench_function("evaluate", |b| {
        b.iter(|| black_box(store.evaluate(&built, &action).allowed))
    });
    let store = &cached.policies[0];
    assert!(decide(&cached, store));
    group.bench_function("hit", |b| b.iter(|| black_box(decide(&cached, store))));
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, tokens, routes, headers, policies);
criterion_main!(benches);
