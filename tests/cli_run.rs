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

#[test]
fn passing_run_exits_0_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "trap 'exit 0' TERM;", "");
    let junit = dir.path().join("junit.xml");
    let (code, out, err) = quiesce(
        dir.path(),
        &[
            "run",
            file.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, exit_codes::OK, "{out}{err}");
    assert!(out.contains("PASS  stops_within"), "{out}");
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
        &["run", file.to_str().unwrap(), "--env", "CODE=0"],
        &[],
    );
    assert_eq!(code, exit_codes::OK, "{out}{err}");
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
