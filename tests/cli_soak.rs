//! `quiesce soak` as a user runs it: a soak cut short by Ctrl-C still writes its report, one
//! killed outright leaves a timeline `quiesce soak report` reads, neither leaves a process
//! behind; and bad input is named.

use std::path::{Path, PathBuf};

use quiesce::exit_codes;

use crate::util::*;

/// A shell target that runs until SIGTERM, in `dir`.
fn scenario(dir: &Path) -> PathBuf {
    let path = dir.join("soak.toml");
    let text = format!(
        r#"name = "cli-soak"
[infra]
backend = "local"
[target]
command = ["sh", "-c", "trap 'exit 0' TERM; echo listening; while :; do sleep 0.05; done"]
cwd = "{}"
ready = {{ log = "^listening$" }}
"#,
        dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The sample lines of a timeline so far (the header not counted).
fn samples(timeline: &Path) -> usize {
    std::fs::read_to_string(timeline)
        .map(|t| t.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

fn soak_args<'a>(file: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "soak",
        file,
        "--duration",
        "20m",
        "--interval",
        "1s",
        "--out",
        out,
    ]
}

#[test]
fn ctrl_c_ends_a_soak_early_and_still_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let out = dir.path().join("out");
    let timeline = out.join("timeline.jsonl");
    let args = soak_args(file.to_str().unwrap(), out.to_str().unwrap());
    let child = quiesce_until(dir.path(), &args, || samples(&timeline) >= 3);
    let (code, stdout) = interrupt(child);
    assert_eq!(code, Some(exit_codes::INTERRUPTED), "{stdout}");
    assert!(stdout.contains("memory_flat"), "{stdout}");
    assert!(stdout.contains("cut short by Ctrl-C"), "{stdout}");
    assert!(out.join("soak.json").is_file() && out.join("soak.svg").is_file());
    assert!(samples(&timeline) >= 3);
    assert_eq!(processes_mentioning(dir.path()), Vec::<u32>::new());
}

#[test]
fn a_killed_soak_leaves_a_timeline_soak_report_reads() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let out = dir.path().join("out");
    let timeline = out.join("timeline.jsonl");
    let args = soak_args(file.to_str().unwrap(), out.to_str().unwrap());
    let mut child = quiesce_until(dir.path(), &args, || samples(&timeline) >= 3);
    child.kill().unwrap();
    child.wait().unwrap();
    let taken = samples(&timeline);
    assert!(taken >= 3);
    // Everything the harness started dies with it.
    eventually_sync("no process left", || {
        let left = processes_mentioning(dir.path());
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
    let timeline_arg = timeline.to_str().unwrap();
    let (code, stdout, stderr) = quiesce(dir.path(), &["soak", "report", timeline_arg], &[]);
    // A few seconds of samples: not enough to judge, and said so, with its own exit code (it
    // once exited 0: no evidence that memory is flat).
    assert_eq!(code, exit_codes::INCONCLUSIVE, "{stdout}{stderr}");
    assert!(
        stdout.contains("inconclusive") || stdout.contains("samples after"),
        "{stdout}"
    );
    assert!(out.join("soak.svg").is_file());
}

#[test]
fn bad_soak_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let file = file.to_str().unwrap();
    let (code, _, stderr) = quiesce(dir.path(), &["soak", file, "--duration", "soon"], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");

    let broken = dir.path().join("timeline.jsonl");
    std::fs::write(
        &broken,
        "{\"quiesce_soak\":1,\"scenario\":\"s\",\"pid\":1,\"interval_ms\":1000,\
         \"started_unix_ms\":0,\"threshold_mb_per_day\":10.0,\"warmup_ms\":0}\nnot json\n\
         {\"t_ms\":1,\"rss_bytes\":1,\"threads\":1}\n",
    )
    .unwrap();
    let (code, _, stderr) = quiesce(
        dir.path(),
        &["soak", "report", broken.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, exit_codes::BAD_INPUT, "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");

    let (code, _, stderr) = quiesce(dir.path(), &["soak", file, "--heap-threshold=nan"], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{stderr}");
    assert!(stderr.contains("--heap-threshold: `NaN`"), "{stderr}");

    let missing = dir.path().join("nope.jsonl");
    let (code, _, stderr) = quiesce(
        dir.path(),
        &["soak", "report", missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, exit_codes::BAD_INPUT, "{stderr}");
    assert!(stderr.contains("nope.jsonl"), "{stderr}");
}

/// The live heap is judged against its own threshold, the one the soak wrote in its header,
/// unless `soak report` is given another; `--threshold` alone sets both.
#[test]
fn soak_report_judges_the_heap_against_its_own_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let timeline = dir.path().join("timeline.jsonl");
    // 30 minutes at 1 Hz: resident memory flat, the live heap growing 12 MB/day under a
    // 42 KB sawtooth of buffers.
    let mut text = String::from(
        "{\"quiesce_soak\":1,\"scenario\":\"s\",\"pid\":1,\"interval_ms\":1000,\
         \"started_unix_ms\":0,\"threshold_mb_per_day\":25.0,\
         \"heap_threshold_mb_per_day\":10.0,\"warmup_ms\":0}\n",
    );
    for s in 0..1800u64 {
        let heap = (1 << 20) + (s % 7) * 6144 + 12 * (1 << 20) * s / 86_400;
        let rss = (8 << 20) + (s % 5) * 4096;
        text.push_str(&format!(
            "{{\"t_ms\":{},\"rss_bytes\":{rss},\"anon_bytes\":{rss},\"threads\":4,\"heap_bytes\":{heap}}}\n",
            s * 1000
        ));
    }
    std::fs::write(&timeline, text).unwrap();
    let path = timeline.to_str().unwrap();
    let report = |extra: &[&str]| {
        let args: Vec<&str> = ["soak", "report", path]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        quiesce(dir.path(), &args, &[])
    };
    let (code, stdout, stderr) = report(&[]);
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}{stderr}");
    assert!(
        stdout.contains("live heap leaks") && stdout.contains("threshold 10 MB/day"),
        "{stdout}"
    );
    let (code, stdout, stderr) = report(&["--threshold", "25"]);
    assert_eq!(code, exit_codes::OK, "{stdout}{stderr}");
    let (code, stdout, stderr) = report(&["--threshold", "25", "--heap-threshold", "10"]);
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}{stderr}");
}

/// Resident memory that grows over a flat live heap is the allocator's retention only when
/// the allocator's holdings from the system grew with it, in a one-process target. A target
/// whose resident growth is outside the malloc heap (mmap, thread stacks, another allocator,
/// a child) must not pass as "retained": the growth stands as a leak.
#[test]
fn resident_growth_over_a_flat_heap_is_retention_only_if_the_allocator_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    // 30 minutes at 1 Hz: RSS grows 60 MB/day; the live heap holds at 4 MB.
    let timeline = |name: &str, held_mb_per_day: Option<u64>, processes: u64| {
        let path = dir.path().join(format!("{name}.jsonl"));
        let mut text = String::from(
            "{\"quiesce_soak\":1,\"scenario\":\"s\",\"pid\":1,\"interval_ms\":1000,\
             \"started_unix_ms\":0,\"threshold_mb_per_day\":25.0,\"warmup_ms\":0}\n",
        );
        for s in 0..1800u64 {
            let grown = 60 * (1 << 20) * s / 86_400;
            let rss = (8 << 20) + (s % 5) * 4096 + grown;
            let heap = (4 << 20) + (s % 7) * 6144;
            let held = held_mb_per_day.map_or(String::new(), |mb| {
                format!(
                    ",\"heap_held_bytes\":{}",
                    (6 << 20) + (s % 3) * 8192 + mb * (1 << 20) * s / 86_400
                )
            });
            text.push_str(&format!(
                "{{\"t_ms\":{},\"rss_bytes\":{rss},\"anon_bytes\":{rss},\"threads\":4,\
                 \"heap_bytes\":{heap}{held},\"processes\":{processes}}}\n",
                s * 1000
            ));
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let report = |path: &std::path::Path| {
        quiesce(dir.path(), &["soak", "report", path.to_str().unwrap()], &[])
    };
    // The allocator's holdings grew with RSS: memory it keeps.
    let (code, stdout, stderr) = report(&timeline("kept", Some(60), 1));
    assert_eq!(code, exit_codes::OK, "{stdout}{stderr}");
    assert!(
        stdout.contains("retained by the allocator") && stdout.contains("memory it keeps"),
        "{stdout}"
    );
    // Hostile: the heap and the allocator's holdings flat, RSS growing (thread stacks, mmap).
    let (code, stdout, stderr) = report(&timeline("outside", Some(0), 1));
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}{stderr}");
    assert!(
        stdout.contains("not the allocator's retention")
            && stdout.contains("outside the malloc heap"),
        "{stdout}"
    );
    // Hostile: a child process grows; the heap is the root's alone.
    let (code, stdout, stderr) = report(&timeline("child", Some(60), 2));
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}{stderr}");
    assert!(stdout.contains("up to 2 processes"), "{stdout}");
    // A probe that reports no holdings cannot excuse the growth.
    let (code, stdout, stderr) = report(&timeline("unsaid", None, 1));
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}{stderr}");
    assert!(stdout.contains("no allocator holdings"), "{stdout}");
}

#[test]
fn several_files_soak_one_after_another_with_one_report() {
    let dir = tempfile::tempdir().unwrap();
    let first = scenario(dir.path());
    let second = dir.path().join("soak-2.toml");
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&second, text.replace("cli-soak", "cli-soak-2")).unwrap();
    let out = dir.path().join("out");
    let (a, b, o) = (
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let args = [
        "soak",
        a,
        b,
        "--duration",
        "5s",
        "--min-span",
        "2s",
        "--out",
        o,
    ];
    let (code, stdout, stderr) = quiesce(dir.path(), &args, &[]);
    // Five seconds of a shell show nothing of memory: each soak is inconclusive, and so is
    // the whole.
    assert_eq!(code, exit_codes::INCONCLUSIVE, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("[1/2] INCONCLUSIVE") && stderr.contains("[2/2] INCONCLUSIVE"),
        "{stderr}"
    );
    assert!(
        stderr.contains("infrastructure started 1 time(s)"),
        "{stderr}"
    );
    assert!(
        stdout.contains("soak verdict: INCONCLUSIVE (2 of 2 scenario(s) run"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("soaks.json")).unwrap()).unwrap();
    assert_eq!(
        json["scenarios"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
    for folder in ["01-soak", "02-soak-2"] {
        assert!(
            out.join(folder).join("timeline.jsonl").is_file(),
            "{folder}"
        );
    }
    assert_eq!(processes_mentioning(dir.path()), Vec::<u32>::new());
}

/// A graph soaked: each instance sampled into a timeline and a plot of its own and judged
/// `memory_flat` on its own: the service that grows fails, named; the flat one passes.
/// A graph scenario named `name` in `dir`, on the local backend: `services` with `{dir}` as
/// the folder they run in.
fn graph_scenario(dir: &Path, name: &str, services: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    let services = services.replace("{dir}", &dir.display().to_string());
    let text = format!("name = \"{name}\"\n[infra]\nbackend = \"local\"\n\n{services}");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_graph_soak_judges_each_instance_and_names_the_one_that_leaks() {
    let dir = tempfile::tempdir().unwrap();
    // `leaky` keeps 256 KiB more every 100 ms: about 200 GiB a day.
    let services = r#"[[services]]
name = "steady"
cwd = "{dir}"
command = ["sh", "-c", "trap 'exit 0' TERM; echo steady ready; while :; do sleep 0.05; done"]
ready = { log = "^steady ready$" }

[[services]]
name = "leaky"
cwd = "{dir}"
command = ["python3", "-c", "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\nkept = []\nprint('leaky ready', flush=True)\nwhile True:\n    kept.append(b'x' * 262144)\n    time.sleep(0.1)\n"]
ready = { log = "^leaky ready$" }
"#;
    let file = graph_scenario(dir.path(), "graph-soak", services);
    let out = dir.path().join("out");
    let args = [
        "soak",
        file.to_str().unwrap(),
        // 60 samples after the warm-up are the least a verdict rests on.
        "--duration",
        "75s",
        "--interval",
        "1s",
        "--warmup",
        "5s",
        "--min-span",
        "30s",
        // A minute cannot rule out 25 MB/day of a flat shell (its upper bound reached 44);
        // the leak is thousands of times over this one.
        "--threshold",
        "5000",
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = quiesce(dir.path(), &args, &[]);
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}\n{stderr}");
    let line = |check: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(check))
            .unwrap_or_else(|| panic!("no {check} line:\n{stdout}"))
            .to_owned()
    };
    assert!(line("leaky/memory_flat").contains("FAIL"), "{stdout}");
    assert!(line("steady/memory_flat").contains("PASS"), "{stdout}");
    for instance in ["steady", "leaky"] {
        let folder = out.join("services").join(instance);
        assert!(samples(&folder.join("timeline.jsonl")) >= 60, "{instance}");
        assert!(folder.join("soak.svg").is_file(), "{instance}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("soak.json")).unwrap()).unwrap();
    let soaked = json["soaked"].as_array().cloned().unwrap_or_default();
    assert_eq!(soaked.len(), 2, "{json}");
    assert_eq!(processes_mentioning(dir.path()), Vec::<u32>::new());
}

/// An instance of a graph that never started still gets its `memory_flat` row, inconclusive,
/// saying why: a soak's verdict names every instance.
#[test]
fn a_graph_soak_gives_an_instance_never_started_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let services = r#"[[services]]
name = "never"
cwd = "{dir}"
command = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]
ready = { log = "^never printed$" }

[[services]]
name = "after"
cwd = "{dir}"
command = ["sh", "-c", "trap 'exit 0' TERM; echo after ready; while :; do sleep 0.05; done"]
ready = { log = "^after ready$" }
depends_on = ["never"]

[checks]
starts_within = { deadline_ms = 2000 }
"#;
    let file = graph_scenario(dir.path(), "graph-soak-unstarted", services);
    let out = dir.path().join("out");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "soak",
        f,
        "--duration",
        "5s",
        "--min-span",
        "2s",
        "--out",
        o,
    ];
    let (code, stdout, stderr) = quiesce(dir.path(), &args, &[]);
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}\n{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("after/memory_flat"))
        .unwrap_or_else(|| panic!("no after/memory_flat row:\n{stdout}"));
    assert!(
        row.contains("never started: nothing was sampled"),
        "{stdout}"
    );
    assert!(stdout.contains("never/memory_flat"), "{stdout}");
    assert_eq!(processes_mentioning(dir.path()), Vec::<u32>::new());
}
