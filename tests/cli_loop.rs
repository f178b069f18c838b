//! `quiesce loop` as a user runs it: the real binary on shell targets that are sometimes
//! stuck, its report, JSON, JUnit, exit codes, bad input and Ctrl-C.

use quiesce::exit_codes;

use crate::util::*;

/// A scenario whose target hangs at startup on the cycles where `$dir/hang-N` exists (N the
/// cycle, counted by the target in `$dir/count`), and otherwise starts and stops cleanly.
fn scenario(dir: &std::path::Path) -> std::path::PathBuf {
    // A shell has no probe to count its tasks and threads: accepted as undecided.
    scenario_with(
        dir,
        r#"allow_inconclusive = ["no_leaked_tasks", "no_leaked_threads"]"#,
    )
}

/// [`scenario`] with `checks` added to its `[checks]` table.
fn scenario_with(dir: &std::path::Path, checks: &str) -> std::path::PathBuf {
    let path = dir.join("loop.toml");
    let script = format!(
        "n=$(( $(cat {d}/count 2>/dev/null || echo 0) + 1 )); echo $n > {d}/count; \
         trap 'exit 0' TERM; \
         if [ -e {d}/hang-$n ]; then while :; do sleep 0.05; done; fi; \
         echo listening; while :; do sleep 0.05; done",
        d = dir.display()
    );
    let text = format!(
        r#"name = "cli-loop"
[infra]
backend = "local"
[target]
command = ["sh", "-c", "{script}"]
ready = {{ log = "^listening$" }}
[stop]
after_ms = 0
kill_after_ms = 2000
[checks]
starts_within = {{ deadline_ms = 1500 }}
{checks}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_loop_counts_classifies_and_reports_every_failing_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    // Cycles 2 and 4 of 5 never get ready: their shells wait in `sleep`, idle.
    for n in [2, 4] {
        std::fs::write(dir.path().join(format!("hang-{n}")), "").unwrap();
    }
    let out = dir.path().join("out");
    let junit = dir.path().join("loop.xml");
    let (code, stdout, stderr) = quiesce(
        dir.path(),
        &[
            "loop",
            file.to_str().unwrap(),
            "-n",
            "5",
            "--out",
            out.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--on-hang",
            "echo hook saw {pid}",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, exit_codes::VIOLATION, "{stderr}");
    assert!(
        stderr.contains("failed 2 of 5 cycles (40.0%, 95% upper bound 76.9%)"),
        "{stderr}"
    );
    assert!(stderr.contains("failing cycles: 2, 4"), "{stderr}");
    assert!(stderr.contains("cycle 2: hang at ready"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["cycles"], 5);
    assert_eq!(report["failures"]["hang"], 2);
    assert_eq!(report["ready"]["samples"], 3);
    let failing = report["failing"].as_array().unwrap();
    let hook = &failing[0]["hangs"][0]["hook"];
    assert!(
        hook["output"].as_str().unwrap().starts_with("hook saw "),
        "{hook}"
    );
    // loop.json is the same report; only failing cycles keep their folders.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("loop.json")).unwrap()).unwrap();
    assert_eq!(written["failed"], 2);
    assert!(out.join("cycle-0002").is_dir() && out.join("cycle-0004").is_dir());
    assert!(!out.join("cycle-0001").exists() && !out.join("cycle-0005").exists());
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"<testcase name="cycle 2""#), "{xml}");
    assert!(xml.contains(r#"<testcase name="cycle 4""#), "{xml}");
    assert!(xml.contains(r#"<testcase name="summary""#), "{xml}");
    assert!(xml.contains(r#"type="hang""#), "{xml}");
    assert_eq!(
        processes_mentioning(dir.path()),
        Vec::<u32>::new(),
        "nothing left running"
    );
}

/// Cycles with an undecided check were once counted as passes: a loop of them printed PASS
/// and exited 0.
#[test]
fn cycles_with_an_undecided_check_are_counted_apart_and_the_loop_is_inconclusive() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_with(dir.path(), "");
    let (code, stdout, stderr) = quiesce(
        dir.path(),
        &["loop", file.to_str().unwrap(), "-n", "2", "--json"],
        &[],
    );
    assert_eq!(code, exit_codes::INCONCLUSIVE, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let counts = ["passed", "failed", "inconclusive"].map(|k| report[k].as_u64());
    assert_eq!(counts, [Some(0), Some(0), Some(2)], "{stderr}");
    assert!(
        stderr.contains("inconclusive: 2 cycle(s) (1, 2)"),
        "{stderr}"
    );
    assert!(stderr.contains("verdict: INCONCLUSIVE"), "{stderr}");
    // Accepted by name on the command line, the same cycles pass.
    let undecided: Vec<String> = report["all"][0]["undecided"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line.as_str().unwrap().split(':').next().unwrap().to_owned())
        .collect();
    assert!(!undecided.is_empty(), "{stdout}");
    let accepted = undecided.join(",");
    let (code, stdout, stderr) = quiesce(
        dir.path(),
        &[
            "loop",
            file.to_str().unwrap(),
            "-n",
            "2",
            "--json",
            "--allow-inconclusive",
            &accepted,
        ],
        &[],
    );
    assert_eq!(code, exit_codes::OK, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["passed"], 2, "{stderr}");
}

#[test]
fn until_failure_stops_at_the_first_failing_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    std::fs::write(dir.path().join("hang-3"), "").unwrap();
    let (code, stdout, stderr) = quiesce(
        dir.path(),
        &["loop", file.to_str().unwrap(), "--until-failure", "--json"],
        &[],
    );
    assert_eq!(code, exit_codes::VIOLATION, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["cycles"], 3, "{stderr}");
    assert_eq!(report["ended"], "failure");
}

#[test]
fn a_duration_ends_the_loop_after_the_cycle_that_runs_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let (code, stdout, stderr) = quiesce(
        dir.path(),
        &["loop", file.to_str().unwrap(), "--duration", "2s", "--json"],
        &[],
    );
    assert_eq!(code, exit_codes::OK, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ended"], "duration", "{stderr}");
    let cycles = report["cycles"].as_u64().unwrap();
    assert!(cycles >= 2, "{cycles} cycles in 2 s: {stderr}");
}

#[test]
fn bad_loop_input_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    for (args, says) in [
        (vec!["-n", "0"], "a loop runs at least one cycle"),
        (vec!["--duration", "soon"], "`soon` is not a duration"),
    ] {
        let mut all = vec!["loop", file.to_str().unwrap()];
        all.extend(args);
        let (code, _, err) = quiesce(dir.path(), &all, &[]);
        assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
        assert!(err.contains(says), "{err}");
    }
    let (code, _, err) = quiesce(dir.path(), &["loop", "/nonexistent/loop.toml"], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("/nonexistent/loop.toml"), "{err}");
}

#[test]
fn ctrl_c_ends_the_loop_with_a_report_and_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let out = dir.path().join("out");
    // Interrupted once a few cycles have run (the target counts its starts).
    let count = || {
        std::fs::read_to_string(dir.path().join("count"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let args = ["loop", file.to_str().unwrap(), "-n", "10000"];
    let args = [&args[..], &["--out", out.to_str().unwrap()]].concat();
    let child = quiesce_until(dir.path(), &args, || count() >= 3);
    let (code, stdout) = interrupt(child);
    assert_eq!(code, Some(exit_codes::INTERRUPTED), "{stdout}");
    assert!(stdout.contains("interrupted by Ctrl-C"), "{stdout}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("loop.json")).unwrap()).unwrap();
    assert_eq!(written["ended"], "interrupted");
    assert!(written["cycles"].as_u64().unwrap() >= 2, "{written}");
    assert_eq!(
        processes_mentioning(dir.path()),
        Vec::<u32>::new(),
        "nothing left running"
    );
}

#[test]
fn several_files_loop_one_after_another_with_one_report_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let good = scenario(dir.path());
    // A second file whose target leaves a child behind: every cycle fails.
    let bad = dir.path().join("orphan.toml");
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("name = \"cli-loop\"", "name = \"cli-loop-orphan\"")
        .replace("trap 'exit 0' TERM;", "sleep 300 & trap 'exit 0' TERM;");
    std::fs::write(&bad, text).unwrap();
    let out = dir.path().join("out");
    let (files, out_s) = (dir.path().to_str().unwrap(), out.to_str().unwrap());
    let (code, listed, _) = quiesce(dir.path(), &["loop", files, "--list"], &[]);
    assert_eq!(code, exit_codes::OK);
    let wanted = format!("{}\n{}\n", good.display(), bad.display());
    assert_eq!(
        listed.replace(&format!("{files}/"), ""),
        wanted.replace(&format!("{files}/"), "")
    );
    let (code, _, err) = quiesce(
        dir.path(),
        &["loop", files, "-n", "2", "--json", "--out", out_s],
        &[],
    );
    assert_eq!(code, exit_codes::VIOLATION, "{err}");
    // Both files ask for the same [infra]: it started once, for both loops.
    assert!(err.contains("infrastructure started 1 time(s)"), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("loops.json")).unwrap()).unwrap();
    let scenarios = json["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 2, "{json}");
    assert_eq!(json["verdict"], "VIOLATION");
    let verdicts: Vec<_> = scenarios
        .iter()
        .map(|s| s["verdict"].as_str().unwrap())
        .collect();
    // Sorted by path: loop.toml, then orphan.toml.
    assert_eq!(verdicts, ["PASS", "FAIL"], "{json}");
    assert_eq!(scenarios[1]["report"]["failed"], 2, "{json}");
    assert!(out.join("01-loop/loop.json").is_file() && out.join("02-orphan/loop.json").is_file());
    // A bad file among them is bad input before any loop starts.
    std::fs::write(dir.path().join("zz.toml"), "[target]\ncommand = []\n").unwrap();
    let (code, _, err) = quiesce(dir.path(), &["loop", files, "-n", "1"], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("zz.toml"), "{err}");
    assert_eq!(processes_mentioning(dir.path()), Vec::<u32>::new());
}
