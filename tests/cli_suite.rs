//! `quiesce run` on many scenario files: one report and one exit code, the infrastructure
//! started once per distinct `[infra]`, and partitions that cover the suite exactly once.

use quiesce::exit_codes;

use crate::util::*;

/// A shell target that answers TERM with `exit {code}`.
fn scenario(dir: &std::path::Path, name: &str, code: i32, checks: &str, infra: &str) {
    let text = format!(
        r#"name = "{name}"
[infra]
backend = "local"
{infra}
[target]
command = ["sh", "-c", "trap 'exit {code}' TERM; echo listening; while :; do sleep 0.05; done"]
ready = {{ log = "^listening$" }}
[stop]
after_ms = 100
kill_after_ms = 5000
[checks]
{checks}
"#
    );
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

const SHELL: &str = r#"allow_inconclusive = ["no_leaked_tasks", "no_leaked_threads"]"#;

#[test]
fn a_suite_reports_each_scenario_and_ranks_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite");
    std::fs::create_dir_all(&suite).unwrap();
    scenario(&suite, "a-pass", 0, SHELL, "");
    scenario(&suite, "b-unsure", 0, "", "");
    // Its Kafka proxy cannot listen where it is told: no verdict, the target not blamed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    scenario(
        &suite,
        "c-no-infra",
        0,
        SHELL,
        &format!("kafka = {{ listen = \"127.0.0.1:{port}\" }}"),
    );
    let out = dir.path().join("out");
    let junit = dir.path().join("suite.xml");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "run".to_owned(),
            suite.display().to_string(),
            "--out".to_owned(),
            out.display().to_string(),
            "--junit".to_owned(),
            junit.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        quiesce(dir.path(), &a, &[])
    };
    let (code, stdout, stderr) = run(&[]);
    // No violation: the infrastructure failure outranks the inconclusive scenario.
    assert_eq!(code, exit_codes::ADDRESS_IN_USE, "{stdout}{stderr}");
    assert!(
        stdout.contains("infrastructure started 2 time(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 passed, 0 failed, 1 inconclusive, 1 without a verdict"),
        "{stdout}"
    );
    assert!(stderr.contains("[1/3] PASS"), "{stderr}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("suite.json")).unwrap()).unwrap();
    assert_eq!(json["scenarios"].as_array().unwrap().len(), 3);
    // A violation anywhere wins.
    scenario(&suite, "d-fail", 4, SHELL, "");
    let (code, stdout, _) = run(&[]);
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}");
    // The two scenarios on the default [infra] shared one start of it.
    assert!(
        stdout.contains("infrastructure started 2 time(s)"),
        "{stdout}"
    );
    drop(taken);
    assert_eq!(
        processes_mentioning(dir.path()),
        Vec::<u32>::new(),
        "nothing left running"
    );
}

#[test]
fn partitions_list_every_file_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..7 {
        scenario(dir.path(), &format!("s{n}"), 0, SHELL, "");
    }
    // Not a scenario, and skipped.
    std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").unwrap();
    let list = |partition: &str| {
        let (code, out, err) = quiesce(
            dir.path(),
            &[
                "run",
                dir.path().to_str().unwrap(),
                "--list",
                "--partition",
                partition,
            ],
            &[],
        );
        assert_eq!(code, exit_codes::OK, "{err}");
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    for kind in ["", "hash:"] {
        let mut all: Vec<String> = (1..=3)
            .flat_map(|k| list(&format!("{kind}{k}/3")))
            .collect();
        all.sort();
        assert_eq!(all.len(), 7, "{all:?}");
        all.dedup();
        assert_eq!(all.len(), 7, "no file in two shares: {all:?}");
    }
    let (code, _, err) = quiesce(
        dir.path(),
        &["run", dir.path().to_str().unwrap(), "--partition", "4/3"],
        &[],
    );
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("4/3"), "{err}");
}
