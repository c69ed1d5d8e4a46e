//! The real `jwtgate` binary as a child process on loopback ports, stopped by PID when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct BinaryProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    dir: PathBuf,
}

/// A port that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `toml` behind a `[server]` table with the given listeners.
fn with_server(addr: SocketAddr, admin: SocketAddr, toml: &str) -> String {
    format!("[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\n\n{toml}")
}

impl BinaryProxy {
    /// Runs `jwtgate run` on `toml` (which must have no `[server]` table: one is added with free
    /// ports) and waits until `/readyz` answers 200.
    pub async fn start(toml: &str) -> BinaryProxy {
        Self::start_logging(toml, "warn").await
    }

    /// [`BinaryProxy::start`] with `RUST_LOG=rust_log` (`info` writes access lines to the log).
    pub async fn start_logging(toml: &str, rust_log: &str) -> BinaryProxy {
        Self::start_with_env(toml, rust_log, &[]).await
    }

    /// [`BinaryProxy::start_logging`] with environment variables set (`Some`) or removed
    /// (`None`), e.g. the AWS credentials jwtgate's gateway source reads.
    #[allow(dead_code)] // not every test binary uses it
    pub async fn start_with_env(
        toml: &str,
        rust_log: &str,
        env: &[(&str, Option<&str>)],
    ) -> BinaryProxy {
        // A port free when picked may be taken by another process before jwtgate binds it:
        // then jwtgate exits saying so, and it is started again on other ports.
        for _ in 0..5 {
            match Self::spawn(toml, rust_log, env).await {
                Ok(proxy) => return proxy,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("jwtgate never became ready: {log}"),
            }
        }
        panic!("jwtgate found no free ports in 5 tries");
    }

    /// One start on freshly picked ports: the ready proxy, or its log.
    async fn spawn(
        toml: &str,
        rust_log: &str,
        env: &[(&str, Option<&str>)],
    ) -> Result<BinaryProxy, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jwtgate-bin-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (addr, admin) = (free_port(), free_port());
        let config = dir.join("jwtgate.toml");
        std::fs::write(&config, with_server(addr, admin, toml)).unwrap();
        let log = std::fs::File::create(dir.join("jwtgate.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_jwtgate"));
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("JWTGATE_CONFIG")
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1");
        for (name, value) in env {
            match value {
                Some(v) => command.env(name, v),
                None => command.env_remove(name),
            };
        }
        let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let mut proxy = BinaryProxy {
            addr,
            admin,
            child,
            dir,
        };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            let ready = http.get(proxy.admin_url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return Ok(proxy);
            }
            if proxy.child.try_wait().ok().flatten().is_some() {
                return Err(proxy.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(proxy.log())
    }

    /// Replaces the config file with `toml` (and the same `[server]` table) in one rename, so
    /// the file watch never reads half of it. The running process reloads it within 2 s.
    pub fn rewrite_config(&self, toml: &str) {
        let next = self.dir.join("jwtgate.toml.next");
        std::fs::write(&next, with_server(self.addr, self.admin, toml)).unwrap();
        std::fs::rename(&next, self.dir.join("jwtgate.toml")).unwrap();
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn metrics(&self) -> String {
        super::get_text(&self.admin_url("/metrics")).await
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("jwtgate.log")).unwrap_or_default()
    }

    /// The log once it holds every one of `needles` (log lines are written in batches, a
    /// moment after the answer), or as it is after 10 s.
    #[allow(dead_code)] // not every test binary uses it
    pub async fn log_with(&self, needles: &[&str]) -> String {
        for _ in 0..200 {
            let log = self.log();
            if needles.iter().all(|n| log.contains(n)) {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.log()
    }
}

impl Drop for BinaryProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
