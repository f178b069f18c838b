//! The summary printed at the end of a run: a line per check, evidence under each failure.

use std::fmt::Write;

use crate::verdict::{Outcome, Verdict};

/// The human summary of `verdict`.
pub fn summary(verdict: &Verdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "quiesce run `{}`: {} (backend {})",
        verdict.scenario, verdict.target, verdict.backend
    );
    let width = verdict
        .results
        .iter()
        .map(|r| r.label().len())
        .max()
        .unwrap_or(0);
    for result in &verdict.results {
        let name = result.label();
        let label = result.outcome.label();
        match &result.outcome {
            Outcome::Pass { detail, limits } => {
                let _ = writeln!(out, "  {label}  {name:<width$}  {detail}");
                if let Some(limits) = limits {
                    let _ = writeln!(out, "        {:<width$}  (not seen: {limits})", "");
                }
            }
            Outcome::Violation { summary, evidence } => {
                let _ = writeln!(out, "  {label}  {name:<width$}  {summary}");
                for line in evidence {
                    let _ = writeln!(out, "        {:<width$}    {line}", "");
                }
            }
            Outcome::Inconclusive { reason } => {
                let accepted = match verdict.allowed_inconclusive.contains(&result.check) {
                    true => " (accepted)",
                    false => "",
                };
                let _ = writeln!(
                    out,
                    "  {label}  {name:<width$}  inconclusive{accepted}: {reason}"
                );
            }
        }
    }
    let total = verdict.results.len();
    let _ = write!(
        out,
        "verdict: {} ({} of {total} checks failed, {} inconclusive)",
        verdict.word(),
        verdict.violations(),
        verdict.inconclusive()
    );
    if verdict.interrupted {
        out.push_str("; interrupted by Ctrl-C");
    }
    out.push('\n');
    if let Some(log) = &verdict.target_log {
        let _ = writeln!(out, "target output: {log}");
    }
    out
}
