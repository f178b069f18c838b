//! `quiesce check`: scenario files validated without starting anything. Every error names its
//! file, line and column; a valid file shows what a run of it would do: the stop, every check
//! with the evidence it needs, the inconclusive checks it accepts, and where each placeholder
//! is filled. CI can run it on every commit in well under a second.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use crate::exit_codes;
use crate::scenario::{Scenario, StopRule, Target, template};
use crate::verdict::CheckName;

use super::CliError;
use super::args::scenario_files;

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// Scenario files, or folders: every `*.toml` under them (but `Cargo.toml`), in path order.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub(super) paths: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// One file's result.
#[derive(Debug, Serialize)]
struct Checked {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scenario: Option<Resolved>,
}

/// What a run of a valid file would do.
#[derive(Debug, Serialize)]
struct Resolved {
    name: String,
    target: String,
    stop: String,
    /// Where the Kafka checks learn what was processed (with `[kafka]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    processed: Option<String>,
    /// What the workload sends, when it comes in over HTTP (`[kafka.ingress]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    ingress: Option<String>,
    checks: Vec<Needs>,
    /// Checks off for want of evidence, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    off: Vec<String>,
    allow_inconclusive: Vec<CheckName>,
    placeholders: Vec<Filled>,
}

#[derive(Debug, Serialize)]
struct Needs {
    check: CheckName,
    evidence: &'static str,
}

#[derive(Debug, Serialize)]
struct Filled {
    placeholder: String,
    at: String,
    variable: &'static str,
}

fn stop_of(scenario: &Scenario) -> String {
    let plan = &scenario.stop;
    let latest = format!(
        "at the latest {} ms after ready; killed {} ms after the signal",
        plan.after_ms, plan.kill_after_ms
    );
    let when = match scenario.kafka.as_ref().map(|k| (k.stop_rule(), k.records)) {
        Some((StopRule::Midstream(n), records)) => {
            format!("mid-stream, once {n} of {records} inputs have outputs, {latest}")
        }
        Some((StopRule::AllProcessed, records)) => {
            format!("once all {records} inputs have outputs (nothing in flight), {latest}")
        }
        Some((StopRule::Timer, _)) | None => format!("{} ms after ready", plan.after_ms),
    };
    format!("{} {when}", plan.signal)
}

fn placeholders(scenario: &Scenario) -> Vec<Filled> {
    let Target::Process(target) = &scenario.target else {
        return Vec::new();
    };
    let places = target
        .command
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("command[{i}]"), a))
        .chain(target.env.iter().map(|(k, v)| (format!("env.{k}"), v)));
    let mut out = Vec::new();
    for (at, text) in places {
        for name in template::names(text) {
            let variable = template::PLACEHOLDERS
                .iter()
                .find(|p| p.name == name)
                .map_or("", |p| p.variable);
            out.push(Filled {
                placeholder: format!("{{{name}}}"),
                at: at.clone(),
                variable,
            });
        }
    }
    out
}

fn check_file(path: &Path) -> Checked {
    let file = path.display().to_string();
    match Scenario::load(path) {
        Err(e) => Checked {
            file,
            error: Some(e.to_string()),
            scenario: None,
        },
        Ok(scenario) => Checked {
            file,
            error: None,
            scenario: Some(Resolved {
                name: scenario.name.clone(),
                target: scenario.target.describe(),
                stop: stop_of(&scenario),
                processed: scenario
                    .kafka
                    .as_ref()
                    .map(|k| k.processed.describe(&k.output_topic)),
                ingress: scenario.kafka.as_ref().and_then(|k| {
                    let ingress = k.ingress.as_ref()?;
                    Some(format!(
                        "{} HTTP {} {} to `{}`{}; a 2xx acknowledges, and an acknowledged \
                         request must be in `{}`",
                        k.records,
                        ingress.method,
                        ingress.path,
                        ingress.service.as_deref().unwrap_or("the target"),
                        match k.rate {
                            0 => String::new(),
                            rate => format!(" at {rate}/s"),
                        },
                        k.input_topic
                    ))
                }),
                checks: (scenario.enabled_checks())
                    .chain(
                        scenario
                            .judges_takeover()
                            .then_some(crate::verdict::CheckName::TakeoverWithin),
                    )
                    .map(|check| Needs {
                        check,
                        evidence: check.evidence(),
                    })
                    .collect(),
                off: scenario.off(),
                allow_inconclusive: scenario.checks.allow_inconclusive.clone(),
                placeholders: placeholders(&scenario),
            }),
        },
    }
}

fn print(checked: &Checked) {
    let Some(resolved) = &checked.scenario else {
        println!("{}", checked.error.as_deref().unwrap_or("unknown error"));
        return;
    };
    println!(
        "{}: ok: `{}`, {}",
        checked.file, resolved.name, resolved.target
    );
    println!("  stop: {}", resolved.stop);
    if let Some(ingress) = &resolved.ingress {
        println!("  requests: {ingress}");
    }
    if let Some(processed) = &resolved.processed {
        println!("  processed: {processed}");
    }
    println!("  checks ({}), each passes only on:", resolved.checks.len());
    let width = resolved
        .checks
        .iter()
        .map(|c| c.check.as_str().len())
        .max()
        .unwrap_or(0);
    for needs in &resolved.checks {
        let accepted = match resolved.allow_inconclusive.contains(&needs.check) {
            true => "  (may be inconclusive: accepted)",
            false => "",
        };
        println!(
            "    {:<width$}  {}{accepted}",
            needs.check.as_str(),
            needs.evidence
        );
    }
    for off in &resolved.off {
        println!("  off: {off}");
    }
    for filled in &resolved.placeholders {
        println!(
            "  {} in {}: {} at run time",
            filled.placeholder, filled.at, filled.variable
        );
    }
}

pub(super) fn check_scenarios(args: CheckArgs) -> Result<i32, CliError> {
    let files = scenario_files(&args.paths)?;
    if files.is_empty() {
        return Err(CliError::Config(crate::infra::ConfigError::Value {
            origin: "quiesce check".to_owned(),
            message: "no *.toml file under the paths given".to_owned(),
        }));
    }
    let results: Vec<Checked> = files.iter().map(|f| check_file(f)).collect();
    let bad = results.iter().filter(|c| c.error.is_some()).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    } else {
        for checked in &results {
            print(checked);
        }
        println!(
            "checked {} file(s): {} valid, {bad} with errors",
            results.len(),
            results.len() - bad
        );
    }
    Ok(match bad {
        0 => exit_codes::OK,
        _ => exit_codes::BAD_INPUT,
    })
}
