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

#[test]
fn a_lock_left_to_expire_is_not_released() {
    let judged = judge("leader-expires.toml");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("lock_released"),
        "violation",
        "{}",
        judged.output
    );
    assert!(
        judged.output.contains("expired instead of being released"),
        "{}",
        judged.output
    );
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
