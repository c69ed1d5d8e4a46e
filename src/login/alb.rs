//! `x-amzn-oidc-data` exactly as ALB sends it: an ES256 JWT whose three segments are base64url
//! **with `=` padding**, signed (raw `r‖s`) over the padded `header.payload` as sent, with the
//! ALB header fields `kid` (a UUID), `signer` (the load balancer ARN), `iss`, `client`, `exp`.
//! Applications fetch the public key as PEM from `{base}/{kid}`; jwtgate serves it on the admin
//! listener at `/alb-keys/{kid}`.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Map, Value, json};

/// Lifetime of one `x-amzn-oidc-data` value: it is signed per request.
pub const DATA_TTL_SECS: i64 = 120;
/// The signer ARN used when none is configured.
pub const DEFAULT_SIGNER: &str =
    "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/jwtgate/0000000000000000";

/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Signs `x-amzn-oidc-data` values.
pub struct AlbSigner {
    key: EcdsaKeyPair,
    kid: String,
    pem: String,
}

impl std::fmt::Debug for AlbSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlbSigner").field("kid", &self.kid).finish()
    }
}

impl AlbSigner {
    /// A signer from a PKCS#8 P-256 private key (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| format!("not a PKCS#8 P-256 private key: {e}"))?;
        Ok(Self::with_key(key))
    }

    /// A signer from a PEM file's text (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let der = STANDARD
            .decode(body.trim())
            .map_err(|_| "PEM body is not base64".to_owned())?;
        Self::from_pkcs8(&der)
    }

    /// A signer with a fresh key (each replica would get its own: configure a shared key file
    /// when you run more than one).
    pub fn generate() -> Self {
        let key =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key generation"); // ok: start-up only
        Self::with_key(key)
    }

    fn with_key(key: EcdsaKeyPair) -> Self {
        let point = key.public_key().as_ref();
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point);
        // The kid is derived from the public key, so replicas sharing a key share the kid.
        let hash = digest::digest(&digest::SHA256, point);
        let h = hash.as_ref();
        let kid = format!(
            "{}-{}-4{}-{:x}{}-{}",
            hex(&h[0..4]),
            hex(&h[4..6]),
            &hex(&h[6..8])[1..],
            8 | (h[8] & 0x3),
            &hex(&h[8..10])[1..],
            hex(&h[10..16]),
        );
        let b64 = STANDARD.encode(&spki);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        AlbSigner { key, kid, pem }
    }

    /// The key id (a UUID).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as PEM (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> &str {
        &self.pem
    }

    /// Signs the user-info `claims` (plus `exp` and `iss`) in ALB's format.
    pub fn sign(
        &self,
        claims: &Map<String, Value>,
        issuer: &str,
        client_id: &str,
        signer: &str,
        now: i64,
    ) -> Option<String> {
        let exp = now + DATA_TTL_SECS;
        let header = json!({
            "typ": "JWT", "kid": self.kid, "alg": "ES256", "iss": issuer,
            "client": client_id, "signer": signer, "exp": exp,
        });
        let mut payload = claims.clone();
        payload.insert("exp".into(), json!(exp));
        payload.insert("iss".into(), json!(issuer));
        let signing_input = format!(
            "{}.{}",
            URL_SAFE.encode(header.to_string()),
            URL_SAFE.encode(Value::Object(payload).to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .ok()?;
        Some(format!(
            "{signing_input}.{}",
            URL_SAFE.encode(signature.as_ref())
        ))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn data_tokens_are_padded_and_verify_over_the_padded_bytes() {
        let signer = AlbSigner::generate();
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("alice"));
        claims.insert("email".into(), json!("alice@example.test"));
        let token = signer
            .sign(&claims, "https://idp", "client", DEFAULT_SIGNER, 1_000)
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        for p in &parts {
            assert_eq!(p.len() % 4, 0, "padded base64url: {p}");
            assert!(!p.contains('+') && !p.contains('/'));
        }
        assert!(
            parts[2].ends_with('='),
            "a 64-byte signature always needs padding"
        );
        let header: Value = serde_json::from_slice(&URL_SAFE.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["signer"], DEFAULT_SIGNER);
        assert_eq!(header["client"], "client");
        assert_eq!(header["exp"], 1_000 + DATA_TTL_SECS);
        let payload: Value = serde_json::from_slice(&URL_SAFE.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["sub"], "alice");
        assert_eq!(payload["iss"], "https://idp");
        let signature = URL_SAFE.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "raw r||s, not DER");
        let point = signer.key.public_key().as_ref().to_vec();
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point);
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(key.verify(signed.as_bytes(), &signature).is_ok());
    }

    #[test]
    fn kid_is_a_stable_uuid_and_pem_is_spki() {
        let signer = AlbSigner::generate();
        let kid = signer.kid();
        let groups: Vec<usize> = kid.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12], "{kid}");
        assert!(kid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        let pem = signer.public_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let a = AlbSigner::from_pkcs8(pkcs8.as_ref()).unwrap();
        let b = AlbSigner::from_pkcs8(pkcs8.as_ref()).unwrap();
        assert_eq!(a.kid(), b.kid(), "replicas sharing a key share the kid");
        let pem_key = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8.as_ref())
        );
        assert_eq!(AlbSigner::from_pem(&pem_key).unwrap().kid(), a.kid());
    }
}
