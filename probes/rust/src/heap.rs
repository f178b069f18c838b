//! The live heap, for a soak: the allocator's bytes in use, written to a file the harness
//! reads at every sample.
//!
//! From outside, a soak sees resident memory, and resident memory mixes two things a leak
//! verdict must tell apart: memory the service still holds, and memory it freed that the
//! allocator keeps (fragmentation, glibc's per-thread arenas). Only the process can ask its
//! allocator which is which. With glibc, `mallinfo2` answers: `uordblks` (bytes in use in the
//! arenas) plus `hblkhd` (bytes in use in mmapped blocks). It walks every arena under its
//! lock, so it is asked once an interval, on a thread of the probe's own that the report
//! stops and joins before it counts threads.
//!
//! The allocator also says how much it holds from the system, in use or kept free
//! (`arena + hblkhd`): resident memory that grew while the heap did not is retention only if
//! that grew with it; growth outside it (mmap, thread stacks, another allocator) is not.
//!
//! The file holds the two decimal numbers, in use then held, and a newline, replaced whole
//! (written beside it, then renamed) so the harness never reads half a number.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The thread's name, as `/proc` shows it.
pub(crate) const THREAD_NAME: &str = "quiesce-heap";

/// Bytes the allocator has handed out and not had back, where the platform can say.
pub fn heap_in_use_bytes() -> Option<u64> {
    allocator().map(|(in_use, _)| in_use)
}

/// Bytes the allocator holds from the system, in use or kept free, where the platform can say.
pub fn heap_held_bytes() -> Option<u64> {
    allocator().map(|(_, held)| held)
}

/// glibc's figures: in use (`uordblks + hblkhd`) and held (`arena + hblkhd`).
fn allocator() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments, returns a plain struct by value, and is safe
        // to call from any thread at any time (it takes each arena's lock).
        let info = unsafe { libc::mallinfo2() };
        Some((
            (info.uordblks + info.hblkhd) as u64,
            (info.arena + info.hblkhd) as u64,
        ))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Writes [`heap_in_use_bytes`] and [`heap_held_bytes`] to `QUIESCE_HEAP_FILE` every `QUIESCE_HEAP_INTERVAL_MS`
/// (default 1000, at least 10) until stopped.
#[derive(Debug)]
pub(crate) struct HeapReporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl HeapReporter {
    /// Starts reporting when quiesce asked for it and the allocator can say; else `None`.
    pub(crate) fn from_env() -> Option<HeapReporter> {
        let path = PathBuf::from(std::env::var_os("QUIESCE_HEAP_FILE")?);
        heap_in_use_bytes()?;
        let interval = std::env::var("QUIESCE_HEAP_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000)
            .max(10);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || report_until_stopped(&path, Duration::from_millis(interval), &stopped))
            .ok()?;
        Some(HeapReporter {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it. Idempotent.
    pub(crate) fn stop(&mut self) {
        let (flag, wake) = &*self.stop;
        if let Ok(mut stopped) = flag.lock() {
            *stopped = true;
        }
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HeapReporter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn report_until_stopped(path: &std::path::Path, interval: Duration, stop: &(Mutex<bool>, Condvar)) {
    let tmp = path.with_extension("tmp");
    let (flag, wake) = stop;
    let Ok(mut stopped) = flag.lock() else { return };
    while !*stopped {
        if let Some((bytes, held)) = allocator() {
            let written = std::fs::write(&tmp, format!("{bytes} {held}\n"))
                .and_then(|()| std::fs::rename(&tmp, path));
            if written.is_err() {
                eprintln!("quiesce-probe: cannot write {}", path.display());
                return;
            }
        }
        stopped = match wake.wait_timeout(stopped, interval) {
            Ok((guard, _)) => guard,
            Err(_) => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory held shows in the count, and is gone from it once freed (glibc).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn held_memory_is_counted_and_freed_memory_is_not() {
        let before = heap_in_use_bytes().unwrap();
        let held: Vec<Box<[u8]>> = (0..64)
            .map(|_| vec![1u8; 64 * 1024].into_boxed_slice())
            .collect();
        let holding = heap_in_use_bytes().unwrap();
        assert!(
            holding >= before + 4 * 1024 * 1024 - 64 * 1024,
            "{before} -> {holding}"
        );
        // what the allocator holds from the system covers what it handed out
        assert!(heap_held_bytes().unwrap() >= holding);
        drop(held);
        let after = heap_in_use_bytes().unwrap();
        assert!(after < holding - 3 * 1024 * 1024, "{holding} -> {after}");
    }
}
