//! `scenarios/examples/orders`: a confluent-kafka service written the ordinary way (its own
//! variable names, its own JSON in and out, no probe, no output contract) gets exact verdicts:
//! its correct form passes, and each of its real mistakes fails the check it breaks, whichever
//! way the harness learns what it processed (a JSON pointer, the key, a header, its log).
//! Its scheduler, `settle.py` (redis-py's `Lock`, a log line per job run), likewise: the lock's
//! value is learnt from the wire and the job runs from the log.

use std::path::{Path, PathBuf};

use quiesce::infra::BackendKind;
use quiesce::scenario::{ProcessedBy, Scenario};
use quiesce::verdict::CheckName;

use crate::util::judge_on_containers;

use CheckName::*;

/// What the service cannot report without a probe, accepted in its file.
const UNDECIDED: &[CheckName] = &[NoLeakedThreads, ProducerFlushed];

fn file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/examples/orders/orders.toml")
}

/// confluent-kafka and redis-py, where scripts/setup installs them: the service imports them as
/// any service imports its dependencies.
fn python_path() -> String {
    let cache = quiesce::infra::cache_dir();
    format!(
        "{}:{}",
        cache.join("python-conformance").display(),
        cache.join("python").display()
    )
}

/// `scenarios/examples/<path>` on the local backend.
fn local(path: &str) -> Scenario {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/examples")
        .join(path);
    let mut scenario = Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
    scenario.infra.backend = BackendKind::Local;
    scenario
}

/// The file on the local backend, with `processed` (its own when `None`).
fn scenario(processed: Option<ProcessedBy>) -> Scenario {
    let mut scenario = local("orders/orders.toml");
    if let (Some(processed), Some(kafka)) = (processed, scenario.kafka.as_mut()) {
        kafka.processed = processed;
    }
    scenario
}

/// Runs the file with `processed` (its own when `None`) and `ORDERS_BUG=bug`; asserts the exact
/// verdict, with `unsure` undecided besides [`UNDECIDED`]. Returns the report.
async fn check(
    processed: Option<ProcessedBy>,
    bug: &str,
    failing: &[CheckName],
    unsure: &[CheckName],
) -> String {
    check_scenario(&scenario(processed), bug, failing, unsure).await
}

async fn check_scenario(
    scenario: &Scenario,
    bug: &str,
    failing: &[CheckName],
    unsure: &[CheckName],
) -> String {
    let undecided: Vec<CheckName> = UNDECIDED.iter().chain(unsure).copied().collect();
    verdict(scenario, ("ORDERS_BUG", bug), failing, &undecided).await
}

/// Runs `scenario` with the variable `bug` names set, and asserts the exact verdict.
async fn verdict(
    scenario: &Scenario,
    bug: (&str, &str),
    failing: &[CheckName],
    undecided: &[CheckName],
) -> String {
    let path = python_path();
    let checked =
        quiesce::catalogue::check(scenario, &[bug, ("PYTHONPATH", &path)], failing, undecided)
            .await
            .unwrap_or_else(|e| panic!("{bug:?}: no verdict: {e}"));
    assert_eq!(
        checked.got, checked.want,
        "{} / {bug:?}: wrong verdict (are confluent-kafka and redis-py installed? run \
         scripts/setup)\n{}",
        scenario.name, checked.report
    );
    checked.report
}

/// audit.toml on the local backend, run with `AUDIT_BUG=bug`: the exact verdict. kafka-python,
/// a third client library; what was processed, from the service's log alone.
async fn audit(bug: &str, failing: &[CheckName]) -> String {
    verdict(
        &local("audit/audit.toml"),
        ("AUDIT_BUG", bug),
        failing,
        UNDECIDED,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_python_service_passes_as_it_is() {
    let report = audit("", &[]).await;
    assert!(
        report.contains("(kafka-python-"),
        "the member's library is named:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_python_exit_without_close_fails_group_left() {
    audit("exit-without-close", &[GroupLeft]).await;
}

/// kafka-python's auto-commit commits the position, the whole batch polled: a close in the
/// middle of a batch commits payments never audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_mid_batch_loses_payments() {
    let report = audit("autocommit-mid-batch", &[OffsetsCommitted, NoMessageLoss]).await;
    assert!(report.contains("were never processed"), "{report}");
}

/// settle.toml on the local backend, run with `SETTLE_BUG=bug`: the exact verdict.
async fn settle(bug: &str, failing: &[CheckName]) -> String {
    let scenario = local("orders/settle.toml");
    verdict(&scenario, ("SETTLE_BUG", bug), failing, &[NoLeakedThreads]).await
}

/// redis-py's `Lock` holds a random token: the harness learns it from the service's `SET` on
/// the wire, sees it deleted at the stop and the replica's token take its place, and reads
/// every job run from the service's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_passes_as_it_is() {
    let report = settle("", &[]).await;
    assert!(
        report.contains("the target's `SET` of the key, which the server took")
            && report.contains("the standby took over"),
        "the lock's evidence names how its value was learnt:\n{report}"
    );
    assert!(
        report.contains("from lines matching `settle: ran"),
        "{report}"
    );
}

/// Exits without `release()`: the replica waits out the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_left_to_expire_fails_lock_released() {
    let report = settle("lock-left-to-expire", &[LockReleased]).await;
    assert!(
        report.contains("expired instead of being released"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_scheduled_twice_fails_once_per_interval() {
    settle("registered-twice", &[JobsOncePerInterval]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_service_passes_as_it_is() {
    let report = check(None, "", &[], &[]).await;
    assert!(
        report.contains(
            "processed: output records in `shipments` holding their input's key at `/order_id`"
        ),
        "the evidence names its source:\n{report}"
    );
}

/// `os._exit` after the final commit: the consumer never leaves its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_without_close_fails_group_left() {
    check(None, "exit-without-close", &[GroupLeft], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_final_commit_fails_offsets_and_redelivery() {
    check(
        None,
        "no-final-commit",
        &[OffsetsCommitted, NoRedelivery],
        &[],
    )
    .await;
}

/// Commits, closes, never flushes: the shipments it queued die with it, their orders committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unflushed_producer_loses_committed_orders() {
    check(None, "no-flush", &[OffsetsCommitted, NoMessageLoss], &[]).await;
}

/// The same shipments matched by their record key, and by their `order-id` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_header_find_the_same_verdicts() {
    for processed in [
        ProcessedBy::Key {},
        ProcessedBy::Header {
            name: "order-id".to_owned(),
        },
    ] {
        let report = check(Some(processed.clone()), "", &[], &[]).await;
        assert!(
            report.contains(&processed.describe("shipments")),
            "{processed:?}:\n{report}"
        );
        check(
            Some(processed),
            "no-flush",
            &[OffsetsCommitted, NoMessageLoss],
            &[],
        )
        .await;
    }
}

/// Its `shipped order <id>` lines: no topic is read, so the producer's flush cannot be judged
/// (and a lost shipment after its line is not seen: the log says what the service says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_evidence_of_processing() {
    let log = ProcessedBy::Log {
        pattern: r"^shipped order (?<key>\S+)$".to_owned(),
    };
    let report = check(Some(log.clone()), "", &[], &[]).await;
    assert!(
        report.contains("processed: lines of the target's output"),
        "{report}"
    );
    check(
        Some(log),
        "no-final-commit",
        &[OffsetsCommitted, NoRedelivery],
        &[],
    )
    .await;
}

/// Hostile: shipments that name no order of the run (the pointer is wrong, or the service keys
/// its outputs its own way) are not evidence of anything: the run processed nothing, and the
/// evidence shows what was found instead. (Nothing counts toward the mid-stream stop: it comes
/// at `[stop] after_ms`, shortened here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_name_no_input_are_no_evidence() {
    let misled = |processed| {
        let mut scenario = scenario(Some(processed));
        scenario.stop.after_ms = 8_000;
        scenario
    };
    let wrong = ProcessedBy::JsonPointer {
        pointer: "/id".to_owned(),
    };
    let report = check_scenario(
        &misled(wrong),
        "",
        &[OffsetsCommitted, NoMessageLoss],
        &[NoRedelivery],
    )
    .await;
    assert!(
        report.contains("named no input of this run") && report.contains("nothing at `/id`"),
        "{report}"
    );
    let unrelated = ProcessedBy::Log {
        pattern: r"^orders: consuming (\S+)".to_owned(),
    };
    let report = check_scenario(
        &misled(unrelated),
        "",
        &[OffsetsCommitted, NoMessageLoss],
        &[NoRedelivery],
    )
    .await;
    assert!(report.contains("is no input of this run"), "{report}");
}

/// `file` on the containers backend, its Python services finding their clients.
fn on_containers(file: &Path) -> crate::util::Judged {
    let path = python_path();
    judge_on_containers(file, &[("PYTHONPATH", &path)])
}

/// The file as it is, on the containers backend.
#[test]
fn the_correct_service_passes_on_the_containers_backend() {
    let judged = on_containers(&file());
    assert_eq!(judged.code, 0, "{}", judged.output);
    for check in [
        "offsets_committed",
        "no_message_loss",
        "no_redelivery",
        "group_left",
    ] {
        assert_eq!(judged.outcome(check), "pass", "{check}: {}", judged.output);
    }
}

/// settle.toml as it is, on the containers backend: Redis in a container, the lock's values
/// still learnt on the wire.
#[test]
fn the_scheduler_passes_on_the_containers_backend() {
    let judged = on_containers(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/examples/orders/settle.toml"),
    );
    assert_eq!(judged.code, 0, "{}", judged.output);
    for check in ["lock_released", "single_leader", "jobs_once_per_interval"] {
        assert_eq!(judged.outcome(check), "pass", "{check}: {}", judged.output);
    }
    assert!(
        judged.output.contains("which the server took"),
        "{}",
        judged.output
    );
}
