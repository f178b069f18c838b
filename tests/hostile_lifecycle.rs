//! Hostile targets (lifecycle): programs built to fool the start, stop and orphan judges, run
//! for real, each with the verdict it must get (scenarios/hostile/HOSTILE.md). None may PASS.

use quiesce::exit_codes;

use crate::util::*;

fn judge(file: &str) -> Judged {
    judge_hostile(file, &["--backend", "local"], &[])
}

/// Runs `file` and asserts a violation with `no_orphan_processes` failed, naming `named`.
fn orphan_named(file: &str, named: &str) {
    let judged = judge(file);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("no_orphan_processes"),
        "violation",
        "{}",
        judged.output
    );
    assert!(judged.output.contains(named), "{}", judged.output);
}

#[test]
fn a_child_left_in_the_process_group_without_the_run_mark_is_an_orphan() {
    orphan_named("lifecycle-group-child.toml", "sleep 300");
}

/// A daemon in a new session with an empty environment: out of the group, no mark. The
/// harness inherits it (a subreaper) when the service exits, and finds it there.
#[test]
fn a_daemon_that_left_the_group_and_the_run_mark_is_an_orphan() {
    orphan_named(
        "lifecycle-daemon.toml",
        "(re-parented to the harness): sleep 300",
    );
}

#[test]
fn a_hung_targets_children_are_seen_before_its_group_is_killed() {
    let judged = judge("lifecycle-hung-with-child.toml");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("stops_within"),
        "violation",
        "{}",
        judged.output
    );
    assert_eq!(
        judged.outcome("no_orphan_processes"),
        "inconclusive",
        "{}",
        judged.output
    );
    assert!(judged.output.contains("sleep 300"), "{}", judged.output);
}

#[test]
fn a_probe_that_claims_a_settle_it_did_not_spend_hides_no_slow_stop() {
    let judged = judge("lifecycle-fake-settle.toml");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("stops_within"),
        "violation",
        "{}",
        judged.output
    );
}

#[test]
fn a_target_without_a_ready_probe_is_never_called_ready() {
    let judged = judge("lifecycle-no-ready.toml");
    assert_eq!(judged.code, exit_codes::INCONCLUSIVE, "{}", judged.output);
    assert_eq!(
        judged.outcome("starts_within"),
        "inconclusive",
        "{}",
        judged.output
    );
}

/// Hostile: the daemon's main thread has called `pthread_exit` while a worker thread runs on,
/// so its leader shows as a zombie in `/proc`. It is alive all the same, and an orphan.
#[test]
fn a_daemon_whose_main_thread_exited_is_still_an_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("daemon.c");
    std::fs::write(
        &source,
        "#include <pthread.h>\n#include <unistd.h>\n\
         static void *work(void *a) { (void)a; for (;;) sleep(1); return 0; }\n\
         int main(void) { pthread_t t; pthread_create(&t, 0, work, 0); pthread_exit(0); }\n",
    )
    .unwrap();
    let daemon = dir.path().join("daemon");
    let built = std::process::Command::new("cc")
        .args(["-pthread", "-o"])
        .arg(&daemon)
        .arg(&source)
        .status()
        .expect("cc, to build the hostile daemon");
    assert!(built.success(), "cc failed: {built}");
    let file = dir.path().join("zombie-leader.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"zombie-leader\"\n[target]\ncommand = [\"sh\", \"-c\", \"env -i setsid {} & \
             echo ready; trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n\
             ready = {{ log = \"^ready$\" }}\n[stop]\nafter_ms = 200\n[checks]\n\
             allow_inconclusive = [\"no_leaked_tasks\", \"no_leaked_threads\"]\n",
            daemon.display()
        ),
    )
    .unwrap();
    orphan_named(file.to_str().unwrap(), "daemon");
}
