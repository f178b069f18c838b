//! A loop's report for people (the terminal summary) and for CI (JUnit: one test case per
//! failing cycle, plus a summary case).

use std::fmt::Write;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Ended, FailureClass, LoopReport, Percentiles};

/// How many evidence lines a failing cycle shows in the terminal (all are in `loop.json`).
const SHOWN: usize = 12;

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// `failed 20 of 100 cycles (20.0%, 95% upper bound 28.9%)`.
fn rate_line(report: &LoopReport) -> String {
    match report.failure_rate_upper_95 {
        Some(upper) => format!(
            "failed {} of {} cycles ({}, 95% upper bound {})",
            report.failed,
            report.cycles,
            percent(report.failure_rate),
            percent(upper)
        ),
        None => "no cycle ran to a verdict".to_owned(),
    }
}

fn times_line(name: &str, times: &Option<Percentiles>) -> String {
    match times {
        Some(p) => format!(
            "  {name:<5}  p50 {} ms  p95 {} ms  p99 {} ms  max {} ms  ({} cycles)",
            p.p50, p.p95, p.p99, p.max, p.samples
        ),
        None => format!("  {name:<5}  no samples"),
    }
}

/// The human summary of a loop.
pub fn summary(report: &LoopReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "quiesce loop `{}`: {} (backend {})",
        report.scenario, report.target, report.backend
    );
    for cycle in &report.failing {
        let class = cycle.failure.map_or("", FailureClass::as_str);
        let phase = cycle.phase.map(|p| format!(" at {p}")).unwrap_or_default();
        let _ = writeln!(out, "  cycle {}: {class}{phase}", cycle.cycle);
        // Each failed check's summary and where the target was stuck; the stacks and the
        // rest of the evidence are in loop.json.
        let mut lines: Vec<String> = cycle
            .evidence
            .iter()
            .filter(|l| !l.starts_with(' '))
            .cloned()
            .collect();
        for hang in &cycle.hangs {
            lines.push(hang.headline());
        }
        for line in lines.iter().take(SHOWN) {
            let _ = writeln!(out, "      {line}");
        }
        if lines.len() > SHOWN {
            let _ = writeln!(out, "      … {} more", lines.len() - SHOWN);
        }
        let _ = writeln!(out, "      output: {}", cycle.out_dir);
    }
    let _ = writeln!(out, "times (ms):");
    let _ = writeln!(out, "{}", times_line("start", &report.start));
    let _ = writeln!(out, "{}", times_line("ready", &report.ready));
    let _ = writeln!(out, "{}", times_line("stop", &report.stop));
    // Takeovers are counted where a cycle's row was decided, and only those that happened:
    // the cycles whose row failed or was undecided are said beside them.
    let with = |pick: fn(&super::CycleRecord) -> &Vec<crate::verdict::CheckName>| {
        (report.all.iter())
            .filter(|c| pick(c).contains(&crate::verdict::CheckName::TakeoverWithin))
            .count()
    };
    let (failed, undecided) = (with(|c| &c.failed_checks), with(|c| &c.inconclusive_checks));
    let besides = match (failed, undecided) {
        (0, 0) => String::new(),
        _ => format!(
            "; takeover_within failed in {failed} cycle(s) and was undecided in {undecided}: \
             a partition never taken over, and undecided cycles, add no time"
        ),
    };
    match &report.takeover {
        Some(p) => {
            let _ = writeln!(
                out,
                "  takeover p50 {} ms  p95 {} ms  p99 {} ms  max {} ms  ({} partition moves{besides})",
                p.p50, p.p95, p.p99, p.max, p.samples
            );
        }
        None if !besides.is_empty() => {
            let _ = writeln!(out, "  takeover  no samples{besides}");
        }
        None => {}
    }
    let unsure: Vec<&super::CycleRecord> = report.all.iter().filter(|c| c.inconclusive).collect();
    if !unsure.is_empty() {
        // Counted apart: such a cycle neither passed nor failed. Each distinct reason once,
        // with how many cycles gave it.
        let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
        for line in unsure.iter().flat_map(|c| &c.undecided) {
            *reasons.entry(line.as_str()).or_default() += 1;
        }
        let numbers: Vec<String> = unsure.iter().map(|c| c.cycle.to_string()).collect();
        let _ = writeln!(
            out,
            "inconclusive: {} cycle(s) ({}), nothing failed but a check was not decided:",
            unsure.len(),
            numbers.join(", ")
        );
        for (reason, n) in reasons.iter().take(SHOWN) {
            let _ = writeln!(out, "      {reason} ({n} cycle(s))");
        }
    }
    if report.failed > 0 {
        let classes: Vec<String> = report
            .failures
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        let _ = writeln!(out, "failures: {}", classes.join(", "));
        let numbers: Vec<String> = report.failing.iter().map(|c| c.cycle.to_string()).collect();
        let _ = writeln!(out, "failing cycles: {}", numbers.join(", "));
    }
    let ended = match report.ended {
        Ended::Count => String::new(),
        Ended::Duration => "; the duration was over".to_owned(),
        Ended::Failure => "; stopped at the first failure".to_owned(),
        Ended::Interrupted => "; interrupted by Ctrl-C".to_owned(),
        Ended::Error => format!(
            "; ended by a harness error: {}",
            report.error.as_deref().unwrap_or("unknown")
        ),
    };
    let _ = writeln!(
        out,
        "verdict: {} — {}{} in {:.1} s{ended}",
        report.word(),
        rate_line(report),
        match report.inconclusive {
            0 => String::new(),
            n => format!("; {n} inconclusive, {} passed", report.passed),
        },
        report.elapsed_ms as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "report: {}/loop.json (every failing cycle's evidence and stacks)",
        report.out_dir
    );
    out
}

/// The loop as JUnit XML: a test case per failing cycle, with its evidence, and a summary
/// case that fails when any cycle did.
pub fn junit_xml(report: &LoopReport) -> String {
    let mut junit = Report::new("quiesce");
    junit.add_test_suite(junit_suite(report));
    junit.to_string().expect("a report always serializes")
}

/// The loop as one JUnit test suite: a case per failing or undecided cycle, and a summary.
pub fn junit_suite(report: &LoopReport) -> TestSuite {
    let mut suite = TestSuite::new(format!("loop {}", report.scenario));
    let class = format!("quiesce.loop.{}", report.scenario);
    for cycle in &report.failing {
        let kind = cycle.failure.map_or("failure", FailureClass::as_str);
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status.set_message(kind);
        status.set_type(kind);
        let mut description = cycle.evidence.clone();
        // A hang's explanation is in the evidence of the check it failed; if that check is
        // off, it is added here.
        for hang in &cycle.hangs {
            if !description.iter().any(|l| l.contains(&hang.headline())) {
                description.extend(hang.lines());
            }
        }
        description.push(format!("output: {}", cycle.out_dir));
        status.set_description(description.join("\n"));
        let mut case = TestCase::new(format!("cycle {}", cycle.cycle), status);
        case.set_classname(class.as_str());
        suite.add_test_case(case);
    }
    for cycle in report.all.iter().filter(|c| c.inconclusive) {
        let mut status = TestCaseStatus::skipped();
        status.set_message(format!("inconclusive: {}", cycle.undecided.join("; ")));
        let mut case = TestCase::new(format!("cycle {}", cycle.cycle), status);
        case.set_classname(class.as_str());
        suite.add_test_case(case);
    }
    let status = if report.word() == "PASS" {
        TestCaseStatus::success()
    } else if report.word() == "INCONCLUSIVE" {
        let mut status = TestCaseStatus::skipped();
        status.set_message(format!(
            "inconclusive: {} of {} cycle(s) left a check undecided",
            report.inconclusive, report.cycles
        ));
        status
    } else {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status.set_message(rate_line(report));
        status.set_type("flaky");
        status
    };
    let mut case = TestCase::new("summary", status);
    case.set_classname(class.as_str());
    case.set_system_out(rate_line(report));
    suite.add_test_case(case);
    suite
}
