//! The Python interop helpers under `tests/interop/` (moto and friends), run with the venv's
//! python (`tests/interop/venv.sh`, which `scripts/test` runs first).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The interop venv's python, or `JWTGATE_TEST_PYTHON`.
pub fn venv_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("JWTGATE_TEST_PYTHON").map_or_else(
        || root.join("target/interop-venv/bin/python"),
        PathBuf::from,
    )
}

/// `tests/interop/NAME`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Starts `tests/interop/NAME` with `env` set and waits for the one JSON line it prints when it
/// is ready; it serves until its stdin closes (or the caller stops it by PID).
pub fn start_script(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> (Child, Value) {
    let python = venv_python();
    let mut command = Command::new(&python);
    command
        .arg(script(name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "{} with moto[server] is needed (scripts/test installs it): {e}",
            python.display()
        )
    });
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{name} did not start ({e}): {line:?}"));
    (child, info)
}

/// The calls the moto server at `url` served since its recorder was last reset, as
/// (action, body as JSON): the `x-amz-target` action and JSON body of the JSON-protocol
/// services (Cognito), or the `Action` and fields of a form body (STS).
pub async fn moto_recording(url: &str) -> Vec<(String, Value)> {
    use base64::Engine;
    let text = reqwest::get(format!("{url}/moto-api/recorder/download-recording"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let entry: Value = serde_json::from_str(l).unwrap();
            let body = match entry["body"].as_str() {
                Some(b) if entry["body_encoded"].as_bool() == Some(true) => {
                    String::from_utf8_lossy(
                        &base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
                    )
                    .into_owned()
                }
                Some(b) => b.to_owned(),
                None => String::new(),
            };
            let target = entry["headers"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
                .and_then(|(_, v)| v.as_str());
            match target {
                Some(t) => (
                    t.rsplit('.').next().unwrap().to_owned(),
                    serde_json::from_str(&body).unwrap_or(Value::Null),
                ),
                None => {
                    let form: serde_json::Map<String, Value> =
                        url::form_urlencoded::parse(body.as_bytes())
                            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                            .collect();
                    let action = form
                        .get("Action")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    (action, Value::Object(form))
                }
            }
        })
        .collect()
}
