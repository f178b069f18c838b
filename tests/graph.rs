//! Service graphs (`[[services]]`): started in dependency order, stopped in mirror order or
//! the file's, each service judged on its own (scenarios/graph/). Real processes, local
//! backend; each wrong service must be blamed alone.

use std::path::{Path, PathBuf};

use quiesce::exit_codes;

use crate::util::*;

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/graph")
}

fn judge(env: &[(&str, &str)]) -> Judged {
    let file = scenario_dir().join("graph.toml");
    judge_hostile(file.to_str().unwrap(), &["--backend", "local"], env)
}

/// Scenario `file` of scenarios/graph and the `services` it runs, copied into a temp folder
/// with `edit` applied to the scenario's text: its processes run there, so they can be found
/// by that folder.
fn copy_scenario(
    file: &str,
    services: &[&str],
    edit: impl Fn(String) -> String,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for service in services {
        std::fs::copy(scenario_dir().join(service), dir.path().join(service)).unwrap();
    }
    let text = std::fs::read_to_string(scenario_dir().join(file)).unwrap();
    let copy = dir.path().join(file);
    std::fs::write(&copy, edit(text)).unwrap();
    (dir, copy)
}

/// graph.toml and its service, copied (see [`copy_scenario`]).
fn graph_copy(edit: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
    copy_scenario("graph.toml", &["service.py"], edit)
}

/// When an event starting with `prefix` first happened (see [`at`]).
fn at_prefix(judged: &Judged, prefix: &str) -> u64 {
    first(judged, &format!("{prefix}..."), |e| e.starts_with(prefix))
}

/// When the first event `matches` happened; `what` names it if none did.
fn first(judged: &Judged, what: &str, matches: impl Fn(&str) -> bool) -> u64 {
    (judged.timeline.iter())
        .find(|(_, e)| matches(e))
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("no `{what}` on the timeline:\n{}", judged.output))
}

/// `text` with a `[[faults]]` step that redeploys `service` by `action` `at_ms` after ready,
/// before its `[stop]` table.
fn with_redeploy(text: &str, at_ms: u64, action: &str, service: &str) -> String {
    let step =
        format!("[[faults]]\nat_ms = {at_ms}\naction = \"{action}\"\nservice = \"{service}\"\n\n");
    text.replace("[stop]\n", &format!("{step}[stop]\n"))
}

/// When `event` first happened, in ms since the graph started. Events of the same
/// millisecond may stand in either order, so an order is asserted with `<=`.
fn at(judged: &Judged, event: &str) -> u64 {
    first(judged, event, |e| e == event)
}

const INSTANCES: [&str; 4] = ["store", "worker#1", "worker#2", "api"];

#[test]
fn services_start_after_what_they_depend_on_and_stop_in_mirror_order() {
    let judged = judge(&[]);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    for instance in INSTANCES {
        for check in [
            "starts_within",
            "stops_within",
            "exit_code",
            "no_orphan_processes",
        ] {
            let name = format!("{instance}/{check}");
            assert_eq!(judged.outcome(&name), "pass", "{name}\n{}", judged.output);
        }
    }
    // Start: each service once every instance of what it depends on is ready.
    assert!(at(&judged, "store: ready") <= at(&judged, "`worker` starting"));
    for worker in ["worker#1", "worker#2"] {
        assert!(at(&judged, &format!("{worker}: ready")) <= at(&judged, "`api` starting"));
        // Stop: the workers only once the API has exited, the store once both have.
        assert!(at(&judged, "api: exited (exit code 0)") <= at(&judged, "stopping `worker`"));
        let exited = at(&judged, &format!("{worker}: exited (exit code 0)"));
        assert!(exited <= at(&judged, "stopping `store`"));
    }
    // Each with its own signal: the API's is SIGINT.
    assert!(at(&judged, "api: sent SIGINT") <= at(&judged, "worker#1: sent SIGTERM"));
}

#[test]
fn the_files_stop_order_is_followed() {
    let (_dir, file) = graph_copy(|text| {
        text.replace(
            "[stop]\n",
            "[stop]\norder = [\"worker\", \"store\", \"api\"]\n",
        )
    });
    let judged = judge_hostile(file.to_str().unwrap(), &["--backend", "local"], &[]);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    let worker = at(&judged, "stopping `worker`");
    let store = at(&judged, "stopping `store`");
    assert!(worker <= store && store <= at(&judged, "stopping `api`"));
    assert!(at(&judged, "worker#2: exited (exit code 0)") <= store);
}

#[test]
fn a_service_that_ignores_sigterm_fails_alone_and_holds_back_the_next_stop() {
    let judged = judge(&[("GRAPH_BUG", "stubborn-worker")]);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    for worker in ["worker#1", "worker#2"] {
        let name = format!("{worker}/stops_within");
        assert_eq!(judged.outcome(&name), "violation", "{}", judged.output);
    }
    for service in ["store", "api"] {
        let name = format!("{service}/stops_within");
        assert_eq!(judged.outcome(&name), "pass", "{}", judged.output);
    }
    // The store is asked to stop only once the harness has killed both workers.
    let store = at(&judged, "stopping `store`");
    let killed = judged
        .timeline
        .iter()
        .filter(|(_, e)| e.starts_with("worker#") && e.contains("killed"))
        .count();
    assert!(killed >= 2, "{}", judged.output);
    let killed_before = judged
        .timeline
        .iter()
        .filter(|(at, e)| *at <= store && e.starts_with("worker#") && e.contains("killed"))
        .count();
    assert!(killed_before >= 2, "{}", judged.output);
}

#[test]
fn a_service_never_ready_keeps_what_depends_on_it_from_starting() {
    let judged = judge(&[("GRAPH_BUG", "never-ready-store")]);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("store/starts_within"),
        "violation",
        "{}",
        judged.output
    );
    for instance in ["worker#1", "worker#2", "api"] {
        let name = format!("{instance}/starts_within");
        assert_eq!(judged.outcome(&name), "inconclusive", "{}", judged.output);
        let started = format!("{instance}: started");
        assert!(
            !judged.timeline.iter().any(|(_, e)| e.starts_with(&started)),
            "{instance} was started:\n{}",
            judged.output
        );
    }
    assert!(
        judged
            .output
            .contains("not started: `store`, which it depends on, never became ready")
    );
}

#[test]
fn an_orphan_is_blamed_on_the_service_that_left_it() {
    let judged = judge(&[("GRAPH_BUG", "orphan-api")]);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("api/no_orphan_processes"),
        "violation",
        "{}",
        judged.output
    );
    for instance in ["store", "worker#1", "worker#2"] {
        let name = format!("{instance}/no_orphan_processes");
        assert_eq!(judged.outcome(&name), "pass", "{}", judged.output);
    }
    assert!(judged.output.contains("sleep 300"), "{}", judged.output);
}

#[test]
fn a_dependency_cycle_is_an_error_naming_it_and_its_line() {
    let (dir, file) = graph_copy(|text| {
        text.replace(
            "name = \"store\"\n",
            "name = \"store\"\ndepends_on = [\"api\"]\n",
        )
    });
    let (code, out, err) = quiesce(dir.path(), &["run", file.to_str().unwrap()], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{out}\n{err}");
    let line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("depends_on = [\"api\"]"))
        .unwrap()
        + 1;
    let wanted = format!("graph.toml:{line}:");
    assert!(err.contains(&wanted), "{wanted} in:\n{err}");
    assert!(
        err.contains("depends_on has a cycle: store -> api -> worker -> store"),
        "{err}"
    );
    assert!(processes_mentioning(dir.path()).is_empty());
}

#[test]
fn ctrl_c_stops_every_service_of_the_graph() {
    let (dir, file) = graph_copy(|text| text.replace("after_ms = 500", "after_ms = 600000"));
    let api_ready = || {
        std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("quiesce-run-"))
            .any(|run| {
                std::fs::read_to_string(run.path().join("api/stdout.log"))
                    .is_ok_and(|log| log.contains("api 1 ready"))
            })
    };
    let args = ["run", file.to_str().unwrap(), "--backend", "local"];
    let child = quiesce_until(dir.path(), &args, api_ready);
    assert!(processes_mentioning(dir.path()).len() >= 4);
    let (code, out) = interrupt(child);
    assert_eq!(code, Some(exit_codes::INTERRUPTED), "{out}");
    let left = processes_mentioning(dir.path());
    assert!(left.is_empty(), "still running: {left:?}\n{out}");
}

/// Asserts the Kafka checks a correct graph passes, and `more`, passed.
fn passed(judged: &Judged, more: &[&str]) {
    let kafka = [
        "offsets_committed",
        "no_message_loss",
        "no_redelivery",
        "group_left",
    ];
    for check in kafka.iter().chain(more) {
        assert_eq!(judged.outcome(check), "pass", "{check}\n{}", judged.output);
    }
}

/// Scenario `file` of scenarios/graph, its `chain.py` services given `CHAIN_BUG=bug`.
fn chain_py(file: &str, bug: &str) -> Judged {
    let file = scenario_dir().join(file);
    judge_hostile(
        file.to_str().unwrap(),
        &["--backend", "local"],
        &[("CHAIN_BUG", bug)],
    )
}

fn chain(bug: &str) -> Judged {
    chain_py("chain.toml", bug)
}

/// VARIANTS.md, `chain.toml` `correct`: every order of the chain processed once end to end,
/// each hop's commits judged against what it handed on.
#[test]
fn a_correct_chain_passes_hop_by_hop() {
    let judged = chain("");
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(&judged, &[]);
    assert!(
        judged
            .output
            .contains("group `chain-worker` on `orders-accepted`: committed =="),
        "{}",
        judged.output
    );
}

/// `intake-no-flush`: the intake commits orders still in its send buffer and exits without a
/// flush. The hop that lost them is named; the orders are lost end to end.
#[test]
fn an_intake_that_never_flushes_loses_orders_and_is_named() {
    let judged = chain("intake-no-flush");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    for check in [
        "offsets_committed",
        "no_message_loss",
        "intake/no_leaked_tasks",
    ] {
        assert_eq!(
            judged.outcome(check),
            "violation",
            "{check}\n{}",
            judged.output
        );
    }
    assert_eq!(
        judged.outcome("worker/no_leaked_tasks"),
        "pass",
        "{}",
        judged.output
    );
    assert!(
        judged
            .output
            .contains("group `chain-intake` on `orders`: committed offsets disagree"),
        "{}",
        judged.output
    );
}

fn store(bug: &str) -> Judged {
    chain_py("store.toml", bug)
}

/// VARIANTS.md, `store.toml` `correct`: the worker and its store start together (no
/// `depends_on`); the worker waits for the store, which it finds by `{port:store}`, before
/// it consumes, at the first start and at the restart alike.
#[test]
fn a_worker_that_waits_for_its_store_loses_nothing_when_started_beside_it() {
    let judged = store("");
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(&judged, &[]);
    // Both started at once, twice: nothing in the file held the worker back.
    let starts = |service: &str| {
        let first = format!("`{service}` starting");
        let again = format!("restart: {first}");
        (judged.timeline.iter())
            .filter(|(_, e)| *e == first || *e == again)
            .count()
    };
    assert_eq!(
        (starts("store"), starts("worker")),
        (2, 2),
        "{}",
        judged.output
    );
}

/// `worker-no-wait`: the worker consumes as soon as it starts; at the restart its store is
/// still loading, and the orders it refuses are skipped and committed: lost end to end.
#[test]
fn a_worker_that_consumes_before_its_store_is_ready_loses_orders() {
    let judged = store("worker-no-wait");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("no_message_loss"),
        "violation",
        "{}",
        judged.output
    );
    for instance in ["store", "worker"] {
        for check in ["starts_within", "stops_within", "exit_code"] {
            let check = format!("{instance}/{check}");
            assert_eq!(judged.outcome(&check), "pass", "{check}\n{}", judged.output);
        }
    }
}

/// graph.toml with its workers restarted 200 ms after the graph is ready, run for `run_ms`.
fn restarted(bug: &str, run_ms: u64) -> Judged {
    redeployed("restart", bug, run_ms)
}

/// graph.toml with its workers redeployed by `action` 200 ms after the graph is ready, run
/// for `run_ms`.
fn redeployed(action: &str, bug: &str, run_ms: u64) -> Judged {
    let (_dir, file) = graph_copy(|text| {
        with_redeploy(&text, 200, action, "worker")
            .replace("after_ms = 500", &format!("after_ms = {run_ms}"))
    });
    judge_hostile(
        file.to_str().unwrap(),
        &["--backend", "local"],
        &[("GRAPH_BUG", bug)],
    )
}

/// `restart` of one service: each worker stopped with its own signal while the rest run, and
/// started again once it has exited (`worker#1@2`); both incarnations judged, the new ones
/// stopped in the graph's order.
#[test]
fn a_restart_replaces_each_instance_once_it_has_exited() {
    let judged = restarted("", 3_000);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    for worker in ["worker#1", "worker#2"] {
        let sent = at(
            &judged,
            &format!("`{worker}`: SIGTERM from the fault schedule's restart"),
        );
        let replaced = at(
            &judged,
            &format!("`{worker}` exited: `{worker}@2` starting in its place"),
        );
        assert!(sent <= replaced, "{}", judged.output);
        assert!(
            replaced <= at(&judged, "stopping `api`"),
            "{}",
            judged.output
        );
        for (instance, check) in [
            (worker.to_owned(), "stops_within"),
            (worker.to_owned(), "exit_code"),
            (format!("{worker}@2"), "starts_within"),
            (format!("{worker}@2"), "stops_within"),
        ] {
            let name = format!("{instance}/{check}");
            assert_eq!(judged.outcome(&name), "pass", "{name}\n{}", judged.output);
        }
    }
    // The replacements are stopped in the graph's order: after the API, before the store.
    let workers = at(&judged, "stopping `worker`");
    assert!(
        at(&judged, "stopping `api`") <= workers,
        "{}",
        judged.output
    );
    assert!(
        workers <= at(&judged, "stopping `store`"),
        "{}",
        judged.output
    );
}

/// `stubborn-worker` restarted: a worker that ignores SIGTERM fails its stop at the restart,
/// killed at `kill_after_ms`, and its replacement starts only after the kill.
#[test]
fn a_restart_of_a_service_that_ignores_sigterm_fails_its_stop() {
    // Long enough for the kill (kill_after_ms = 3000) and the replacement's start.
    let judged = restarted("stubborn-worker", 6_000);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    for worker in ["worker#1", "worker#2"] {
        let name = format!("{worker}/stops_within");
        assert_eq!(judged.outcome(&name), "violation", "{}", judged.output);
        let sent = at(
            &judged,
            &format!("`{worker}`: SIGTERM from the fault schedule's restart"),
        );
        let replaced = at(
            &judged,
            &format!("`{worker}` exited: `{worker}@2` starting in its place"),
        );
        // kill_after_ms is 3000: the replacement waited for the kill.
        assert!(replaced >= sent + 2_900, "{}", judged.output);
    }
    assert_eq!(
        judged.outcome("store/stops_within"),
        "pass",
        "{}",
        judged.output
    );
}

/// chain.toml with its worker restarted mid-stream (a deploy of one service): the group
/// rebalances twice while the intake runs on; the orders are judged end to end as ever.
#[test]
fn a_worker_restarted_mid_stream_loses_and_repeats_nothing() {
    let (_dir, file) = copy_scenario("chain.toml", &["chain.py"], |text| {
        with_redeploy(&text, 3000, "restart", "worker")
    });
    let judged = judge_hostile(file.to_str().unwrap(), &["--backend", "local"], &[]);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(&judged, &["worker/stops_within", "worker@2/starts_within"]);
    let replaced = at(&judged, "`worker` exited: `worker@2` starting in its place");
    assert!(
        replaced <= at(&judged, "stopping `intake`"),
        "{}",
        judged.output
    );
}

/// A restart due once the graph's stop has begun is not played: the stop order decides, and
/// no draining instance gets a second signal. The workers ignore SIGTERM, so the stop lasts
/// until their kill (3 s) and the restart (1.5 s after ready) falls inside it.
#[test]
fn a_restart_due_during_the_graphs_stop_is_not_played() {
    let (_dir, file) = graph_copy(|text| {
        with_redeploy(&text, 1500, "restart", "store").replace("after_ms = 500", "after_ms = 300")
    });
    let judged = judge_hostile(
        file.to_str().unwrap(),
        &["--backend", "local"],
        &[("GRAPH_BUG", "stubborn-worker")],
    );
    at(
        &judged,
        "fault schedule: the restart of `store` not played, the graph is stopping",
    );
    if let Some((_, e)) = judged
        .timeline
        .iter()
        .find(|(_, e)| e.contains("`store`: SIG"))
    {
        panic!(
            "the store was signalled by the schedule ({e}):\n{}",
            judged.output
        );
    }
    for check in ["store/stops_within", "store/exit_code"] {
        assert_eq!(judged.outcome(check), "pass", "{check}\n{}", judged.output);
    }
    assert_eq!(
        judged.outcome("worker#1/stops_within"),
        "violation",
        "{}",
        judged.output
    );
}

/// `{port:NAME}` in a ready URL is the named service's port: the API is ready once the
/// store's `/ready` answers.
#[test]
fn a_ready_url_may_name_another_services_port() {
    let (_dir, file) = graph_copy(|text| {
        text.replace(
            "ready = { log = \"^api 1 ready$\" }",
            "ready = { http = \"http://127.0.0.1:{port:store}/ready\" }",
        )
    });
    let judged = judge_hostile(file.to_str().unwrap(), &["--backend", "local"], &[]);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    assert_eq!(
        judged.outcome("api/starts_within"),
        "pass",
        "{}",
        judged.output
    );
}

/// `rollout` of one service, as a Deployment's rolling update (surge 1, unavailable 0): each
/// worker's replacement started beside it, and the old one stopped only once the new one is
/// ready; the next only once the old one has exited. Every instance judged.
#[test]
fn a_rollout_stops_each_instance_only_once_its_replacement_is_ready() {
    let judged = redeployed("rollout", "", 4_000);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    let mut last = 0;
    for worker in ["worker#1", "worker#2"] {
        let new = format!("{worker}@2");
        let beside = at(
            &judged,
            &format!("rollout: `{new}` starting beside `{worker}`"),
        );
        let ready = at(&judged, &format!("{new}: ready"));
        let retired = at(
            &judged,
            &format!("rollout: `{new}` ready, `{worker}` sent SIGTERM"),
        );
        let exited = at(&judged, &format!("{worker}: exited (exit code 0)"));
        // One at a time, and never fewer ready workers than the service has replicas.
        assert!(
            last <= beside && beside <= ready && ready <= retired && retired <= exited,
            "{worker}: {last} {beside} {ready} {retired} {exited}\n{}",
            judged.output
        );
        last = exited;
        for (instance, check) in [
            (worker, "stops_within"),
            (worker, "exit_code"),
            (new.as_str(), "starts_within"),
            (new.as_str(), "stops_within"),
        ] {
            let name = format!("{instance}/{check}");
            assert_eq!(judged.outcome(&name), "pass", "{name}\n{}", judged.output);
        }
    }
    assert!(
        at(&judged, "rollout of `worker` done") <= at(&judged, "stopping `api`"),
        "{}",
        judged.output
    );
}

/// `stubborn-worker` rolled out: each old worker ignores SIGTERM and is killed at its grace
/// period (`kill_after_ms`, 3 s), failing its stop; the next replacement waits for the kill.
#[test]
fn a_rollout_of_a_service_that_ignores_sigterm_fails_each_old_instance() {
    let judged = redeployed("rollout", "stubborn-worker", 12_000);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    for worker in ["worker#1", "worker#2"] {
        let name = format!("{worker}/stops_within");
        assert_eq!(judged.outcome(&name), "violation", "{}", judged.output);
    }
    let retired = at(
        &judged,
        "rollout: `worker#1@2` ready, `worker#1` sent SIGTERM",
    );
    let next = at(&judged, "rollout: `worker#2@2` starting beside `worker#2`");
    assert!(next >= retired + 2_900, "{}", judged.output);
}

/// chain.toml with its worker rolled out 3 s into the stream, `CHAIN_BUG=bug`.
fn chain_rolled_out(bug: &str) -> Judged {
    chain_rolled_out_at(bug, None)
}

/// chain.toml with its worker rolled out 3 s into the stream, each old instance stopped at
/// `stop_old` (the default if `None`), `CHAIN_BUG=bug`.
fn chain_rolled_out_at(bug: &str, stop_old: Option<&str>) -> Judged {
    let (_dir, file) = chain_rollout_file(stop_old);
    judge_hostile(
        file.to_str().unwrap(),
        &["--backend", "local"],
        &[("CHAIN_BUG", bug)],
    )
}

/// chain.toml stopped on a timer, 15 s after ready, not mid-stream: the stop comes well after
/// the deadline past the rollout's last exit (a stop inside it leaves each partition's last
/// gap seen only in part, and `takeover_within` undecided).
fn stopped_after_the_rollout(text: &str) -> String {
    let text = text
        .replace("after_ms = 60000", "after_ms = 15000")
        .replace(
            "restart = true\n",
            "restart = true\nstop_when_processed = false\n",
        );
    assert!(text.contains("after_ms = 15000") && text.contains("stop_when_processed = false"));
    text
}

/// chain.toml and chain.py in a temp folder, with the worker's rollout step.
fn chain_rollout_file(stop_old: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    copy_scenario("chain.toml", &["chain.py"], |text| {
        let text = with_redeploy(&stopped_after_the_rollout(&text), 3000, "rollout", "worker");
        match stop_old {
            Some(at) => text.replace(
                "service = \"worker\"\n\n[stop]",
                &format!("service = \"worker\"\nstop_old = \"{at}\"\n\n[stop]"),
            ),
            None => text,
        }
    })
}

/// chain.toml with its worker rolled out mid-stream: the new member joins the group while
/// the old one consumes, and the old one is stopped once the new one is ready, inside or
/// just after the rebalance; every order is still processed once end to end (the worker
/// commits what it handed on when partitions are revoked).
#[test]
fn a_worker_rolled_out_mid_stream_loses_and_repeats_nothing() {
    let judged = chain_rolled_out("");
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(
        &judged,
        &[
            "worker/stops_within",
            "worker@2/starts_within",
            "worker/takeover_within",
        ],
    );
    let retired = at(&judged, "rollout: `worker@2` ready, `worker` sent SIGTERM");
    // The old member is stopped only once the new one has joined the group (SyncGroup).
    let joined = at_prefix(&judged, "rollout: `worker@2` joined as member `");
    assert!(joined <= retired, "{}", judged.output);
    assert!(
        retired <= at(&judged, "stopping `intake`"),
        "{}",
        judged.output
    );
}

/// `stop_old = "join"`: the old worker is sent SIGTERM at the new member's first JoinGroup,
/// before anyone has its new assignment: its stop lands inside the rebalance on purpose. The
/// correct worker still loses and repeats nothing.
#[test]
fn a_worker_stopped_inside_the_rebalance_loses_and_repeats_nothing() {
    let judged = chain_rolled_out_at("", Some("join"));
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    // Each worker left its own group at its own stop: the old one at the rollout's.
    passed(
        &judged,
        &[
            "worker/stops_within",
            "worker@2/starts_within",
            "worker/group_left",
            "worker@2/group_left",
            "intake/group_left",
            "worker/takeover_within",
        ],
    );
    // The takeover is timed from the SIGTERM to the new member's first Fetch of each
    // partition the old one was assigned.
    assert!(
        judged.output.contains("`worker`: its ") && judged.output.contains("consumed again within"),
        "{}",
        judged.output
    );
    let joining = at_prefix(&judged, "rollout: `worker@2` sent its first JoinGroup");
    // Stopped at the join, before the new worker was ready (it is once it has partitions).
    let retired = at(
        &judged,
        "rollout: `worker@2` joining, not yet ready, `worker` sent SIGTERM",
    );
    assert!(joining <= retired, "{}", judged.output);
    assert!(
        retired <= at(&judged, "worker@2: ready"),
        "{}",
        judged.output
    );
    assert!(
        !judged.output.contains("joined as member"),
        "no wait for the SyncGroup:\n{}",
        judged.output
    );
}

/// `worker-v2-warms-up`: the new release is ready and assigned every partition within
/// milliseconds, then warms a cache for 12 s before its first record. Its client fetched
/// each partition once (and buffers what it got): a takeover of the first Fetch alone would
/// pass; the longest gap, no Fetch while it was assigned, fails.
#[test]
fn a_new_release_that_takes_partitions_and_consumes_none_fails_the_takeover() {
    let judged = chain_rolled_out_at("worker-v2-warms-up", Some("join"));
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    outcome_is(&judged, "worker/takeover_within", "violation");
    assert!(
        judged.output.contains("was consumed by no instance for"),
        "{}",
        judged.output
    );
}

/// Two worker replicas rolled out at the join, one after the other: the second old worker's
/// SIGTERM comes while the first step's rebalance may still settle. Every partition either
/// held is consumed again by its next owner within the deadline, the percentiles taken over
/// all the rollout's partition moves, and no order is lost or repeated.
/// Three members rebalance here: without the broker's barrier (patch 0013) a correct
/// service showed orders processed twice.
#[test]
fn two_worker_replicas_rolled_out_at_the_join_are_taken_over_in_time() {
    let (_dir, file) = copy_scenario("chain.toml", &["chain.py"], |text| {
        let text = stopped_after_the_rollout(&text).replacen(
            "ready = { log = \"^worker ready$\" }\n",
            "ready = { log = \"^worker ready$\" }\nreplicas = 2\n",
            1,
        );
        with_redeploy(&text, 3000, "rollout", "worker").replace(
            "service = \"worker\"\n\n[stop]",
            "service = \"worker\"\nstop_old = \"join\"\n\n[stop]",
        )
    });
    let judged = judge_hostile(file.to_str().unwrap(), &["--backend", "local"], &[]);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(
        &judged,
        &[
            "worker/takeover_within",
            "worker#1/group_left",
            "worker#2/group_left",
        ],
    );
    assert!(
        judged.output.contains("partition move(s)"),
        "{}",
        judged.output
    );
}

/// `worker-no-close`: the worker flushes and commits on the way out but never stops its
/// consumer, so it exits without LeaveGroup. `worker/group_left` is judged at its own stop on
/// the members of the connections its own process opened, in its own group (the hop's,
/// `chain-worker`): FAIL at the graph's stop, where the graph's `group_left` (the intake's
/// group) passes, and at a rollout's, where its replacement waits out the session timeout.
#[test]
fn a_worker_that_never_closes_its_consumer_fails_its_own_group_left() {
    let plain = chain("worker-no-close");
    outcome_is(&plain, "worker/group_left", "violation");
    outcome_is(&plain, "intake/group_left", "pass");
    outcome_is(&plain, "group_left", "pass");
    let rolled = chain_rolled_out_at("worker-no-close", Some("join"));
    outcome_is(&rolled, "worker/group_left", "violation");
    assert!(
        rolled.output.contains("never sent LeaveGroup"),
        "{}",
        rolled.output
    );
    // Its partitions wait out its 10 s session timeout: no one consumes them for that long.
    outcome_is(&rolled, "worker/takeover_within", "violation");
}

/// VARIANTS.md, `worker-waits-handover`: a rolling update's stall. On the way out, with its
/// replacement in the group, the worker waits without a bound for its partitions to be
/// revoked, which a rebalance never does while it is a member. A plain stop (alone in the
/// group) passes; rolled out at the join it is killed at its grace period, never leaves, and
/// its partitions go unconsumed past the takeover deadline: until the broker evicts it at its
/// session timeout, as Kafka does, and its replacement takes them over.
#[test]
fn a_worker_that_waits_for_its_handover_passes_a_plain_stop_and_stalls_a_rollout() {
    let plain = chain("worker-waits-handover");
    assert_eq!(plain.code, exit_codes::OK, "{}", plain.output);
    // The stop waits for every order (up to its 60 s): mid-stream, it would come as soon as
    // the partitions the new member got carried half of them, often before the eviction.
    let (_dir, file) = copy_scenario("chain.toml", &["chain.py"], |text| {
        let text = with_redeploy(&text, 3000, "rollout", "worker")
            .replace(
                "service = \"worker\"\n\n[stop]",
                "service = \"worker\"\nstop_old = \"join\"\n\n[stop]",
            )
            .replace(
                "restart = true\n",
                "restart = true\nstop_when_processed = true\n",
            );
        assert!(text.contains("stop_old") && text.contains("stop_when_processed"));
        text
    });
    let rolled = judge_hostile(
        file.to_str().unwrap(),
        &["--backend", "local"],
        &[("CHAIN_BUG", "worker-waits-handover")],
    );
    assert_eq!(rolled.code, exit_codes::VIOLATION, "{}", rolled.output);
    outcome_is(&rolled, "worker/stops_within", "violation");
    outcome_is(&rolled, "worker/takeover_within", "violation");
    // Taken over ≈ the session timeout after the kill: its 15 s grace period, then aiokafka's
    // 10 s session (less the up to 3 s since its last heartbeat), then the survivor's next
    // heartbeat, rejoin and first Fetch. Never taken over at all (a broker that keeps the
    // dead member's assignment) has no such line.
    let taken: Vec<u64> = (rolled.output.lines())
        .filter_map(|l| {
            let l = l.split("its owner) only ").nth(1)?;
            l.strip_suffix(" ms after its SIGTERM")?.parse().ok()
        })
        .collect();
    assert!(!taken.is_empty(), "{}", rolled.output);
    for ms in taken {
        assert!(
            (20_000..=45_000).contains(&ms),
            "{ms} ms\n{}",
            rolled.output
        );
    }
    // It hung past its grace and was killed by the harness, never having left: its failure.
    outcome_is(&rolled, "worker/group_left", "violation");
    outcome_is(&rolled, "worker@2/starts_within", "pass");
}

/// The same rollout at the join on the containers backend: the broker in a container, the
/// join still read on the wire through the harness's proxy.
#[test]
fn a_worker_stopped_inside_the_rebalance_passes_on_the_containers_backend() {
    let (_dir, file) = chain_rollout_file(Some("join"));
    let judged = judge_on_containers(&file, &[]);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(&judged, &["worker/stops_within", "worker/takeover_within"]);
    at_prefix(&judged, "rollout: `worker@2` sent its first JoinGroup");
}

/// `worker-ignores-rebalance`: a worker that commits every partition it ever read, with no
/// rebalance listener. A plain run has one member and passes; the rollout's new member takes
/// partitions away, and the old worker's next commit names partitions it no longer owns:
/// aiokafka raises, and the worker dies mid-rollout, without leaving its group. Its death
/// follows the rebalance's end by one poll, and so does its stop (at the new member's
/// SyncGroup, which a broker answers once every member has rejoined): it is dead, or dying
/// with its signal handlers gone, when its SIGTERM comes. Either way it never leaves, and
/// the partitions it was given in the new generation wait out its session.
#[test]
fn a_worker_that_ignores_rebalances_passes_a_plain_stop_and_dies_in_a_rollout() {
    let plain = chain("worker-ignores-rebalance");
    assert_eq!(plain.code, exit_codes::OK, "{}", plain.output);
    let judged = chain_rolled_out("worker-ignores-rebalance");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    outcome_is(&judged, "worker/exit_code", "violation");
    // Dead before its SIGTERM, it was never stopped: nothing to judge of its leave, and the
    // rollout replaced no instance. Told to stop as it died, it never left.
    if !(judged.output).contains("ended by itself before it was told to stop") {
        outcome_is(&judged, "worker/group_left", "violation");
        outcome_is(&judged, "worker/takeover_within", "violation");
    }
    outcome_is(&judged, "worker@2/exit_code", "pass");
    outcome_is(&judged, "no_message_loss", "pass");
}

/// `worker-assumes-topic`: the worker starts first and subscribes to a topic only the intake
/// creates: it is never ready, and the intake, which waits for it, is never started.
#[test]
fn a_worker_that_waits_for_a_topic_nobody_made_yet_never_starts_the_chain() {
    let judged = chain("worker-assumes-topic");
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("worker/starts_within"),
        "violation",
        "{}",
        judged.output
    );
    assert_eq!(
        judged.outcome("intake/starts_within"),
        "inconclusive",
        "{}",
        judged.output
    );
    assert_eq!(
        judged.outcome("no_message_loss"),
        "inconclusive",
        "{}",
        judged.output
    );
    assert!(
        judged.output.contains("orders-accepted"),
        "{}",
        judged.output
    );
}

/// `quiesce loop` cycles the whole graph: every cycle starts and stops every service, and a
/// service's failure fails its cycle.
#[test]
fn a_loop_cycles_the_whole_graph() {
    let (dir, file) = graph_copy(|text| text);
    let out = dir.path().join("out");
    let (file, out_s) = (file.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "loop",
        file,
        "-n",
        "2",
        "--backend",
        "local",
        "--out",
        out_s,
    ];
    let (code, stdout, stderr) = quiesce(dir.path(), &args, &[]);
    assert_eq!(code, exit_codes::OK, "{stdout}\n{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("loop.json")).unwrap()).unwrap();
    assert_eq!(
        (json["cycles"].as_u64(), json["failed"].as_u64()),
        (Some(2), Some(0)),
        "{json}"
    );
    let env = [("GRAPH_BUG", "stubborn-worker")];
    let (code, stdout, _) = quiesce(dir.path(), &args, &env);
    assert_eq!(code, exit_codes::VIOLATION, "{stdout}");
    assert!(stdout.contains("worker#1/stops_within"), "{stdout}");
    assert!(processes_mentioning(dir.path()).is_empty());
}

/// A `[[faults]]` signal naming a service goes to its every running instance while the rest
/// run on; the graph's stop then passes it by. Each instance judges that signal as its stop.
#[test]
fn the_fault_schedule_kills_one_service_while_the_rest_run() {
    let (_dir, file) = graph_copy(|text| {
        text.replace(
            "[stop]\n",
            "[[faults]]\nafter = \"ready\"\nat_ms = 200\naction = \"signal\"\nservice = \"worker\"\nsignal = \"kill\"\n\n[stop]\n",
        )
        .replace("after_ms = 500", "after_ms = 1500")
    });
    let judged = judge_hostile(file.to_str().unwrap(), &["--backend", "local"], &[]);
    for worker in ["worker#1", "worker#2"] {
        let killed = at(
            &judged,
            &format!("`{worker}`: SIGKILL from the fault schedule"),
        );
        assert!(killed <= at(&judged, "stopping `api`"), "{}", judged.output);
        let name = format!("{worker}/exit_code");
        assert_eq!(judged.outcome(&name), "inconclusive", "{}", judged.output);
    }
    for instance in ["store", "api"] {
        let name = format!("{instance}/stops_within");
        assert_eq!(judged.outcome(&name), "pass", "{}", judged.output);
    }
    assert!(
        !judged
            .timeline
            .iter()
            .any(|(_, e)| e == "stopping `worker`"),
        "{}",
        judged.output
    );
    // A signal in a graph names its service; a service is a graph's word.
    let (dir, bad) = graph_copy(|text| {
        text.replace(
            "[stop]\n",
            "[[faults]]\naction = \"signal\"\nsignal = \"term\"\n\n[stop]\n",
        )
    });
    let (code, out, err) = quiesce(dir.path(), &["check", bad.to_str().unwrap()], &[]);
    assert_eq!(code, exit_codes::BAD_INPUT, "{out}{err}");
    assert!(
        out.contains("[[faults]] step 1: a signal in a graph goes to a service"),
        "{out}{err}"
    );
}

fn ingress(bug: &str) -> Judged {
    let file = scenario_dir().join("ingress.toml");
    judge_hostile(
        file.to_str().unwrap(),
        &["--backend", "local"],
        &[("API_BUG", bug)],
    )
}

/// The JSON evidence `no_message_loss` gave.
fn loss_evidence(judged: &Judged) -> String {
    let json: serde_json::Value = serde_json::from_str(
        judged
            .output
            .split("--- stdout\n")
            .nth(1)
            .and_then(|o| o.split("\n--- stderr").next())
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("not a JSON verdict ({e}):\n{}", judged.output));
    json["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["check"] == "no_message_loss")
        .map(|r| r.to_string())
        .unwrap_or_else(|| panic!("no no_message_loss:\n{}", judged.output))
}

/// VARIANTS.md, `ingress.toml` `correct`: the API drains (503s while in flight requests end),
/// flushes, and every order it answered 202 reaches the end of the graph once. The refusals
/// are counted, not lost.
#[test]
fn an_api_that_drains_and_flushes_passes_every_acknowledged_request() {
    let judged = ingress("");
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(
        &judged,
        &[
            "api/stops_within",
            "worker/stops_within",
            "scheduler/lock_released",
            "scheduler/single_leader",
        ],
    );
    let evidence = loss_evidence(&judged);
    assert!(
        evidence.contains("`api` answered") && evidence.contains("acknowledged (2xx)"),
        "{evidence}"
    );
    assert!(
        evidence.contains("refused (503 x"),
        "the drain's refusals are counted:\n{evidence}"
    );
}

/// Runs `ingress.toml` with `API_BUG=bug`, asserts `no_message_loss` alone of the Kafka
/// checks fails, and returns its evidence.
fn ingress_loses(bug: &str) -> String {
    let judged = ingress(bug);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    assert_eq!(
        judged.outcome("no_message_loss"),
        "violation",
        "{}",
        judged.output
    );
    for check in ["offsets_committed", "no_redelivery", "api/stops_within"] {
        assert_eq!(judged.outcome(check), "pass", "{check}\n{}", judged.output);
    }
    loss_evidence(&judged)
}

/// `no-flush`: the API answers 202 and its shutdown forgets the producer. The worker, its
/// group and the restart all did right by what reached `orders`: only the door lost orders,
/// and `no_message_loss` names the API and the keys.
#[test]
fn an_api_that_never_flushes_acknowledges_orders_it_loses() {
    let evidence = ingress_loses("no-flush");
    assert!(
        evidence.contains("answered 2xx by `api` never reached `orders`"),
        "{evidence}"
    );
}

/// `producer-first`: the shutdown's order inverted: the producer flushed before the server
/// stops, which goes on answering 202 into a producer nobody flushes again.
#[test]
fn an_api_that_flushes_before_it_stops_serving_loses_what_it_accepts_after() {
    let evidence = ingress_loses("producer-first");
    assert!(
        !evidence.contains("refused (503"),
        "this API refused nothing while stopping:\n{evidence}"
    );
}

/// Hostile shapes a correct worker must not be blamed for: the API writes every other order
/// and then answers 503 (refused at the door, still an input), and writes each order twice (a
/// retried produce: two inputs with one key). The worker processes all of it once: PASS, and
/// the evidence says what the API wrote beyond what it acknowledged.
#[test]
fn what_an_api_writes_beyond_its_acknowledgements_is_judged_as_input() {
    let judged = ingress("write-then-503,written-twice");
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(&judged, &[]);
    let evidence = loss_evidence(&judged);
    for says in [
        "not acknowledged were written all the same",
        "written twice or more",
        "refused (503 x",
    ] {
        assert!(evidence.contains(says), "{says}:\n{evidence}");
    }
}

/// A `103 Early Hints` before the 202 is not the answer: the 202 is, and the orders the API
/// then loses (`no-flush`) are owed.
#[test]
fn an_interim_answer_is_not_the_acknowledgement() {
    let evidence = ingress_loses("early-hints,no-flush");
    assert!(!evidence.contains("(103"), "{evidence}");
}

/// `[readiness]` on a graph, judged on the service it names: the reference API (api-startup)
/// in front of a worker. Its truthful `/ready` passes through a Kafka and a Redis outage and
/// the drain; `ready-always-200` fails, the Kafka outage named.
#[test]
fn readiness_is_judged_on_the_service_that_serves_it() {
    // The file and its worker in a temp folder, the API the test build's own.
    let api = workspace_bin("api-startup");
    let (_dir, file) = copy_scenario("readiness.toml", &["service.py"], |text| {
        text.replace("../../target/release/api-startup", &api)
    });
    let judge = |variant: &str| {
        judge_hostile(
            file.to_str().unwrap(),
            &["--backend", "local"],
            &[("QUIESCE_VARIANT", variant)],
        )
    };
    let truthful = judge("correct");
    assert_eq!(truthful.code, exit_codes::OK, "{}", truthful.output);
    assert_eq!(truthful.outcome("readiness_truthful"), "pass");
    assert!(
        truthful.output.contains("kafka down: /ready 503 after"),
        "{}",
        truthful.output
    );
    let lying = judge("ready-always-200");
    assert_eq!(lying.code, exit_codes::VIOLATION, "{}", lying.output);
    assert_eq!(
        lying.outcome("readiness_truthful"),
        "violation",
        "{}",
        lying.output
    );
    assert!(
        lying.output.contains("/ready answered 200 throughout"),
        "{}",
        lying.output
    );
}

/// The graph's stop order inverted, worker first: the API goes on acknowledging while the
/// worker is gone. With a topic between them that loses nothing: what the API wrote waits in
/// `orders` for the restart, and a correct graph passes. (The inverted order that loses
/// orders is inside the API: `producer-first`.) The timeline shows the order.
#[test]
fn a_worker_stopped_before_the_api_loses_nothing_with_a_topic_between() {
    let (_dir, file) = copy_scenario(
        "ingress.toml",
        &["api.py", "chain.py", "scheduler.py"],
        |text| {
            text.replace(
                "[stop]\n",
                "[stop]\norder = [\"worker\", \"api\", \"scheduler\"]\n",
            )
        },
    );
    let judged = judge_hostile(file.to_str().unwrap(), &["--backend", "local"], &[]);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    passed(&judged, &[]);
    assert!(
        at(&judged, "stopping `worker`") <= at(&judged, "stopping `api`"),
        "{}",
        judged.output
    );
}

/// Not an orphan: a service starts a helper through a subshell that exits at once (so the
/// helper is re-parented to the harness, in the service's group, with its run's mark) and
/// stops it itself at its own stop. Another service exiting first must not be blamed for it.
#[test]
fn a_helper_a_running_service_still_manages_is_nobodys_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("helper.pid");
    let file = dir.path().join("graph-helper.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"graph-helper\"\n\n[[services]]\nname = \"store\"\ncommand = [\"sh\", \"-c\", \
             \"(sleep 300 & echo $! > {p}); echo ready; trap 'kill $(cat {p}); exit 0' TERM; \
             while :; do sleep 0.1; done\"]\nready = {{ log = \"^ready$\" }}\n\n[[services]]\n\
             name = \"api\"\ncommand = [\"sh\", \"-c\", \"echo ready; trap 'exit 0' TERM; while :; \
             do sleep 0.1; done\"]\nready = {{ log = \"^ready$\" }}\ndepends_on = [\"store\"]\n\n\
             [stop]\nafter_ms = 500\nkill_after_ms = 3000\n\n[checks]\n\
             allow_inconclusive = [\"no_leaked_tasks\", \"no_leaked_threads\"]\n",
            p = pid_file.display()
        ),
    )
    .unwrap();
    let judged = judge_hostile(file.to_str().unwrap(), &["--backend", "local"], &[]);
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    for instance in ["api", "store"] {
        assert_eq!(
            judged.outcome(&format!("{instance}/no_orphan_processes")),
            "pass",
            "{}",
            judged.output
        );
    }
}

/// scheduler.toml (redis-py `Lock`, two replicas), its scheduler given `SCHEDULER_BUG=bug`,
/// redeployed by `action` (if any) 1 s after the graph is ready and then run for 6 s in all
/// (a lock left behind expires by then: its timeout is 3 s).
fn scheduler(bug: &str, action: Option<&str>) -> Judged {
    let (_dir, file) = copy_scenario("scheduler.toml", &["scheduler.py"], |text| match action {
        Some(action) => with_redeploy(&text, 1_000, action, "scheduler")
            .replace("after_ms = 3000", "after_ms = 6000"),
        None => text,
    });
    judge_hostile(
        file.to_str().unwrap(),
        &["--backend", "local"],
        &[("SCHEDULER_BUG", bug)],
    )
}

/// `judged`'s `check` came out `outcome`.
fn outcome_is(judged: &Judged, check: &str, outcome: &str) {
    assert_eq!(judged.outcome(check), outcome, "{check}\n{}", judged.output);
}

/// The detail of `check`'s row.
fn detail<'j>(judged: &'j Judged, check: &str) -> &'j str {
    let row = (judged.output.lines())
        .position(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no `{check}` row:\n{}", judged.output));
    judged.output.lines().nth(row).unwrap_or_default()
}

/// VARIANTS.md, `scheduler.toml` `correct`, rolled out: each replica in turn is replaced while
/// the other runs; the leader releases its lock at its SIGTERM and another replica leads
/// within a poll, never waiting out the lock's timeout; at the graph's stop the last leader
/// releases too. Every hold is attributed to a replica by its own link.
#[test]
fn a_scheduler_rolled_out_hands_its_lock_over_at_each_stop() {
    let judged = scheduler("", Some("rollout"));
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
    for check in ["lock_released", "single_leader", "jobs_once_per_interval"] {
        let name = format!("scheduler/{check}");
        outcome_is(&judged, &name, "pass");
    }
    let released = detail(&judged, "scheduler/lock_released");
    // A hold ended at a rollout's stop, another replica leading after it, and the last one
    // at the graph's stop.
    assert!(
        released.contains("released the key") && released.contains("led "),
        "{}",
        judged.output
    );
    assert!(released.contains("@2`"), "{}", judged.output);
    // The jobs ran under more than one replica.
    let single = detail(&judged, "scheduler/single_leader");
    assert!(!single.contains("by 1 instance(s)"), "{}", judged.output);
}

/// VARIANTS.md, `scheduler.toml` `no-release`: the leader exits without releasing its lock;
/// it is still held, by that replica's value, past the deadline after the graph's stop (a
/// plain stop), or it expires and only then does another replica lead (a rollout).
#[test]
fn a_scheduler_that_leaves_its_lock_to_expire_fails_at_its_stop() {
    let plain = scheduler("no-release", None);
    assert_eq!(plain.code, exit_codes::VIOLATION, "{}", plain.output);
    outcome_is(&plain, "scheduler/lock_released", "violation");
    assert!(
        plain.output.contains("still held the key"),
        "{}",
        plain.output
    );
    let rolled = scheduler("no-release", Some("rollout"));
    outcome_is(&rolled, "scheduler/lock_released", "violation");
    assert!(rolled.output.contains("hold expired"), "{}", rolled.output);
}

/// VARIANTS.md, `scheduler.toml` `every-replica`: the job is scheduled on every replica and
/// the lock only decides which one says it leads: each interval's job runs twice, once under
/// the other replica's lock, while the lock itself is taken and released correctly.
#[test]
fn a_job_scheduled_on_every_replica_is_two_leaders() {
    let judged = scheduler("every-replica", None);
    assert_eq!(judged.code, exit_codes::VIOLATION, "{}", judged.output);
    for check in ["single_leader", "jobs_once_per_interval"] {
        let name = format!("scheduler/{check}");
        outcome_is(&judged, &name, "violation");
    }
    assert!(
        judged.output.contains("ran while the lock was scheduler#"),
        "{}",
        judged.output
    );
    outcome_is(&judged, "scheduler/lock_released", "pass");
}

/// `{port:NAME}` of an instance started after a rollout names the service's live instance:
/// the store rolled out (`store@2` on a port of its own, `store` gone), then the API restarted:
/// `api@2`'s ready probe, `tcp = "127.0.0.1:{port:store}"`, reaches `store@2`, not the port of
/// the store that is gone.
#[test]
fn a_port_named_after_a_rollout_is_the_live_instances() {
    let (_dir, file) = copy_scenario("graph.toml", &["service.py"], |_| {
        "name = \"live-port\"\n\n[[services]]\nname = \"store\"\ncwd = \".\"\n\
         command = [\"python3\", \"service.py\", \"store\", \"{port}\"]\n\
         ready = { http = \"http://127.0.0.1:{port}/ready\" }\n\n[[services]]\nname = \"api\"\n\
         command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.05; done\"]\n\
         ready = { tcp = \"127.0.0.1:{port:store}\" }\ndepends_on = [\"store\"]\n\n\
         [[faults]]\nat_ms = 200\naction = \"rollout\"\nservice = \"store\"\n\n\
         [[faults]]\nat_ms = 2500\naction = \"restart\"\nservice = \"api\"\n\n\
         [stop]\nafter_ms = 4500\nkill_after_ms = 3000\n\n[checks]\n\
         allow_inconclusive = [\"no_leaked_tasks\", \"no_leaked_threads\"]\n"
            .to_owned()
    });
    let judged = judge_hostile(file.to_str().unwrap(), &["--backend", "local"], &[]);
    assert!(
        at_prefix(&judged, "rollout of `store` done") <= at_prefix(&judged, "`api` exited"),
        "{}",
        judged.output
    );
    outcome_is(&judged, "api@2/starts_within", "pass");
    assert_eq!(judged.code, exit_codes::OK, "{}", judged.output);
}
