//! The `rethread` command: serve, or one of the operator tools.

use std::process::ExitCode;

use clap::Parser;
use rethread::config::{Cli, Command, LogFormat, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.settings) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("rethread: {e}");
            return ExitCode::from(2);
        }
    };
    // The main thread's loop: start-up, the listener, background tasks and the operator tools.
    // Connections are served by the worker threads `server` starts.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rethread: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(settings)),
        Command::Health { url } => {
            runtime.block_on(rethread::tools::health(&settings, url.as_deref()))
        }
        Command::Check => runtime.block_on(rethread::tools::check(&settings)),
        Command::Explain { turn, request } => rethread::tools::explain(&settings, &turn, &request),
    }
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.server.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal, never in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match settings.server.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn serve(settings: Settings) -> ExitCode {
    init_logging(&settings);
    let upstream = settings.upstream.url.clone();
    let server = match rethread::server::bind(settings).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Ok(addr) => tracing::info!(
            upstream = %upstream,
            workers = server.workers(),
            "listening on http://{addr}"
        ),
        Err(e) => tracing::warn!(error = %e, "listening (address unknown)"),
    }
    if let Some(Ok(addr)) = server.admin_addr() {
        tracing::info!("health, readiness and metrics on http://{addr}");
    }
    server.serve(shutdown_signal()).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
