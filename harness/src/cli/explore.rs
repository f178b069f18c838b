//! `quiesce explore`: generated fault schedules; the first failure shrunk and kept.

use std::path::PathBuf;

use clap::Args;

use crate::infra::{self};

use super::CliError;
use super::args::*;

#[derive(Debug, Args)]
pub(super) struct ExploreArgs {
    /// The scenario file (TOML). Generated schedules replace its [[faults]].
    pub(super) scenario: PathBuf,
    #[command(flatten)]
    pub(super) infra: BackendArgs,
    /// How many schedules to try at most.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub(super) cases: u32,
    /// The seed: the same seed draws the same schedules (default: a new one, printed).
    #[arg(long, value_name = "SEED")]
    pub(super) seed: Option<u64>,
    /// The most steps a schedule has.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(super) steps: usize,
    /// The actions schedules are made of, comma-separated (default: all): down, up,
    /// latency, timeout, reset_peer, bandwidth, clear, stop, start, kill, pause, resume,
    /// signal.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub(super) actions: Vec<String>,
    /// Only a violation of these checks counts, comma-separated (default: any check's).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub(super) checks: Vec<String>,
    /// The most runs shrinking may take.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub(super) shrink_runs: u32,
    /// How often a shrink candidate that passed is run again before it is given up.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(super) retries: u32,
    /// A variable for the target, over the scenario's (repeatable): KEY=VALUE.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub(super) env: Vec<String>,
    /// Print the report as JSON on stdout; the summary then goes to stderr.
    #[arg(long)]
    pub(super) json: bool,
    /// Where runs, replay files and explore.json go; replay files found there are run first
    /// (default: .quiesce-explore next to the scenario file).
    #[arg(long, value_name = "DIR")]
    pub(super) out: Option<PathBuf>,
}

pub(super) async fn explore_scenario(args: ExploreArgs) -> Result<i32, CliError> {
    use crate::explore::{ExploreOptions, explore, summary};
    let mut scenario = crate::scenario::Scenario::load(&args.scenario)?;
    apply_overrides(&mut scenario.infra, &args.infra)?;
    let bad = |origin: &str, message: String| {
        CliError::Config(infra::ConfigError::Value {
            origin: origin.to_owned(),
            message,
        })
    };
    let actions = by_name(&args.actions, &crate::scenario::Action::ALL, |a| a.name())
        .map_err(|e| bad("--actions", e))?;
    let checks = by_name(&args.checks, &crate::verdict::CheckName::ALL, |c| {
        c.as_str()
    })
    .map_err(|e| bad("--checks", e))?;
    if args.steps == 0 {
        return Err(bad(
            "--steps",
            "`0`: a schedule has at least one step".to_owned(),
        ));
    }
    let out_dir = args.out.clone().unwrap_or_else(|| {
        args.scenario
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(".quiesce-explore")
    });
    let mut options = ExploreOptions::new(out_dir.clone());
    options.cases = args.cases;
    options.seed = args.seed.unwrap_or_else(rand::random);
    options.max_steps = args.steps;
    if !actions.is_empty() {
        options.actions = actions;
    }
    let graph = matches!(scenario.target, crate::scenario::Target::Services(_));
    use crate::scenario::Action;
    let redeploy = |a: &Action| matches!(a, Action::Restart | Action::Rollout);
    if !graph && options.actions.iter().all(redeploy) {
        return Err(bad(
            "--actions",
            "`restart` and `rollout` redeploy a service of a graph ([[services]]); this \
             scenario has none"
                .to_owned(),
        ));
    }
    options.shrink_runs = args.shrink_runs;
    options.retries = args.retries;
    options.checks = checks;
    options.env = parse_env(&args.env)?;
    eprintln!(
        "quiesce explore: {} cases of up to {} step(s), seed {} (--seed {} repeats them)",
        options.cases, options.max_steps, options.seed, options.seed
    );
    let mut signals = signal_handler()?;
    let mut progress = |line: &str| eprintln!("  {line}");
    let report = explore(
        &scenario,
        &args.scenario,
        &options,
        &mut signals,
        &mut progress,
    )
    .await?;
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_file(&out_dir.join("explore.json"), &json)?;
    let summary = summary(&report);
    if args.json {
        eprint!("{summary}");
        println!("{json}");
    } else {
        print!("{summary}");
    }
    Ok(report.exit_code())
}
