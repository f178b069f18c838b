//! The `quiesce infra` and `quiesce images` commands as a user runs them: the real binary,
//! its output and its exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quiesce::exit_codes;

use crate::util::*;

fn proxies_enabled(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["enabled"]
        .as_bool()
        .unwrap()
}

#[test]
fn unknown_backend_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = quiesce(tmp.path(), &["infra", "up", "--backend", "podman"], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("unknown backend `podman`"), "{err}");
    let (code, _, err) = quiesce(
        tmp.path(),
        &["infra", "up"],
        &[("QUIESCE_BACKEND", "podman")],
    );
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("QUIESCE_BACKEND"), "{err}");
}

#[test]
fn malformed_config_names_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("scenario.toml");
    std::fs::write(
        &file,
        "[infra]\nbackend = \"local\"\nready_timeout_secs = \"soon\"\n",
    )
    .unwrap();
    let (code, _, err) = quiesce(
        tmp.path(),
        &["infra", "up", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, exit_codes::BAD_INPUT, "{err}");
    assert!(err.contains("scenario.toml:3:22:"), "{err}");
}

#[test]
fn missing_redis_server_is_a_missing_prerequisite_and_starts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = quiesce(
        tmp.path(),
        &["infra", "up", "--backend", "local"],
        &[("QUIESCE_REDIS_SERVER", "/nonexistent/redis-server")],
    );
    assert_eq!(code, exit_codes::PREREQUISITE_MISSING, "{err}");
    assert!(
        err.contains("redis: program `/nonexistent/redis-server` not found"),
        "{err}"
    );
    assert_eq!(processes_mentioning(tmp.path()), Vec::<u32>::new());
}

#[test]
fn port_in_use_is_its_own_exit_code_and_starts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let (code, _, err) = quiesce(
        tmp.path(),
        &["infra", "up", "--backend", "local", "--redis-listen", &port],
        &[],
    );
    assert_eq!(code, exit_codes::ADDRESS_IN_USE, "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}: address already in use")),
        "{err}"
    );
    assert_eq!(processes_mentioning(tmp.path()), Vec::<u32>::new());
}

#[test]
fn unbuildable_image_is_an_infrastructure_failure() {
    let tmp = tempfile::tempdir().unwrap();
    // Docker refuses repository names with upper case and spaces.
    let (code, _, err) = quiesce(
        tmp.path(),
        &["images", "build"],
        &[("QUIESCE_IMAGE_PREFIX", "Not A Repo")],
    );
    assert_eq!(code, exit_codes::INFRA_FAILED, "{err}");
    assert!(err.contains("building image `Not A Repo/"), "{err}");
}

#[test]
fn infra_up_prints_endpoints_holds_and_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(QUIESCE)
        .args(["infra", "up", "--backend", "local"])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut exports = Vec::new();
    let json: serde_json::Value = loop {
        let line = lines
            .next()
            .expect("quiesce printed its endpoints")
            .unwrap();
        if line.starts_with('{') {
            break serde_json::from_str(&line).unwrap();
        }
        exports.push(line);
    };
    let bootstrap = json["endpoints"]["kafka_bootstrap"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = json["endpoints"]["redis_url"].as_str().unwrap().to_owned();
    assert_eq!(json["backend"], "local");
    assert!(
        exports.contains(&format!("export QUIESCE_KAFKA_BOOTSTRAP='{bootstrap}'")),
        "{exports:?}"
    );
    assert!(
        exports.contains(&format!("export QUIESCE_REDIS_URL='{url}'")),
        "{exports:?}"
    );
    assert!(json["dependencies"][0]["rss_bytes"].as_u64().unwrap() > 0);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(redis_set_get(&url, "cli", "up")).unwrap();
    kafka_metadata(&bootstrap, Duration::from_secs(30)).unwrap();
    let running = processes_mentioning(tmp.path());
    assert_eq!(running.len(), 2, "redis-server and tansu: {running:?}");

    // The Toxiproxy-compatible fault API acts on the same infrastructure.
    let api = json["fault_api"]
        .as_str()
        .expect("the fault API is served")
        .to_owned();
    assert!(
        exports.contains(&format!("export QUIESCE_FAULT_API='{api}'")),
        "{exports:?}"
    );
    let (status, body) = http(&api, "GET", "/proxies", None);
    assert_eq!(status, 200, "{body}");
    let proxies: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        proxies["redis"]["listen"],
        url.trim_start_matches("redis://")
    );
    assert_eq!(proxies["kafka"]["enabled"], true);

    let (status, body) = http(&api, "POST", "/proxies/redis", Some(r#"{"enabled":false}"#));
    assert_eq!((status, proxies_enabled(&body)), (200, false), "{body}");
    assert!(
        runtime
            .block_on(redis_set_get(&url, "cli", "down"))
            .is_err(),
        "proxy down via API"
    );
    let (status, _) = http(&api, "POST", "/reset", None);
    assert_eq!(status, 204);
    runtime
        .block_on(redis_set_get(&url, "cli", "reset"))
        .expect("reset brings the proxy up");

    let latency = r#"{"name":"slow","type":"latency","attributes":{"latency":300}}"#;
    let (status, body) = http(&api, "POST", "/proxies/redis/toxics", Some(latency));
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(&api, "POST", "/proxies/redis/toxics", Some(latency));
    assert_eq!(status, 409, "a duplicate toxic name conflicts");
    let started = Instant::now();
    runtime
        .block_on(redis_set_get(&url, "cli", "slow"))
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        http(&api, "DELETE", "/proxies/redis/toxics/slow", None).0,
        204
    );
    assert_eq!(
        http(&api, "DELETE", "/proxies/redis/toxics/slow", None).0,
        404
    );

    assert_eq!(http(&api, "POST", "/dependencies/redis/pause", None).0, 204);
    assert!(
        runtime
            .block_on(redis_set_get(&url, "cli", "paused"))
            .is_err(),
        "paused via API"
    );
    assert_eq!(
        http(&api, "POST", "/dependencies/redis/resume", None).0,
        204
    );
    runtime.block_on(eventually("redis after resume", async || {
        redis_set_get(&url, "cli", "resumed").await
    }));
    assert_eq!(
        http(&api, "POST", "/dependencies/redis/explode", None).0,
        400
    );
    assert_eq!(http(&api, "GET", "/proxies/postgres", None).0, 404);
    let moved = http(
        &api,
        "PATCH",
        "/proxies/kafka",
        Some(r#"{"listen":"127.0.0.1:1"}"#),
    );
    assert_eq!(moved.0, 400, "{}", moved.1);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "quiesce did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(exit_codes::OK));
    for pid in running {
        assert!(!alive(pid), "pid {pid} survived Ctrl-C");
    }
}
