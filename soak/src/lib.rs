//! Instruments for long runs: what a process costs now, read from `/proc`.
//!
//! A soak is only as good as its samples. This crate reads them straight from the kernel
//! (`/proc/PID/status`, `/proc/PID/fd`, `/proc/PID/smaps_rollup`) so that a sample costs a few
//! file reads and no process spawn, and so that it separates resident memory that is
//! anonymous (heap: what a leak grows) from file-backed memory (mapped code and files).

mod sampler;

pub use sampler::{ProcessSample, own_threads, sample_process, sample_tree};
