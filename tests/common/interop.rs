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
