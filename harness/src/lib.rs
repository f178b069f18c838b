//! # quiesce
//!
//! A shutdown-correctness harness and soak rig for async services that live on Kafka and Redis.
//! It starts the service's dependencies for real, injects signals and faults, and proves with
//! evidence that the service stops in time, leaks nothing, commits what it processed, releases
//! its locks and tells the truth on `/ready`.
//!
//! This crate is both the `quiesce` command and a library. The pieces, in the order a run
//! uses them:
//!
//! - [`infra`]: real Kafka and Redis on one of three backends (`local` child processes,
//!   `containers`, `external`), each behind a fault proxy whose address never changes.
//! - [`fault`]: the Toxiproxy-compatible proxy and its toxics.
//! - [`process`]: child processes in their own process groups, stopped by the harness whatever
//!   happens.
//! - [`scenario`]: what to run, how to stop it and what to check (TOML or a builder).
//! - [`target`]: the service under test as a process: ready, run, stop, and what it left behind.
//! - [`run`]: one scenario from start to [`verdict::Verdict`]; [`report`] renders it.
//!
//! ## Starting infrastructure from Rust
//!
//! ```no_run
//! use quiesce::infra::{DependencyKind, Infra, InfraConfig, LifecycleAction};
//! use quiesce::fault::{Toxic, ToxicKind};
//!
//! # async fn demo() -> Result<(), quiesce::infra::InfraError> {
//! let mut infra = Infra::start(&InfraConfig::default()).await?;
//! println!("kafka at {}", infra.endpoints().kafka_bootstrap);
//!
//! // A network fault, on any backend:
//! infra.proxy(DependencyKind::Redis)
//!     .add_toxic(Toxic::new(ToxicKind::Latency { latency: 500, jitter: 50 }))
//!     .expect("a valid toxic");
//! // A lifecycle fault; the bootstrap address stays the same across the restart:
//! infra.act(DependencyKind::Kafka, LifecycleAction::Stop).await?;
//! infra.act(DependencyKind::Kafka, LifecycleAction::Start).await?;
//! infra.close().await
//! # }
//! ```
//!
//! ## Exit codes
//!
//! See [`exit_codes`]: a violated invariant, bad input and a broken environment are different
//! codes, so CI can tell a bug in the service from a broker that did not start.

pub mod catalogue;
pub mod cli;
pub mod conformance;
pub mod exit_codes;
pub mod explore;
pub mod fault;
pub mod infra;
pub mod kafka;
pub mod process;
pub mod repeat;
pub mod report;
pub mod run;
pub mod scenario;
pub mod signal;
pub mod soak;
pub mod suite;
pub mod target;
pub mod verdict;
