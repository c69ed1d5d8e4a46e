//! The `jwtgate` command: `run`, `check`, `demo`, `authz explain`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use jwtgate::compile::{ConfigErrors, compile};
use jwtgate::{Listeners, Shared, dev, log_writer, reload, serve_per_core, server};

/// API Gateway's JWT authorizer and ALB's Cognito login, as a reverse proxy for any HTTP service.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        env = "JWTGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Threads that serve requests (default: the CPUs this process may use, which honours CPU
    /// affinity and cgroup CPU quotas, e.g. a Kubernetes CPU limit).
    #[arg(long, global = true, env = "JWTGATE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// How the worker threads share the work: `multi-thread` (one runtime, work stealing) or
    /// `per-core` (one single-threaded runtime per thread, each accepting on its own
    /// `SO_REUSEPORT` socket; BENCHMARKS.md compares them).
    #[arg(long, global = true, env = "JWTGATE_RUNTIME", value_enum, default_value_t = RuntimeModel::MultiThread)]
    runtime: RuntimeModel,
}

/// `--runtime`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeModel {
    MultiThread,
    PerCore,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: proxy on `[server].listen`, admin endpoints on `[server].admin_listen`.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short, env = "JWTGATE_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and print the compiled route table; exit 1 on any error.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short, env = "JWTGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run a development issuer, an echo upstream and the proxy in one process, and print curls.
    Demo,
    /// Cedar policy tools.
    Authz {
        #[command(subcommand)]
        command: AuthzCommand,
    },
}

#[derive(Subcommand)]
enum AuthzCommand {
    /// Show how a route's Cedar policies decide a request: the entities, action, resource and
    /// context built from the token, the decision and the determining policies. Exit 0 when
    /// allowed, 2 when denied.
    Explain {
        /// Configuration file (TOML).
        #[arg(long, short, env = "JWTGATE_CONFIG")]
        config: PathBuf,
        /// The bearer token (a JWT; its signature is not checked), or `-` to read it from
        /// standard input (keeps it out of the process list and the shell history).
        #[arg(long, short)]
        token: String,
        /// The request method (GET, POST, …).
        method: String,
        /// The request path, with its query if any (`/pets/42?view=full`).
        path: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr in batches written by a background thread (`log_writer`): a request never
/// waits on the terminal or the log collector. The returned guard writes what is waiting when
/// `main` returns.
fn init_tracing(format: LogFormat) -> anyhow::Result<log_writer::FlushGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) =
        log_writer::batched(std::io::stderr()).context("cannot start the log writer")?;
    // Colour only for a person at a terminal, never into files or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(guard)
}

fn load(path: &PathBuf) -> anyhow::Result<jwtgate::settings::Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(compile(&path.display().to_string(), &text)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(config) => {
                print!("{}", config.describe());
                println!("{}: ok", config.source);
                Ok(())
            }
            Err(e) => Err(e),
        },
        Command::Run { config } => init_tracing(cli.log_format).and_then(|_logs| {
            let threads = threads(cli.worker_threads);
            match cli.runtime {
                RuntimeModel::MultiThread => {
                    runtime(threads).and_then(|rt| rt.block_on(run(config, 1)))
                }
                // This thread is the first core; the others get their own.
                RuntimeModel::PerCore => {
                    runtime(1).and_then(|rt| rt.block_on(run(config, threads)))
                }
            }
        }),
        Command::Authz {
            command:
                AuthzCommand::Explain {
                    config,
                    token,
                    method,
                    path,
                },
        } => match explain(&config, &token, &method, &path) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(2),
            Err(e) => Err(e),
        },
        Command::Demo => init_tracing(cli.log_format).and_then(|_logs| {
            runtime(threads(cli.worker_threads))
                .and_then(|rt| rt.block_on(async { Ok(dev::demo().await?) }))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Config problems go out as bare `file:line:col: key: reason` lines, which editors
            // and CI annotate; everything else is one `jwtgate: …` line.
            match e.downcast_ref::<ConfigErrors>() {
                Some(errors) => {
                    eprintln!("{errors}");
                    eprintln!(
                        "jwtgate: {} problem(s) in the configuration",
                        errors.0.len()
                    );
                }
                None => eprintln!("jwtgate: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// `authz explain`: prints what the policies saw and decided; whether they allowed it.
fn explain(config: &PathBuf, token: &str, method: &str, path: &str) -> anyhow::Result<bool> {
    let config = load(config)?;
    let stdin;
    let token = if token == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the token from standard input")?;
        stdin = text;
        stdin.trim()
    } else {
        token
    };
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("{method:?} is not an HTTP method"))?;
    let (text, allowed) =
        jwtgate::policy::explain(&config, token, &method, path).map_err(anyhow::Error::msg)?;
    print!("{text}");
    Ok(allowed)
}

/// Worker threads: `--worker-threads`, else one per usable CPU.
fn threads(worker_threads: Option<u16>) -> usize {
    worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    )
}

/// The async runtime with `threads` worker threads. With one thread,
/// tokio's current-thread scheduler serves everything on the main thread: no work stealing and
/// no cross-thread wake-ups, measurably cheaper per request than a one-worker thread pool
/// (BENCHMARKS.md).
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs the proxy; with `cores` > 1, as that many single-threaded runtimes (`--runtime
/// per-core`), this one included.
async fn run(path: PathBuf, cores: usize) -> anyhow::Result<()> {
    let config = load(&path)?;
    let (listeners, more) = if cores > 1 {
        Listeners::bind_per_core(&config, cores).await?
    } else {
        (Listeners::bind(&config).await?, Vec::new())
    };
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin_listen,
        routes = config.routes.len(),
        issuers = config.issuers.len(),
        runtimes = cores,
        version = env!("CARGO_PKG_VERSION"),
        "jwtgate started"
    );
    let shared = Shared::new(config)?;
    tokio::spawn(reload::watch(Arc::clone(&shared), path));
    serve_per_core(
        Arc::clone(&shared),
        listeners,
        more,
        server::shutdown_signal(),
    )
    .await;
    // The last second of spans goes out before the process ends.
    #[cfg(feature = "otlp")]
    if let Some(exporter) = shared.exporter.load_full() {
        exporter.shutdown(std::time::Duration::from_secs(5)).await;
    }
    tracing::info!("jwtgate stopped");
    Ok(())
}
