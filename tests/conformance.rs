//! `quiesce conformance` as CI runs it: every client library against the local broker (the
//! full table), and the containers backend's broker on the cases that fail on a broker that
//! mishandles batches, forgets on a restart, loses a client across an outage or waits out a
//! departed leader in a rollout. A row that fails prints its evidence.

use quiesce::exit_codes;
use quiesce::infra::{InfraConfig, images};

use crate::util::*;

/// The rows of a `--json` run: (client, case, outcome, evidence).
fn rows(stdout: &str) -> Vec<(String, String, String, String)> {
    stdout
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).expect("a JSON row");
            let field = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
            (
                field("client"),
                field("case"),
                field("outcome"),
                field("evidence"),
            )
        })
        .collect()
}

fn assert_conforms(code: i32, stdout: &str, stderr: &str, expected_rows: usize) {
    let rows = rows(stdout);
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.2 != "pass" && r.2 != "not-applicable")
        .collect();
    assert!(failed.is_empty(), "rows that failed: {failed:#?}\n{stderr}");
    assert_eq!(rows.len(), expected_rows, "{stdout}\n{stderr}");
    assert_eq!(code, exit_codes::OK, "{stderr}");
    // every pass names what was read, and kcat is not applicable only to group cases
    for (client, case, outcome, evidence) in &rows {
        match outcome.as_str() {
            "pass" => {
                assert!(
                    evidence.contains("each once") || evidence.contains("end = high watermark"),
                    "{client} {case}: {evidence}"
                );
                // a rollout passes only with its close inside the rebalance
                assert!(
                    case != "rollout" || evidence.contains("closed inside the rebalance"),
                    "{client} {case}: {evidence}"
                );
                // an outage passes only when both cuts were crossed
                assert!(
                    case != "outage"
                        || (evidence.contains("produce ended")
                            && evidence.contains("consume ended")),
                    "{client} {case}: {evidence}"
                );
            }
            _ => assert!(client == "kcat" && !["seek", "end"].contains(&case.as_str())),
        }
    }
}

/// One client's full table on its own local broker: each client in a test of its own, so
/// the five run side by side (the whole table at once took 7 minutes on a loaded machine).
fn conforms_on_the_local_broker(client: &str, passes: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = quiesce(
        tmp.path(),
        &[
            "conformance",
            "--backend",
            "local",
            "--client",
            client,
            "--json",
        ],
        &[],
    );
    assert_conforms(code, &stdout, &stderr, 9);
    let summary = format!("{passes} passed, 0 failed, {} not applicable", 9 - passes);
    assert!(stderr.contains(&summary), "{stderr}");
}

#[test]
fn rdkafka_conforms_on_the_local_broker() {
    conforms_on_the_local_broker("rdkafka", 9);
}

#[test]
fn confluent_kafka_conforms_on_the_local_broker() {
    conforms_on_the_local_broker("confluent-kafka", 9);
}

#[test]
fn kafka_python_conforms_on_the_local_broker() {
    conforms_on_the_local_broker("kafka-python", 9);
}

#[test]
fn aiokafka_conforms_on_the_local_broker() {
    conforms_on_the_local_broker("aiokafka", 9);
}

/// kcat has no commits of its own: its seven group cases are not applicable, never a pass.
#[test]
fn kcat_conforms_on_the_local_broker() {
    conforms_on_the_local_broker("kcat", 2);
}

#[test]
fn the_containers_broker_serves_a_resume_inside_a_batch() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let built = runtime
        .block_on(images::build_local_images(&InfraConfig::default()))
        .expect("local images build");
    let env: Vec<(&str, &str)> = built
        .iter()
        .map(|image| (image.env_var, image.name.as_str()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "conformance",
        "--backend",
        "containers",
        "--client",
        "rdkafka,confluent-kafka,kcat",
        "--case",
        "resume-record,seek,end,outage,restart,rollout",
        "--json",
    ];
    let (code, stdout, stderr) = quiesce(tmp.path(), &args, &env);
    assert_conforms(code, &stdout, &stderr, 18);
}
