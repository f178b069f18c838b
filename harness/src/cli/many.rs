//! `quiesce loop` and `quiesce soak` on several scenario files: each in turn, a line per
//! finished scenario with the time left, then one summary, one JSON and JUnit report, and one
//! exit code by the suite's rule (a violation over an error over Ctrl-C over inconclusive).
//! Every file is read before the first starts: a bad one is bad input, and nothing runs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use quick_junit::{Report, TestSuite};
use serde::Serialize;

use super::CliError;
use super::args::*;
use crate::exit_codes;
use crate::suite::Partition;

/// The files a command runs, from its paths and `--partition`; `None` once `--list` has
/// printed them.
pub(super) fn select(
    paths: &[PathBuf],
    partition: Option<Partition>,
    list: bool,
) -> Result<Option<Vec<PathBuf>>, CliError> {
    let mut files = scenario_files(paths)?;
    if let Some(partition) = partition {
        files = partition.select(files, |f| f.display().to_string());
    }
    if list {
        for file in &files {
            println!("{}", file.display());
        }
        return Ok(None);
    }
    Ok(Some(files))
}

/// Whether the paths name one scenario file and no share of a suite: the command then runs
/// and reports as it always has.
fn single(paths: &[PathBuf], partition: Option<Partition>) -> bool {
    paths.len() == 1 && !paths[0].is_dir() && partition.is_none()
}

/// Runs `each` on one scenario as the command always has (its folder from `--out` or a new
/// one named after `name`), or on several in turn ([`each_in_turn`]); writes `JOB.json` in
/// each scenario's folder.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run<T>(
    job: &str,
    paths: &[PathBuf],
    partition: Option<Partition>,
    mut scenarios: Vec<(PathBuf, T)>,
    name: impl Fn(&T) -> String,
    common: &ScenarioArgs,
    mut each: impl AsyncFnMut(T, PathBuf) -> Result<Finished, CliError>,
) -> Result<i32, CliError> {
    if single(paths, partition) && scenarios.len() == 1 {
        let (_, scenario) = scenarios.remove(0);
        let out_dir = common
            .out
            .clone()
            .unwrap_or_else(|| fresh_out_dir(job, &name(&scenario)));
        let finished = each(scenario, out_dir.clone()).await?;
        let json = serde_json::to_string_pretty(&finished.json).unwrap_or_default();
        write_file(&out_dir.join(format!("{job}.json")), &json)?;
        let mut junit = Report::new("quiesce");
        junit.add_test_suite(finished.junit);
        emit(common, &finished.summary, &json, || {
            junit.to_string().expect("a report always serializes")
        })?;
        return Ok(finished.exit_code);
    }
    let out_dir = common
        .out
        .clone()
        .unwrap_or_else(|| fresh_out_dir(job, "suite"));
    each_in_turn(job, scenarios, common, out_dir, each).await
}

/// What became of one scenario of several.
pub(super) struct Finished {
    pub(super) word: &'static str,
    pub(super) exit_code: i32,
    /// Its own terminal summary.
    pub(super) summary: String,
    /// Its own JSON report.
    pub(super) json: serde_json::Value,
    pub(super) junit: TestSuite,
}

#[derive(Serialize)]
struct Entry {
    file: String,
    verdict: &'static str,
    exit_code: i32,
    elapsed_ms: u64,
    report: serde_json::Value,
}

#[derive(Serialize)]
struct Combined {
    verdict: &'static str,
    exit_code: i32,
    elapsed_ms: u64,
    scenarios: Vec<Entry>,
}

/// Runs `each` on every file in turn (its own folder under `out_dir`), stops starting new
/// ones after Ctrl-C or a harness error, and reports them together. `job` is `loop` or `soak`.
async fn each_in_turn<T>(
    job: &str,
    scenarios: Vec<(PathBuf, T)>,
    common: &ScenarioArgs,
    out_dir: PathBuf,
    mut each: impl AsyncFnMut(T, PathBuf) -> Result<Finished, CliError>,
) -> Result<i32, CliError> {
    let total = scenarios.len();
    eprintln!(
        "quiesce {job}: {total} scenario(s), one after another; reports in {}",
        out_dir.display()
    );
    std::fs::create_dir_all(&out_dir).map_err(|source| CliError::Write {
        path: out_dir.clone(),
        source,
    })?;
    let begun = Instant::now();
    let mut done: Vec<(String, u64, Result<Finished, CliError>)> = Vec::new();
    for (i, (file, scenario)) in scenarios.into_iter().enumerate() {
        let stem = file
            .file_stem()
            .map_or("scenario".into(), |s| s.to_string_lossy());
        let dir = out_dir.join(format!("{:02}-{stem}", i + 1));
        let started = Instant::now();
        let outcome = match each(scenario, dir.clone()).await {
            Ok(f) => {
                let json = serde_json::to_string_pretty(&f.json).unwrap_or_default();
                write_file(&dir.join(format!("{job}.json")), &json).map(|()| f)
            }
            Err(e) => Err(e),
        };
        let took = started.elapsed();
        let (word, error) = match &outcome {
            Ok(f) => (f.word, String::new()),
            Err(e) => ("ERROR", format!(": {e}")),
        };
        // Time left, from the scenarios done so far.
        let left = begun.elapsed().as_secs_f64() / (i + 1) as f64 * (total - i - 1) as f64;
        eprintln!(
            "[{}/{total}] {word:<12} {} ({:.1} s; about {left:.0} s left){error}",
            i + 1,
            file.display(),
            took.as_secs_f64()
        );
        let stop = match &outcome {
            Ok(f) => f.exit_code == exit_codes::INTERRUPTED,
            Err(_) => true,
        };
        done.push((file.display().to_string(), took.as_millis() as u64, outcome));
        if stop {
            break;
        }
    }
    report(job, total, done, common, &out_dir, begun.elapsed())
}

/// One summary, JSON and JUnit report of everything done, and the exit code.
fn report(
    job: &str,
    total: usize,
    done: Vec<(String, u64, Result<Finished, CliError>)>,
    common: &ScenarioArgs,
    out_dir: &std::path::Path,
    elapsed: Duration,
) -> Result<i32, CliError> {
    let count = |code: i32| {
        done.iter()
            .filter(|(_, _, r)| r.as_ref().is_ok_and(|f| f.exit_code == code))
            .count()
    };
    let first_error = done.iter().find_map(|(_, _, r)| match r {
        Ok(f) if f.exit_code == exit_codes::INTERRUPTED => Some(f.exit_code),
        Ok(_) => None,
        Err(e) => Some(e.exit_code()),
    });
    let (failed, inconclusive) = (
        count(exit_codes::VIOLATION),
        count(exit_codes::INCONCLUSIVE),
    );
    let passed = count(exit_codes::OK);
    let (verdict, exit_code) =
        crate::suite::combined_verdict(failed, first_error, false, inconclusive);
    let mut summary = String::new();
    let mut lines = Vec::new();
    let mut junit = Report::new("quiesce");
    let mut entries = Vec::new();
    for (file, ms, outcome) in done {
        let (word, code) = match &outcome {
            Ok(f) => (f.word, f.exit_code),
            Err(e) => ("ERROR", e.exit_code()),
        };
        lines.push(format!(
            "  {word:<12}  {file}  ({:.1} s)",
            ms as f64 / 1000.0
        ));
        match outcome {
            Ok(f) => {
                summary.push_str(&f.summary);
                junit.add_test_suite(f.junit);
                entries.push(Entry {
                    file,
                    verdict: word,
                    exit_code: code,
                    elapsed_ms: ms,
                    report: f.json,
                });
            }
            Err(e) => {
                summary.push_str(&format!("quiesce {job} {file}: no verdict: {e}\n"));
                let mut suite = TestSuite::new(file.as_str());
                let mut status =
                    quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Error);
                status.set_message(e.to_string());
                suite.add_test_case(quick_junit::TestCase::new("harness", status));
                junit.add_test_suite(suite);
                entries.push(Entry {
                    file,
                    verdict: word,
                    exit_code: code,
                    elapsed_ms: ms,
                    report: serde_json::Value::String(e.to_string()),
                });
            }
        }
        summary.push('\n');
    }
    let ran = entries.len();
    summary.push_str(&format!("{job}s:\n{}\n", lines.join("\n")));
    summary.push_str(&format!(
        "{job} verdict: {verdict} ({ran} of {total} scenario(s) run: {passed} passed, {failed} failed, {inconclusive} inconclusive; {:.1} s)\n",
        elapsed.as_secs_f64()
    ));
    let combined = Combined {
        verdict,
        exit_code,
        elapsed_ms: elapsed.as_millis() as u64,
        scenarios: entries,
    };
    let json = serde_json::to_string_pretty(&combined).unwrap_or_default();
    write_file(&out_dir.join(format!("{job}s.json")), &json)?;
    emit(common, &summary, &json, || {
        junit.to_string().expect("a report always serializes")
    })?;
    Ok(exit_code)
}

/// [`run`] with each scenario on its [`Sessions`] session: `each` gets the session, the
/// scenario as renamed for it, its folder and the command's signal handler. Every
/// infrastructure started is stopped at the end.
pub(super) async fn run_on_sessions(
    job: &str,
    paths: &[PathBuf],
    partition: Option<Partition>,
    scenarios: Vec<(PathBuf, crate::scenario::Scenario)>,
    common: &ScenarioArgs,
    mut each: impl AsyncFnMut(
        &mut crate::run::Session,
        &crate::scenario::Scenario,
        PathBuf,
        &mut crate::signal::SignalHandler,
    ) -> Result<Finished, CliError>,
) -> Result<i32, CliError> {
    // One start of each distinct [infra], kept from one scenario to the next.
    let shared = tokio::sync::Mutex::new((Sessions::default(), signal_handler()?));
    let name = |s: &crate::scenario::Scenario| s.name.clone();
    let done = run(
        job,
        paths,
        partition,
        scenarios,
        name,
        common,
        async |mut scenario, dir| {
            let (sessions, signals) = &mut *shared.lock().await;
            let session = sessions.for_scenario(&mut scenario, signals).await?;
            each(session, &scenario, dir, signals).await
        },
    )
    .await;
    let (sessions, mut signals) = shared.into_inner();
    if !single(paths, partition) {
        eprintln!(
            "quiesce {job}: infrastructure started {} time(s)",
            sessions.count()
        );
    }
    sessions.close(&mut signals).await;
    done
}

/// The infrastructure of several scenarios run one after another: started once per distinct
/// `[infra]` and kept for every later scenario that asks for the same one, each of which gets
/// topic, group and key names no earlier one on it used (as a suite's do). Closed at the end.
#[derive(Default)]
pub(super) struct Sessions {
    started: Vec<(
        crate::infra::InfraConfig,
        crate::run::Session,
        BTreeSet<String>,
    )>,
}

impl Sessions {
    /// The session for `scenario`'s `[infra]`, started if none is; renames what `scenario`
    /// would share with an earlier scenario on it.
    pub(super) async fn for_scenario(
        &mut self,
        scenario: &mut crate::scenario::Scenario,
        signals: &mut crate::signal::SignalHandler,
    ) -> Result<&mut crate::run::Session, crate::run::RunError> {
        let at = match self
            .started
            .iter()
            .position(|(c, _, _)| *c == scenario.infra)
        {
            Some(at) => at,
            None => {
                let session = crate::run::Session::start(scenario, signals).await?;
                self.started
                    .push((scenario.infra.clone(), session, BTreeSet::new()));
                self.started.len() - 1
            }
        };
        let (_, session, taken) = &mut self.started[at];
        crate::suite::own_names(scenario, taken);
        Ok(session)
    }

    /// How many infrastructures were started.
    pub(super) fn count(&self) -> usize {
        self.started.len()
    }

    /// Stops every infrastructure started; a failure to stop one is said, and the rest are
    /// still stopped.
    pub(super) async fn close(self, signals: &mut crate::signal::SignalHandler) {
        for (_, session, _) in self.started {
            if let Err(e) = session.close(signals).await {
                eprintln!("quiesce: stopping an infrastructure: {e}");
            }
        }
    }
}
