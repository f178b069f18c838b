//! `quiesce check` as CI runs it: scenario files validated without starting anything.

use quiesce::exit_codes;

use crate::util::*;

#[test]
fn check_lists_what_a_run_would_judge_and_names_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir_all(scenarios.join("nested")).unwrap();
    std::fs::write(
        scenarios.join("good.toml"),
        "name = \"good\"\n[target]\ncommand = [\"svc\", \"--brokers\", \"{kafka}\"]\n\
         [kafka]\n[checks]\nallow_inconclusive = [\"group_left\"]\n",
    )
    .unwrap();
    std::fs::write(
        scenarios.join("nested/bad.toml"),
        "[target]\ncommand = [\"svc\"]\n[checks]\nno_leaks = true\n",
    )
    .unwrap();
    // Not a scenario: skipped.
    std::fs::write(scenarios.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
    let (code, out, err) = quiesce(dir.path(), &["check", scenarios.to_str().unwrap()], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{out}{err}");
    assert!(
        out.contains("good.toml: ok: `good`, svc --brokers {kafka}"),
        "{out}"
    );
    assert!(
        out.contains("stop: SIGTERM mid-stream, once 500 of 1000 inputs have outputs"),
        "{out}"
    );
    assert!(
        out.contains("processed: output records in `quiesce-output` naming their input's partition and offset"),
        "{out}"
    );
    assert!(
        out.contains("group_left           a LeaveGroup on the wire from every member the target had, at the stop  (may be inconclusive: accepted)"),
        "{out}"
    );
    assert!(
        out.contains("{kafka} in command[2]: QUIESCE_KAFKA_BOOTSTRAP at run time"),
        "{out}"
    );
    assert!(
        out.contains("nested/bad.toml:4:1: unknown field `no_leaks`"),
        "{out}"
    );
    assert!(
        out.contains("checked 2 file(s): 1 valid, 1 with errors"),
        "{out}"
    );
    let (code, out, _) = quiesce(
        dir.path(),
        &[
            "check",
            scenarios.join("good.toml").to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(code, exit_codes::OK);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["scenario"]["checks"].as_array().unwrap().len(), 11);
    assert_eq!(
        json[0]["scenario"]["placeholders"][0]["placeholder"],
        "{kafka}"
    );
}

/// Every scenario file this repository ships is valid, and `check` says so in one call.
#[test]
fn every_shipped_scenario_file_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let (code, out, err) = quiesce(dir.path(), &["check", root.to_str().unwrap()], &[]);
    assert_eq!(code, exit_codes::OK, "{out}{err}");
    assert!(out.contains("0 with errors"), "{out}");
    // What an HTTP ingress will send, and what it will owe.
    assert!(
        out.contains(
            "requests: 1000 HTTP POST /orders to `api` at 100/s; a 2xx acknowledges, and an \
             acknowledged request must be in `orders`"
        ),
        "{out}"
    );
}

/// A `[redis]` table without evidence of leader-only work: the job checks are off, and both
/// `check` and `run` say so when they read the file, before anything starts.
#[test]
fn job_checks_without_evidence_are_off_and_said_at_read_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lock.toml");
    std::fs::write(&file, "[target]\ncommand = [\"svc\"]\n[redis]\n").unwrap();
    let file = file.to_str().unwrap();
    let (code, out, _) = quiesce(dir.path(), &["check", file], &[]);
    assert_eq!(code, exit_codes::OK, "{out}");
    assert!(
        out.contains("  off: single_leader and jobs_once_per_interval are off")
            && !out.contains("    single_leader"),
        "{out}"
    );
    // A run reads the file (and says so) before it refuses the bad flag.
    let (_, _, err) = quiesce(
        dir.path(),
        &[
            "run",
            file,
            "--backend",
            "local",
            "--allow-inconclusive",
            "bogus",
        ],
        &[],
    );
    assert!(
        err.contains("note: ")
            && err.contains("lock.toml: single_leader and jobs_once_per_interval are off"),
        "{err}"
    );
}
