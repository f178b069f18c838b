//! The `[checks]` table: each check is `true`, `false` or a table of its parameters, and every
//! check is on unless turned off.

use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer, Serialize};

use crate::verdict::CheckName;

/// One check: whether it runs, and its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check<T> {
    pub enabled: bool,
    pub params: T,
}

impl<T: Default> Default for Check<T> {
    fn default() -> Self {
        Check {
            enabled: true,
            params: T::default(),
        }
    }
}

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Check<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CheckVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for CheckVisitor<T> {
            type Value = Check<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or a table of the check's parameters")
            }

            fn visit_bool<E>(self, enabled: bool) -> Result<Check<T>, E> {
                Ok(Check {
                    enabled,
                    params: T::default(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Check<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|params| Check {
                    enabled: true,
                    params,
                })
            }
        }
        d.deserialize_any(CheckVisitor(PhantomData))
    }
}

/// For checks without parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartsWithinParams {
    /// From start to ready (default 30 s, seed 001).
    #[serde(default = "default_start_deadline")]
    pub deadline_ms: u64,
}

fn default_start_deadline() -> u64 {
    30_000
}

impl Default for StartsWithinParams {
    fn default() -> Self {
        StartsWithinParams {
            deadline_ms: default_start_deadline(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopsWithinParams {
    /// From the stop signal to the process gone (default 5 s, seed 001).
    #[serde(default = "default_stop_deadline")]
    pub deadline_ms: u64,
}

fn default_stop_deadline() -> u64 {
    5_000
}

impl Default for StopsWithinParams {
    fn default() -> Self {
        StopsWithinParams {
            deadline_ms: default_stop_deadline(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitCodeParams {
    /// The exit code a clean stop must give.
    #[serde(default)]
    pub expected: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakedTasksParams {
    /// Lines in the target's output that mean a task was leaked, besides the built-in ones
    /// (Python asyncio's).
    #[serde(default)]
    pub signatures: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupLeftParams {
    /// How soon after the stop every member of the target must have sent LeaveGroup
    /// (default 2 s): until then its partitions wait for it.
    #[serde(default = "default_leave_within")]
    pub within_ms: u64,
}

fn default_leave_within() -> u64 {
    2_000
}

impl Default for GroupLeftParams {
    fn default() -> Self {
        GroupLeftParams {
            within_ms: default_leave_within(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeoverParams {
    /// From a rolled-out instance's SIGTERM to every partition it consumed being fetched by
    /// another instance of its service (default 5 s).
    #[serde(default = "default_stop_deadline")]
    pub deadline_ms: u64,
}

impl Default for TakeoverParams {
    fn default() -> Self {
        TakeoverParams {
            deadline_ms: default_stop_deadline(),
        }
    }
}

/// Which of the optional tables a scenario has: each brings its checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub kafka: bool,
    pub redis: bool,
    /// `[redis]` names evidence of leader-only work (`job_log` or `job_line`).
    pub jobs: bool,
    pub readiness: bool,
}

/// The `[checks]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksConfig {
    #[serde(default)]
    pub starts_within: Check<StartsWithinParams>,
    #[serde(default)]
    pub stops_within: Check<StopsWithinParams>,
    #[serde(default)]
    pub exit_code: Check<ExitCodeParams>,
    #[serde(default)]
    pub no_leaked_tasks: Check<LeakedTasksParams>,
    #[serde(default)]
    pub no_leaked_threads: Check<NoParams>,
    #[serde(default)]
    pub no_orphan_processes: Check<NoParams>,
    // The Kafka checks: on when the scenario has a `[kafka]` workload, unless turned off.
    // Turning one on without `[kafka]` is an error, so they are `None` until written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets_committed: Option<Check<NoParams>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_message_loss: Option<Check<NoParams>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_redelivery: Option<Check<NoParams>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_flushed: Option<Check<NoParams>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_left: Option<Check<GroupLeftParams>>,
    // The Redis checks: on when the scenario has a `[redis]` table, the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_released: Option<Check<NoParams>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_leader: Option<Check<NoParams>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_once_per_interval: Option<Check<NoParams>>,
    /// On when the scenario has a `[readiness]` table, the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_truthful: Option<Check<NoParams>>,
    /// On when a graph with `[kafka]` rolls out a service in its fault schedule, the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover_within: Option<Check<TakeoverParams>>,
    /// Checks whose inconclusive outcome does not make the run inconclusive (still reported
    /// as such): the explicit choice of a user who knows quiesce cannot see them here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_inconclusive: Vec<CheckName>,
}

impl ChecksConfig {
    pub fn is_enabled(&self, check: CheckName) -> bool {
        match check {
            CheckName::StartsWithin => self.starts_within.enabled,
            CheckName::StopsWithin => self.stops_within.enabled,
            CheckName::ExitCode => self.exit_code.enabled,
            CheckName::NoLeakedTasks => self.no_leaked_tasks.enabled,
            CheckName::NoLeakedThreads => self.no_leaked_threads.enabled,
            CheckName::NoOrphanProcesses => self.no_orphan_processes.enabled,
            CheckName::GroupLeft => self.group_left.as_ref().is_none_or(|c| c.enabled),
            CheckName::TakeoverWithin => self.takeover_within.as_ref().is_none_or(|c| c.enabled),
            _ => self.optional_check(check).is_none_or(|c| c.enabled),
        }
    }

    /// Whether the file turns `check` on in so many words (`true` or a table of parameters):
    /// a table-bound check turned on without its table is an error.
    pub fn turned_on(&self, check: CheckName) -> bool {
        match check {
            CheckName::GroupLeft => self.group_left.as_ref().is_some_and(|c| c.enabled),
            CheckName::TakeoverWithin => self.takeover_within.as_ref().is_some_and(|c| c.enabled),
            _ => self.optional_check(check).is_some_and(|c| c.enabled),
        }
    }

    /// A Kafka or Redis check as written in the file (`None`: not mentioned).
    pub fn optional_check(&self, check: CheckName) -> Option<&Check<NoParams>> {
        match check {
            CheckName::OffsetsCommitted => self.offsets_committed.as_ref(),
            CheckName::NoMessageLoss => self.no_message_loss.as_ref(),
            CheckName::NoRedelivery => self.no_redelivery.as_ref(),
            CheckName::ProducerFlushed => self.producer_flushed.as_ref(),
            CheckName::LockReleased => self.lock_released.as_ref(),
            CheckName::SingleLeader => self.single_leader.as_ref(),
            CheckName::JobsOncePerInterval => self.jobs_once_per_interval.as_ref(),
            CheckName::ReadinessTruthful => self.readiness_truthful.as_ref(),
            _ => None,
        }
    }

    /// The checks that run, in report order: the Kafka, Redis and readiness ones only when
    /// their table is there.
    pub fn enabled(&self, tables: Tables) -> impl Iterator<Item = CheckName> + '_ {
        CheckName::ALL
            .into_iter()
            .filter(move |c| tables.kafka || !c.needs_kafka())
            .filter(move |c| tables.redis || !c.needs_redis())
            .filter(move |c| tables.jobs || !c.needs_jobs())
            .filter(move |c| tables.readiness || *c != CheckName::ReadinessTruthful)
            .filter(|c| self.is_enabled(*c))
    }

    /// Only `checks` on.
    pub fn only(checks: &[CheckName]) -> Self {
        let toggle = |enabled| Check {
            enabled,
            params: NoParams {},
        };
        let mut config = ChecksConfig::default();
        for check in CheckName::ALL {
            let on = checks.contains(&check);
            match check {
                CheckName::StartsWithin => config.starts_within.enabled = on,
                CheckName::StopsWithin => config.stops_within.enabled = on,
                CheckName::ExitCode => config.exit_code.enabled = on,
                CheckName::NoLeakedTasks => config.no_leaked_tasks.enabled = on,
                CheckName::NoLeakedThreads => config.no_leaked_threads.enabled = on,
                CheckName::NoOrphanProcesses => config.no_orphan_processes.enabled = on,
                CheckName::OffsetsCommitted => config.offsets_committed = Some(toggle(on)),
                CheckName::NoMessageLoss => config.no_message_loss = Some(toggle(on)),
                CheckName::NoRedelivery => config.no_redelivery = Some(toggle(on)),
                CheckName::ProducerFlushed => config.producer_flushed = Some(toggle(on)),
                CheckName::GroupLeft => {
                    config.group_left = Some(Check {
                        enabled: on,
                        params: GroupLeftParams::default(),
                    })
                }
                CheckName::LockReleased => config.lock_released = Some(toggle(on)),
                CheckName::SingleLeader => config.single_leader = Some(toggle(on)),
                CheckName::JobsOncePerInterval => config.jobs_once_per_interval = Some(toggle(on)),
                CheckName::ReadinessTruthful => config.readiness_truthful = Some(toggle(on)),
                // Not in ALL: `quiesce soak` adds the one, a rollout the other.
                CheckName::MemoryFlat | CheckName::TakeoverWithin => {}
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_inconclusive_names_checks_and_rejects_unknown_ones() {
        let config: ChecksConfig =
            toml::from_str(r#"allow_inconclusive = ["no_leaked_threads", "exit_code"]"#)
                .expect("known names");
        assert_eq!(
            config.allow_inconclusive,
            [CheckName::NoLeakedThreads, CheckName::ExitCode]
        );
        let err = toml::from_str::<ChecksConfig>(r#"allow_inconclusive = ["no_such_check"]"#)
            .expect_err("an unknown check is bad input");
        assert!(err.to_string().contains("no_such_check"), "{err}");
        // Not written: nothing is accepted.
        assert!(ChecksConfig::default().allow_inconclusive.is_empty());
    }
}
