//! The `quiesce` command line, a file per command as cargo and nextest lay theirs out.
//! [`main`] parses the arguments, runs the command on a tokio runtime and returns an exit
//! code from [`crate::exit_codes`].

mod args;
mod check;
mod conformance;
mod explore;
mod images;
mod infra;
mod r#loop;
mod many;
mod progress;
mod run;
mod soak;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::exit_codes;
use crate::infra::{ConfigError, InfraError};

use check::{CheckArgs, check_scenarios};
use conformance::{ConformanceArgs, conformance};
use explore::{ExploreArgs, explore_scenario};
use images::{ImagesCommand, images_build};
use infra::{InfraCommand, infra_up};
use r#loop::{LoopArgs, loop_scenario};
use run::{RunArgs, run_scenario};
use soak::{SoakArgs, soak_scenario};

#[derive(Debug, Parser)]
#[command(
    name = "quiesce",
    version,
    about = "Shutdown-correctness harness and soak rig for services on Kafka and Redis",
    after_help = exit_codes::HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario: start the infrastructure and the target, stop it, check every
    /// invariant, print the verdict.
    #[command(after_help = exit_codes::HELP)]
    Run(RunArgs),
    /// Run one scenario in cycles against infrastructure started once: the flake rate with
    /// its 95% bound, start/ready/stop percentiles, and every failing cycle explained.
    #[command(after_help = exit_codes::HELP)]
    Loop(LoopArgs),
    /// Generate fault schedules, run each; shrink the first that breaks an invariant to the
    /// smallest that still does, and write it as a scenario file `quiesce run` replays.
    #[command(after_help = exit_codes::HELP)]
    Explore(ExploreArgs),
    /// Run the target under steady load for a long time, sampling its memory, threads and
    /// fds; then stop it, check every invariant, and judge the memory trend in MB/day.
    #[command(after_help = exit_codes::HELP)]
    Soak(SoakArgs),
    /// Validate scenario files without starting anything: every error with its file, line
    /// and column; for valid files the stop, each check with the evidence it needs, and the
    /// placeholders filled.
    #[command(after_help = exit_codes::HELP)]
    Check(CheckArgs),
    /// Check that the broker behaves like Kafka for the client libraries services use: a
    /// table of cases (batched produce, resume, rejoin, mid-batch seek, end offsets) per client.
    #[command(after_help = exit_codes::HELP)]
    Conformance(ConformanceArgs),
    /// Real Kafka and Redis behind fault proxies.
    #[command(subcommand)]
    Infra(InfraCommand),
    /// Container images for the containers backend, built from local binaries.
    #[command(subcommand)]
    Images(ImagesCommand),
}

/// Whether `args` (without the program name) is a command line `quiesce` accepts: what a CI
/// recipe runs is checked against the real argument parser, not a copy of it.
pub fn parses<I, T>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = std::iter::once(std::ffi::OsString::from("quiesce"))
        .chain(args.into_iter().map(Into::into));
    Cli::try_parse_from(args)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit_codes::BAD_INPUT
            } else {
                exit_codes::OK
            };
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quiesce: error: cannot start the async runtime: {e}");
            return exit_codes::INFRA_FAILED;
        }
    };
    let code = runtime.block_on(run(cli));
    // Anything still running was abandoned on purpose (a second Ctrl-C); do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    // The last stop path: a process group whose owner the runtime abandoned.
    let stopped = crate::process::teardown().stop_all();
    if stopped > 0 {
        eprintln!("quiesce: killed {stopped} process group(s) still running at exit");
    }
    code
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUIESCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Run(args) => run_scenario(args).await,
        Command::Loop(args) => loop_scenario(args).await,
        Command::Explore(args) => explore_scenario(args).await,
        Command::Soak(args) => soak_scenario(args).await,
        Command::Check(args) => check_scenarios(args),
        Command::Conformance(args) => conformance(args).await,
        Command::Infra(InfraCommand::Up(args)) => infra_up(args).await.map_err(CliError::from),
        Command::Images(ImagesCommand::Build) => images_build().await.map_err(CliError::from),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quiesce: error: {}", chain(&e));
            e.exit_code()
        }
    }
}

/// An error and its sources, joined with ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Any error the CLI reports, with its exit code.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Soak(#[from] crate::soak::SoakError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Infra(e) => e.exit_code(),
            CliError::Run(e) => e.exit_code(),
            CliError::Config(_) => exit_codes::BAD_INPUT,
            CliError::Soak(e) => e.exit_code(),
            CliError::Write { .. } => exit_codes::INFRA_FAILED,
        }
    }
}
