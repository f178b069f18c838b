//! The CI recipes in docs/ci/ are real: the GitHub workflow validates against GitHub's
//! workflow schema, the Kubernetes Job against the Kubernetes schemas (both validators come
//! from PyPI through scripts/setup, with their schemas built in), and every quiesce command
//! either runs is accepted by quiesce's own argument parser.

use std::path::{Path, PathBuf};
use std::process::Command;

fn ci(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/ci")
        .join(file)
}

/// Runs `python3 -m module args...` with the CI validators on the path.
fn python(module: &str, args: &[&str]) -> (bool, String) {
    let deps = quiesce::infra::cache_dir().join("python-ci");
    assert!(
        deps.is_dir(),
        "{} is missing (hint: run ./scripts/setup)",
        deps.display()
    );
    let out = Command::new("python3")
        .arg("-m")
        .arg(module)
        .args(args)
        .env("PYTHONPATH", &deps)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The YAML file as JSON, read by the validators' own YAML parser.
fn as_json(file: &Path) -> serde_json::Value {
    let script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let (ok, out) = python_c(script, file);
    assert!(ok, "{out}");
    serde_json::from_str(&out).expect("JSON")
}

fn python_c(script: &str, file: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .args(["-c", script, file.to_str().unwrap()])
        .env("PYTHONPATH", quiesce::infra::cache_dir().join("python-ci"))
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_github_workflow_is_valid_and_runs_commands_quiesce_accepts() {
    let file = ci("github-actions.yml");
    let (ok, out) = python(
        "check_jsonschema",
        &[
            "--builtin-schema",
            "vendor.github-workflows",
            file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let workflow = as_json(&file);
    let mut commands = 0;
    for (name, job) in workflow["jobs"].as_object().unwrap() {
        // Each matrix value the job runs with.
        let shards: Vec<String> = job["strategy"]["matrix"]["shard"]
            .as_array()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|| vec!["1".to_owned()]);
        for step in job["steps"].as_array().unwrap() {
            let Some(run) = step["run"].as_str() else {
                continue;
            };
            for line in run.lines().filter(|l| l.contains("scripts/quiesce")) {
                for shard in &shards {
                    let line = line.replace("${{ matrix.shard }}", shard);
                    let mut words = line.split_whitespace();
                    let program = words.next().unwrap();
                    assert!(
                        Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("..")
                            .join(program)
                            .is_file(),
                        "job {name}: {program} does not exist"
                    );
                    let args: Vec<&str> = words.collect();
                    quiesce::cli::parses(&args)
                        .unwrap_or_else(|e| panic!("job {name}: `{line}` does not parse:\n{e}"));
                    commands += 1;
                }
            }
        }
    }
    assert!(commands >= 5, "{commands} quiesce commands checked");
}

#[test]
fn the_kubernetes_job_is_valid_and_runs_a_command_quiesce_accepts() {
    let file = ci("kubernetes-job.yaml");
    let (ok, out) = python("kubernetes_validate", &["--strict", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    let job = as_json(&file);
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][0], "quiesce");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    quiesce::cli::parses(&args).unwrap_or_else(|e| panic!("{args:?} does not parse:\n{e}"));
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env, ["QUIESCE_EXTERNAL_KAFKA", "QUIESCE_EXTERNAL_REDIS"]);
}

/// The checks above can fail: a misspelt flag and an invalid manifest are caught.
#[test]
fn a_wrong_flag_or_field_is_caught() {
    assert!(quiesce::cli::parses(["run", "x.toml", "--partition", "hash:1/3"]).is_ok());
    assert!(quiesce::cli::parses(["run", "x.toml", "--partitions", "1/3"]).is_err());
    assert!(quiesce::cli::parses(["soak", "x.toml", "--duration", "8 hours"]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("job.yaml");
    let text = std::fs::read_to_string(ci("kubernetes-job.yaml"))
        .unwrap()
        .replace("backoffLimit: 0", "backoffLimit: none");
    std::fs::write(&bad, text).unwrap();
    let (ok, out) = python("kubernetes_validate", &["--strict", bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
}
