//! AWS credentials per user (issue 15): named sources (`[[aws_credentials]]`) turn a verified
//! token into temporary AWS credentials (a Cognito identity pool, STS web identity) or use
//! jwtgate's own (the standard chain), cache them per user and role, and sign upstream
//! requests with them (SigV4, AWS's own signer).
//!
//! Secrets never leave this module in clear: [`Credentials`] and [`Secret`] print redacted,
//! and [`AwsError`] carries AWS's error code and a scrubbed message, never a token.

mod credentials;
mod error;
mod gateway;
mod http;
mod identity_pool;
mod settings;
mod signer;
mod source;
mod sources;
mod sts;
pub mod time;
mod xml;

pub use credentials::{Credentials, Secret};
pub use error::{AwsError, DEFAULT_RETRY_AFTER};
pub use gateway::{Env, IMDS_TIMEOUT, process_env};
pub use http::MAX_ANSWER_BYTES;
pub use settings::{
    DEFAULT_CACHE_MAX_BYTES, DEFAULT_MAX_BODY, DEFAULT_REFRESH_MARGIN, DEFAULT_TIMEOUT, Gateway,
    IdentityPool, MAX_ENTRY_LIFETIME, MAX_MAX_BODY, PayloadMode, Signing, SourceKind,
    SourceSettings, WebIdentity, is_s3, sts_endpoint,
};
pub use signer::{
    Payload, SIGV4_HEADERS, SignError, SigningScope, UNSIGNED_PAYLOAD, header_pattern_matches, sign,
};
pub use source::{
    Clock, CredentialSource, ENTRY_WEIGHT, IDENTITY_ID_IDLE, MAX_IDENTITY_IDS, Principal, UserToken,
};
pub use sources::CredentialSources;
pub use sts::session_name;
