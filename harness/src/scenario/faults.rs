//! `[[faults]]`: a timeline of proxy faults, each at a time after a point of the target's
//! lifecycle.
//!
//! ```toml
//! [[faults]]
//! after = "ready"          # start | ready | stop (the stop request); default ready
//! at_ms = 1000             # this long after it
//! action = "latency"       # down | up | latency | timeout | reset_peer | bandwidth | clear
//! dependency = "redis"
//! instance = "primary"     # all (default): every client; primary: the target alone
//! latency_ms = 1500        # latency: latency_ms, jitter_ms; timeout, reset_peer: timeout_ms;
//!                          # bandwidth: rate_kb
//! ```
//!
//! `instance = "primary"` puts a proxy of its own between the target and the dependency's
//! proxy, so the target alone is partitioned while its standby (and the harness) still reach
//! the dependency. Redis only: Kafka clients follow the addresses the broker advertises, so
//! only a bootstrap connection would pass through it.

use serde::{Deserialize, Serialize};

use crate::fault::ToxicKind;
use crate::infra::DependencyKind;

/// The lifecycle point a fault is timed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Point {
    /// The target was started.
    Start,
    /// The target was ready.
    #[default]
    Ready,
    /// The stop was asked for: faults during the drain.
    Stop,
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Point::Start => "start",
            Point::Ready => "ready",
            Point::Stop => "stop",
        })
    }
}

/// Whose connections a fault reaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instance {
    /// Everyone's: the dependency's own proxy.
    #[default]
    All,
    /// The target's alone, not its standby's nor the harness's.
    Primary,
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The proxy refuses connections and cuts open ones.
    Down,
    /// The proxy is back, on the same address.
    Up,
    Latency,
    Timeout,
    ResetPeer,
    Bandwidth,
    /// Every toxic this schedule added to the proxy is removed.
    Clear,
}

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    #[serde(default)]
    pub after: Point,
    #[serde(default)]
    pub at_ms: u64,
    pub action: Action,
    pub dependency: DependencyKind,
    #[serde(default)]
    pub instance: Instance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kb: Option<u64>,
}

impl FaultStep {
    /// The toxic a toxic action adds; `None` for down, up and clear.
    pub fn toxic(&self) -> Option<ToxicKind> {
        match self.action {
            Action::Latency => Some(ToxicKind::Latency {
                latency: self.latency_ms.unwrap_or_default(),
                jitter: self.jitter_ms.unwrap_or_default(),
            }),
            Action::Timeout => Some(ToxicKind::Timeout {
                timeout: self.timeout_ms.unwrap_or_default(),
            }),
            Action::ResetPeer => Some(ToxicKind::ResetPeer {
                timeout: self.timeout_ms.unwrap_or_default(),
            }),
            Action::Bandwidth => Some(ToxicKind::Bandwidth {
                rate: self.rate_kb.unwrap_or_default(),
            }),
            Action::Down | Action::Up | Action::Clear => None,
        }
    }

    /// In words, for the timeline: `latency 1500 ms on redis (primary)`.
    pub fn describe(&self) -> String {
        let what = match self.action {
            Action::Down => "proxy down".to_owned(),
            Action::Up => "proxy up".to_owned(),
            Action::Clear => "toxics cleared".to_owned(),
            Action::Latency => format!(
                "latency {} ms (jitter {} ms)",
                self.latency_ms.unwrap_or_default(),
                self.jitter_ms.unwrap_or_default()
            ),
            Action::Timeout => format!("timeout {} ms", self.timeout_ms.unwrap_or_default()),
            Action::ResetPeer => format!("reset_peer {} ms", self.timeout_ms.unwrap_or_default()),
            Action::Bandwidth => format!("bandwidth {} KB/s", self.rate_kb.unwrap_or_default()),
        };
        let whose = match self.instance {
            Instance::All => "",
            Instance::Primary => " (the target's alone)",
        };
        format!("{what} on {}{whose}", self.dependency.as_str())
    }

    /// Checks what serde cannot: each action's own settings, and nothing else.
    pub fn validate(&self) -> Result<(), String> {
        let given = [
            ("latency_ms", self.latency_ms.is_some()),
            ("jitter_ms", self.jitter_ms.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("rate_kb", self.rate_kb.is_some()),
        ];
        let (needs, allows): (&[&str], &[&str]) = match self.action {
            Action::Latency => (&["latency_ms"], &["latency_ms", "jitter_ms"]),
            Action::Timeout | Action::ResetPeer => (&[], &["timeout_ms"]),
            Action::Bandwidth => (&["rate_kb"], &["rate_kb"]),
            Action::Down | Action::Up | Action::Clear => (&[], &[]),
        };
        let action = serde_plain(self.action);
        for (name, present) in given {
            if present && !allows.contains(&name) {
                return Err(format!("`{name}` is not a setting of `{action}`"));
            }
            if !present && needs.contains(&name) {
                return Err(format!("`{action}` needs `{name}`"));
            }
        }
        if self.instance == Instance::Primary && self.dependency == DependencyKind::Kafka {
            return Err(
                "`instance = \"primary\"` works for redis only: Kafka clients follow \
                        the addresses the broker advertises, so only their bootstrap \
                        connection would pass through the target's own proxy"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The action's name as written in a scenario file.
fn serde_plain(action: Action) -> &'static str {
    match action {
        Action::Down => "down",
        Action::Up => "up",
        Action::Latency => "latency",
        Action::Timeout => "timeout",
        Action::ResetPeer => "reset_peer",
        Action::Bandwidth => "bandwidth",
        Action::Clear => "clear",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(text: &str) -> Result<FaultStep, String> {
        let step: FaultStep = toml::from_str(text).map_err(|e| e.to_string())?;
        step.validate()?;
        Ok(step)
    }

    #[test]
    fn a_latency_step_reads_with_its_defaults() {
        let s = step("action = \"latency\"\ndependency = \"redis\"\nlatency_ms = 1500").unwrap();
        assert_eq!(
            (s.after, s.at_ms, s.instance),
            (Point::Ready, 0, Instance::All)
        );
        assert_eq!(
            s.toxic(),
            Some(ToxicKind::Latency {
                latency: 1500,
                jitter: 0
            })
        );
        assert_eq!(s.describe(), "latency 1500 ms (jitter 0 ms) on redis");
    }

    #[test]
    fn settings_are_checked_per_action() {
        let e = step("action = \"latency\"\ndependency = \"redis\"").unwrap_err();
        assert!(e.contains("`latency` needs `latency_ms`"), "{e}");
        let e = step("action = \"down\"\ndependency = \"redis\"\nrate_kb = 1").unwrap_err();
        assert!(e.contains("`rate_kb` is not a setting of `down`"), "{e}");
        let e =
            step("action = \"down\"\ndependency = \"kafka\"\ninstance = \"primary\"").unwrap_err();
        assert!(e.contains("redis only"), "{e}");
        let e = step("action = \"explode\"\ndependency = \"redis\"").unwrap_err();
        assert!(e.contains("explode"), "{e}");
        let e = step("action = \"down\"\ndependency = \"redis\"\nwhen = 3").unwrap_err();
        assert!(e.contains("when"), "{e}");
    }
}
