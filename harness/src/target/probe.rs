//! The target-side probe's report: what was still alive when the target's shutdown completed.
//!
//! A process target is a black box once it exits: its tasks and threads die with it. A probe
//! inside it (`probes/python/quiesce_probe.py`, `probes/rust`) writes them to the file named by
//! `QUIESCE_PROBE_FILE` at the moment shutdown is done, which gives process targets the same
//! exact answer an in-process target gets.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A task still alive after shutdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTask {
    #[serde(default)]
    pub name: String,
    /// Spawn location (Rust) or coroutine (Python).
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub stack: Vec<String>,
}

/// A thread still alive after shutdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeThread {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub daemon: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSet<T> {
    pub alive: u64,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// The probe file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub schema: u32,
    /// `python-asyncio`, `tokio`, …
    pub runtime: String,
    /// How long the probe waited for tasks and threads to finish (its settle budget); part of
    /// the measured stop time that is the probe's, not the target's.
    #[serde(default)]
    pub settle_ms: u64,
    pub tasks: ProbeSet<ProbeTask>,
    pub threads: ProbeSet<ProbeThread>,
    /// Output records the target handed to its Kafka producer (the `producer_flushed` check
    /// compares it with what reached the output topic); absent when the target does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_sent: Option<u64>,
}

/// The probe's report, if the target wrote one; an unreadable one is an error message.
pub fn read_probe(path: &Path) -> Option<Result<ProbeReport, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("{}: {e}", path.display()))),
    };
    Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_python_probe_format_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.json");
        assert!(read_probe(&path).is_none());
        std::fs::write(
            &path,
            r#"{"schema":1,"runtime":"python-asyncio",
                "tasks":{"alive":1,"items":[{"name":"Task-3","location":"worker","stack":["s.py:15 in worker"]}]},
                "threads":{"alive":0,"items":[]}}"#,
        )
        .unwrap();
        let report = read_probe(&path).unwrap().unwrap();
        assert_eq!(report.tasks.items[0].location, "worker");
        std::fs::write(&path, "{not json").unwrap();
        assert!(
            read_probe(&path)
                .unwrap()
                .unwrap_err()
                .contains("probe.json")
        );
    }
}
