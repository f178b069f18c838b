//! The ledger service judged by quiesce from its own crate, as a team would: a scenario built
//! in Rust (no file), the binary as it is, its settings from placeholders, its payments from a
//! template, and what it booked matched by the record key its entries keep.

use quiesce::infra::{BackendKind, InfraConfig};
use quiesce::run::RunOptions;
use quiesce::scenario::{ChecksConfig, KafkaWorkload, ProcessedBy, ReadyProbe, Scenario};
use quiesce::signal::SignalHandler;
use quiesce::verdict::{CheckName, Outcome};

use CheckName::*;

fn scenario() -> Scenario {
    let checks = ChecksConfig {
        // Nothing in the service reports its threads or its outputs sent: accepted, in writing.
        allow_inconclusive: vec![NoLeakedThreads, ProducerFlushed],
        ..ChecksConfig::default()
    };
    Scenario::builder("ledger", [env!("CARGO_BIN_EXE_ledger")])
        .infra(InfraConfig {
            backend: BackendKind::Local,
            ..InfraConfig::default()
        })
        .env("BROKERS", "{kafka}")
        .env("PAYMENTS_TOPIC", "{input_topic}")
        .env("LEDGER_TOPIC", "{output_topic}")
        .env("CONSUMER_GROUP", "{group}")
        .ready(ReadyProbe::Log("^ledger: consuming".to_owned()))
        .run_for_ms(60_000)
        .kafka(KafkaWorkload {
            input_topic: "payments".to_owned(),
            output_topic: "ledger".to_owned(),
            group: "ledger".to_owned(),
            // A steady stream: the stop (after 500 entries) lands with payments still coming.
            rate: 200,
            input_value: r#"{{"payment_id": "{key}", "cents": {seq}}}"#.to_owned(),
            processed: ProcessedBy::Key {},
            ..KafkaWorkload::default()
        })
        .checks(checks)
        .build()
        .expect("a valid scenario")
}

/// The checks that failed, and those left undecided, with `LEDGER_BUG=bug`.
async fn verdict(bug: &str) -> (Vec<CheckName>, Vec<CheckName>, String) {
    let options = RunOptions {
        env: vec![("LEDGER_BUG".to_owned(), bug.to_owned())],
        out_dir: None,
    };
    let verdict = quiesce::run::run(&scenario(), &options, &mut SignalHandler::noop())
        .await
        .expect("a verdict");
    let mut report = quiesce::report::summary(&verdict);
    for event in &verdict.timeline {
        report.push_str(&format!("\n{:>6} ms  {}", event.at_ms, event.event));
    }
    let named = |want: fn(&Outcome) -> bool| {
        verdict
            .results
            .iter()
            .filter(|r| want(&r.outcome))
            .map(|r| r.check)
            .collect::<Vec<_>>()
    };
    (
        named(Outcome::is_violation),
        named(|o| matches!(o, Outcome::Inconclusive { .. })),
        report,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_passes_as_it_is() {
    let (failed, undecided, report) = verdict("").await;
    assert!(failed.is_empty(), "{report}");
    assert_eq!(undecided, [NoLeakedThreads, ProducerFlushed], "{report}");
    assert!(report.contains("keyed by their input's key"), "{report}");
}

/// Its partitions stay with the member that never left until its session times out (45 s,
/// rdkafka's default): the restart is given that long, and consumes them then. Late is not
/// lost: only `group_left` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_without_close_fails_group_left() {
    let (failed, _, report) = verdict("exit-without-close").await;
    assert_eq!(failed, [GroupLeft], "{report}");
    assert!(
        report.contains("its partitions wait out its session timeout (45000 ms)"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_final_commit_fails_offsets_and_redelivery() {
    let (failed, _, report) = verdict("no-final-commit").await;
    assert_eq!(failed, [OffsetsCommitted, NoRedelivery], "{report}");
}
