//! `[[faults]]`: a timeline of faults, each at a time after a point of the target's
//! lifecycle: the network in front of a dependency, the dependency itself, or a signal to the
//! target.
//!
//! ```toml
//! [[faults]]
//! after = "ready"          # start | ready | stop (the stop request); default ready
//! at_ms = 1000             # this long after it
//! action = "latency"       # proxy:      down | up | latency | timeout | reset_peer | bandwidth | clear
//!                          # dependency: stop | start | kill | pause | resume
//!                          # target:     signal; a graph's service: signal | restart | rollout
//! dependency = "redis"     # every action but signal, restart and rollout
//! instance = "primary"     # all (default): every client; primary: the target alone
//! latency_ms = 1500        # latency: latency_ms, jitter_ms; timeout, reset_peer: timeout_ms;
//!                          # bandwidth: rate_kb; signal: signal = "term" | "int" | "kill"
//! service = "worker"       # signal, restart, rollout, in a graph ([[services]]): the service
//! every_ms = 600000        # optional: played again this long after each time (not signal)
//! times = 6                # optional, with every_ms: at most this many times in all
//! ```
//!
//! A step with `every_ms` repeats until it was played `times` times or the run ends, whichever
//! comes first: a soak's periodic outage is a `down` and an `up` with the same `every_ms`.
//! Repetitions are at least [`MIN_EVERY_MS`] apart, so a schedule cannot spin.
//!
//! A signal sent after ready and before the stop *is* the stop: the harness does not send its
//! own, and `stops_within` counts from it. One sent after the stop (a second SIGTERM, a
//! SIGKILL during the drain) is delivered as it is. A dependency stopped, killed or paused by
//! the schedule is started or resumed when the run ends.
//!
//! `restart`, in a graph, stops every running instance of the service (with `signal`, else
//! its own stop signal, killed at its `kill_after_ms`) and starts each again once it has
//! exited, while the rest of the graph runs on: a deploy of one service. `rollout` replaces
//! them one by one as a Deployment's rolling update does: a new instance started beside the
//! old, and the old one stopped only once the new one is ready.
//!
//! `instance = "primary"` puts a proxy of its own between the target and the dependency's
//! proxy, so the target alone is partitioned while its standby (and the harness) still reach
//! the dependency. Redis only: Kafka clients follow the addresses the broker advertises, so
//! only a bootstrap connection would pass through it.

use serde::{Deserialize, Serialize};

use crate::fault::ToxicKind;
use crate::infra::{DependencyKind, LifecycleAction};
use crate::scenario::StopSignal;

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
    /// The dependency stops gracefully (SIGTERM / `docker stop`).
    Stop,
    /// The dependency starts again, behind the same address.
    Start,
    /// The dependency crashes (SIGKILL / `docker kill`).
    Kill,
    /// The dependency is frozen (SIGSTOP / `docker pause`): sockets open, no answers.
    Pause,
    Resume,
    /// `signal` to the target.
    Signal,
    /// A graph's service stopped and started again, instance by instance.
    Restart,
    /// A graph's service replaced one instance at a time, each new one ready before the old
    /// one is stopped.
    Rollout,
}

impl Action {
    /// Every action, in the order a scenario file's comment lists them.
    pub const ALL: [Action; 15] = [
        Action::Down,
        Action::Up,
        Action::Latency,
        Action::Timeout,
        Action::ResetPeer,
        Action::Bandwidth,
        Action::Clear,
        Action::Stop,
        Action::Start,
        Action::Kill,
        Action::Pause,
        Action::Resume,
        Action::Signal,
        Action::Restart,
        Action::Rollout,
    ];

    /// The name a scenario file gives it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Down => "down",
            Action::Up => "up",
            Action::Latency => "latency",
            Action::Timeout => "timeout",
            Action::ResetPeer => "reset_peer",
            Action::Bandwidth => "bandwidth",
            Action::Clear => "clear",
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Signal => "signal",
            Action::Restart => "restart",
            Action::Rollout => "rollout",
        }
    }

    /// What it does to the dependency itself, for the lifecycle actions.
    pub fn lifecycle(self) -> Option<LifecycleAction> {
        match self {
            Action::Stop => Some(LifecycleAction::Stop),
            Action::Start => Some(LifecycleAction::Start),
            Action::Kill => Some(LifecycleAction::Kill),
            Action::Pause => Some(LifecycleAction::Pause),
            Action::Resume => Some(LifecycleAction::Resume),
            _ => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The shortest `every_ms`: a repeated fault is an outage pattern, not a busy loop.
pub const MIN_EVERY_MS: u64 = 100;

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    #[serde(default)]
    pub after: Point,
    #[serde(default)]
    pub at_ms: u64,
    pub action: Action,
    /// Every action's but `signal`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<DependencyKind>,
    /// `signal`'s; `restart`'s, if not the service's own stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<StopSignal>,
    /// `signal`'s and `restart`'s, in a graph (`[[services]]`): the service whose every
    /// running instance it goes to, while the rest of the graph runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
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
    /// Played again this long after each time it was played, until the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// With `every_ms`: how many times in all, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// `rollout`'s: when each old instance is sent its stop, relative to its replacement's
    /// join of the run's consumer group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_old: Option<StopOld>,
}

/// When a rollout stops an old instance: once its replacement is ready, and then at a step of
/// the new member's join of a consumer group (seen on the wire), so the stop lands before,
/// inside or after the rebalance the join sets off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOld {
    /// At ready: no wait for a join (as Kubernetes does: it knows nothing of the group).
    Ready,
    /// At the new member's first JoinGroup: the rebalance has begun, no one has its
    /// assignment yet.
    Join,
    /// At the new member's SyncGroup: the JoinGroup round is done, the assignment in flight.
    #[default]
    Sync,
    /// At the new member's first heartbeat or commit after its SyncGroup: the join complete.
    Synced,
}

impl StopOld {
    pub fn name(self) -> &'static str {
        match self {
            StopOld::Ready => "ready",
            StopOld::Join => "join",
            StopOld::Sync => "sync",
            StopOld::Synced => "synced",
        }
    }
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
            _ => None,
        }
    }

    /// In words, for the timeline: `latency 1500 ms on redis (primary)`.
    pub fn describe(&self) -> String {
        let what = match self.action {
            Action::Restart | Action::Rollout => {
                let service = self.service.as_deref().unwrap_or("?");
                let action = self.action;
                return match self.signal {
                    Some(signal) => format!("{action} of service `{service}` ({signal})"),
                    None => format!("{action} of service `{service}`"),
                };
            }
            Action::Signal => {
                let to = match &self.service {
                    Some(service) => format!("service `{service}`"),
                    None => "the target".to_owned(),
                };
                return match self.signal {
                    Some(signal) => format!("{signal} to {to}"),
                    None => format!("a signal to {to}"),
                };
            }
            Action::Stop | Action::Start | Action::Kill | Action::Pause | Action::Resume => {
                self.action.name().to_owned()
            }
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
        let dependency = self.dependency.map_or("?", DependencyKind::as_str);
        match self.action.lifecycle() {
            Some(_) => format!("{what} {dependency}"),
            None => format!("{what} on {dependency}{whose}"),
        }
    }

    /// Checks what serde cannot: each action's own settings, and nothing else.
    pub fn validate(&self) -> Result<(), String> {
        let given = [
            ("latency_ms", self.latency_ms.is_some()),
            ("jitter_ms", self.jitter_ms.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("rate_kb", self.rate_kb.is_some()),
            ("signal", self.signal.is_some()),
            ("dependency", self.dependency.is_some()),
            ("stop_old", self.stop_old.is_some()),
        ];
        let (needs, allows): (&[&str], &[&str]) = match self.action {
            Action::Latency => (
                &["dependency", "latency_ms"],
                &["dependency", "latency_ms", "jitter_ms"],
            ),
            Action::Timeout | Action::ResetPeer => (&["dependency"], &["dependency", "timeout_ms"]),
            Action::Bandwidth => (&["dependency", "rate_kb"], &["dependency", "rate_kb"]),
            Action::Signal => (&["signal"], &["signal"]),
            Action::Restart => (&[], &["signal"]),
            Action::Rollout => (&[], &["signal", "stop_old"]),
            _ => (&["dependency"], &["dependency"]),
        };
        let action = self.action;
        for (name, present) in given {
            if present && !allows.contains(&name) {
                return Err(format!("`{name}` is not a setting of `{action}`"));
            }
            if !present && needs.contains(&name) {
                return Err(format!("`{action}` needs `{name}`"));
            }
        }
        match (self.every_ms, self.times) {
            (None, Some(_)) => return Err("`times` goes with `every_ms`".to_owned()),
            (Some(every), _) if every < MIN_EVERY_MS => {
                return Err(format!(
                    "`every_ms = {every}` repeats faster than a schedule may: \
                     {MIN_EVERY_MS} ms at the least"
                ));
            }
            (Some(_), Some(0)) => return Err("`times = 0` would never play the step".to_owned()),
            (Some(_), _) if action == Action::Signal => {
                return Err(
                    "a signal is not repeated: the first one after ready is the stop".to_owned(),
                );
            }
            _ => {}
        }
        if self.instance == Instance::Primary && self.action.lifecycle().is_some() {
            return Err(format!(
                "`{action}` acts on the dependency itself, which every client shares: \
                 `instance = \"primary\"` is for proxy actions"
            ));
        }
        let redeploy = matches!(self.action, Action::Restart | Action::Rollout);
        let to_service = redeploy || self.action == Action::Signal;
        if self.service.is_some() && !to_service {
            return Err(format!(
                "`service` names where a signal goes: `{action}` acts on a dependency"
            ));
        }
        if redeploy && self.service.is_none() {
            return Err(format!(
                "`{action}` needs `service`: it redeploys a service of a graph ([[services]])"
            ));
        }
        if redeploy && self.after != Point::Ready {
            return Err(format!(
                "a {action} is timed from `ready`: one from `{}` would meet the graph starting \
                 or stopping",
                self.after
            ));
        }
        if self.instance == Instance::Primary && redeploy {
            return Err(format!(
                "`{action}` goes to a service: it has no `instance`"
            ));
        }
        if self.instance == Instance::Primary && self.action == Action::Signal {
            return Err("`signal` goes to the target: it has no `instance`".to_owned());
        }
        if self.action == Action::Signal && self.after == Point::Start {
            return Err(
                "a signal is timed from `ready` or `stop`: one that stops the target during \
                 its start would leave nothing to judge of its readiness"
                    .to_owned(),
            );
        }
        if self.instance == Instance::Primary && self.dependency == Some(DependencyKind::Kafka) {
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

    #[test]
    fn a_repeat_is_bounded_and_checked() {
        let s = step("action = \"down\"\ndependency = \"kafka\"\nevery_ms = 600000\ntimes = 3")
            .unwrap();
        assert_eq!((s.every_ms, s.times), (Some(600_000), Some(3)));
        let e = step("action = \"down\"\ndependency = \"kafka\"\ntimes = 3").unwrap_err();
        assert!(e.contains("`times` goes with `every_ms`"), "{e}");
        let e = step("action = \"down\"\ndependency = \"kafka\"\nevery_ms = 10").unwrap_err();
        assert!(e.contains("`every_ms = 10`") && e.contains("100 ms"), "{e}");
        let e = step("action = \"up\"\ndependency = \"kafka\"\nevery_ms = 1000\ntimes = 0")
            .unwrap_err();
        assert!(e.contains("`times = 0`"), "{e}");
        let e = step("action = \"signal\"\nsignal = \"term\"\nevery_ms = 1000").unwrap_err();
        assert!(e.contains("not repeated"), "{e}");
    }

    #[test]
    fn a_restart_names_its_service_and_is_timed_from_ready() {
        let s = step("action = \"restart\"\nservice = \"worker\"\nevery_ms = 60000").unwrap();
        assert_eq!(s.describe(), "restart of service `worker`");
        let s = step("action = \"restart\"\nservice = \"api\"\nsignal = \"int\"").unwrap();
        assert_eq!(s.describe(), "restart of service `api` (SIGINT)");
        let e = step("action = \"restart\"").unwrap_err();
        assert!(e.contains("`restart` needs `service`"), "{e}");
        let s = step("action = \"rollout\"\nservice = \"worker\"").unwrap();
        assert_eq!(s.describe(), "rollout of service `worker`");
        let e = step("action = \"rollout\"\nservice = \"w\"\nafter = \"start\"").unwrap_err();
        assert!(e.contains("a rollout is timed from `ready`"), "{e}");
        let e = step("action = \"restart\"\nservice = \"w\"\nafter = \"stop\"").unwrap_err();
        assert!(e.contains("timed from `ready`"), "{e}");
        let e = step("action = \"restart\"\nservice = \"w\"\ndependency = \"redis\"").unwrap_err();
        assert!(
            e.contains("`dependency` is not a setting of `restart`"),
            "{e}"
        );
    }
}
