//! Stops every resource the harness started exactly once, whichever stop path gets there first.
//!
//! A harness run starts process groups, containers and tasks, and four paths race to stop them:
//! the owner's own stop, the Ctrl-C or error path that stops everything, `Drop` on a panic or an
//! early return, and a registration that arrives while everything is already being stopped.
//! Ad hoc flags get one of two things wrong: a resource is killed twice (a recycled pid, a
//! container name reused by the next run), or not at all (the Ctrl-C path read "not stopping yet",
//! then the owner registered, then nobody looked again). [`Teardown`] makes the order irrelevant.
//!
//! # Using it
//!
//! Register each resource right after starting it, keep the [`Registration`] next to the resource,
//! and stop through it. The Ctrl-C path calls [`Teardown::stop_all`].
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use quiesce_stop::Teardown;
//!
//! let teardown = Teardown::new();
//! let kills = Arc::new(AtomicUsize::new(0));
//!
//! let k = Arc::clone(&kills);
//! let container = teardown.register("redis", move || {
//!     k.fetch_add(1, Ordering::SeqCst);
//! });
//!
//! // Ctrl-C: everything registered is stopped, and finished, when this returns.
//! assert_eq!(teardown.stop_all(), 1);
//! // The owner's stop path comes second and finds nothing left to do.
//! assert!(!container.stop());
//!
//! // A resource started after the Ctrl-C is stopped before `register` returns.
//! let k = Arc::clone(&kills);
//! let late = teardown.register("late worker", move || {
//!     k.fetch_add(1, Ordering::SeqCst);
//! });
//! assert!(late.refused());
//! assert_eq!(kills.load(Ordering::SeqCst), 2);
//! ```
//!
//! # Guarantees
//!
//! - Each stop action runs exactly once.
//! - When [`Teardown::stop_all`] returns, every action registered before it began has finished,
//!   including one another thread was still running, and so has any a refused `register` had
//!   already started.
//! - A registration racing `stop_all` is run either by `stop_all` or by `register` itself.
//! - Actions run outside the internal lock: a slow action holds up no other stop path, and an
//!   action may register, stop a [`Registration`] or call `stop_all` without deadlocking.
//!
//! `tests/loom.rs` checks these under every interleaving, with `RUSTFLAGS="--cfg loom"`.

mod sync;

#[cfg(loom)]
#[doc(hidden)]
pub mod broken;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::PoisonError;

use crate::sync::thread::{self, ThreadId};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

type StopAction = Box<dyn FnOnce() + Send>;

/// The harness's stop coordination: a cheaply cloneable handle shared by every stop path.
///
/// See the [crate docs](crate) for the guarantees and an example.
#[derive(Clone)]
pub struct Teardown {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled whenever an action finishes, for `stop_all` waiting on other threads.
    finished: Condvar,
}

struct State {
    /// Set by the first `stop_all`; from then on `register` runs actions at once.
    closed: bool,
    next_id: u64,
    /// Registered and not yet taken by any stop path.
    pending: BTreeMap<u64, Pending>,
    /// One entry per action being run right now, naming the thread running it. `stop_all` waits
    /// for the entries of other threads only, so an action that calls `stop_all` does not wait
    /// for itself.
    running: Vec<ThreadId>,
}

struct Pending {
    name: String,
    stop: StopAction,
}

impl Teardown {
    /// An open teardown with nothing registered.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    closed: false,
                    next_id: 0,
                    pending: BTreeMap::new(),
                    running: Vec::new(),
                }),
                finished: Condvar::new(),
            }),
        }
    }

    /// Hands over the action that stops a resource just started.
    ///
    /// If [`stop_all`](Self::stop_all) has already begun, `stop` runs on this thread before
    /// `register` returns and the registration reports [`refused`](Registration::refused): the
    /// caller should start nothing more. The `name` shows up in `Debug` output.
    pub fn register(
        &self,
        name: impl Into<String>,
        stop: impl FnOnce() + Send + 'static,
    ) -> Registration {
        let mut state = self.shared.lock();
        if state.closed {
            let in_flight = self.shared.begin(&mut state);
            drop(state);
            stop();
            drop(in_flight);
            return Registration {
                shared: Arc::clone(&self.shared),
                id: None,
                refused: true,
            };
        }
        let id = state.next_id;
        state.next_id += 1;
        let stop = Box::new(stop);
        state.pending.insert(
            id,
            Pending {
                name: name.into(),
                stop,
            },
        );
        Registration {
            shared: Arc::clone(&self.shared),
            id: Some(id),
            refused: false,
        }
    }

    /// Stops everything: closes the teardown to new registrations, runs every action nobody has
    /// taken yet, and waits for the actions other threads are running. Returns how many actions
    /// this call ran itself.
    ///
    /// Actions run last registered first, since a resource started later may depend on one
    /// started earlier. Safe to call from several threads and more than once. If an action
    /// panics the rest still run, and the first panic is resumed once all have finished.
    pub fn stop_all(&self) -> usize {
        let mut ran = 0;
        let mut first_panic = None;
        let mut state = self.shared.lock();
        state.closed = true;
        while let Some((_, pending)) = state.pending.pop_last() {
            let in_flight = self.shared.begin(&mut state);
            drop(state);
            // One panicking action must not leave the resources after it running.
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(pending.stop)) {
                first_panic.get_or_insert(payload);
            }
            drop(in_flight);
            ran += 1;
            state = self.shared.lock();
        }
        let me = thread::current().id();
        while state.running.iter().any(|&thread| thread != me) {
            state = self
                .shared
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(state);
        if let Some(payload) = first_panic {
            panic::resume_unwind(payload);
        }
        ran
    }
}

impl Default for Teardown {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        let pending: Vec<&str> = state.pending.values().map(|p| p.name.as_str()).collect();
        f.debug_struct("Teardown")
            .field("closed", &state.closed)
            .field("pending", &pending)
            .field("running", &state.running.len())
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock (actions run outside it), but a poisoned lock
        // must not turn the stop path into a second panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an action as running until the returned guard drops, so that `stop_all` waits
    /// for it; the guard also covers an action that panics.
    fn begin(&self, state: &mut State) -> InFlight<'_> {
        let thread = thread::current().id();
        state.running.push(thread);
        InFlight {
            shared: self,
            thread,
        }
    }
}

struct InFlight<'a> {
    shared: &'a Shared,
    thread: ThreadId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(i) = state.running.iter().position(|&t| t == self.thread) {
            state.running.swap_remove(i);
        }
        drop(state);
        self.shared.finished.notify_all();
    }
}

/// One registered stop action. Stopping it, dropping it or [`Teardown::stop_all`] runs the
/// action, whichever comes first; the others find nothing to do.
#[must_use = "dropping a Registration stops its resource at once"]
pub struct Registration {
    shared: Arc<Shared>,
    /// `None` once this handle has given up its claim: stopped, or refused.
    id: Option<u64>,
    refused: bool,
}

impl Registration {
    /// Whether [`Teardown::stop_all`] had already begun, so that `register` ran the action itself.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// The owner's stop path: runs the action unless another path already took it. Returns
    /// whether this call ran it.
    ///
    /// Returns `false` at once if another thread is still running the action; only `stop_all`
    /// waits for that.
    pub fn stop(mut self) -> bool {
        self.run()
    }

    fn run(&mut self) -> bool {
        let Some(id) = self.id.take() else {
            return false;
        };
        let mut state = self.shared.lock();
        let Some(pending) = state.pending.remove(&id) else {
            return false;
        };
        let in_flight = self.shared.begin(&mut state);
        drop(state);
        (pending.stop)();
        drop(in_flight);
        true
    }
}

/// The last line of defence: a resource whose owner panicked or returned early is stopped here.
impl Drop for Registration {
    fn drop(&mut self) {
        self.run();
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("refused", &self.refused)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::thread;
    use std::time::Duration;

    use super::*;

    fn counted(teardown: &Teardown, name: &str) -> (Registration, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let registration = teardown.register(name, move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        (registration, runs)
    }

    #[test]
    fn stop_then_drop_runs_once() {
        let teardown = Teardown::new();
        let (registration, runs) = counted(&teardown, "a");
        assert!(!registration.refused());
        assert!(registration.stop());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn drop_runs_the_action() {
        let teardown = Teardown::new();
        let (registration, runs) = counted(&teardown, "a");
        drop(registration);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(teardown.stop_all(), 0);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn stop_all_runs_the_remaining_and_returns_its_count() {
        let teardown = Teardown::new();
        let (a, a_runs) = counted(&teardown, "a");
        let (b, b_runs) = counted(&teardown, "b");
        let (c, c_runs) = counted(&teardown, "c");
        assert!(b.stop());
        assert_eq!(teardown.stop_all(), 2);
        for runs in [&a_runs, &b_runs, &c_runs] {
            assert_eq!(runs.load(Ordering::SeqCst), 1);
        }
        assert!(!a.stop());
        drop(c);
        assert_eq!(teardown.stop_all(), 0, "stop_all is idempotent");
        for runs in [&a_runs, &b_runs, &c_runs] {
            assert_eq!(runs.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn stop_all_runs_last_registered_first() {
        let teardown = Teardown::new();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let _registrations: Vec<Registration> = ["container", "process group", "task"]
            .into_iter()
            .map(|name| {
                let order = Arc::clone(&order);
                teardown.register(name, move || order.lock().unwrap().push(name))
            })
            .collect();
        teardown.stop_all();
        assert_eq!(
            *order.lock().unwrap(),
            ["task", "process group", "container"]
        );
    }

    #[test]
    fn register_after_stop_all_runs_at_once_and_is_refused() {
        let teardown = Teardown::new();
        teardown.stop_all();
        let (registration, runs) = counted(&teardown, "late");
        assert!(registration.refused());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(
            !registration.stop(),
            "a refused registration has nothing left to run"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn actions_may_call_back_into_the_teardown() {
        let teardown = Teardown::new();
        let (inner, inner_runs) = counted(&teardown, "inner");
        let late_runs = Arc::new(AtomicUsize::new(0));
        let late_refused = Arc::new(AtomicBool::new(false));
        let (t, runs, refused) = (
            teardown.clone(),
            Arc::clone(&late_runs),
            Arc::clone(&late_refused),
        );
        let _outer = teardown.register("outer", move || {
            inner.stop();
            t.stop_all();
            let late = t.register("late", move || {
                runs.fetch_add(1, Ordering::SeqCst);
            });
            refused.store(late.refused(), Ordering::SeqCst);
        });
        assert_eq!(teardown.stop_all(), 1, "only `outer` is left for stop_all");
        assert_eq!(inner_runs.load(Ordering::SeqCst), 1);
        assert!(late_refused.load(Ordering::SeqCst));
        assert_eq!(late_runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn stop_all_waits_for_an_owner_still_stopping() {
        let teardown = Teardown::new();
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&done);
        let registration = teardown.register("slow", move || {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        });
        let owner = thread::spawn(move || registration.stop());
        started_rx.recv().unwrap();

        let (t, d) = (teardown.clone(), Arc::clone(&done));
        let stopper = thread::spawn(move || (t.stop_all(), d.load(Ordering::SeqCst)));
        // Passes whatever the timing; the pause only gives a wrong stop_all the chance to
        // return early. tests/loom.rs checks this under every interleaving.
        thread::sleep(Duration::from_millis(20));
        release_tx.send(()).unwrap();

        assert_eq!(
            stopper.join().unwrap(),
            (0, 1),
            "stop_all returned before the owner finished"
        );
        assert!(owner.join().unwrap());
    }

    #[test]
    fn a_panicking_action_does_not_stop_stop_all() {
        let teardown = Teardown::new();
        let (_first, first_runs) = counted(&teardown, "first");
        let _panics = teardown.register("panics", || panic!("docker went away"));
        let t = teardown.clone();
        let payload = thread::spawn(move || t.stop_all()).join().unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"docker went away"));
        assert_eq!(first_runs.load(Ordering::SeqCst), 1);
        assert_eq!(teardown.stop_all(), 0);
    }
}
