//! `quiesce run`: one scenario, start to verdict; or a suite of them (several files, or
//! folders of them), with the infrastructure started once per distinct `[infra]`, one report
//! and one exit code (see [`crate::suite`]).

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use super::args::*;
use crate::suite::{Partition, SuiteProgress, run_suite};

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// Scenario files (TOML), or folders: every `*.toml` under them but `Cargo.toml`. More
    /// than one makes a suite: one report, one exit code.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub(super) scenarios: Vec<PathBuf>,
    /// Run only this share of the suite: K/N (every N-th file from the K-th, in path order)
    /// or hash:K/N (by a hash of the path, stable as files are added), so N CI jobs cover it
    /// exactly once.
    #[arg(long, value_name = "K/N")]
    pub(super) partition: Option<Partition>,
    /// Print the files the run (and partition) would run, one a line, and run nothing.
    #[arg(long)]
    pub(super) list: bool,
    #[command(flatten)]
    pub(super) infra: BackendArgs,
    #[command(flatten)]
    pub(super) common: ScenarioArgs,
}

pub(super) async fn run_scenario(args: RunArgs) -> Result<i32, CliError> {
    let mut files = scenario_files(&args.scenarios)?;
    if let Some(partition) = args.partition {
        files = partition.select(files, |f| f.display().to_string());
    }
    if args.list {
        for file in &files {
            println!("{}", file.display());
        }
        return Ok(crate::exit_codes::OK);
    }
    let single =
        args.scenarios.len() == 1 && !args.scenarios[0].is_dir() && args.partition.is_none();
    if single {
        return run_one(&args).await;
    }
    let mut scenarios = Vec::new();
    for file in &files {
        // Every file is read first: a bad one is bad input before anything starts.
        scenarios.push((file.clone(), args.common.load(file, &args.infra)?));
    }
    let env = parse_env(&args.common.env)?;
    let out_dir = args
        .common
        .out
        .clone()
        .unwrap_or_else(|| fresh_out_dir("suite", "run"));
    std::fs::create_dir_all(&out_dir).map_err(|source| CliError::Write {
        path: out_dir.clone(),
        source,
    })?;
    let total = scenarios.len();
    eprintln!(
        "quiesce run: a suite of {total} scenario(s); reports in {}",
        out_dir.display()
    );
    let mut signals = signal_handler()?;
    let bar = super::progress::ScenariosBar::new(total);
    let report = run_suite(
        scenarios,
        &env,
        &out_dir,
        &mut signals,
        |p: SuiteProgress<'_>| {
            let word = match (&p.entry.verdict, &p.entry.error) {
                (Some(v), _) => v.word(),
                _ => "ERROR",
            };
            // ETA from the scenarios done so far.
            let each = p.elapsed.as_secs_f64() / p.done as f64;
            let left = each * (p.total - p.done) as f64;
            bar.finished(format!(
                "[{}/{}] {word:<12} {} ({:.1} s; about {:.0} s left)",
                p.done,
                p.total,
                p.entry.file,
                p.entry.elapsed_ms as f64 / 1000.0,
                left
            ));
        },
    )
    .await;
    bar.finish();
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_file(&out_dir.join("suite.json"), &json)?;
    emit(&args.common, &crate::suite::summary(&report), &json, || {
        crate::suite::junit_xml(&report)
    })?;
    Ok(report.exit_code)
}

/// One scenario file: its verdict, as ever.
async fn run_one(args: &RunArgs) -> Result<i32, CliError> {
    let scenario = args.common.load(&args.scenarios[0], &args.infra)?;
    let env = parse_env(&args.common.env)?;
    let options = crate::run::RunOptions {
        env,
        out_dir: args.common.out.clone(),
    };
    let mut signals = signal_handler()?;
    let verdict = crate::run::run(&scenario, &options, &mut signals).await?;
    emit(
        &args.common,
        &crate::report::summary(&verdict),
        &crate::report::json(&verdict),
        || crate::report::junit_xml(&verdict),
    )?;
    Ok(verdict.exit_code())
}
