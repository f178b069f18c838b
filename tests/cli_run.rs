//! `quiesce run` as a user runs it: the real binary, its reports and exit codes.

use quiesce::exit_codes;

use crate::util::*;

/// Writes a scenario for a shell target into `dir` and returns its path.
fn scenario(dir: &std::path::Path, trap: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("scenario.toml");
    let text = format!(
        r#"name = "cli"
[infra]
backend = "local"
[target]
command = ["sh", "-c", "{trap} echo listening; while :; do sleep 0.05; done"]
ready = {{ log = "^listening$" }}
[stop]
after_ms = 200
kill_after_ms = 5000
{extra}"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The checks `verdict` (JSON) left undecided, comma-separated for `--allow-inconclusive`.
fn undecided(json: &str) -> String {
    let verdict: serde_json::Value = serde_json::from_str(json).unwrap();
    let names: Vec<&str> = verdict["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "inconclusive")
        .map(|r| r["check"].as_str().unwrap())
        .collect();
    names.join(",")
}

/// "verdict: PASS (0 of 9 checks failed, 4 inconclusive)" once exited 0: a run with an
/// undecided check proved nothing about it, and must say so in its exit code.
#[test]
fn an_undecided_check_makes_the_run_inconclusive_until_it_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "trap 'exit 0' TERM;", "");
    let (code, out, err) = quiesce(dir.path(), &["run", file.to_str().unwrap(), "--json"], &[]);
    assert_eq!(code, exit_codes::INCONCLUSIVE, "{out}{err}");
    assert!(err.contains("verdict: INCONCLUSIVE"), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&json["verdict"], &json["exit_code"]),
        (&"INCONCLUSIVE".into(), &exit_codes::INCONCLUSIVE.into())
    );
    let unsure = undecided(&out);
    assert!(!unsure.is_empty(), "{out}");
    // A bad name is bad input, named.
    let (code, _, err) = quiesce(
        dir.path(),
        &[
            "run",
            file.to_str().unwrap(),
            "--allow-inconclusive",
            "no_such_check",
        ],
        &[],
    );
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("--allow-inconclusive"), "{err}");
    // The same run, its undecided checks accepted by name: a pass, and they are still shown.
    let junit = dir.path().join("junit.xml");
    let (code, out, err) = quiesce(
        dir.path(),
        &[
            "run",
            file.to_str().unwrap(),
            "--allow-inconclusive",
            &unsure,
            "--junit",
            junit.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, exit_codes::OK, "{out}{err}");
    assert!(out.contains("PASS  stops_within"), "{out}");
    assert!(out.contains("inconclusive (accepted):"), "{out}");
    assert!(out.contains("verdict: PASS"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testcase name="stops_within" classname="quiesce.cli">"#),
        "{xml}"
    );
    assert!(
        xml.contains("<skipped message=\"inconclusive:"),
        "inconclusive checks are listed: {xml}"
    );
}

#[test]
fn violation_exits_1_and_json_carries_the_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "trap 'exit 4' TERM;", "");
    let (code, out, err) = quiesce(dir.path(), &["run", file.to_str().unwrap(), "--json"], &[]);
    assert_eq!(code, exit_codes::VIOLATION, "{out}{err}");
    assert!(
        err.contains("FAIL  exit_code"),
        "the summary goes to stderr with --json: {err}"
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let exit = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == "exit_code")
        .unwrap();
    assert_eq!(exit["outcome"], "violation");
    assert_eq!(exit["summary"], "exit code 4 after SIGTERM, expected 0");
}

#[test]
fn env_flag_reaches_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "trap 'exit $CODE' TERM;", "");
    let (code, out, err) = quiesce(
        dir.path(),
        &["run", file.to_str().unwrap(), "--env", "CODE=0", "--json"],
        &[],
    );
    assert_eq!(code, exit_codes::INCONCLUSIVE, "{out}{err}");
    assert!(err.contains("PASS  exit_code"), "{err}");
    let (code, _, err) = quiesce(
        dir.path(),
        &["run", file.to_str().unwrap(), "--env", "=1"],
        &[],
    );
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("--env: `=1` is not KEY=VALUE"), "{err}");
}

#[test]
fn bad_scenarios_are_bad_input_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "", "[checks]\nno_leaks = true\n");
    let (code, _, err) = quiesce(dir.path(), &["run", file.to_str().unwrap()], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(
        err.contains("scenario.toml:11:1: unknown field `no_leaks`"),
        "{err}"
    );
    let (code, _, err) = quiesce(dir.path(), &["run", "/nonexistent/scenario.toml"], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("/nonexistent/scenario.toml"), "{err}");
}

#[test]
fn missing_target_program_is_a_missing_prerequisite_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.toml");
    std::fs::write(
        &path,
        "[infra]\nbackend = \"local\"\n[target]\ncommand = [\"./no-such-service\"]\n",
    )
    .unwrap();
    let (code, _, err) = quiesce(dir.path(), &["run", path.to_str().unwrap()], &[]);
    assert_eq!(code, exit_codes::PREREQUISITE_MISSING, "{err}");
    assert!(err.contains("cannot start `./no-such-service`"), "{err}");
    assert_eq!(
        processes_mentioning(dir.path()),
        Vec::<u32>::new(),
        "the infrastructure was stopped"
    );
}

fn target_listening(tmp: &std::path::Path) -> bool {
    std::fs::read_dir(tmp)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("quiesce-run-"))
        .any(|e| {
            std::fs::read_to_string(e.path().join("stdout.log"))
                .is_ok_and(|s| s.contains("listening"))
        })
}

#[test]
fn ctrl_c_stops_everything_and_still_reports() {
    let dir = tempfile::tempdir().unwrap();
    // Runs for a minute unless interrupted.
    let file = scenario(dir.path(), "trap 'exit 0' TERM;", "");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("after_ms = 200", "after_ms = 60000");
    std::fs::write(&file, text).unwrap();
    // Interrupted once the target has said it is listening (its output is under TMPDIR).
    let child = quiesce_until(dir.path(), &["run", file.to_str().unwrap()], || {
        target_listening(dir.path())
    });
    let (code, stdout) = interrupt(child);
    assert_eq!(code, Some(exit_codes::INTERRUPTED), "{stdout}");
    assert!(
        stdout.contains("verdict: INTERRUPTED"),
        "a partial report is printed: {stdout}"
    );
    assert!(
        stdout.contains("inconclusive: the run was interrupted"),
        "{stdout}"
    );
    assert_eq!(
        processes_mentioning(dir.path()),
        Vec::<u32>::new(),
        "nothing left running"
    );
}

/// A service reads its own variables: `{placeholders}` in `[target]` fill them, so it runs
/// without a wrapper script.
#[test]
fn placeholders_fill_the_targets_own_command_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own.toml");
    std::fs::write(
        &path,
        r#"name = "own"
[infra]
backend = "local"
[target]
command = ["sh", "-c", "echo \"args $0 $1\"; echo \"env $BROKERS $CACHE_HOST:$CACHE_PORT $HTTP\"; echo listening; trap 'exit 0' TERM; while :; do sleep 0.05; done", "{run_id}", "{{literal}}"]
env = { BROKERS = "{kafka}", CACHE_HOST = "{redis_host}", CACHE_PORT = "{redis_port}", HTTP = "{port}" }
ready = { log = "^listening$" }
[stop]
after_ms = 100
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, stdout, err) = quiesce(
        dir.path(),
        &[
            "run",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(
        code == exit_codes::OK || code == exit_codes::INCONCLUSIVE,
        "{stdout}{err}"
    );
    let log = std::fs::read_to_string(out.join("stdout.log")).unwrap();
    let args = log.lines().find(|l| l.starts_with("args ")).unwrap();
    assert!(
        args.starts_with("args own-") && args.ends_with(" {literal}"),
        "{log}"
    );
    let env = log.lines().find(|l| l.starts_with("env ")).unwrap();
    let parts: Vec<&str> = env.split(' ').collect();
    assert!(parts[1].starts_with("127.0.0.1:"), "{env}");
    assert!(
        parts[2].starts_with("127.0.0.1:") && parts[2].len() > "127.0.0.1:".len(),
        "{env}"
    );
    assert!(parts[3].parse::<u16>().is_ok(), "{env}");
    // Bad input: an unknown placeholder, named with its file and line, before anything starts.
    std::fs::write(&path, "[target]\ncommand = [\"sh\", \"{kafak}\"]\n").unwrap();
    let (code, _, err) = quiesce(dir.path(), &["run", path.to_str().unwrap()], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(
        err.contains("own.toml:2:19: [target] command[1]: unknown placeholder `{kafak}`"),
        "{err}"
    );
}
