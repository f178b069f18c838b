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

/// `file`'s verdict exits `code`, its `check` comes out `outcome`, and it says `why`.
fn judged_as(file: &str, code: i32, (check, outcome): (&str, &str), why: &str) {
    let judged = judge(file);
    assert_eq!(judged.code, code, "{}", judged.output);
    assert_eq!(judged.outcome(check), outcome, "{check}\n{}", judged.output);
    assert!(judged.output.contains(why), "{why}\n{}", judged.output);
}

/// `file`'s `lock_released` is a violation that says `why`.
fn lock_not_released(file: &str, why: &str) {
    judged_as(
        file,
        exit_codes::VIOLATION,
        ("lock_released", "violation"),
        why,
    );
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

/// A graph's replicas: each leader's release script deletes nothing, and the next replica
/// overwrites the stale lock with a plain `SET`. A script on the key is no release unless it
/// answers that it deleted; a write without `NX` is no hand-over.
#[test]
fn a_lock_overwritten_after_a_release_that_deleted_nothing_is_not_released() {
    judged_as(
        "leader-graph-overwrite.toml",
        exit_codes::VIOLATION,
        ("scheduler/lock_released", "violation"),
        "overwrote the key",
    );
}

/// A graph's leader releases through its proxy and takes the lock again around it, straight
/// from Redis: the value it leaves was written by no instance the harness saw, after a stop,
/// so the release is not proven.
#[test]
fn a_lock_taken_back_around_the_proxy_is_not_passed_over() {
    let judged = judge("leader-graph-around.toml");
    assert_eq!(judged.code, exit_codes::INCONCLUSIVE, "{}", judged.output);
    assert_eq!(
        judged.outcome("scheduler/lock_released"),
        "inconclusive",
        "{}",
        judged.output
    );
    assert!(
        judged
            .output
            .contains("a value no instance was seen writing"),
        "{}",
        judged.output
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

/// `file`'s `check` is a violation whose report says `why`.
fn fails(file: &str, check: &str, why: &str) {
    let judged = judge(file);
    assert_eq!(
        judged.outcome(check),
        "violation",
        "{check}: {}",
        judged.output
    );
    assert!(judged.output.contains(why), "{}", judged.output);
}

/// The lock kept at the stop under a value no SET names (APPEND): a change made by the
/// target's command on the key is still the target's.
#[test]
fn a_lock_kept_under_a_changed_value_is_not_released() {
    lock_not_released("leader-append.toml", "the target's `APPEND` on the key");
}

/// An empty command gets no reply from Redis: the tap keeps the standby's refused SET NX
/// refused, and the value stays the target's.
#[test]
fn an_empty_command_does_not_shift_the_replies() {
    lock_not_released("leader-zero.toml", "still held by `primary`");
}

#[test]
fn a_lock_the_standby_deletes_was_not_released() {
    lock_not_released("leader-steal.toml", "the standby, not the target, removed");
}

/// Job lines have no length and the runs are 550 ms apart: only the lock's holder at each
/// run shows the standby ran without it.
#[test]
fn a_standby_running_jobs_without_the_lock_is_a_second_leader() {
    fails("leader-twoleaders.toml", "single_leader", "by standby at");
}

#[test]
fn a_job_every_300_ms_of_a_500_ms_interval_runs_too_often() {
    fails(
        "leader-fast.toml",
        "jobs_once_per_interval",
        "at most at one per 500 ms",
    );
}

/// Not hostile: a correct lock whose value both instances write ("1"). Attributed by value
/// it once failed (the standby's later write made "1" the standby's all along); attributed
/// by the write before each change, it passes.
#[test]
fn a_constant_lock_value_is_each_holders_in_turn() {
    let judged = judge("leader-constval.toml");
    for check in ["lock_released", "single_leader", "jobs_once_per_interval"] {
        assert_eq!(judged.outcome(check), "pass", "{check}: {}", judged.output);
    }
}

/// The standby runs the service's own code: what it leaves behind fails
/// no_orphan_processes, named as the standby's, though the target itself left nothing.
#[test]
fn what_the_standby_leaves_behind_is_an_orphan() {
    let judged = judge("leader-standby-orphan.toml");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("no_orphan_processes"),
        "violation",
        "{}",
        judged.output
    );
    assert!(
        judged.output.contains("sleep 300 (left by the standby)"),
        "{}",
        judged.output
    );
    assert_eq!(judged.outcome("lock_released"), "pass", "{}", judged.output);
}
