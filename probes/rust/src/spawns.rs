//! Where each live task was spawned, from tokio's task hooks.
//!
//! The hooks are unstable tokio API: built with `RUSTFLAGS="--cfg tokio_unstable"`, a runtime
//! given to [`SpawnRegistry::install`] records each task's spawn location until the task ends,
//! so a leaked task is named by the line that spawned it. Without the flag `install` does
//! nothing and [`SpawnRegistry::alive`] is empty: reports then say the locations need the flag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Spawn locations of a runtime's live tasks.
#[derive(Clone, Debug, Default)]
pub struct SpawnRegistry {
    live: Arc<Mutex<HashMap<tokio::task::Id, &'static std::panic::Location<'static>>>>,
}

impl SpawnRegistry {
    /// Whether this build can name spawn locations (`--cfg tokio_unstable`).
    pub const ENABLED: bool = cfg!(tokio_unstable);

    /// Adds the spawn and terminate hooks to `builder` (with `--cfg tokio_unstable`).
    #[cfg(tokio_unstable)]
    pub fn install<'b>(
        &self,
        builder: &'b mut tokio::runtime::Builder,
    ) -> &'b mut tokio::runtime::Builder {
        let (spawned, ended) = (self.live.clone(), self.live.clone());
        builder
            .on_task_spawn(move |meta| {
                spawned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(meta.id(), meta.spawned_at());
            })
            .on_task_terminate(move |meta| {
                ended
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&meta.id());
            })
    }

    /// Without `--cfg tokio_unstable` there are no hooks to add.
    #[cfg(not(tokio_unstable))]
    pub fn install<'b>(
        &self,
        builder: &'b mut tokio::runtime::Builder,
    ) -> &'b mut tokio::runtime::Builder {
        builder
    }

    /// Each live task's id and `file:line:column` of its spawn, sorted by location.
    pub fn alive_with_ids(&self) -> Vec<(tokio::task::Id, String)> {
        let mut live: Vec<(tokio::task::Id, String)> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, l)| (*id, format!("{}:{}:{}", l.file(), l.line(), l.column())))
            .collect();
        live.sort_by(|a, b| a.1.cmp(&b.1));
        live
    }

    /// `file:line:column` of each live task's spawn, sorted.
    pub fn alive(&self) -> Vec<String> {
        let mut locations: Vec<String> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .collect();
        locations.sort();
        locations
    }

    /// What a report says about a task's location when this build cannot name it.
    pub fn unknown() -> &'static str {
        "unknown (build with --cfg tokio_unstable for spawn locations)"
    }
}
