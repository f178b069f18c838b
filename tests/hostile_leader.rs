//! Hostile targets (Redis leader, readiness): programs built to fool lock_released and
//! readiness_truthful, run for real, each with the verdict it must get
//! (scenarios/hostile/HOSTILE.md). None may PASS.

use quiesce::exit_codes;

use crate::util::*;

fn judge(file: &str) -> Judged {
    let python = quiesce::infra::cache_dir().join("python");
    let python = python.to_str().unwrap();
    judge_hostile(file, &["--backend", "local"], &[("PYTHONPATH", python)])
}

/// `file`'s `lock_released` is a violation that says `why`.
fn lock_not_released(file: &str, why: &str) {
    let judged = judge(file);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("lock_released"),
        "violation",
        "{}",
        judged.output
    );
    assert!(judged.output.contains(why), "{}", judged.output);
}

#[test]
fn a_lock_left_to_expire_is_not_released() {
    lock_not_released("leader-expires.toml", "expired instead of being released");
}

#[test]
fn a_ready_endpoint_that_flaps_back_inside_an_outage_fails() {
    let judged = judge("readiness-flaps.toml");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("readiness_truthful"),
        "violation",
        "{}",
        judged.output
    );
    assert!(
        judged.output.contains("answered 200 again"),
        "{}",
        judged.output
    );
}

/// The target overwrites its lock with the standby's name at the stop; the standby, which
/// never wrote it, cannot take the key. Judged by who wrote each value on the wire, not by
/// what the value says.
#[test]
fn a_lock_renamed_to_the_standby_is_not_handed_over() {
    lock_not_released(
        "leader-impersonates.toml",
        "the target's `SET` of the key, which the server took",
    );
}

/// Job lines that reach the log all at once (block-buffered output) carry no time of their
/// own: read as they arrive they would be simultaneous runs, a false FAIL.
#[test]
fn job_lines_that_arrive_at_once_are_not_timed_runs() {
    let judged = judge("jobs-buffered.toml");
    for check in ["single_leader", "jobs_once_per_interval"] {
        assert_eq!(
            judged.outcome(check),
            "inconclusive",
            "{check}: {}",
            judged.output
        );
    }
    assert!(
        judged.output.contains("its output is buffered"),
        "{}",
        judged.output
    );
    assert_eq!(judged.outcome("lock_released"), "pass", "{}", judged.output);
}
