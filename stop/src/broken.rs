//! A stop coordinator with the two races [`Teardown`](crate::Teardown) exists to avoid, kept so
//! that `tests/loom.rs` can show that loom finds them. Built only under `--cfg loom`; never use.
//!
//! 1. `register` checks the closed flag, then pushes under the lock (check-then-act): a
//!    `stop_all` that closes and drains in between never sees the action.
//! 2. `stop_all` does not wait for actions in flight: it returns while an owner that took its
//!    action first is still running it, or while a second `stop_all` still runs the drained ones.

use std::sync::PoisonError;

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Mutex};

type StopAction = Box<dyn FnOnce() + Send>;

/// Same API as [`Teardown`](crate::Teardown), without its guarantees.
#[derive(Clone)]
pub struct BrokenTeardown {
    shared: Arc<Shared>,
}

struct Shared {
    closed: AtomicBool,
    /// Next id and the actions nobody has taken.
    pending: Mutex<(u64, Vec<(u64, StopAction)>)>,
}

impl BrokenTeardown {
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                closed: AtomicBool::new(false),
                pending: Mutex::new((0, Vec::new())),
            }),
        }
    }

    pub fn register(
        &self,
        _name: impl Into<String>,
        stop: impl FnOnce() + Send + 'static,
    ) -> BrokenRegistration {
        if self.shared.closed.load(Ordering::SeqCst) {
            stop();
            return BrokenRegistration {
                shared: Arc::clone(&self.shared),
                id: None,
                refused: true,
            };
        }
        // The bug: stop_all may close and drain right here.
        let mut pending = self.shared.lock();
        let id = pending.0;
        pending.0 += 1;
        pending.1.push((id, Box::new(stop)));
        BrokenRegistration {
            shared: Arc::clone(&self.shared),
            id: Some(id),
            refused: false,
        }
    }

    pub fn stop_all(&self) -> usize {
        self.shared.closed.store(true, Ordering::SeqCst);
        let drained = std::mem::take(&mut self.shared.lock().1);
        let ran = drained.len();
        for (_, stop) in drained {
            stop();
        }
        // The bug: no wait for actions other threads took before the drain.
        ran
    }
}

impl Default for BrokenTeardown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    fn lock(&self) -> crate::sync::MutexGuard<'_, (u64, Vec<(u64, StopAction)>)> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct BrokenRegistration {
    shared: Arc<Shared>,
    id: Option<u64>,
    refused: bool,
}

impl BrokenRegistration {
    pub fn refused(&self) -> bool {
        self.refused
    }

    pub fn stop(mut self) -> bool {
        self.run()
    }

    fn run(&mut self) -> bool {
        let Some(id) = self.id.take() else {
            return false;
        };
        let mut pending = self.shared.lock();
        let Some(i) = pending.1.iter().position(|(other, _)| *other == id) else {
            return false;
        };
        let (_, stop) = pending.1.swap_remove(i);
        drop(pending);
        stop();
        true
    }
}

impl Drop for BrokenRegistration {
    fn drop(&mut self) {
        self.run();
    }
}
