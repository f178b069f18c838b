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

/// `quiesce explore FILE` of 20 cases of up to `steps` steps of `actions`, seeded `seed`,
/// into `out`, as JSON.
fn explore_args<'a>(
    file: &'a str,
    out: &'a str,
    (actions, steps, seed): (&'a str, &'a str, &'a str),
) -> [&'a str; 13] {
    [
        "explore",
        file,
        "--actions",
        actions,
        "--steps",
        steps,
        "--cases",
        "20",
        "--seed",
        seed,
        "--out",
        out,
        "--json",
    ]
}

#[test]
fn explore_finds_shrinks_and_replays_a_signal_bug() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let out = dir.path().join("out");
    let args = explore_args(
        file.to_str().unwrap(),
        out.to_str().unwrap(),
        ("signal", "3", "7"),
    );
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

/// A graph whose worker keeps a pidfile: a restart (stop, then start) leaves it right, but a
/// rollout starts the new worker beside the old one, which then finds the pidfile not its own
/// at its stop and exits 3. Explore draws rollouts of the graph's services and shrinks to one.
#[test]
fn explore_draws_a_rollout_of_a_graphs_service() {
    let dir = tempfile::tempdir().unwrap();
    let worker = dir.path().join("worker.sh");
    std::fs::write(
        &worker,
        "echo $$ > \"$1\"\nmine() { [ \"$(cat \"$1\")\" = \"$$\" ] && exit 0 || exit 3; }\n\
         trap 'mine \"$1\"' TERM INT\necho ready\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    let file = dir.path().join("pidfile.toml");
    let text = format!(
        "name = \"pidfile\"\n[infra]\nbackend = \"local\"\n\n[[services]]\nname = \"api\"\n\
         command = [\"sh\", \"-c\", \"trap 'exit 0' TERM INT; echo ready; while :; do sleep 0.05; done\"]\n\
         ready = {{ log = \"^ready$\" }}\n\n[[services]]\nname = \"worker\"\n\
         command = [\"sh\", \"{}\", \"{}\"]\nready = {{ log = \"^ready$\" }}\n\n\
         [stop]\nafter_ms = 1000\nkill_after_ms = 2000\n\n[checks]\n\
         allow_inconclusive = [\"no_leaked_tasks\", \"no_leaked_threads\"]\n",
        worker.display(),
        dir.path().join("worker.pid").display()
    );
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("out");
    let args = explore_args(
        file.to_str().unwrap(),
        out.to_str().unwrap(),
        ("restart,rollout", "2", "3"),
    );
    let (code, stdout, stderr) = quiesce(dir.path(), &args, &[]);
    assert_eq!(code, exit_codes::VIOLATION, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect(&stderr);
    let shrunk = &report["finding"]["shrunk"];
    let steps = shrunk["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{stderr}");
    assert_eq!(
        (&steps[0]["action"], &steps[0]["service"]),
        (&"rollout".into(), &"worker".into()),
        "{stderr}"
    );
    assert!(
        shrunk["violated"].to_string().contains("exit_code"),
        "{stderr}"
    );
}
