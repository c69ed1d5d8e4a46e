//! Cedar policies through the real binary: allow, deny with 403 `policy` (the upstream never
//! sees a denied request, the log names the determining policy), hot reload of a policy file,
//! a broken policy file refused while the old set keeps serving, `jwtgate check` reporting
//! policy and schema problems at their `file:line:col` with the policy id, and
//! `jwtgate authz explain`.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::binary::BinaryProxy;
use common::recorder::Recorder;
use common::*;
use jwtgate::dev::issuer::DevIssuer;

/// The pets API: admins read every pet; anyone reads a pet named after their username (a
/// path parameter against `context.token`), with the `pets/read` scope; deletes are forbidden.
const PETS: &str = r#"
@id("admins-read")
permit (
  principal in PetStore::UserGroup::"us-east-1_TEST|admins",
  action == PetStore::Action::"get /pets/{petId}",
  resource
);

@id("owner-reads-own")
permit (
  principal,
  action == PetStore::Action::"get /pets/{petId}",
  resource
)
when {
  context has token && context.token has username &&
  context.token.username == context.pathParameters.petId &&
  context.token.scope.contains("orders/read")
};

@id("no-deletes")
forbid (principal, action, resource)
when { context has queryStringParameters && context.queryStringParameters has force };
"#;

/// A directory of this test's own (removed when dropped).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("jwtgate-policies-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        // Replaced in one rename, so a watcher never reads half of it.
        let next = self.0.join(format!("{name}.next"));
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &path).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Routes using the policies of `dir` (absolute paths: the binary's config lives elsewhere).
fn policy_config(issuer: &DevIssuer, upstream: &str, dir: &Path) -> String {
    let routes = format!(
        r#"
[[routes]]
name = "pets"
path = "/pets/{{petId}}"
methods = ["GET", "DELETE"]
policy = true

[policies]
files = ["{dir}/*.cedar"]
namespace = "PetStore"
"#,
        dir = dir.display()
    );
    config(issuer, upstream, "", &routes)
}

async fn status(proxy: &BinaryProxy, method: &str, path: &str, token: &str) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    client()
        .request(method, format!("http://{}{path}", proxy.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn token(issuer: &DevIssuer, name: &str) -> String {
    issuer.sign(&issuer.access_token(user(name).unwrap()))
}

#[tokio::test]
async fn policies_allow_and_deny_with_403_policy_naming_the_determining_policy() {
    let dir = Dir::new("allow");
    dir.write("pets.cedar", PETS);
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = Recorder::start().await;
    let proxy =
        BinaryProxy::start_logging(&policy_config(&issuer, &upstream.url(), &dir.0), "info").await;
    let (alice, bob, carol) = (
        token(&issuer, "alice"),
        token(&issuer, "bob"),
        token(&issuer, "carol"),
    );

    // alice is in admins; bob reads his own pet by name (and has orders/read); carol has
    // neither.
    assert_eq!(status(&proxy, "GET", "/pets/rex", &alice).await, 200);
    assert_eq!(status(&proxy, "GET", "/pets/bob", &bob).await, 200);
    assert_eq!(upstream.take().len(), 2);
    assert_eq!(status(&proxy, "GET", "/pets/rex", &bob).await, 403);
    assert_eq!(status(&proxy, "GET", "/pets/carol", &carol).await, 403);
    // A forbid wins over the admins' permit.
    assert_eq!(
        status(&proxy, "GET", "/pets/rex?force=1", &alice).await,
        403
    );
    // No policy names DELETE on this path: default deny.
    assert_eq!(status(&proxy, "DELETE", "/pets/rex", &alice).await, 403);
    assert!(
        upstream.take().is_empty(),
        "a denied request never goes upstream"
    );
    // The same answer from the decision cache.
    assert_eq!(status(&proxy, "GET", "/pets/rex", &bob).await, 403);
    assert_eq!(status(&proxy, "GET", "/pets/bob", &bob).await, 200);

    let response = client()
        .get(format!("http://{}/pets/rex", proxy.addr))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), r#"{"message":"Forbidden"}"#);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"jwtgate_auth_failures_total{reason="policy",route="pets"}"#),
        "{metrics}"
    );
    // Access lines are written in batches: wait for the forbid's line.
    let mut log = String::new();
    for _ in 0..100 {
        log = proxy.log();
        if log.contains(r#"determining=["no-deletes"]"#) && log.contains(r#"reason="policy""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log.contains(r#"determining=["no-deletes"]"#), "{log}");
    assert!(log.contains(r#"reason="policy""#), "{log}");
    // No token at all is still 401 (authentication comes first).
    let res = client()
        .get(format!("http://{}/pets/rex", proxy.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// Polls until `GET path` answers `want` (hot reload checks files every 2 s).
async fn until_status(proxy: &BinaryProxy, path: &str, token: &str, want: u16) -> bool {
    for _ in 0..100 {
        if status(proxy, "GET", path, token).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_changed_policy_file_is_reloaded_and_a_broken_one_refused() {
    let dir = Dir::new("reload");
    dir.write("pets.cedar", PETS);
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = Recorder::start().await;
    let proxy = BinaryProxy::start(&policy_config(&issuer, &upstream.url(), &dir.0)).await;
    let carol = token(&issuer, "carol");
    assert_eq!(status(&proxy, "GET", "/pets/rex", &carol).await, 403);

    // A new file matching the wildcard permits everyone: noticed without touching the config.
    dir.write(
        "everyone.cedar",
        "@id(\"everyone\")\npermit (principal, action, resource);\n",
    );
    assert!(
        until_status(&proxy, "/pets/rex", &carol, 200).await,
        "{}",
        proxy.log()
    );

    // A broken file is refused with its position; the set in force keeps serving.
    dir.write(
        "everyone.cedar",
        "@id(\"everyone\")\npermit (principal, action, resource)\nwhen { principal.nope == };\n",
    );
    let mut log = String::new();
    for _ in 0..100 {
        log = proxy.log();
        if log.contains("configuration refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log.contains("configuration refused"), "{log}");
    assert!(log.contains("everyone.cedar:3:"), "{log}");
    assert_eq!(status(&proxy, "GET", "/pets/rex", &carol).await, 200);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"jwtgate_config_reloads_total{result="refused"} 1"#),
        "{metrics}"
    );

    // Fixed again (the permit gone): carol is denied once more.
    std::fs::remove_file(dir.0.join("everyone.cedar")).unwrap();
    assert!(
        until_status(&proxy, "/pets/rex", &carol, 403).await,
        "{}",
        proxy.log()
    );
}

fn jwtgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(args)
        .env_remove("JWTGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SCHEMA: &str = r#"namespace PetStore {
  entity UserGroup;
  entity User in [UserGroup] { "custom:tenant"?: String };
  entity Application;
  action "get /pets/{petId}" appliesTo {
    principal: [User],
    resource: [Application],
    context: { pathParameters: { petId: String } },
  };
}
"#;

/// A config file in `dir` naming its policy files relatively.
fn file_config(dir: &Dir, schema: bool) -> PathBuf {
    let schema = if schema {
        "schema = \"schema.cedarschema\"\n"
    } else {
        ""
    };
    dir.write(
        "jwtgate.toml",
        &format!(
            r#"[upstream]
url = "http://127.0.0.1:9"

[[issuers]]
issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TEST"
audiences = ["client"]

[[routes]]
path = "/pets/{{petId}}"
policy = true

[policies]
files = ["*.cedar"]
namespace = "PetStore"
{schema}"#
        ),
    )
}

#[tokio::test]
async fn check_reports_policy_and_schema_problems_at_their_position_with_the_policy_id() {
    let dir = Dir::new("check");
    dir.write("schema.cedarschema", SCHEMA);
    dir.write(
        "pets.cedar",
        r#"@id("tenant-match")
permit (
  principal,
  action == PetStore::Action::"get /pets/{petId}",
  resource
)
when { principal["custom:tenant"] == context.pathParameters.petId };

@id("typo")
permit (principal, action == PetStore::Action::"get /pets/{petId}", resource)
when { context.pathParameters.petID == "x" };
"#,
    );
    let config = file_config(&dir, true);
    let (code, _, stderr) = jwtgate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let file = dir.0.join("pets.cedar").display().to_string();
    // The optional attribute read without `has`: line 7; the misspelt record field: line 11.
    assert!(
        stderr.contains(&format!("{file}:7:")) && stderr.contains("policy tenant-match"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:11:")) && stderr.contains("policy typo"),
        "{stderr}"
    );

    // A syntax error: at its line, whatever the schema.
    dir.write(
        "pets.cedar",
        "permit (principal, action, resource)\nwhen { 1 + };\n",
    );
    let (code, _, stderr) = jwtgate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("{file}:2:")), "{stderr}");

    // A route naming a set that does not exist, and a policy file that is not there.
    dir.write(
        "bad.toml",
        r#"[upstream]
url = "http://127.0.0.1:9"

[[issuers]]
issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TEST"
audiences = ["client"]

[[routes]]
path = "/pets/{petId}"
policy = "nope"

[[policy_sets]]
name = "other"
files = ["missing/*.cedar"]
"#,
    );
    let bad = dir.0.join("bad.toml");
    let (code, _, stderr) = jwtgate(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    let bad = bad.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{bad}:10:10: routes[0].policy: no [[policy_sets]] is named \"nope\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{bad}:14:10: policy_sets[0].files:")),
        "{stderr}"
    );

    // Fixed: check passes and lists the set.
    dir.write(
        "pets.cedar",
        r#"@id("tenant-match")
permit (principal, action == PetStore::Action::"get /pets/{petId}", resource)
when { principal has "custom:tenant" && principal["custom:tenant"] == context.pathParameters.petId };
"#,
    );
    let (code, stdout, stderr) = jwtgate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(r#"policies "default"  namespace=PetStore  resource=PetStore::Application::"PetStore"  policies=1  schema=validated"#),
        "{stdout}"
    );
    assert!(stdout.contains("policy=default"), "{stdout}");
}

#[tokio::test]
async fn explain_prints_the_entities_the_decision_and_the_determining_policies() {
    let dir = Dir::new("explain");
    dir.write("pets.cedar", PETS);
    let config = file_config(&dir, false);
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let bob = token(&issuer, "bob");
    let config = config.to_str().unwrap();

    let (code, stdout, stderr) = jwtgate(&[
        "authz",
        "explain",
        "--config",
        config,
        "--token",
        &bob,
        "GET",
        "/pets/bob?x=1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let sub = user("bob").unwrap().sub;
    for want in [
        format!(r#"principal   PetStore::User::"us-east-1_TEST|{sub}""#),
        r#"  in        PetStore::UserGroup::"us-east-1_TEST|users""#.to_owned(),
        r#"action      PetStore::Action::"get /pets/{petId}""#.to_owned(),
        r#"resource    PetStore::Application::"PetStore""#.to_owned(),
        r#""pathParameters":{"petId":"bob"}"#.to_owned(),
        r#""queryStringParameters":{"x":"1"}"#.to_owned(),
        r#""scope":["openid","email","profile","orders/read"]"#.to_owned(),
        "decision    ALLOW".to_owned(),
        "determining owner-reads-own".to_owned(),
    ] {
        assert!(stdout.contains(&want), "{want}\n{stdout}");
    }

    let (code, stdout, _) = jwtgate(&[
        "authz",
        "explain",
        "--config",
        config,
        "--token",
        &bob,
        "GET",
        "/pets/rex?force=1",
    ]);
    assert_eq!(code, 2, "a deny exits 2");
    assert!(stdout.contains("decision    DENY (403 policy)"), "{stdout}");
    assert!(stdout.contains("determining no-deletes"), "{stdout}");

    // The token from standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args([
            "authz",
            "explain",
            "--config",
            config,
            "--token",
            "-",
            "GET",
            "/pets/bob",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{bob}\n").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("decision    ALLOW"));

    let (code, _, stderr) = jwtgate(&[
        "authz", "explain", "--config", config, "--token", &bob, "GET", "/nowhere",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no route matches GET /nowhere"), "{stderr}");
}

#[tokio::test]
async fn forward_auth_answers_with_the_policy_decision() {
    let dir = Dir::new("forward-auth");
    dir.write("pets.cedar", PETS);
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = Recorder::start().await;
    let toml = format!(
        "{}\n[forward_auth]\npath = \"/auth\"\n",
        policy_config(&issuer, &upstream.url(), &dir.0)
    );
    let proxy = BinaryProxy::start(&toml).await;
    let (alice, carol) = (token(&issuer, "alice"), token(&issuer, "carol"));
    // The original path below the prefix (the peer is not a trusted proxy).
    assert_eq!(status(&proxy, "GET", "/auth/pets/rex", &alice).await, 200);
    assert_eq!(status(&proxy, "GET", "/auth/pets/rex", &carol).await, 403);
    assert_eq!(
        status(&proxy, "GET", "/auth/pets/rex?force=1", &alice).await,
        403
    );
    assert!(upstream.take().is_empty(), "forward-auth never forwards");
}
