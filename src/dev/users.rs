//! The demo users and the Cognito-shaped claims of their tokens, shared by the development
//! issuer and its hosted sign-in page.

use serde_json::{Value, json};

use crate::token::unix_now;

/// The app client id the demo issuer puts in `aud` / `client_id`.
pub const DEMO_CLIENT_ID: &str = "jwtgate-demo-app-client";

/// A demo user.
#[derive(Debug, Clone, Copy)]
pub struct User {
    /// `username` / `cognito:username`.
    pub username: &'static str,
    /// `sub`.
    pub sub: &'static str,
    /// `email`.
    pub email: &'static str,
    /// `name`.
    pub name: &'static str,
    /// `cognito:groups` (absent from tokens when empty, as in Cognito).
    pub groups: &'static [&'static str],
    /// `scope` of the user's access token.
    pub scope: &'static str,
    /// `custom:tenant` of the user's ID token (the Cedar example's tenant).
    pub tenant: &'static str,
}

/// The demo users: an admin, a regular user and one with no group.
pub const USERS: [User; 3] = [
    User {
        username: "alice",
        sub: "8d5b6c1e-1a2b-4c3d-9e8f-a1b2c3d4e5f6",
        email: "alice@example.test",
        name: "Alice Admin",
        groups: &["admins", "users"],
        scope: "openid email profile orders/read orders/write",
        tenant: "acme",
    },
    User {
        username: "bob",
        sub: "3f2e1d0c-9b8a-4765-8432-10fedcba9876",
        email: "bob@example.test",
        name: "Bob User",
        groups: &["users"],
        scope: "openid email profile orders/read",
        tenant: "acme",
    },
    User {
        username: "carol",
        sub: "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
        email: "carol@example.test",
        name: "Carol Nogroup",
        groups: &[],
        scope: "openid email profile",
        tenant: "globex",
    },
];

/// A demo user by name.
pub fn user(username: &str) -> Option<&'static User> {
    USERS.iter().find(|u| u.username == username)
}

/// Claims of a Cognito access token (no `aud`; `client_id`, `scope`, `username`).
pub fn access_claims(issuer: &str, user: &User) -> Value {
    let mut claims = common_claims(issuer, user);
    claims["client_id"] = json!(DEMO_CLIENT_ID);
    claims["token_use"] = json!("access");
    claims["scope"] = json!(user.scope);
    claims["username"] = json!(user.username);
    claims["version"] = json!(2);
    claims
}

/// Claims of a Cognito ID token (`aud`, `cognito:username`, `email`, `name`, and the custom
/// attribute `custom:tenant`).
pub fn id_claims(issuer: &str, user: &User) -> Value {
    let mut claims = common_claims(issuer, user);
    claims["aud"] = json!(DEMO_CLIENT_ID);
    claims["token_use"] = json!("id");
    claims["cognito:username"] = json!(user.username);
    claims["email"] = json!(user.email);
    claims["email_verified"] = json!(true);
    claims["name"] = json!(user.name);
    claims["custom:tenant"] = json!(user.tenant);
    claims
}

fn common_claims(issuer: &str, user: &User) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "sub": user.sub, "iss": issuer, "auth_time": now, "iat": now, "exp": now + 3600,
        "jti": uuid::Uuid::new_v4().to_string(), "origin_jti": uuid::Uuid::new_v4().to_string(),
        "event_id": uuid::Uuid::new_v4().to_string(),
    });
    if !user.groups.is_empty() {
        claims["cognito:groups"] = json!(user.groups);
    }
    claims
}
