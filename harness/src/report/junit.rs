//! JUnit XML: one test suite per scenario, one test case per check. A violation is a failure
//! with its evidence; an inconclusive check is `skipped` with its reason, never silently absent.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::verdict::{Outcome, Verdict};

/// The verdict as JUnit XML.
pub fn junit_xml(verdict: &Verdict) -> String {
    let mut report = Report::new("quiesce");
    report.add_test_suite(junit_suite(verdict));
    report.to_string().expect("a report always serializes")
}

/// The verdict as one JUnit test suite: a test case per check.
pub fn junit_suite(verdict: &Verdict) -> TestSuite {
    let mut suite = TestSuite::new(verdict.scenario.as_str());
    for result in &verdict.results {
        let status = match &result.outcome {
            Outcome::Pass { .. } => TestCaseStatus::success(),
            Outcome::Violation { summary, evidence } => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(summary.as_str());
                status.set_type("violation");
                status.set_description(evidence.join("\n"));
                status
            }
            Outcome::Inconclusive { reason } => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(format!("inconclusive: {reason}"));
                status
            }
        };
        let mut case = TestCase::new(result.label(), status);
        case.set_classname(format!("quiesce.{}", verdict.scenario));
        if let Outcome::Pass { detail, .. } = &result.outcome {
            case.set_system_out(detail.as_str());
        }
        suite.add_test_case(case);
    }
    suite
}
