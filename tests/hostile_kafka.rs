//! Hostile targets (Kafka): programs built to fool the Kafka judges, run for real, each with
//! the verdict it must get (scenarios/hostile/HOSTILE.md lists them all). None may PASS.

use quiesce::exit_codes;

use crate::util::*;

/// The event pipeline's binary, beside the quiesce binary the tests run.
fn event_pipeline() -> String {
    workspace_bin("event-pipeline")
}

fn judge(file: &str) -> Judged {
    let bin = event_pipeline();
    judge_hostile(
        file,
        &["--backend", "local"],
        &[("EVENT_PIPELINE_BIN", bin.as_str())],
    )
}

#[test]
fn an_idle_process_under_kafka_fails_the_kafka_checks() {
    let judged = judge("kafka-idle.toml");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("offsets_committed"),
        "violation",
        "{}",
        judged.output
    );
    assert_eq!(
        judged.outcome("no_message_loss"),
        "violation",
        "{}",
        judged.output
    );
    assert_ne!(judged.outcome("no_redelivery"), "pass", "{}", judged.output);
}

/// Outputs (or log lines) for every input key a target could guess, and a commit of the input
/// topic's end, from a target that read nothing: no key of the run can be guessed, so nothing
/// it wrote names an input, and the checks fail with what it wrote.
#[test]
fn outputs_for_guessed_keys_are_no_evidence() {
    let path = quiesce::infra::cache_dir().join("python-conformance");
    let path = path.to_str().unwrap();
    for file in ["kafka-guessed-keys.toml", "kafka-guessed-keys-log.toml"] {
        let judged = judge_hostile(file, &["--backend", "local"], &[("PYTHONPATH", path)]);
        assert_eq!(
            judged.code,
            exit_codes::VIOLATION,
            "{file}: {}",
            judged.output
        );
        for check in ["offsets_committed", "no_message_loss"] {
            assert_eq!(
                judged.outcome(check),
                "violation",
                "{file} {check}: {}",
                judged.output
            );
        }
        assert_ne!(
            judged.outcome("no_redelivery"),
            "pass",
            "{file}: {}",
            judged.output
        );
        assert!(
            judged
                .output
                .contains("2000 output(s) named no input of this run"),
            "{file}: {}",
            judged.output
        );
    }
}

#[test]
fn a_consumer_in_another_group_fails_offsets_committed() {
    let judged = judge("kafka-wrong-group.toml");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("offsets_committed"),
        "violation",
        "{}",
        judged.output
    );
    assert_ne!(judged.outcome("group_left"), "pass", "{}", judged.output);
}

#[test]
fn a_restart_that_crashes_fails_loss_and_redelivery() {
    let judged = judge("kafka-restart-crash.toml");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    for check in ["no_message_loss", "no_redelivery"] {
        assert_eq!(
            judged.outcome(check),
            "violation",
            "{check}: {}",
            judged.output
        );
    }
    assert!(
        judged
            .output
            .contains("cannot decode the SyncGroup assignment"),
        "the restart's own words are evidence: {}",
        judged.output
    );
}
