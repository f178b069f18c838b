//! The one place the crate names its sync primitives.
//!
//! Under `--cfg loom` they are loom's instrumented copies, so `tests/loom.rs` explores every
//! interleaving of the real [`Teardown`](crate::Teardown) rather than of a test double.

#[cfg(not(loom))]
pub(crate) use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
};

#[cfg(loom)]
pub(crate) use loom::{
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
};

#[cfg(not(loom))]
#[expect(
    unused_imports,
    reason = "only the loom-only `broken` module uses atomics"
)]
pub(crate) use std::sync::atomic;

#[cfg(loom)]
pub(crate) use loom::sync::atomic;
