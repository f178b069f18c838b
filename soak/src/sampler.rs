//! One sample of one process, or of a process and all its descendants.

use std::collections::{HashMap, HashSet};
use std::fs;

/// What one process (or a tree of them) uses at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessSample {
    /// Resident set size (`VmRSS`).
    pub rss_bytes: u64,
    /// Anonymous resident memory (`RssAnon`): heap and stacks, what a leak grows.
    pub anon_bytes: u64,
    /// Proportional set size, where `smaps_rollup` is readable.
    pub pss_bytes: Option<u64>,
    /// OS threads.
    pub threads: u64,
    /// Open file descriptors, where `/proc/PID/fd` is readable.
    pub open_fds: Option<u64>,
    /// Processes counted (1 for a single process).
    pub processes: u64,
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let value = line[name.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?;
    value.parse::<u64>().ok().map(|kib| kib * 1024)
}

fn count_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .trim_start_matches(':')
        .trim()
        .parse()
        .ok()
}

/// Samples one process; `None` when it does not exist (or is a zombie with no memory left).
pub fn sample_process(pid: u32) -> Option<ProcessSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_bytes = kib_field(&status, "VmRSS")?;
    let pss_bytes = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| kib_field(&s, "Pss"));
    let open_fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.count() as u64);
    Some(ProcessSample {
        rss_bytes,
        anon_bytes: kib_field(&status, "RssAnon").unwrap_or(0),
        pss_bytes,
        threads: count_field(&status, "Threads").unwrap_or(0),
        open_fds,
        processes: 1,
    })
}

/// The threads of this process as (thread id, name); names are the kernel's, at most 15 bytes.
pub fn own_threads() -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let name = fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
        Some((tid, name.trim().to_owned()))
    })
    .collect()
}

/// The parent of every process on the system, from `/proc/PID/stat`.
fn parents() -> HashMap<u32, u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses; fields resume after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// Sums a process and all its descendants. `None` when the root does not exist.
pub fn sample_tree(root: u32) -> Option<ProcessSample> {
    let mut total = sample_process(root)?;
    let parents = parents();
    let mut tree = HashSet::from([root]);
    // Children can be listed before their parents; iterate until no new member appears.
    loop {
        let before = tree.len();
        for (&pid, ppid) in &parents {
            if tree.contains(ppid) {
                tree.insert(pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    for &pid in tree.iter().filter(|&&p| p != root) {
        if let Some(s) = sample_process(pid) {
            total.rss_bytes += s.rss_bytes;
            total.anon_bytes += s.anon_bytes;
            total.pss_bytes = total.pss_bytes.zip(s.pss_bytes).map(|(a, b)| a + b);
            total.threads += s.threads;
            total.open_fds = total.open_fds.zip(s.open_fds).map(|(a, b)| a + b);
            total.processes += 1;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_memory_threads_and_fds() {
        let me = sample_process(std::process::id()).expect("own process is readable");
        assert!(me.rss_bytes > 1024 * 1024, "{me:?}");
        assert!(me.anon_bytes > 0 && me.anon_bytes <= me.rss_bytes, "{me:?}");
        assert!(me.threads >= 1);
        assert!(me.open_fds.unwrap() >= 3);
    }

    #[test]
    fn allocation_shows_in_anonymous_memory() {
        let before = sample_process(std::process::id()).unwrap().anon_bytes;
        let block = vec![1u8; 64 * 1024 * 1024];
        let after = sample_process(std::process::id()).unwrap().anon_bytes;
        assert!(after >= before + 60 * 1024 * 1024, "{before} -> {after}");
        drop(block);
    }

    #[test]
    fn own_threads_include_a_named_one() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        // The new thread names itself before its closure runs, so the kernel shows the name
        // only once the closure has started; wait for that instead of racing it.
        let t = std::thread::Builder::new()
            .name("sampler-probe".into())
            .spawn(move || {
                let _ = started_tx.send(());
                rx.recv()
            })
            .unwrap();
        started_rx.recv().expect("the thread started");
        assert!(
            own_threads()
                .iter()
                .any(|(_, name)| name == "sampler-probe")
        );
        drop(tx);
        let _ = t.join();
    }

    #[test]
    fn tree_counts_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let tree = sample_tree(std::process::id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(tree.processes >= 2, "{tree:?}");
        assert!(sample_process(u32::MAX).is_none());
    }
}
