//! Mints the keys and tokens the load benchmark (`benches/load/run`) needs, with jwtgate's own
//! development signer (`jwtgate::dev::issuer`):
//!
//! ```sh
//! cargo run --release --example mint_tokens -- --out target/bench-load \
//!     --issuer http://127.0.0.1:18081/bench --audience bench-client \
//!     --rs256 300000 --es256 300000 --ttl 7200
//! ```
//!
//! Writes into `--out`:
//!
//! - `jwks.json`: both public keys (kids `bench-rs256`, `bench-es256`);
//! - `rs256-public.pem`, `es256-public.pem`: the same keys as SPKI PEM (`BEGIN PUBLIC KEY`), for
//!   HAProxy's `jwt_verify`;
//! - `rs256-tokens.txt`, `es256-tokens.txt`: N distinct valid tokens each, one per line (scope
//!   `api/read`, a unique `jti` which is also the `sub`, so each token is another user to a
//!   per-user cache such as AWS credentials', `exp` = now + ttl), signed on every core;
//! - `{alg}-good.jwt`, `{alg}-expired.jwt`, `{alg}-tampered.jwt` (payload changed after signing),
//!   `{alg}-noscope.jwt` (validly signed, scope `api/other`): one token each, for the proofs;
//! - `meta.txt`: `key=value` lines (counts, issuer, audience, `exp`), written last, so a
//!   half-written directory is never taken for a complete one.

use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use jwtgate::dev::issuer::{SigningKey, sign_with};
use serde_json::{Value, json};

struct Args {
    out: PathBuf,
    issuer: String,
    audience: String,
    rs256: usize,
    es256: usize,
    ttl: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: mint_tokens --out DIR [--issuer URL] [--audience AUD] [--rs256 N] [--es256 N] [--ttl SECS]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        out: PathBuf::from("target/bench-load"),
        issuer: "http://127.0.0.1:18081/bench".into(),
        audience: "bench-client".into(),
        rs256: 1000,
        es256: 1000,
        ttl: 7200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        let number = |v: &str| v.parse().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--out" => args.out = PathBuf::from(value),
            "--issuer" => args.issuer = value,
            "--audience" => args.audience = value,
            "--rs256" => args.rs256 = number(&value),
            "--es256" => args.es256 = number(&value),
            "--ttl" => args.ttl = number(&value) as u64,
            _ => usage(),
        }
    }
    args
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// DER length octets.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// SubjectPublicKeyInfo DER for a key's public bytes (RSA: the PKCS#1 `RSAPublicKey` DER that
/// aws-lc-rs exposes; P-256: the uncompressed point).
fn spki_der(alg: Algorithm, public: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier: rsaEncryption + NULL, or id-ecPublicKey + prime256v1.
    let algorithm_id: Vec<u8> = match alg {
        Algorithm::ES256 => [
            der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        ]
        .concat(),
        _ => [
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            der(0x05, &[]),
        ]
        .concat(),
    };
    let mut bit_string = vec![0u8]; // no unused bits
    bit_string.extend_from_slice(public);
    der(
        0x30,
        &[der(0x30, &algorithm_id), der(0x03, &bit_string)].concat(),
    )
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

fn header(key: &SigningKey) -> Value {
    json!({"alg": format!("{:?}", key.alg), "kid": key.kid, "typ": "JWT"})
}

/// The proofs' tokens are all one user's.
const PROOF_SUBJECT: &str = "bench-user";

fn claims(args: &Args, sub: &str, jti: &str, scope: &str, iat: u64, exp: u64) -> Value {
    json!({
        "iss": args.issuer,
        "aud": args.audience,
        "sub": sub,
        "token_use": "access",
        "scope": scope,
        "iat": iat,
        "exp": exp,
        "jti": jti,
    })
}

/// Signs `count` distinct tokens on every core, in `jti` order.
fn mint(args: &Args, key: &SigningKey, prefix: &str, count: usize, exp: u64) -> Vec<String> {
    let iat = now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per = count.div_ceil(threads).max(1);
    let head = header(key);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .step_by(per)
            .map(|start| {
                let head = &head;
                scope.spawn(move || {
                    (start..(start + per).min(count))
                        .map(|i| {
                            let jti = format!("{prefix}-{iat}-{i:08}");
                            sign_with(key, head, &claims(args, &jti, &jti, "api/read", iat, exp))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

fn main() -> std::io::Result<()> {
    let args = parse_args();
    std::fs::create_dir_all(&args.out)?;
    let exp = now() + args.ttl;
    let keys = [
        (
            SigningKey::generate(Algorithm::RS256, "bench-rs256"),
            "rs256",
            args.rs256,
        ),
        (
            SigningKey::generate(Algorithm::ES256, "bench-es256"),
            "es256",
            args.es256,
        ),
    ];
    let jwks = json!({"keys": keys.iter().map(|(k, _, _)| k.jwk()).collect::<Vec<_>>()});
    write(&args.out.join("jwks.json"), &jwks.to_string())?;
    let mut meta = String::new();
    for (key, name, count) in &keys {
        let der = spki_der(key.alg, &key.public_bytes());
        write(
            &args.out.join(format!("{name}-public.pem")),
            &pem("PUBLIC KEY", &der),
        )?;

        let t = now();
        let head = header(key);
        let good = sign_with(
            key,
            &head,
            &claims(
                &args,
                PROOF_SUBJECT,
                &format!("{name}-good"),
                "api/read",
                t,
                exp,
            ),
        );
        let expired = sign_with(
            key,
            &head,
            &claims(
                &args,
                PROOF_SUBJECT,
                &format!("{name}-expired"),
                "api/read",
                t - 7200,
                t - 3600,
            ),
        );
        let noscope = sign_with(
            key,
            &head,
            &claims(
                &args,
                PROOF_SUBJECT,
                &format!("{name}-noscope"),
                "api/other",
                t,
                exp,
            ),
        );
        // Tampered: the good token's header and signature around a payload that now claims
        // another subject.
        let mut parts = good.split('.');
        let (h, s) = (parts.next().unwrap_or(""), parts.nth(1).unwrap_or(""));
        let mut forged = claims(
            &args,
            PROOF_SUBJECT,
            &format!("{name}-good"),
            "api/read",
            t,
            exp,
        );
        forged["sub"] = json!("mallory");
        let tampered = format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(forged.to_string()));
        for (kind, token) in [
            ("good", &good),
            ("expired", &expired),
            ("noscope", &noscope),
            ("tampered", &tampered),
        ] {
            write(
                &args.out.join(format!("{name}-{kind}.jwt")),
                &format!("{token}\n"),
            )?;
        }

        let started = Instant::now();
        let tokens = mint(&args, key, name, *count, exp);
        let secs = started.elapsed().as_secs_f64();
        let mut file = BufWriter::new(std::fs::File::create(
            args.out.join(format!("{name}-tokens.txt")),
        )?);
        for token in &tokens {
            file.write_all(token.as_bytes())?;
            file.write_all(b"\n")?;
        }
        file.flush()?;
        eprintln!(
            "mint_tokens: {} {name} tokens in {secs:.1} s ({:.0}/s)",
            tokens.len(),
            tokens.len() as f64 / secs.max(1e-9)
        );
        let _ = writeln!(meta, "{name}_count={}", tokens.len());
    }
    let _ = writeln!(meta, "issuer={}", args.issuer);
    let _ = writeln!(meta, "audience={}", args.audience);
    let _ = writeln!(meta, "exp={exp}");
    let _ = writeln!(meta, "subjects=distinct");
    let _ = writeln!(meta, "minted_at={}", now());
    write(&args.out.join("meta.txt"), &meta)?;
    Ok(())
}
