//! `quiesce loop`: one scenario in cycles against infrastructure started once; several, one
//! after another, reported together (see [`super::many`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::infra::{self};

use super::CliError;
use super::args::*;
use super::progress::*;

#[derive(Debug, Args)]
pub(super) struct LoopArgs {
    /// Scenario files (TOML), or folders: every `*.toml` under them but `Cargo.toml`. Several
    /// loop one after another, with one report and one exit code.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub(super) scenarios: Vec<PathBuf>,
    /// Loop only this share of the files: K/N or hash:K/N, as `quiesce run`.
    #[arg(long, value_name = "K/N")]
    pub(super) partition: Option<crate::suite::Partition>,
    /// Print the files the loop (and partition) would run, one a line, and run nothing.
    #[arg(long)]
    pub(super) list: bool,
    #[command(flatten)]
    pub(super) infra: BackendArgs,
    /// How many cycles (default 100; with --duration or --until-failure, at most this many,
    /// default 10000).
    #[arg(short = 'n', long = "cycles", value_name = "N")]
    pub(super) cycles: Option<u64>,
    /// Start no cycle after this long: 90s, 30m, 2h (or seconds).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub(super) duration: Option<Duration>,
    /// Stop at the first failing cycle.
    #[arg(long, visible_alias = "fail-fast")]
    pub(super) until_failure: bool,
    /// Ready deadline per cycle in ms (default: the scenario's starts_within deadline).
    #[arg(long, value_name = "MS")]
    pub(super) ready_deadline: Option<u64>,
    /// Stop deadline per cycle in ms, after which the target is killed (default: the
    /// scenario's [stop] kill_after_ms).
    #[arg(long, value_name = "MS")]
    pub(super) stop_deadline: Option<u64>,
    /// Run on a stuck process before it is killed; {pid} becomes its pid (over the
    /// scenario's [target] on_hang), e.g. 'py-spy dump --pid {pid}'.
    #[arg(long, value_name = "COMMAND")]
    pub(super) on_hang: Option<String>,
    #[command(flatten)]
    pub(super) common: ScenarioArgs,
    /// Keep the folders of passing cycles too (by default only failing cycles keep theirs).
    #[arg(long)]
    pub(super) keep_passing: bool,
}

pub(super) async fn loop_scenario(args: LoopArgs) -> Result<i32, CliError> {
    let Some(files) = super::many::select(&args.scenarios, args.partition, args.list)? else {
        return Ok(crate::exit_codes::OK);
    };
    let cycles = cycles(&args)?;
    let mut scenarios = Vec::new();
    for file in files {
        let scenario = prepare(&args, &file)?;
        scenarios.push((file, scenario));
    }
    let (paths, partition) = (&args.scenarios, args.partition);
    super::many::run_on_sessions(
        "loop",
        paths,
        partition,
        scenarios,
        &args.common,
        async |session, scenario, dir, signals| {
            let report = loop_one(&args, session, scenario, cycles, dir, signals).await?;
            Ok(super::many::Finished {
                word: report.word(),
                exit_code: report.exit_code(),
                summary: crate::repeat::summary(&report),
                json: serde_json::to_value(&report).unwrap_or_default(),
                junit: crate::repeat::junit_suite(&report),
            })
        },
    )
    .await
}

/// How many cycles each loop runs, from `-n`, `--duration` and `--until-failure`.
fn cycles(args: &LoopArgs) -> Result<u64, CliError> {
    let bounded = args.duration.is_some() || args.until_failure;
    match args.cycles {
        Some(0) => Err(CliError::Config(infra::ConfigError::Value {
            origin: "--cycles".to_owned(),
            message: "`0`: a loop runs at least one cycle".to_owned(),
        })),
        Some(n) => Ok(n),
        None if bounded => Ok(crate::repeat::MAX_CYCLES),
        None => Ok(100),
    }
}

/// The scenario of `path` with the command line's deadlines and hang command over its own.
fn prepare(args: &LoopArgs, path: &std::path::Path) -> Result<crate::scenario::Scenario, CliError> {
    let mut scenario = args.common.load(path, &args.infra)?;
    if let Some(ms) = args.ready_deadline {
        scenario.checks.starts_within.params.deadline_ms = ms;
    }
    if let Some(ms) = args.stop_deadline {
        scenario.stop.kill_after_ms = ms;
    }
    if let (Some(command), crate::scenario::Target::Process(target)) =
        (&args.on_hang, &mut scenario.target)
    {
        target.on_hang = Some(command.clone());
    }
    Ok(scenario)
}

/// One scenario's loop, with its progress bar.
async fn loop_one(
    args: &LoopArgs,
    session: &mut crate::run::Session,
    scenario: &crate::scenario::Scenario,
    cycles: u64,
    out_dir: PathBuf,
    signals: &mut crate::signal::SignalHandler,
) -> Result<crate::repeat::LoopReport, CliError> {
    use crate::repeat::{LoopOptions, run_loop_on};
    let options = LoopOptions {
        env: parse_env(&args.common.env)?,
        out_dir,
        cycles,
        duration: args.duration,
        until_failure: args.until_failure,
        keep_passing: args.keep_passing,
    };
    let mut bar = LoopProgress::new(cycles, args.duration);
    let report = run_loop_on(session, scenario, &options, signals, |p| bar.update(p)).await;
    bar.finish();
    Ok(report?)
}
