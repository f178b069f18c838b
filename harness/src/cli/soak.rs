//! `quiesce soak`: hours under load with a memory verdict in MB/day (several scenarios: one
//! after another, each for `--duration`, reported together), and `soak report`, which judges a
//! timeline again.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::exit_codes;

use super::CliError;
use super::args::*;
use super::progress::*;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct SoakArgs {
    #[command(subcommand)]
    pub(super) command: Option<SoakCommand>,
    /// Scenario files (TOML), each a process target, or folders of them. Several soak one
    /// after another, each for --duration, with one report and one exit code.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub(super) scenarios: Vec<PathBuf>,
    /// Soak only this share of the files: K/N or hash:K/N, as `quiesce run`.
    #[arg(long, value_name = "K/N")]
    pub(super) partition: Option<crate::suite::Partition>,
    /// Print the files the soak (and partition) would run, one a line, and run nothing.
    #[arg(long)]
    pub(super) list: bool,
    #[command(flatten)]
    pub(super) infra: BackendArgs,
    /// How long: 90s, 30m, 2h.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "30m")]
    pub(super) duration: Duration,
    /// Between two samples.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "1s")]
    pub(super) interval: Duration,
    /// Samples before this are not judged (default: a tenth of the soak, at most 5m).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub(super) warmup: Option<Duration>,
    /// Growth above this many MB (2^20 bytes) a day is a leak (default: 25 for a soak under
    /// 2h, 10 from 2h: in 30 minutes a correct service's warm-up drift alone reaches 10).
    /// Given alone, it is the live heap's threshold too.
    #[arg(long, value_name = "MB")]
    pub(super) threshold: Option<f64>,
    /// The live heap's threshold, where the target reports its heap (default: --threshold if
    /// given, else 10 for any length: the heap has no allocator drift).
    #[arg(long, value_name = "MB")]
    pub(super) heap_threshold: Option<f64>,
    /// Records a second of the [kafka] workload (default: the scenario's rate, else 50).
    #[arg(long, value_name = "N")]
    pub(super) rate: Option<u32>,
    /// The least time after the warm-up a verdict rests on; a shorter soak's memory is
    /// inconclusive.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "10m")]
    pub(super) min_span: Duration,
    #[command(flatten)]
    pub(super) common: ScenarioArgs,
}

#[derive(Debug, Subcommand)]
pub(super) enum SoakCommand {
    /// Judge a soak's timeline again and redraw its plot (next to it, soak.svg).
    #[command(after_help = exit_codes::HELP)]
    Report(SoakReportArgs),
}

#[derive(Debug, Args)]
pub(super) struct SoakReportArgs {
    /// A soak's timeline.jsonl.
    pub(super) timeline: PathBuf,
    /// Growth above this many MB a day is a leak (default: the soak's). Given alone, it is
    /// the live heap's threshold too.
    #[arg(long, value_name = "MB")]
    pub(super) threshold: Option<f64>,
    /// The live heap's threshold (default: --threshold if given, else the soak's).
    #[arg(long, value_name = "MB")]
    pub(super) heap_threshold: Option<f64>,
    /// Samples before this are not judged (default: the soak's).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub(super) warmup: Option<Duration>,
    /// The least time after the warm-up a verdict rests on.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "10m")]
    pub(super) min_span: Duration,
}

pub(super) async fn soak_scenario(args: SoakArgs) -> Result<i32, CliError> {
    if let Some(SoakCommand::Report(report)) = &args.command {
        return soak_report(report);
    }
    let Some(files) = super::many::select(&args.scenarios, args.partition, args.list)? else {
        return Ok(exit_codes::OK);
    };
    let mut scenarios = Vec::new();
    for file in files {
        let scenario = args.common.load(&file, &args.infra)?;
        scenarios.push((file, scenario));
    }
    let (paths, partition) = (&args.scenarios, args.partition);
    super::many::run_on_sessions(
        "soak",
        paths,
        partition,
        scenarios,
        &args.common,
        async |session, scenario, dir, signals| {
            let (report, summary) = soak_one(&args, session, scenario, dir, signals).await?;
            Ok(super::many::Finished {
                word: report.verdict.word(),
                exit_code: report.verdict.exit_code(),
                summary,
                json: serde_json::to_value(&report).unwrap_or_default(),
                junit: crate::report::junit_suite(&report.verdict),
            })
        },
    )
    .await
}

/// One scenario's soak, with its progress bar: its report and terminal summary.
async fn soak_one(
    args: &SoakArgs,
    session: &mut crate::run::Session,
    scenario: &crate::scenario::Scenario,
    out_dir: PathBuf,
    signals: &mut crate::signal::SignalHandler,
) -> Result<(crate::soak::SoakReport, String), CliError> {
    use crate::soak::{SoakOptions, soak_on};
    let mut options = SoakOptions::new(args.duration, out_dir.clone());
    options.interval = args.interval;
    if let Some(warmup) = args.warmup {
        options.warmup = warmup;
    }
    options.thresholds = options
        .thresholds
        .overridden(args.threshold, args.heap_threshold);
    options.rate = args.rate;
    options.min_span = args.min_span;
    options.env = parse_env(&args.common.env)?;
    let timeline = match &scenario.target {
        crate::scenario::Target::Services(_) => out_dir.join("services/INSTANCE/timeline.jsonl"),
        _ => out_dir.join("timeline.jsonl"),
    };
    eprintln!(
        "quiesce soak: {} for {}, a sample every {} s, judged after {} s; timeline {}",
        scenario.name,
        humantime(args.duration),
        options.interval.as_secs_f64(),
        options.warmup.as_secs(),
        timeline.display()
    );
    let bar = SoakProgress::new(args.duration);
    let shown = bar.clone();
    let report = soak_on(session, scenario, &options, signals, move |status| {
        shown.update(status)
    })
    .await;
    bar.finish();
    let report = report?;
    let mut summary = crate::report::summary(&report.verdict);
    for soaked in &report.soaked {
        let whose = soaked
            .instance
            .as_ref()
            .map_or_else(String::new, |name| format!("`{name}`: "));
        summary.push_str(&format!(
            "{whose}soak timeline {} ({} samples), plot {}\n",
            soaked.timeline.display(),
            soaked.samples,
            soaked.plot.display()
        ));
    }
    Ok((report, summary))
}

/// `quiesce soak report`: a timeline judged again, its plot redrawn.
pub(super) fn soak_report(args: &SoakReportArgs) -> Result<i32, CliError> {
    let (taken, warmup) = crate::soak::timeline_settings(&args.timeline)?;
    let thresholds = taken.overridden(args.threshold, args.heap_threshold);
    thresholds.check()?;
    let judged = crate::soak::judge(
        &args.timeline,
        thresholds,
        args.warmup.unwrap_or(warmup),
        args.min_span,
    )?;
    println!("memory: {}", judged.verdict.explain());
    if let Some(allocator) = &judged.allocator {
        println!("  allocator: {allocator}");
    }
    for alone in &judged.each {
        println!("  alone: {}", alone.explain());
    }
    println!("  plot {}", judged.plot.display());
    Ok(match &judged.verdict {
        v if v.is_leak() => exit_codes::VIOLATION,
        // Too few samples or too short to tell: no evidence that memory is flat.
        quiesce_soak::Verdict::Inconclusive { .. } => exit_codes::INCONCLUSIVE,
        _ => exit_codes::OK,
    })
}
