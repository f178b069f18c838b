//! `quiesce explore` as a user runs it: a shell target that treats SIGINT as an error, found
//! and shrunk to that one signal, the replay file `quiesce run` replays, the kept failure run
//! first next time, and bad input.

use quiesce::exit_codes;

use crate::util::*;

/// A target that stops cleanly on SIGTERM and exits 3 on SIGINT.
fn scenario(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("explore.toml");
    let text = r#"name = "cli-explore"
[infra]
backend = "local"
[target]
command = ["sh", "-c", "trap 'exit 0' TERM; trap 'exit 3' INT; echo listening; while :; do sleep 0.05; done"]
ready = { log = "^listening$" }
[stop]
after_ms = 1000
kill_after_ms = 2000
"#;
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn explore_finds_shrinks_and_replays_a_signal_bug() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let out = dir.path().join("out");
    let args = [
        "explore",
        file.to_str().unwrap(),
        "--actions",
        "signal",
        "--steps",
        "3",
        "--cases",
        "20",
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    let (code, stdout, stderr) = quiesce(dir.path(), &args, &[]);
    assert_eq!(code, exit_codes::VIOLATION, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect(&stderr);
    assert_eq!(report["ended"], "failure", "{stderr}");
    let shrunk = &report["finding"]["shrunk"];
    assert_eq!(
        shrunk["violated"],
        serde_json::json!(["exit_code"]),
        "{stderr}"
    );
    // One SIGINT is all it takes, and shrinking brings it to the start of its window.
    let steps = shrunk["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{stderr}");
    assert_eq!(
        (&steps[0]["action"], &steps[0]["signal"], &steps[0]["at_ms"]),
        (&"signal".into(), &"Int".into(), &0.into()),
        "{stderr}"
    );
    assert!(stderr.contains("shrunk in"), "{stderr}");
    assert!(out.join("explore.json").is_file());

    // The replay file runs alone and fails the same check.
    let replay = report["finding"]["replay"].as_str().unwrap();
    let (code, stdout, _) = quiesce(dir.path(), &["run", replay], &[]);
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}");
    assert!(stdout.contains("FAIL  exit_code"), "{stdout}");
    assert!(stdout.contains("SIGINT (the fault schedule's)"), "{stdout}");

    // Next time it runs first, and the exploration stops there.
    let (code, _, stderr) = quiesce(dir.path(), &args, &[]);
    assert_eq!(code, exit_codes::VIOLATION, "{stderr}");
    assert!(stderr.contains("a kept failure still fails"), "{stderr}");
}

#[test]
fn bad_explore_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let file = file.to_str().unwrap();
    for (args, named) in [
        (vec!["--actions", "explode"], "explode"),
        (vec!["--checks", "no_bugs"], "no_bugs"),
        (vec!["--steps", "0"], "--steps"),
    ] {
        let mut all = vec!["explore", file];
        all.extend(args);
        let (code, _, stderr) = quiesce(dir.path(), &all, &[]);
        assert_eq!(code, exit_codes::BAD_INPUT, "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
    }
}
