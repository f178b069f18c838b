//! A suite: many scenario files in one call, one report, one exit code.
//!
//! A team's nightly job runs every scenario of every service, on as many CI machines as it
//! has. [`Partition`] gives each machine a deterministic share (every file in exactly one
//! share, for any N); [`run_suite`] runs a share with its infrastructure started once per
//! distinct `[infra]` and reused by every scenario that asks for the same one, as `quiesce
//! loop` reuses it across cycles. Scenarios that share infrastructure but would also share a
//! topic, a consumer group or a leader key get their own names, so no scenario judges another's
//! records or lock.
//!
//! The exit code follows a single run's rules across the suite: a violation anywhere wins,
//! then a harness or infrastructure failure (the target not blamed), then an inconclusive
//! check, then Ctrl-C; every scenario passing is 0.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::exit_codes;
use crate::run::{RunOptions, Session};
use crate::scenario::Scenario;
use crate::signal::SignalHandler;
use crate::verdict::Verdict;

/// Which share of a suite this machine runs: `K/N` (or `count:K/N`) takes every N-th file
/// from the K-th, in path order; `hash:K/N` takes the files whose name hashes to K, so a
/// file keeps its share when others are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub kind: PartitionKind,
    /// 1-based.
    pub shard: u64,
    pub total: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    Count,
    Hash,
}

impl std::str::FromStr for Partition {
    type Err = String;

    fn from_str(text: &str) -> Result<Partition, String> {
        let (kind, rest) = match text.split_once(':') {
            Some(("count", rest)) => (PartitionKind::Count, rest),
            Some(("hash", rest)) => (PartitionKind::Hash, rest),
            Some((other, _)) => {
                return Err(format!(
                    "`{other}`: a partition is K/N, count:K/N or hash:K/N"
                ));
            }
            None => (PartitionKind::Count, text),
        };
        let bad = || format!("`{text}`: a partition is K/N with 1 <= K <= N");
        let (k, n) = rest.split_once('/').ok_or_else(bad)?;
        let (shard, total): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if shard == 0 || total == 0 || shard > total {
            return Err(bad());
        }
        Ok(Partition { kind, shard, total })
    }
}

/// FNV-1a: a hash that is the same on every machine and every build (std's is not).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Partition {
    /// This share of `files` (already in their stable order). `name` is what a hash
    /// partition hashes: a file's path relative to where the suite was named from.
    pub fn select<T>(&self, files: Vec<T>, name: impl Fn(&T) -> String) -> Vec<T> {
        files
            .into_iter()
            .enumerate()
            .filter(|(i, file)| {
                let slot = match self.kind {
                    PartitionKind::Count => *i as u64,
                    PartitionKind::Hash => stable_hash(&name(file)),
                };
                slot % self.total == self.shard - 1
            })
            .map(|(_, file)| file)
            .collect()
    }
}

/// One scenario of a suite: its file and what became of it.
#[derive(Debug, Serialize)]
pub struct SuiteEntry {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The harness or the infrastructure failed: no verdict on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub error_code: Option<i32>,
    pub elapsed_ms: u64,
}

impl SuiteEntry {
    /// A scenario the harness or the infrastructure failed: no verdict on its target.
    fn failed(file: &std::path::Path, e: &crate::run::RunError, took: Duration) -> SuiteEntry {
        SuiteEntry {
            file: file.display().to_string(),
            verdict: None,
            error: Some(e.to_string()),
            error_code: Some(e.exit_code()),
            elapsed_ms: took.as_millis() as u64,
        }
    }
}

/// A whole suite's outcome.
#[derive(Debug, Serialize)]
pub struct SuiteReport {
    pub verdict: &'static str,
    pub exit_code: i32,
    pub passed: usize,
    pub failed: usize,
    pub inconclusive: usize,
    pub errors: usize,
    /// How many times infrastructure was started: once per distinct `[infra]`.
    pub infrastructure_starts: usize,
    pub elapsed_ms: u64,
    pub scenarios: Vec<SuiteEntry>,
}

impl SuiteReport {
    fn conclude(
        scenarios: Vec<SuiteEntry>,
        starts: usize,
        elapsed: Duration,
        interrupted: bool,
    ) -> Self {
        let code = |e: &SuiteEntry| {
            e.error_code
                .unwrap_or_else(|| e.verdict.as_ref().map_or(exit_codes::OK, |v| v.exit_code()))
        };
        let count = |want: i32| scenarios.iter().filter(|e| code(e) == want).count();
        let (failed, inconclusive) = (
            count(exit_codes::VIOLATION),
            count(exit_codes::INCONCLUSIVE),
        );
        let errors = scenarios.iter().filter(|e| e.error.is_some()).count();
        let passed = count(exit_codes::OK);
        let first_error = scenarios.iter().find_map(|e| e.error_code);
        let (verdict, exit_code) = combined_verdict(failed, first_error, interrupted, inconclusive);
        SuiteReport {
            verdict,
            exit_code,
            passed,
            failed,
            inconclusive,
            errors,
            infrastructure_starts: starts,
            elapsed_ms: elapsed.as_millis() as u64,
            scenarios,
        }
    }
}

/// The verdict of several scenarios and its exit code: any violation, else the first harness
/// or infrastructure error (its own code), else interrupted, else inconclusive, else pass.
pub fn combined_verdict(
    failed: usize,
    first_error: Option<i32>,
    interrupted: bool,
    inconclusive: usize,
) -> (&'static str, i32) {
    if failed > 0 {
        ("VIOLATION", exit_codes::VIOLATION)
    } else if let Some(code) = first_error.filter(|c| *c != exit_codes::INTERRUPTED) {
        ("ERROR", code)
    } else if interrupted || first_error.is_some() {
        ("INTERRUPTED", exit_codes::INTERRUPTED)
    } else if inconclusive > 0 {
        ("INCONCLUSIVE", exit_codes::INCONCLUSIVE)
    } else {
        ("PASS", exit_codes::OK)
    }
}

/// What [`run_suite`] tells its watcher after each scenario.
pub struct SuiteProgress<'a> {
    pub done: usize,
    pub total: usize,
    pub entry: &'a SuiteEntry,
    pub elapsed: Duration,
}

/// Gives `scenario` topic, group and key names no earlier scenario on the same
/// infrastructure used: a suffix `-2`, `-3`, ... on a name already taken.
pub(crate) fn own_names(scenario: &mut Scenario, taken: &mut BTreeSet<String>) {
    let mut claim = |name: &mut String| {
        let mut candidate = name.clone();
        let mut n = 1;
        while taken.contains(&candidate) {
            n += 1;
            candidate = format!("{name}-{n}");
        }
        taken.insert(candidate.clone());
        *name = candidate;
    };
    if let Some(kafka) = &mut scenario.kafka {
        claim(&mut kafka.input_topic);
        claim(&mut kafka.output_topic);
        claim(&mut kafka.group);
    }
    if let Some(redis) = &mut scenario.redis {
        claim(&mut redis.leader_key);
        if let Some(log) = &mut redis.job_log {
            claim(log);
        }
    }
}

/// Scenarios that share one `[infra]`: it, and each scenario with its place in the suite.
type InfraGroup = (crate::infra::InfraConfig, Vec<(usize, PathBuf, Scenario)>);

/// Runs `scenarios` (file, scenario), grouping those with the same `[infra]` on one start of
/// the infrastructure; each scenario's output goes to `out_dir/<n>-<name>`.
pub async fn run_suite(
    scenarios: Vec<(PathBuf, Scenario)>,
    env: &[(String, String)],
    out_dir: &std::path::Path,
    signals: &mut SignalHandler,
    mut progress: impl FnMut(SuiteProgress<'_>),
) -> SuiteReport {
    let begun = Instant::now();
    let total = scenarios.len();
    // Groups keep the suite's order by their first scenario.
    let mut groups: Vec<InfraGroup> = Vec::new();
    for (i, (file, scenario)) in scenarios.into_iter().enumerate() {
        match groups
            .iter_mut()
            .find(|(infra, _)| *infra == scenario.infra)
        {
            Some((_, members)) => members.push((i, file, scenario)),
            None => groups.push((scenario.infra.clone(), vec![(i, file, scenario)])),
        }
    }
    let mut entries: BTreeMap<usize, SuiteEntry> = BTreeMap::new();
    // Keeps a finished scenario's entry and tells the watcher.
    let record = |entries: &mut BTreeMap<usize, SuiteEntry>,
                  i: usize,
                  entry: SuiteEntry,
                  progress: &mut dyn FnMut(SuiteProgress<'_>)| {
        progress(SuiteProgress {
            done: entries.len() + 1,
            total,
            entry: &entry,
            elapsed: begun.elapsed(),
        });
        entries.insert(i, entry);
    };
    let mut starts = 0;
    let mut interrupted = false;
    for (_, members) in groups {
        if interrupted {
            break;
        }
        let first = &members[0].2;
        starts += 1;
        let session = Session::start(first, signals).await;
        let mut session = match session {
            Ok(session) => session,
            Err(e) => {
                interrupted |= e.exit_code() == exit_codes::INTERRUPTED;
                for (i, file, _) in members {
                    let entry = SuiteEntry::failed(&file, &e, Duration::ZERO);
                    record(&mut entries, i, entry, &mut progress);
                }
                continue;
            }
        };
        let mut taken = BTreeSet::new();
        for (i, file, mut scenario) in members {
            if interrupted {
                break;
            }
            own_names(&mut scenario, &mut taken);
            let started = Instant::now();
            let options = RunOptions {
                env: env.to_vec(),
                out_dir: Some(out_dir.join(format!("{:03}-{}", i + 1, scenario.name))),
            };
            let entry = match session.cycle(&scenario, &options, signals).await {
                Ok(cycle) => {
                    interrupted |= cycle.interrupted;
                    SuiteEntry {
                        file: file.display().to_string(),
                        verdict: Some(cycle.verdict),
                        error: None,
                        error_code: None,
                        elapsed_ms: started.elapsed().as_millis() as u64,
                    }
                }
                Err(e) => {
                    interrupted |= e.exit_code() == exit_codes::INTERRUPTED;
                    SuiteEntry::failed(&file, &e, started.elapsed())
                }
            };
            record(&mut entries, i, entry, &mut progress);
        }
        if let Err(e) = session.close(signals).await {
            tracing::warn!(error = %e, "closing a suite's infrastructure");
        }
    }
    SuiteReport::conclude(
        entries.into_values().collect(),
        starts,
        begun.elapsed(),
        interrupted,
    )
}

/// The suite for people: every scenario's summary, then a line per scenario and the total.
pub fn summary(report: &SuiteReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for entry in &report.scenarios {
        match (&entry.verdict, &entry.error) {
            (Some(verdict), _) => out.push_str(&crate::report::summary(verdict)),
            (None, Some(error)) => {
                let _ = writeln!(out, "quiesce run {}: no verdict: {error}", entry.file);
            }
            (None, None) => {}
        }
        out.push('\n');
    }
    let _ = writeln!(out, "suite:");
    for entry in &report.scenarios {
        let word = match (&entry.verdict, &entry.error) {
            (Some(v), _) => v.word(),
            _ => "ERROR",
        };
        let _ = writeln!(
            out,
            "  {word:<12}  {}  ({:.1} s)",
            entry.file,
            entry.elapsed_ms as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "suite verdict: {} ({} scenario(s): {} passed, {} failed, {} inconclusive, {} without a verdict; infrastructure started {} time(s), {:.1} s)",
        report.verdict,
        report.scenarios.len(),
        report.passed,
        report.failed,
        report.inconclusive,
        report.errors,
        report.infrastructure_starts,
        report.elapsed_ms as f64 / 1000.0
    );
    out
}

/// The suite as JUnit XML: a test suite per scenario, a test case per check; a scenario
/// without a verdict is one failing case that says why.
pub fn junit_xml(report: &SuiteReport) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut junit = Report::new("quiesce");
    for entry in &report.scenarios {
        match (&entry.verdict, &entry.error) {
            (Some(verdict), _) => {
                junit.add_test_suite(crate::report::junit_suite(verdict));
            }
            (None, error) => {
                let mut suite = TestSuite::new(entry.file.as_str());
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
                status.set_message(error.clone().unwrap_or_default());
                suite.add_test_case(TestCase::new("infrastructure", status));
                junit.add_test_suite(suite);
            }
        };
    }
    junit.to_string().expect("a report always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partitions_parse_and_bad_ones_are_named() {
        assert_eq!(
            "2/3".parse::<Partition>(),
            Ok(Partition {
                kind: PartitionKind::Count,
                shard: 2,
                total: 3
            })
        );
        assert_eq!(
            "hash:1/2".parse::<Partition>().map(|p| p.kind),
            Ok(PartitionKind::Hash)
        );
        for bad in ["0/3", "4/3", "3", "a/b", "mod:1/2", "1/0"] {
            let err = bad.parse::<Partition>().unwrap_err();
            assert!(err.contains(bad.split(':').next().unwrap()), "{bad}: {err}");
        }
    }

    proptest! {
        /// Every file lands in exactly one share, for any N and either kind: N CI jobs of a
        /// matrix cover the suite exactly once.
        #[test]
        fn every_file_is_in_exactly_one_share(
            files in proptest::collection::btree_set("[a-z]{1,8}/[a-z]{1,8}\\.toml", 0..40),
            total in 1u64..9,
            hash in any::<bool>(),
        ) {
            let files: Vec<String> = files.into_iter().collect();
            let kind = if hash { PartitionKind::Hash } else { PartitionKind::Count };
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            for shard in 1..=total {
                let share = Partition { kind, shard, total }.select(files.clone(), |f| f.clone());
                for file in share {
                    *seen.entry(file).or_default() += 1;
                }
            }
            prop_assert_eq!(seen.len(), files.len());
            prop_assert!(seen.values().all(|n| *n == 1));
        }
    }

    #[test]
    fn names_taken_by_an_earlier_scenario_get_a_suffix() {
        let parse = |text: &str| Scenario::parse(std::path::Path::new("s.toml"), text).unwrap();
        let text =
            "[target]\ncommand = [\"svc\"]\n[kafka]\ninput_topic = \"orders\"\ngroup = \"g\"\n";
        let (mut a, mut b) = (parse(text), parse(text));
        let mut taken = BTreeSet::new();
        own_names(&mut a, &mut taken);
        own_names(&mut b, &mut taken);
        let (a, b) = (a.kafka.unwrap(), b.kafka.unwrap());
        assert_eq!((a.input_topic.as_str(), a.group.as_str()), ("orders", "g"));
        assert_eq!(
            (b.input_topic.as_str(), b.group.as_str()),
            ("orders-2", "g-2")
        );
    }

    #[test]
    fn the_suite_exit_code_ranks_violation_then_error_then_inconclusive() {
        let verdict = |outcome: crate::verdict::Outcome| Verdict {
            scenario: "s".into(),
            target: "t".into(),
            backend: "local".into(),
            results: vec![crate::verdict::CheckResult {
                check: crate::verdict::CheckName::StopsWithin,
                service: None,
                outcome,
            }],
            timeline: Vec::new(),
            interrupted: false,
            target_log: None,
            allowed_inconclusive: Vec::new(),
        };
        let entry = |v: Option<Verdict>, code: Option<i32>| SuiteEntry {
            file: "f".into(),
            verdict: v,
            error: code.map(|_| "broker did not start".to_owned()),
            error_code: code,
            elapsed_ms: 0,
        };
        let pass = || entry(Some(verdict(crate::verdict::Outcome::pass("ok"))), None);
        let unsure = || {
            entry(
                Some(verdict(crate::verdict::Outcome::inconclusive("?"))),
                None,
            )
        };
        let fail = || {
            entry(
                Some(verdict(crate::verdict::Outcome::violation("x", vec![]))),
                None,
            )
        };
        let error = || entry(None, Some(exit_codes::INFRA_FAILED));
        let code = |entries| SuiteReport::conclude(entries, 1, Duration::ZERO, false).exit_code;
        assert_eq!(code(vec![pass(), pass()]), exit_codes::OK);
        assert_eq!(code(vec![pass(), unsure()]), exit_codes::INCONCLUSIVE);
        assert_eq!(code(vec![unsure(), error()]), exit_codes::INFRA_FAILED);
        assert_eq!(code(vec![error(), fail(), unsure()]), exit_codes::VIOLATION);
        let report = SuiteReport::conclude(
            vec![pass(), unsure(), fail(), error()],
            2,
            Duration::ZERO,
            false,
        );
        assert_eq!(
            (
                report.passed,
                report.failed,
                report.inconclusive,
                report.errors
            ),
            (1, 1, 1, 1)
        );
        let text = summary(&report);
        assert!(text.contains("suite verdict: VIOLATION (4 scenario(s): 1 passed, 1 failed, 1 inconclusive, 1 without a verdict; infrastructure started 2 time(s)"), "{text}");
        let xml = junit_xml(&report);
        assert_eq!(xml.matches("<testsuite ").count(), 4, "{xml}");
    }
}
