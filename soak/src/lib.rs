//! Instruments for long runs: what a process costs now, read from `/proc`.
//!
//! A soak is only as good as its samples. This crate reads them straight from the kernel
//! (`/proc/PID/status`, `/proc/PID/fd`, `/proc/PID/smaps_rollup`) so that a sample costs a few
//! file reads and no process spawn, and so that it separates resident memory that is
//! anonymous (heap: what a leak grows) from file-backed memory (mapped code and files).

pub mod plot;
mod sampler;
pub mod timeline;
pub mod trend;

pub use sampler::{ProcessSample, own_threads, sample_process, sample_tree};
pub use timeline::{
    Event, Header, ReadNotes, Sample, TimelineError, TimelineWriter, TornLine, read_timeline,
};
pub use trend::{LeakRule, Point, Series, Trend, Verdict};
