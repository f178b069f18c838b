//! Every interleaving of the stop paths, explored by loom.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p quiesce-stop --release --test loom`.
//!
//! Each model runs twice: on [`Teardown`], where it must pass, and on a deliberately broken
//! coordinator, where loom must find the failing interleaving. The second run is what shows the
//! first one means something: a model too weak to catch the known bugs would pass both.
//!
//! The last two tests check the reference scenarios' shutdown protocol itself (one trigger,
//! every task tracked, close then wait), rebuilt on loom primitives since loom cannot instrument
//! tokio's `CancellationToken` and `TaskTracker`.
#![cfg(loom)]

use std::panic;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use quiesce_stop::broken::{BrokenRegistration, BrokenTeardown};
use quiesce_stop::{Registration, Teardown};

/// Explores `model` under a preemption bound set here, so that CI needs no LOOM_MAX_PREEMPTIONS,
/// counting the interleavings run into `explored`. Three preemptions is more than any bug in
/// `quiesce_stop::broken` needs, and keeps every model to well under a second.
fn explore(model: fn(), explored: &std::sync::Arc<StdAtomicUsize>) {
    let explored = std::sync::Arc::clone(explored);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        explored.fetch_add(1, StdOrdering::Relaxed);
        model();
    });
}

fn check(name: &str, model: fn()) {
    let explored = std::sync::Arc::default();
    explore(model, &explored);
    eprintln!(
        "{name}: {} interleavings explored",
        explored.load(StdOrdering::Relaxed)
    );
}

/// Runs `model` expecting loom to fail it with a message containing `expected`: the proof that the
/// model catches the bug it is about. Fails if loom explores every interleaving without a failure,
/// which is what happens if the broken coordinator is "fixed".
fn assert_loom_catches(name: &str, model: fn(), expected: &str) {
    let explored = std::sync::Arc::default();
    let outcome = panic::catch_unwind(|| explore(model, &explored));
    let explored = explored.load(StdOrdering::Relaxed);
    let Err(payload) = outcome else {
        panic!(
            "{name}: loom found no failing interleaving in {explored}, so the model no longer \
             catches the bug"
        );
    };
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("<non-string panic>");
    assert!(
        message.contains(expected),
        "{name}: loom failed the model, but not with {expected:?}: {message}"
    );
    eprintln!("{name}: loom caught it at interleaving {explored}: {message}");
}

/// The API both coordinators share, so that each model is written once.
trait Coordinator: Clone + Send + Sync + 'static {
    type Registration: Send + 'static;
    fn new() -> Self;
    fn register(&self, name: &str, stop: impl FnOnce() + Send + 'static) -> Self::Registration;
    fn stop(registration: Self::Registration) -> bool;
    fn refused(registration: &Self::Registration) -> bool;
    fn stop_all(&self) -> usize;
}

impl Coordinator for Teardown {
    type Registration = Registration;
    fn new() -> Self {
        Teardown::new()
    }
    fn register(&self, name: &str, stop: impl FnOnce() + Send + 'static) -> Registration {
        Teardown::register(self, name, stop)
    }
    fn stop(registration: Registration) -> bool {
        registration.stop()
    }
    fn refused(registration: &Registration) -> bool {
        registration.refused()
    }
    fn stop_all(&self) -> usize {
        Teardown::stop_all(self)
    }
}

impl Coordinator for BrokenTeardown {
    type Registration = BrokenRegistration;
    fn new() -> Self {
        BrokenTeardown::new()
    }
    fn register(&self, name: &str, stop: impl FnOnce() + Send + 'static) -> BrokenRegistration {
        BrokenTeardown::register(self, name, stop)
    }
    fn stop(registration: BrokenRegistration) -> bool {
        registration.stop()
    }
    fn refused(registration: &BrokenRegistration) -> bool {
        registration.refused()
    }
    fn stop_all(&self) -> usize {
        BrokenTeardown::stop_all(self)
    }
}

/// Registers an action that counts its runs.
fn counted<C: Coordinator>(coordinator: &C, name: &str) -> (C::Registration, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let registration = coordinator.register(name, move || {
        r.fetch_add(1, SeqCst);
    });
    (registration, runs)
}

const UNFINISHED: &str = "stop_all returned before every registered action had finished";
const MISSED: &str = "stop_all returned with a registration nobody had run";

/// The owner's stop, a panicking owner's drop and the Ctrl-C path, all at once.
fn owner_drop_and_stop_all<C: Coordinator>() {
    let coordinator = C::new();
    let (owned, owned_runs) = counted(&coordinator, "owned");
    let (dropped, dropped_runs) = counted(&coordinator, "dropped");
    let (left, left_runs) = counted(&coordinator, "left to stop_all");
    let all_runs = [owned_runs, dropped_runs, left_runs];

    let owner = thread::spawn(move || C::stop(owned));
    let panicking_owner = thread::spawn(move || drop(dropped));
    let ran = coordinator.stop_all();
    for runs in &all_runs {
        assert_eq!(runs.load(SeqCst), 1, "{UNFINISHED}");
    }

    let owner_ran = owner.join().unwrap();
    panicking_owner.join().unwrap();
    drop(left);
    for runs in &all_runs {
        assert_eq!(runs.load(SeqCst), 1, "an action ran twice");
    }
    // `left` is stopped by stop_all in every interleaving; the others by whoever got there first.
    assert!((1..=3).contains(&ran), "stop_all ran {ran}");
    assert!(ran + usize::from(owner_ran) <= 3);
}

/// A resource registered while another thread calls stop_all.
fn registration_racing_stop_all<C: Coordinator>() {
    let coordinator = C::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let registrar = {
        let (coordinator, runs) = (coordinator.clone(), Arc::clone(&runs));
        thread::spawn(move || {
            coordinator.register("late", move || {
                runs.fetch_add(1, SeqCst);
            })
        })
    };
    let ran = coordinator.stop_all();
    let runs_when_stop_all_returned = runs.load(SeqCst);

    let registration = registrar.join().unwrap();
    let refused = C::refused(&registration);
    if !refused {
        // Registered before the close, so stop_all owns it.
        assert_eq!(runs_when_stop_all_returned, 1, "{MISSED}");
    }
    assert_eq!(
        ran + usize::from(refused),
        1,
        "the late action must be run by exactly one of stop_all and register"
    );
    assert_eq!(runs.load(SeqCst), 1);
    drop(registration);
    assert_eq!(runs.load(SeqCst), 1, "the late action ran twice");
}

/// Two Ctrl-C paths (a signal handler and an error path, say) stopping at once.
fn two_stop_alls<C: Coordinator>() {
    let coordinator = C::new();
    let (a, a_runs) = counted(&coordinator, "a");
    let (b, b_runs) = counted(&coordinator, "b");

    let other = {
        let coordinator = coordinator.clone();
        let all_runs = [Arc::clone(&a_runs), Arc::clone(&b_runs)];
        thread::spawn(move || {
            let ran = coordinator.stop_all();
            for runs in &all_runs {
                assert_eq!(runs.load(SeqCst), 1, "{UNFINISHED}");
            }
            ran
        })
    };
    let ran = coordinator.stop_all();
    for runs in [&a_runs, &b_runs] {
        assert_eq!(runs.load(SeqCst), 1, "{UNFINISHED}");
    }
    assert_eq!(
        ran + other.join().unwrap(),
        2,
        "each action is run by one stop_all"
    );
    drop((a, b));
    for runs in [&a_runs, &b_runs] {
        assert_eq!(runs.load(SeqCst), 1, "an action ran twice");
    }
}

#[test]
fn owner_stop_drop_and_stop_all_each_run_once() {
    check(
        "owner_drop_and_stop_all",
        owner_drop_and_stop_all::<Teardown>,
    );
}

#[test]
fn registration_racing_stop_all_runs_once() {
    check(
        "registration_racing_stop_all",
        registration_racing_stop_all::<Teardown>,
    );
}

#[test]
fn concurrent_stop_alls_run_each_once_and_both_wait() {
    check("two_stop_alls", two_stop_alls::<Teardown>);
}

// Regression guard for the models themselves: each must catch the bug of `BrokenTeardown` it is
// about. If one of these fails, the model above it has gone blind, whatever it reports.

#[test]
fn loom_catches_stop_all_not_waiting_for_an_owner() {
    assert_loom_catches(
        "broken owner_drop_and_stop_all",
        owner_drop_and_stop_all::<BrokenTeardown>,
        UNFINISHED,
    );
}

#[test]
fn loom_catches_check_then_act_registration() {
    assert_loom_catches(
        "broken registration_racing_stop_all",
        registration_racing_stop_all::<BrokenTeardown>,
        MISSED,
    );
}

#[test]
fn loom_catches_stop_all_not_waiting_for_another_stop_all() {
    assert_loom_catches(
        "broken two_stop_alls",
        two_stop_alls::<BrokenTeardown>,
        UNFINISHED,
    );
}

/// The scenarios' `TaskTracker`, reduced to what the protocol relies on: a count of live tasks and
/// a close after which `wait` returns once the count is zero.
///
/// Unlike tokio's, `spawn_if_open` refuses after `close`; the scenarios get the same effect by
/// checking the trigger before spawning, from a task that is itself tracked.
#[derive(Clone)]
struct Tracker {
    shared: Arc<TrackerShared>,
}

struct TrackerShared {
    /// (closed, live tasks)
    state: Mutex<(bool, usize)>,
    idle: Condvar,
}

impl Tracker {
    fn new() -> Self {
        Self {
            shared: Arc::new(TrackerShared {
                state: Mutex::new((false, 0)),
                idle: Condvar::new(),
            }),
        }
    }

    fn spawn_if_open(&self, task: impl FnOnce() + Send + 'static) -> bool {
        let mut state = self.shared.state.lock().unwrap();
        if state.0 {
            return false;
        }
        state.1 += 1;
        drop(state);
        let shared = Arc::clone(&self.shared);
        thread::spawn(move || {
            task();
            let mut state = shared.state.lock().unwrap();
            state.1 -= 1;
            if state.1 == 0 {
                shared.idle.notify_all();
            }
        });
        true
    }

    fn close(&self) {
        self.shared.state.lock().unwrap().0 = true;
        self.shared.idle.notify_all();
    }

    fn wait(&self) {
        let mut state = self.shared.state.lock().unwrap();
        while !(state.0 && state.1 == 0) {
            state = self.shared.idle.wait(state).unwrap();
        }
    }
}

#[derive(Default)]
struct WorkLog {
    spawned: AtomicUsize,
    started: AtomicUsize,
    finished: AtomicUsize,
    waited: AtomicBool,
}

/// One worker is enough: a second adds a thread, and no interleaving the first does not have.
const MAX_WORKERS: usize = 1;

const OUTLIVED: &str = "after wait returned";

/// Main sets the trigger, closes and waits, while a tracked producer spawns workers until it sees
/// the trigger. `track_workers: false` is the `untracked-task` bug: a worker spawned bare.
fn shutdown_protocol(track_workers: bool) {
    let tracker = Tracker::new();
    let trigger = Arc::new(AtomicBool::new(false));
    let log = Arc::new(WorkLog::default());

    let producer = {
        let (tracker, trigger, log) = (tracker.clone(), Arc::clone(&trigger), Arc::clone(&log));
        move || {
            for _ in 0..MAX_WORKERS {
                if trigger.load(SeqCst) {
                    break;
                }
                let worker_log = Arc::clone(&log);
                let worker = move || {
                    assert!(
                        !worker_log.waited.load(SeqCst),
                        "a worker started {OUTLIVED}"
                    );
                    worker_log.started.fetch_add(1, SeqCst);
                    worker_log.finished.fetch_add(1, SeqCst);
                };
                let spawned = if track_workers {
                    tracker.spawn_if_open(worker)
                } else {
                    drop(thread::spawn(worker));
                    true
                };
                if !spawned {
                    break;
                }
                log.spawned.fetch_add(1, SeqCst);
            }
        }
    };
    assert!(tracker.spawn_if_open(producer));

    trigger.store(true, SeqCst);
    tracker.close();
    assert!(
        !tracker.spawn_if_open(|| {}),
        "a spawn succeeded after close"
    );
    tracker.wait();

    let spawned = log.spawned.load(SeqCst);
    assert_eq!(
        log.started.load(SeqCst),
        spawned,
        "a spawned worker had not started {OUTLIVED}"
    );
    assert_eq!(
        log.finished.load(SeqCst),
        spawned,
        "a worker was still running {OUTLIVED}"
    );
    log.waited.store(true, SeqCst);
}

#[test]
fn shutdown_protocol_waits_for_every_tracked_task() {
    check("shutdown_protocol", || shutdown_protocol(true));
}

/// Pins down the `untracked-task` bug: a worker spawned without the tracker outlives `wait`.
#[test]
fn loom_catches_an_untracked_task() {
    assert_loom_catches(
        "broken shutdown_protocol",
        || shutdown_protocol(false),
        OUTLIVED,
    );
}
