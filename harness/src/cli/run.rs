//! `quiesce run`: one scenario, start to verdict.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use super::args::*;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The scenario file (TOML).
    pub(super) scenario: PathBuf,
    #[command(flatten)]
    pub(super) infra: BackendArgs,
    #[command(flatten)]
    pub(super) common: ScenarioArgs,
}

pub(super) async fn run_scenario(args: RunArgs) -> Result<i32, CliError> {
    let scenario = args.common.load(&args.scenario, &args.infra)?;
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
