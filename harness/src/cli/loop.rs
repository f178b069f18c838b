//! `quiesce loop`: one scenario in cycles against infrastructure started once.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::infra::{self};

use super::CliError;
use super::args::*;
use super::progress::*;

#[derive(Debug, Args)]
pub(super) struct LoopArgs {
    /// The scenario file (TOML).
    pub(super) scenario: PathBuf,
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
    use crate::repeat::{LoopOptions, MAX_CYCLES, run_loop};
    let mut scenario = args.common.load(&args.scenario, &args.infra)?;
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
    let bounded = args.duration.is_some() || args.until_failure;
    let cycles = match args.cycles {
        Some(0) => {
            return Err(CliError::Config(infra::ConfigError::Value {
                origin: "--cycles".to_owned(),
                message: "`0`: a loop runs at least one cycle".to_owned(),
            }));
        }
        Some(n) => n,
        None if bounded => MAX_CYCLES,
        None => 100,
    };
    let out_dir = args
        .common
        .out
        .clone()
        .unwrap_or_else(|| fresh_out_dir("loop", &scenario.name));
    let options = LoopOptions {
        env: parse_env(&args.common.env)?,
        out_dir: out_dir.clone(),
        cycles,
        duration: args.duration,
        until_failure: args.until_failure,
        keep_passing: args.keep_passing,
    };
    let mut signals = signal_handler()?;
    let mut bar = LoopProgress::new(cycles, args.duration);
    let report = run_loop(&scenario, &options, &mut signals, |p| bar.update(p)).await;
    bar.finish();
    let report = report?;
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_file(&out_dir.join("loop.json"), &json)?;
    emit(
        &args.common,
        &crate::repeat::summary(&report),
        &json,
        || crate::repeat::junit_xml(&report),
    )?;
    Ok(report.exit_code())
}
