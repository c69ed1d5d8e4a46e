//! The `jwtgate` command: `run`, `check`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use jwtgate::compile::{ConfigErrors, compile};
use jwtgate::{Listeners, Shared, dev, reload, serve, server};

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
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr through a background writer: a request never waits on the terminal or the
/// log collector (when the buffer is full, lines are dropped rather than requests slowed). The
/// returned guard flushes what is buffered when `main` returns.
fn init_tracing(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

fn load(path: &PathBuf) -> anyhow::Result<jwtgate::compile::Config> {
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
        Command::Run { config } => {
            let _logs = init_tracing(cli.log_format);
            runtime().and_then(|rt| rt.block_on(run(config)))
        }
        Command::Demo => {
            let _logs = init_tracing(cli.log_format);
            runtime()
                .and_then(|rt| rt.block_on(async { dev::demo().await.map_err(anyhow::Error::msg) }))
        }
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = load(&path)?;
    let listeners = Listeners::bind(&config).await?;
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin_listen,
        routes = config.routes.len(),
        issuers = config.issuers.len(),
        version = env!("CARGO_PKG_VERSION"),
        "jwtgate started"
    );
    let shared = Shared::new(config).map_err(anyhow::Error::msg)?;
    tokio::spawn(reload::watch(std::sync::Arc::clone(&shared), path));
    serve(shared, listeners, server::shutdown_signal()).await;
    tracing::info!("jwtgate stopped");
    Ok(())
}
