//! Helpers for a service's catalogue of variants: pick a variant by name, run its process
//! until a signal, and check that each variant gets exactly its verdict. The reference
//! scenarios use them; so can a team's own service.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::repeat::{LoopOptions, LoopReport};
use crate::run::{RunOptions, run};
use crate::scenario::Scenario;
use crate::signal::SignalHandler;
use crate::verdict::{CheckName, expected_marks};

/// The variant named `name` among `all` (`QUIESCE_VARIANT`), or an error naming the valid ones.
///
/// ```
/// let all = ["correct", "leaky"];
/// assert_eq!(quiesce::catalogue::pick(&all, |v| v, "leaky"), Ok("leaky"));
/// assert!(quiesce::catalogue::pick(&all, |v| v, "slow").unwrap_err().contains("correct, leaky"));
/// ```
pub fn pick<V: Copy>(
    all: &[V],
    name_of: impl Fn(V) -> &'static str,
    name: &str,
) -> Result<V, String> {
    all.iter()
        .copied()
        .find(|v| name_of(*v) == name)
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|v| name_of(*v)).collect();
            format!(
                "QUIESCE_VARIANT `{name}` is not a variant (expected one of: {})",
                names.join(", ")
            )
        })
}

/// Declares a catalogue's variant enum: each variant with its `QUIESCE_VARIANT` name, plus
/// `ALL`, `as_str`, `Display`, and `FromStr` through [`pick`] (an unknown name is an error
/// naming the valid ones).
///
/// ```
/// quiesce::variants! {
///     /// How the service behaves.
///     pub enum Variant {
///         /// Everything right.
///         Correct => "correct",
///         /// A task that outlives shutdown.
///         Leaky => "leaky",
///     }
/// }
/// assert_eq!("leaky".parse::<Variant>(), Ok(Variant::Leaky));
/// assert_eq!(Variant::ALL, [Variant::Correct, Variant::Leaky]);
/// assert_eq!(Variant::Correct.to_string(), "correct");
/// assert!("slow".parse::<Variant>().unwrap_err().contains("correct, leaky"));
/// ```
#[macro_export]
macro_rules! variants {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, by its `QUIESCE_VARIANT` name.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// Its `QUIESCE_VARIANT` name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::catalogue::pick(&$name::ALL, $name::as_str, s)
            }
        }
    };
}

/// One `#[tokio::test]` per catalogue row, each awaiting `$check` with the row's arguments,
/// so a test runner runs the rows side by side and names each failing one.
///
/// ```ignore
/// async fn check_row(variant: &str, graph: bool) { /* run it, assert its verdict */ }
///
/// quiesce::row_tests!(check_row {
///     correct => ("correct", false),
///     heartbeat_leak => ("heartbeat-leak", false),
/// });
/// ```
#[macro_export]
macro_rules! row_tests {
    ($check:ident { $( $name:ident => ( $($arg:expr),* $(,)? ) ),+ $(,)? }) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $check($($arg),*).await;
            }
        )+
    };
}

/// Runs a service's `main` body: `service` gets one shutdown token, cancelled by SIGTERM or
/// SIGINT (the signals do nothing else), and runs until it has stopped.
pub async fn until_signal<F, Fut>(service: F) -> Result<(), String>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => return Err(format!("cannot listen for signals: {e}")),
    };
    let shutdown = CancellationToken::new();
    let running = service(shutdown.clone());
    tokio::pin!(running);
    tokio::select! {
        result = &mut running => result,
        _ = term.recv() => { shutdown.cancel(); running.await }
        _ = int.recv() => { shutdown.cancel(); running.await }
    }
}

/// A catalogue service's `main` as a process: its configuration (an error ends it with exit
/// code 2), the service until SIGTERM or SIGINT (see [`until_signal`]), then the probe's
/// report of what was still alive, and exit code 1 if the service failed. Start `probe`
/// first thing in `main`, before anything spawns.
pub async fn serve<C, F, Fut>(
    name: &str,
    probe: quiesce_probe::Probe,
    config: Result<C, String>,
    service: F,
) -> std::process::ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    use std::process::ExitCode;
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let result = until_signal(|shutdown| service(config, shutdown)).await;
    probe.report().await;
    match result {
        Ok(()) => {
            println!("{name}: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(1)
        }
    }
}

/// How many times an opt-in repetition runs a catalogue: `QUIESCE_REPEAT`, default 20.
pub fn repetitions() -> usize {
    std::env::var("QUIESCE_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// The bookkeeping of a catalogue repeated [`repetitions`] times, as each reference crate's
/// opt-in `catalogue_repeated` test keeps it: the runs, each row's stop times, a line per
/// round, and the spread of the stop times at the end.
pub struct Repeated {
    times: usize,
    started: std::time::Instant,
    stops: std::collections::BTreeMap<String, Vec<u64>>,
    runs: usize,
}

impl Default for Repeated {
    fn default() -> Self {
        Repeated {
            times: repetitions(),
            started: std::time::Instant::now(),
            stops: Default::default(),
            runs: 0,
        }
    }
}

impl Repeated {
    /// The rounds to run: `1..=QUIESCE_REPEAT`.
    pub fn rounds(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.times
    }

    /// One run of `row` (its stop time, when it had one); a graph row is named so.
    pub fn ran(&mut self, row: &str, graph: bool, stop_ms: Option<u64>) {
        self.runs += 1;
        if let Some(ms) = stop_ms {
            let as_graph = if graph { " (graph)" } else { "" };
            self.stops
                .entry(format!("{row}{as_graph}"))
                .or_default()
                .push(ms);
        }
    }

    /// `n` runs with no stop time to keep.
    pub fn ran_more(&mut self, n: usize) {
        self.runs += n;
    }

    /// Says that round `round` ended with every row exact.
    pub fn round_done(&self, round: usize) {
        eprintln!(
            "round {round}/{}: every row exact ({} s so far)",
            self.times,
            self.started.elapsed().as_secs()
        );
    }

    /// The stop times' spread per row, and the totals (`more`: what the crate adds).
    pub fn finish(mut self, more: &str) {
        for (row, ms) in &mut self.stops {
            eprintln!("stop time, {row}: {}", spread(ms));
        }
        eprintln!(
            "{} rounds, {} runs, 0 mismatches{more}",
            self.times, self.runs
        );
    }
}

/// Whether `variant` is among those `QUIESCE_VARIANTS` (comma-separated) selects for an
/// opt-in repetition; all are, without it.
pub fn selected(variant: &str) -> bool {
    std::env::var("QUIESCE_VARIANTS")
        .map_or(true, |list| list.split(',').any(|v| v.trim() == variant))
}

/// One variant's run, as a catalogue test sees it.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The verdict's marks ([`crate::verdict::Verdict::marks`]).
    pub got: String,
    /// The marks expected.
    pub want: String,
    /// The terminal report, for a failure message.
    pub report: String,
    /// From the stop request to the target gone, in ms, read off the timeline.
    pub stop_ms: Option<u64>,
}

/// Runs `scenario` with `env` (`QUIESCE_VARIANT=…` and the like) and returns its marks, the
/// marks expected when exactly `failing` fail and `unsure` are inconclusive, and the rest of
/// [`Checked`]. A run with no verdict is an `Err`.
pub async fn check(
    scenario: &Scenario,
    env: &[(&str, &str)],
    failing: &[CheckName],
    unsure: &[CheckName],
) -> Result<Checked, String> {
    let options = RunOptions {
        env: owned(env),
        out_dir: None,
    };
    let verdict = run(scenario, &options, &mut SignalHandler::noop())
        .await
        .map_err(|e| e.to_string())?;
    let at = |prefixes: &[&str], after: u64| {
        verdict
            .timeline
            .iter()
            .find(|e| e.at_ms >= after && prefixes.iter().any(|p| e.event.starts_with(p)))
            .map(|e| e.at_ms)
    };
    let stop_ms = at(&["sent SIG", "cancelled the shutdown token"], 0)
        .and_then(|sent| Some(at(&["exited", "returned"], sent)? - sent));
    Ok(Checked {
        got: verdict.marks(),
        want: expected_marks(scenario.enabled_checks(), failing, unsure),
        report: crate::report::summary(&verdict),
        stop_ms,
    })
}

/// Loops `scenario` with `env` for `cycles` cycles on infrastructure started once, keeping
/// every cycle's folder. A loop that could not run is an `Err`.
pub async fn run_loop(
    scenario: &Scenario,
    env: &[(&str, &str)],
    cycles: u64,
) -> Result<LoopReport, String> {
    let out = tempfile::Builder::new()
        .prefix("quiesce-loop-")
        .tempdir()
        .map_err(|e| format!("a folder for the loop: {e}"))?
        .keep();
    let options = LoopOptions {
        env: owned(env),
        out_dir: out,
        cycles,
        duration: None,
        until_failure: false,
        keep_passing: false,
    };
    crate::repeat::run_loop(scenario, &options, &mut SignalHandler::noop(), |_| {})
        .await
        .map_err(|e| e.to_string())
}

/// Loops a variant for `cycles` cycles and checks that every cycle gets the verdict
/// `quiesce run` gives it: exactly `failing` fail and `unsure` are inconclusive. `Err` names
/// each cycle that did not, with its evidence, or why no loop ran.
pub async fn check_loop(
    scenario: &Scenario,
    env: &[(&str, &str)],
    failing: &[CheckName],
    unsure: &[CheckName],
    cycles: u64,
) -> Result<LoopReport, String> {
    let report = run_loop(scenario, env, cycles).await?;
    if report.cycles != cycles {
        return Err(format!(
            "{} of {cycles} cycles ran\n{}",
            report.cycles,
            crate::repeat::summary(&report)
        ));
    }
    let wrong = loop_mismatches(&report, failing, unsure);
    if !wrong.is_empty() {
        return Err(wrong.join("\n"));
    }
    Ok(report)
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The cycles of `report` whose failing or inconclusive checks are not exactly `failing` and
/// `unsure` (what `quiesce run` gives the variant), one line each with the cycle's evidence;
/// empty when every cycle got the run's verdict.
pub fn loop_mismatches(
    report: &LoopReport,
    failing: &[CheckName],
    unsure: &[CheckName],
) -> Vec<String> {
    let sorted = |checks: &[CheckName]| {
        let mut v = checks.to_vec();
        v.sort();
        v
    };
    let (failing, unsure) = (sorted(failing), sorted(unsure));
    report
        .all
        .iter()
        .filter(|c| sorted(&c.failed_checks) != failing || sorted(&c.inconclusive_checks) != unsure)
        .map(|c| {
            format!(
                "cycle {}: failed {:?}, inconclusive {:?} (want {failing:?}, {unsure:?})\n{}",
                c.cycle,
                c.failed_checks,
                c.inconclusive_checks,
                c.evidence.join("\n")
            )
        })
        .collect()
}

/// `median / p99 / max` of `ms`, for a closing line.
pub fn spread(ms: &mut [u64]) -> String {
    if ms.is_empty() {
        return "no samples".to_owned();
    }
    ms.sort_unstable();
    let pick = |q: f64| crate::repeat::nearest_rank(ms, q).unwrap_or_default();
    format!(
        "median {} ms, p99 {} ms, max {} ms over {} runs",
        pick(0.5),
        pick(0.99),
        ms[ms.len() - 1],
        ms.len()
    )
}
