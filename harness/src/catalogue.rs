//! Helpers for a service's catalogue of variants: pick a variant by name, run its process
//! until a signal, and check that each variant gets exactly its verdict. The reference
//! scenarios use them; so can a team's own service.

use std::future::Future;

use tokio_util::sync::CancellationToken;

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

/// How many times an opt-in repetition runs a catalogue: `QUIESCE_REPEAT`, default 20.
pub fn repetitions() -> usize {
    std::env::var("QUIESCE_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Runs `scenario` with `env` (`QUIESCE_VARIANT=…` and the like) and returns the verdict's
/// marks, the marks expected when exactly `failing` fail and `unsure` are inconclusive, and
/// the report for a failure message. A run with no verdict is an `Err`.
pub async fn marks(
    scenario: &Scenario,
    env: &[(&str, &str)],
    failing: &[CheckName],
    unsure: &[CheckName],
) -> Result<(String, String, String), String> {
    let options = RunOptions {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        out_dir: None,
    };
    let verdict = run(scenario, &options, &mut SignalHandler::noop())
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        verdict.marks(),
        expected_marks(scenario.enabled_checks(), failing, unsure),
        crate::report::summary(&verdict),
    ))
}
