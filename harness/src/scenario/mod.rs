//! Scenarios: what to run, how to stop it, and what to check, from a TOML file or a builder.
//!
//! ```toml
//! name = "api-clean-stop"
//!
//! [infra]
//! backend = "local"
//!
//! [target]
//! command = ["python3", "service.py"]     # any executable; endpoints come as QUIESCE_* variables
//! env = { LOG_LEVEL = "info" }
//! ready = { log = "listening on" }        # or { http = "http://127.0.0.1:8080/ready" }, { tcp = "127.0.0.1:8080" }
//!
//! [stop]
//! signal = "TERM"                         # TERM, INT or KILL
//! after_ms = 1000                         # how long the target runs once ready
//! kill_after_ms = 10000                   # SIGKILL if it is still running this long after the signal
//!
//! [checks]                                # every check is on unless turned off
//! stops_within = { deadline_ms = 5000 }
//! exit_code = { expected = 0 }
//! no_leaked_tasks = { signatures = ["goroutine leak"] }
//! no_leaked_threads = false
//! ```
//!
//! Unknown keys and unknown checks are errors with file, line and column.

mod checks;
mod faults;
mod services;
pub mod template;
mod workload;

pub use checks::{
    Check, ChecksConfig, ExitCodeParams, GroupLeftParams, LeakedTasksParams, NoParams,
    StartsWithinParams, StopsWithinParams, Tables,
};
pub use faults::{Action, FaultStep, Instance, Point, StopOld};
pub use services::{GraphError, MAX_REPLICAS, Service, ServiceGraph, ServiceStop};
pub use workload::{
    INPUT_PLACEHOLDERS, Ingress, KafkaWorkload, ProcessedBy, Readiness, RedisLeadership, StopRule,
};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::infra::{ConfigError, InfraConfig, toml_error};

/// The signal that asks the target to stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum StopSignal {
    /// SIGTERM: what container runtimes and Kubernetes send.
    #[default]
    Term,
    /// SIGINT: Ctrl-C.
    Int,
    /// SIGKILL: a crash; nothing runs on the way out.
    Kill,
}

impl StopSignal {
    pub fn as_nix(self) -> nix::sys::signal::Signal {
        match self {
            StopSignal::Term => nix::sys::signal::Signal::SIGTERM,
            StopSignal::Int => nix::sys::signal::Signal::SIGINT,
            StopSignal::Kill => nix::sys::signal::Signal::SIGKILL,
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
            StopSignal::Kill => "SIGKILL",
        })
    }
}

impl std::str::FromStr for StopSignal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        match upper.strip_prefix("SIG").unwrap_or(&upper) {
            "TERM" => Ok(StopSignal::Term),
            "INT" => Ok(StopSignal::Int),
            "KILL" => Ok(StopSignal::Kill),
            _ => Err(format!("unknown signal `{s}` (expected TERM, INT or KILL)")),
        }
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// When a process target counts as started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReadyProbe {
    /// A line of its stdout or stderr matches this regular expression.
    Log(String),
    /// This URL answers `200` (GET).
    Http(String),
    /// This `host:port` accepts a TCP connection.
    Tcp(String),
    /// As soon as it runs.
    Started(bool),
}

/// An executable to run as the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessTarget {
    /// Program and arguments.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the scenario file's folder.
    pub cwd: Option<PathBuf>,
    /// When it counts as started; default: as soon as it runs.
    #[serde(default = "default_ready")]
    pub ready: ReadyProbe,
    /// Run when the target is stuck past a deadline, before it is killed, to show where it
    /// is: `{pid}` becomes its pid (e.g. `py-spy dump --pid {pid}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hang: Option<String>,
}

pub(crate) fn default_ready() -> ReadyProbe {
    ReadyProbe::Started(true)
}

/// What runs: a process (from a file or the builder), or an in-process graph (builder only:
/// a file cannot name Rust code).
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Process(ProcessTarget),
    Graph(crate::target::Graph),
    /// Several processes (`[[services]]`), each judged on its own.
    Services(ServiceGraph),
}

impl Target {
    /// For report headings: the command line, or `graph NAME`.
    pub fn describe(&self) -> String {
        match self {
            Target::Process(p) => p.command.join(" "),
            Target::Graph(g) => format!("graph `{}`", g.name()),
            Target::Services(graph) => {
                let names: Vec<&str> = graph.services.iter().map(|s| s.name.as_str()).collect();
                format!("services {}", names.join(", "))
            }
        }
    }
}

/// What serde cannot check of a process: an empty command, a bad ready probe. `place` names
/// it (`[target]`, ``[[services]] `api` ``).
fn check_process(place: &str, target: &ProcessTarget) -> Result<(), String> {
    if target.command.first().is_none_or(|c| c.is_empty()) {
        return Err(format!(
            "{place} command is empty (hint: command = [\"./my-service\"])"
        ));
    }
    match &target.ready {
        ReadyProbe::Log(pattern) => {
            regex::Regex::new(pattern)
                .map_err(|e| format!("{place} ready.log is not a regular expression: {e}"))?;
        }
        ReadyProbe::Http(url) if !url.starts_with("http://") => {
            return Err(format!("{place} ready.http `{url}` must be an http:// URL"));
        }
        _ => {}
    }
    Ok(())
}

/// A file's target before it is read: `[[services]]` comes in its own key and replaces it.
fn no_target() -> Target {
    Target::Services(ServiceGraph::default())
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::Process(p) => p.serialize(s),
            Target::Graph(g) => s.serialize_str(&format!("graph {}", g.name())),
            Target::Services(graph) => graph.services.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ProcessTarget::deserialize(d).map(Target::Process)
    }
}

/// How the run ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopPlan {
    #[serde(default)]
    pub signal: StopSignal,
    /// Milliseconds the target runs once ready, before the signal.
    #[serde(default = "default_after_ms")]
    pub after_ms: u64,
    /// Milliseconds after the signal before the harness kills the process group.
    #[serde(default = "default_kill_after_ms")]
    pub kill_after_ms: u64,
    /// With `[[services]]`: the order they are stopped in, each once it has exited the one
    /// before it (every service named once). Default: the reverse of the start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
}

fn default_after_ms() -> u64 {
    1_000
}

fn default_kill_after_ms() -> u64 {
    10_000
}

impl Default for StopPlan {
    fn default() -> Self {
        StopPlan {
            signal: StopSignal::Term,
            after_ms: default_after_ms(),
            kill_after_ms: default_kill_after_ms(),
            order: Vec::new(),
        }
    }
}

impl StopPlan {
    pub fn after(&self) -> Duration {
        Duration::from_millis(self.after_ms)
    }

    pub fn kill_after(&self) -> Duration {
        Duration::from_millis(self.kill_after_ms)
    }
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file's stem.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub infra: InfraConfig,
    /// `[target]`, or the `[[services]]` of a graph once the file is read.
    #[serde(default = "no_target")]
    pub target: Target,
    /// `[[services]]` as the file gives them: moved into `target` once checked.
    #[serde(default, rename = "services", skip_serializing)]
    services_table: Vec<Service>,
    #[serde(default)]
    pub stop: StopPlan,
    /// A Kafka workload, and with it the Kafka checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaWorkload>,
    /// Leader election on Redis, and with it the Redis checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisLeadership>,
    /// `/health` and `/ready` through the run and dependency outages, and with it
    /// `readiness_truthful`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    /// Proxy faults, each at a time after a point of the target's lifecycle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultStep>,
    #[serde(default)]
    pub checks: ChecksConfig,
    /// The folder relative paths are resolved against (the file's folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses scenario text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ConfigError> {
        let mut scenario: Scenario =
            toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".to_owned());
        }
        scenario.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        scenario.take_services().map_err(|e| {
            let (line, column) = e
                .near
                .as_deref()
                .and_then(|near| template::line_of(text, near))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message,
            }
        })?;
        if let Err((place, value, e)) = template::check_target(&scenario) {
            // The placeholder's own line where it can be found, else the value's.
            let name = match &e {
                template::TemplateError::Unknown(name)
                | template::TemplateError::NotInReady(name)
                | template::TemplateError::NeedsTable { name, .. } => format!("{{{name}}}"),
                template::TemplateError::NoService(name) => format!("{{port:{name}}}"),
                template::TemplateError::Unbalanced => value.clone(),
            };
            let (line, column) = template::line_of(text, &name)
                .or_else(|| template::line_of(text, &value))
                .unwrap_or((1, 1));
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: format!("{place}: {e}"),
            });
        }
        if let Some(Err((key, message))) = scenario.kafka.as_ref().map(|k| k.check_evidence()) {
            let (line, column) = template::line_of_key(text, "kafka", key).unwrap_or((1, 1));
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message,
            });
        }
        scenario.validate(&path.display().to_string())?;
        Ok(scenario)
    }

    /// Moves a file's `[[services]]` into its target, checked and ordered; exactly one of
    /// `[target]` and `[[services]]` must be there.
    fn take_services(&mut self) -> Result<(), GraphError> {
        let services = std::mem::take(&mut self.services_table);
        let no_target = matches!(&self.target, Target::Services(g) if g.services.is_empty());
        let err = |message: &str, near: &str| GraphError {
            message: message.to_owned(),
            near: Some(near.to_owned()),
        };
        match (services.is_empty(), no_target) {
            (true, true) => Err(GraphError {
                message: "no target: give a [target] table (one service) or [[services]] \
                          entries (a graph)"
                    .to_owned(),
                near: None,
            }),
            (false, false) => Err(err(
                "[target] and [[services]] are both given: one service is a [target], \
                 several are [[services]] entries",
                "[[services]]",
            )),
            (false, true) => {
                self.target = Target::Services(ServiceGraph::new(services, &self.stop.order)?);
                Ok(())
            }
            (true, false) if !self.stop.order.is_empty() => Err(err(
                "[stop] order names services, and there is no [[services]] entry",
                "order",
            )),
            (true, false) => Ok(()),
        }
    }

    /// Checks what serde cannot: an empty command, a bad regular expression.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Value {
            origin: origin.to_owned(),
            message,
        };
        let tables: [(&str, bool, &[crate::verdict::CheckName]); 3] = [
            (
                "kafka",
                self.kafka.is_some(),
                &crate::verdict::CheckName::NEEDS_KAFKA,
            ),
            (
                "redis",
                self.redis.is_some(),
                &crate::verdict::CheckName::REDIS,
            ),
            (
                "readiness",
                self.readiness.is_some(),
                &[crate::verdict::CheckName::ReadinessTruthful],
            ),
        ];
        for (table, present, checks) in tables {
            let wanted = checks.iter().find(|c| self.checks.turned_on(**c));
            if let (false, Some(check)) = (present, wanted) {
                return Err(bad(format!(
                    "[checks] {check} needs a [{table}] table: what it judges (hint: add `[{table}]` to use the defaults)"
                )));
            }
        }
        let rollout = self.faults.iter().any(|f| f.action == Action::Rollout);
        if self
            .checks
            .turned_on(crate::verdict::CheckName::TakeoverWithin)
            && !(matches!(self.target, Target::Services(_)) && rollout)
        {
            return Err(bad(
                "[checks] takeover_within judges a rollout: it needs [[services]] and a \
                 [[faults]] step with action = \"rollout\""
                    .to_owned(),
            ));
        }
        if let Some(redis) = &self.redis {
            let wanted = crate::verdict::CheckName::REDIS
                .iter()
                .find(|c| c.needs_jobs() && self.checks.turned_on(**c));
            if let (Some(check), false) = (wanted, redis.has_jobs()) {
                return Err(bad(format!(
                    "[checks] {check} needs evidence of leader-only work: [redis] job_line (a \
                     pattern for the line an instance prints per run, the job's name as a \
                     group) or job_log (the Redis list it pushes runs to)"
                )));
            }
        }
        if let Err((place, _, e)) = template::check_target(self) {
            return Err(bad(format!("{place}: {e}")));
        }
        if let Some(kafka) = &self.kafka {
            kafka.validate().map_err(bad)?;
            if let Some(ingress) = &kafka.ingress {
                self.check_ingress(ingress).map_err(bad)?;
            }
            if matches!(kafka.processed, ProcessedBy::Log { .. })
                && matches!(self.target, Target::Graph(_))
            {
                return Err(bad(
                    "[kafka] processed = { by = \"log\" }: an in-process graph \
                     prints no log of its own to read (hint: by = \"key\" or the contract)"
                        .to_owned(),
                ));
            }
        }
        if let Some(redis) = &self.redis {
            redis.validate().map_err(bad)?;
            if let (Some(name), false) =
                (&redis.service, matches!(self.target, Target::Services(_)))
            {
                return Err(bad(format!(
                    "[redis] service = `{name}` names a [[services]] entry: this scenario has \
                     one target, which contends with its standby (remove `service`)"
                )));
            }
        }
        if let Some(readiness) = &self.readiness {
            readiness.validate().map_err(bad)?;
            if let (Some(name), false) = (
                &readiness.service,
                matches!(self.target, Target::Services(_)),
            ) {
                return Err(bad(format!(
                    "[readiness] service = `{name}` names a [[services]] entry: this scenario \
                     has one target, whose `{{port}}` it is (remove `service`)"
                )));
            }
        }
        for (i, step) in self.faults.iter().enumerate() {
            let graph_kill = matches!(self.target, Target::Graph(_))
                && step.action == Action::Signal
                && step.signal == Some(StopSignal::Kill);
            let checked = match graph_kill {
                _ if step.service.is_some() && !matches!(self.target, Target::Services(_)) => Err(
                    "`service` names a [[services]] entry: this scenario has one target".to_owned(),
                ),
                true => Err("an in-process graph cannot be sent SIGKILL: its one stop \
                             trigger is its shutdown token (send TERM or INT)"
                    .to_owned()),
                false => step.validate(),
            };
            checked.map_err(|m| bad(format!("[[faults]] step {}: {m}", i + 1)))?;
        }
        for signature in &self.checks.no_leaked_tasks.params.signatures {
            if signature.is_empty() {
                return Err(bad(
                    "[checks] no_leaked_tasks has an empty signature".to_owned()
                ));
            }
        }
        match &self.target {
            Target::Process(target) => check_process("[target]", target).map_err(bad),
            Target::Graph(_) => Ok(()),
            Target::Services(graph) => self.check_services(graph).map_err(bad),
        }
    }

    /// Whether the target gets a port of its own: `[readiness]` polls it, the target's
    /// `ready` probe names `{port}`, or it is an in-process graph. The target gets it as
    /// `QUIESCE_HTTP_PORT`.
    pub fn needs_port(&self) -> bool {
        let in_probe = match &self.target {
            Target::Process(target) => {
                let in_ready = match &target.ready {
                    ReadyProbe::Http(url) | ReadyProbe::Tcp(url) => url.contains("{port}"),
                    ReadyProbe::Log(_) | ReadyProbe::Started(_) => false,
                };
                // `{port}` in the command or env (see `template`).
                in_ready
                    || target
                        .command
                        .iter()
                        .chain(target.env.values())
                        .any(|s| s.contains("{port}"))
            }
            // A graph may serve HTTP too; a port costs nothing.
            Target::Graph(_) => true,
            // Each service's instance gets a port of its own (see `ports`).
            Target::Services(_) => return false,
        };
        let ingress = self.kafka.as_ref().is_some_and(|k| k.ingress.is_some());
        in_probe || self.readiness.is_some() || ingress
    }

    /// A graph's services: what it supports yet, each service's command, the faults' names.
    fn check_services(&self, graph: &ServiceGraph) -> Result<(), String> {
        let by_log = self
            .kafka
            .as_ref()
            .is_some_and(|k| matches!(k.processed, ProcessedBy::Log { .. }));
        let tables = [
            ("[kafka] processed = { by = \"log\" }", by_log),
            (
                "[redis] job_line",
                self.redis.as_ref().is_some_and(|r| r.job_line.is_some()),
            ),
        ];
        if let Some((table, _)) = tables.iter().find(|(_, given)| *given) {
            return Err(format!(
                "{table} with [[services]] is not supported yet: a graph is judged on \
                 each service's start and stop, on [kafka] by its topics and on [redis] by \
                 its job_log (use [target] for {table})"
            ));
        }
        if let Some(redis) = &self.redis {
            match &redis.service {
                None => {
                    return Err(
                        "[redis] service: which of the [[services]] contends for the \
                                leader lock (hint: service = \"scheduler\")"
                            .to_owned(),
                    );
                }
                Some(name) if graph.index_of(name).is_none() => {
                    return Err(format!(
                        "[redis] service = `{name}` names no [[services]] entry"
                    ));
                }
                Some(_) => {}
            }
        }
        for service in &graph.services {
            let place = format!("[[services]] `{}`", service.name);
            check_process(&place, &service.process())?;
        }
        if let Some(readiness) = &self.readiness {
            match &readiness.service {
                None => {
                    return Err("[readiness] service: which of the [[services]] serves \
                                `/health` and `/ready` (hint: service = \"api\")"
                        .to_owned());
                }
                Some(name) => match graph.index_of(name).map(|s| graph.services[s].replicas) {
                    None => {
                        return Err(format!(
                            "[readiness] service = `{name}` names no [[services]] entry"
                        ));
                    }
                    // One instance is polled: the others' /ready would go unjudged.
                    Some(replicas) if replicas > 1 => {
                        return Err(format!(
                            "[readiness] service = `{name}` has replicas = {replicas}: \
                             readiness_truthful polls one instance, and would leave the \
                             others unjudged (give it one replica)"
                        ));
                    }
                    Some(_) => {}
                },
            }
        }
        for (i, step) in self.faults.iter().enumerate() {
            let wrong = match (&step.service, step.action) {
                (None, Action::Signal) => Some(
                    "a signal in a graph goes to a service: name it (`service = \"...\"`)"
                        .to_owned(),
                ),
                (Some(name), _) if !graph.services.iter().any(|s| &s.name == name) => {
                    Some(format!("`service = \"{name}\"` is no [[services]] entry"))
                }
                _ if step.instance == Instance::Primary => Some(
                    "`instance = \"primary\"` needs a single target: a graph has none".to_owned(),
                ),
                _ if self.kafka.is_none() && step.stop_old.is_some_and(|s| s != StopOld::Ready) => {
                    Some(format!(
                        "`stop_old = \"{}\"` is a step of the new instance's join of a consumer \
                         group: it needs [kafka] (or stop_old = \"ready\")",
                        step.stop_old.unwrap_or_default().name()
                    ))
                }
                _ => None,
            };
            if let Some(m) = wrong {
                return Err(format!("[[faults]] step {}: {m}", i + 1));
            }
        }
        Ok(())
    }

    /// Who answers `[kafka.ingress]`: a service of the graph, named; a `[target]`, unnamed.
    fn check_ingress(&self, ingress: &Ingress) -> Result<(), String> {
        match (&self.target, &ingress.service) {
            (Target::Services(graph), Some(name)) => match graph.index_of(name).is_some() {
                true => Ok(()),
                false => Err(format!(
                    "[kafka.ingress] service = `{name}` names no [[services]] entry (there \
                         are: {})",
                    graph
                        .services
                        .iter()
                        .map(|s| format!("`{}`", s.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
            (Target::Services(_), None) => Err("[kafka.ingress] service: which of the \
                 [[services]] answers the requests (hint: service = \"api\")"
                .to_owned()),
            (Target::Process(_), Some(name)) => Err(format!(
                "[kafka.ingress] service = `{name}`: this scenario has one [target], which \
                 answers on `{{port}}` (remove `service`)"
            )),
            (Target::Process(_), None) => Ok(()),
            (Target::Graph(_), _) => Err("[kafka.ingress]: an in-process graph answers no \
                 requests of its own (give it a [target] command, or [[services]])"
                .to_owned()),
        }
    }

    /// The scenario with `{port}` in its URLs (the target's `ready`, `[readiness]`) replaced
    /// by `port`.
    pub fn with_port(&self, port: u16) -> Scenario {
        let mut scenario = self.clone();
        let fill = |s: &mut String| *s = s.replace("{port}", &port.to_string());
        if let Target::Process(target) = &mut scenario.target {
            match &mut target.ready {
                ReadyProbe::Http(url) | ReadyProbe::Tcp(url) => fill(url),
                ReadyProbe::Log(_) | ReadyProbe::Started(_) => {}
            }
        }
        if let Some(readiness) = &mut scenario.readiness {
            fill(&mut readiness.health);
            fill(&mut readiness.ready);
        }
        scenario
    }

    /// Checks its tables would have that are off for want of evidence, each with why: said
    /// when the file is read, never found out from a verdict.
    pub fn off(&self) -> Vec<String> {
        let mut off = Vec::new();
        if let Some(why) = self.redis.as_ref().and_then(RedisLeadership::jobs_off) {
            off.push(why.to_owned());
        }
        off
    }

    /// The checks this scenario runs, in report order: the Kafka ones only with `[kafka]`.
    pub fn enabled_checks(&self) -> impl Iterator<Item = crate::verdict::CheckName> + '_ {
        self.checks.enabled(Tables {
            kafka: self.kafka.is_some(),
            redis: self.redis.is_some(),
            jobs: self.redis.as_ref().is_some_and(RedisLeadership::has_jobs),
            readiness: self.readiness.is_some(),
        })
    }

    /// Whether `takeover_within` is judged: a graph with `[kafka]` whose fault schedule rolls
    /// out a service, the check not turned off.
    pub fn judges_takeover(&self) -> bool {
        matches!(self.target, Target::Services(_))
            && self.kafka.is_some()
            && self.faults.iter().any(|f| f.action == Action::Rollout)
            && self
                .checks
                .is_enabled(crate::verdict::CheckName::TakeoverWithin)
    }

    /// A scenario that runs `command` with every check on, on the default backend.
    pub fn builder(
        name: impl Into<String>,
        command: impl IntoIterator<Item = impl Into<String>>,
    ) -> ScenarioBuilder {
        Self::with_target(
            name,
            Target::Process(ProcessTarget {
                command: command.into_iter().map(Into::into).collect(),
                env: BTreeMap::new(),
                cwd: None,
                ready: default_ready(),
                on_hang: None,
            }),
        )
    }

    /// A scenario that runs an in-process `graph` with every check on.
    pub fn graph(name: impl Into<String>, graph: crate::target::Graph) -> ScenarioBuilder {
        Self::with_target(name, Target::Graph(graph))
    }

    fn with_target(name: impl Into<String>, target: Target) -> ScenarioBuilder {
        ScenarioBuilder {
            scenario: Scenario {
                name: name.into(),
                infra: InfraConfig::default(),
                target,
                stop: StopPlan::default(),
                kafka: None,
                redis: None,
                readiness: None,
                faults: Vec::new(),
                checks: ChecksConfig::default(),
                base_dir: PathBuf::from("."),
                services_table: Vec::new(),
            },
            process_only: Vec::new(),
        }
    }
}

/// Builds a [`Scenario`] in Rust, with the same defaults as a file.
///
/// ```
/// use quiesce::scenario::{ReadyProbe, Scenario, StopSignal};
/// let scenario = Scenario::builder("clean", ["./my-service"])
///     .ready(ReadyProbe::Log("listening".into()))
///     .stop_signal(StopSignal::Int)
///     .run_for_ms(500)
///     .build()
///     .unwrap();
/// assert_eq!(scenario.checks.stops_within.params.deadline_ms, 5_000);
/// ```
#[derive(Clone, Debug)]
pub struct ScenarioBuilder {
    scenario: Scenario,
    /// Settings made that only a process target has (an error for a graph).
    process_only: Vec<&'static str>,
}

impl ScenarioBuilder {
    pub fn infra(mut self, infra: InfraConfig) -> Self {
        self.scenario.infra = infra;
        self
    }

    /// A variable for a process target.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        match &mut self.scenario.target {
            Target::Process(p) => {
                p.env.insert(key.into(), value.into());
            }
            Target::Graph(_) | Target::Services(_) => self.process_only.push("env"),
        }
        self
    }

    /// When a process target counts as ready (a graph says so itself).
    pub fn ready(mut self, ready: ReadyProbe) -> Self {
        match &mut self.scenario.target {
            Target::Process(p) => p.ready = ready,
            Target::Graph(_) | Target::Services(_) => self.process_only.push("ready"),
        }
        self
    }

    pub fn stop_signal(mut self, signal: StopSignal) -> Self {
        self.scenario.stop.signal = signal;
        self
    }

    pub fn run_for_ms(mut self, ms: u64) -> Self {
        self.scenario.stop.after_ms = ms;
        self
    }

    pub fn kill_after_ms(mut self, ms: u64) -> Self {
        self.scenario.stop.kill_after_ms = ms;
        self
    }

    /// A Kafka workload, and with it the Kafka checks.
    pub fn kafka(mut self, kafka: KafkaWorkload) -> Self {
        self.scenario.kafka = Some(kafka);
        self
    }

    /// Health and readiness polled through dependency outages, and `readiness_truthful`.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.scenario.readiness = Some(readiness);
        self
    }

    /// Leader election on Redis, and with it the Redis checks.
    pub fn redis(mut self, redis: RedisLeadership) -> Self {
        self.scenario.redis = Some(redis);
        self
    }

    pub fn checks(mut self, checks: ChecksConfig) -> Self {
        self.scenario.checks = checks;
        self
    }

    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scenario.base_dir = dir.into();
        self
    }

    /// Validates and returns the scenario.
    pub fn build(self) -> Result<Scenario, ConfigError> {
        self.scenario
            .validate(&format!("scenario `{}`", self.scenario.name))?;
        Ok(self.scenario)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ConfigError> {
        Scenario::parse(Path::new("dir/s.toml"), text)
    }

    #[test]
    fn minimal_file_gets_every_check_and_the_defaults() {
        let s = parse("[target]\ncommand = [\"./svc\"]\n").unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.base_dir, Path::new("dir"));
        assert_eq!(s.stop, StopPlan::default());
        let Target::Process(target) = &s.target else {
            unreachable!()
        };
        assert_eq!(target.ready, ReadyProbe::Started(true));
        let checks: Vec<_> = s.enabled_checks().collect();
        assert_eq!(checks, crate::verdict::CheckName::LIFECYCLE);
    }

    /// `[kafka.ingress]`: who answers must be clear, and a request must name its key.
    #[test]
    fn an_ingress_names_who_answers_and_the_key() {
        let graph = "[[services]]\nname = \"api\"\ncommand = [\"x\"]\n\
                     [[services]]\nname = \"worker\"\ncommand = [\"y\"]\n";
        let ingress = |target: &str, table: &str| {
            parse(&format!(
                "{target}[kafka]\nprocessed = {{ by = \"key\" }}\n[kafka.ingress]\n{table}"
            ))
        };
        let body = "body = '{{\"id\": \"{key}\"}}'\n";
        let ok = ingress(
            graph,
            &format!("service = \"api\"\npath = \"/orders\"\n{body}"),
        )
        .unwrap();
        let spec = ok.kafka.unwrap().ingress.unwrap();
        assert_eq!(
            (spec.method.as_str(), spec.written(&ProcessedBy::Key {})),
            ("POST", ProcessedBy::Key {})
        );
        let one = "[target]\ncommand = [\"x\", \"{port}\"]\n";
        assert!(
            ingress(one, &format!("path = \"/o\"\n{body}"))
                .unwrap()
                .needs_port()
        );
        for (target, table, says) in [
            (
                graph,
                format!("service = \"apii\"\npath = \"/o\"\n{body}"),
                "names no [[services]] entry (there are: `api`, `worker`)",
            ),
            (
                graph,
                format!("path = \"/o\"\n{body}"),
                "which of the [[services]] answers",
            ),
            (
                one,
                format!("service = \"api\"\npath = \"/o\"\n{body}"),
                "this scenario has one [target]",
            ),
            (
                one,
                "path = \"/o\"\nbody = \"{{}}\"\n".to_owned(),
                "neither `path` nor `body` holds `{key}`",
            ),
            (one, format!("path = \"orders\"\n{body}"), "begins with `/`"),
            (
                one,
                format!("method = \"SEND\"\npath = \"/o\"\n{body}"),
                "method = `SEND`",
            ),
            (
                one,
                format!("path = \"/o\"\n{body}written = {{ by = \"contract\" }}\n"),
                "[kafka.ingress] written",
            ),
            (
                one,
                format!("path = \"/{{nope}}\"\n{body}"),
                "[kafka.ingress] path",
            ),
        ] {
            let err = ingress(target, &table).unwrap_err().to_string();
            assert!(err.contains(says), "{table}: {err}");
        }
    }

    /// `takeover_within` is judged on a graph with `[kafka]` that rolls a service out; turned
    /// on where nothing is rolled out, it is bad input.
    #[test]
    fn takeover_within_needs_a_rollout_of_a_graph() {
        let graph = "[[services]]\nname = \"w\"\ncommand = [\"x\"]\n[kafka]\n";
        let rollout = "[[faults]]\naction = \"rollout\"\nservice = \"w\"\n";
        let s = parse(&format!("{graph}{rollout}")).unwrap();
        assert!(s.judges_takeover());
        let s = parse(&format!(
            "{graph}{rollout}[checks]\ntakeover_within = false\n"
        ))
        .unwrap();
        assert!(!s.judges_takeover());
        let s = parse(&format!(
            "{graph}[checks]\ntakeover_within = {{ deadline_ms = 9000 }}\n"
        ));
        let err = s.unwrap_err().to_string();
        assert!(err.contains("takeover_within judges a rollout"), "{err}");
        assert!(!parse(graph).unwrap().judges_takeover());
        let no_kafka = format!("{}{rollout}", graph.replace("[kafka]\n", ""));
        assert!(!parse(&no_kafka).unwrap().judges_takeover());
    }

    #[test]
    fn a_redis_table_adds_the_leader_checks() {
        let s = parse("[target]\ncommand = [\"x\"]\n[redis]\ninterval_ms = 250\n").unwrap();
        assert_eq!(s.redis.as_ref().unwrap().interval_ms, 250);
        // No evidence of leader-only work named: the job checks are off, and say why.
        let checks: Vec<_> = s.enabled_checks().map(|c| c.as_str()).collect();
        assert_eq!(checks[6..], ["lock_released"]);
        assert!(
            s.redis
                .as_ref()
                .unwrap()
                .jobs_off()
                .unwrap()
                .contains("are off"),
            "{s:?}"
        );
        for source in ["job_line = 'ran (?<job>\\w+)'", "job_log = 'runs'"] {
            let s = parse(&format!("[target]\ncommand = [\"x\"]\n[redis]\n{source}\n")).unwrap();
            let checks: Vec<_> = s.enabled_checks().map(|c| c.as_str()).collect();
            assert_eq!(
                checks[6..],
                ["lock_released", "single_leader", "jobs_once_per_interval"],
                "{source}"
            );
        }
        for (file, wanted) in [
            (
                "[redis]\n[checks]\njobs_once_per_interval = true\n",
                "jobs_once_per_interval needs evidence of leader-only work",
            ),
            (
                "[redis]\njob_line = 'ran \\w+'\n",
                "has no group for the job's name",
            ),
            (
                "[redis]\njob_line = 'ran (\\w+'\n",
                "is not a regular expression",
            ),
            (
                "[redis]\njob_line = 'ran (\\w+)'\njob_log = 'runs'\n",
                "keep one",
            ),
        ] {
            let err = parse(&format!("[target]\ncommand = [\"x\"]\n{file}")).unwrap_err();
            assert!(err.to_string().contains(wanted), "{file}: {err}");
        }
        let err = parse("[target]\ncommand = [\"x\", \"{job_log}\"]\n[redis]\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("`{job_log}` has a value only with [redis] job_log set"),
            "{err}"
        );
        let err =
            parse("[target]\ncommand = [\"x\"]\n[checks]\nsingle_leader = true\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("single_leader needs a [redis] table"),
            "{err}"
        );
        let err = parse("[target]\ncommand = [\"x\"]\n[redis]\ninterval_ms = 0\n").unwrap_err();
        assert!(
            err.to_string().contains("interval_ms must be above 0"),
            "{err}"
        );
    }

    #[test]
    fn a_kafka_table_adds_the_kafka_checks() {
        let s = parse(
            "[target]\ncommand = [\"x\"]\n[kafka]\nrecords = 50\n[checks]\nno_redelivery = false\n",
        )
        .unwrap();
        let kafka = s.kafka.as_ref().unwrap();
        assert_eq!((kafka.records, kafka.partitions), (50, 3));
        let checks: Vec<_> = s.enabled_checks().map(|c| c.as_str()).collect();
        assert_eq!(
            checks[6..],
            [
                "offsets_committed",
                "no_message_loss",
                "producer_flushed",
                "group_left"
            ]
        );
        let err =
            parse("[target]\ncommand = [\"x\"]\n[checks]\noffsets_committed = true\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("offsets_committed needs a [kafka] table"),
            "{err}"
        );
        // Turning one off without [kafka] is fine.
        parse("[target]\ncommand = [\"x\"]\n[checks]\nno_message_loss = false\n").unwrap();
        let err =
            parse("[target]\ncommand = [\"x\"]\n[kafka]\ninput_topic = \"a b\"\n").unwrap_err();
        assert!(err.to_string().contains("not a valid Kafka name"), "{err}");
        let err = parse("[target]\ncommand = [\"x\"]\n[kafka]\nrecordz = 5\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("s.toml:4:1: unknown field `recordz`"),
            "{err}"
        );
    }

    #[test]
    fn checks_take_true_false_or_parameters() {
        let s = parse(
            "[target]\ncommand = [\"x\"]\nready = { log = \"up$\" }\n[stop]\nsignal = \"SIGINT\"\n\
             [checks]\nno_leaked_threads = false\nstops_within = { deadline_ms = 250 }\nexit_code = true\n",
        )
        .unwrap();
        assert!(!s.checks.no_leaked_threads.enabled);
        assert_eq!(s.checks.stops_within.params.deadline_ms, 250);
        assert!(s.checks.exit_code.enabled);
        assert_eq!(s.stop.signal, StopSignal::Int);
        let Target::Process(target) = &s.target else {
            unreachable!()
        };
        assert_eq!(target.ready, ReadyProbe::Log("up$".into()));
    }

    #[test]
    fn unknown_check_is_an_error_with_line_and_column() {
        let err = parse("[target]\ncommand = [\"x\"]\n[checks]\nno_leaks = true\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("dir/s.toml:4:1: unknown field `no_leaks`, expected one of"),
            "{text}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse("[target]\ncommand = [\"x\"]\n[stop]\nsignal = \"HUP\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown signal `HUP`"), "{err}");
        let err = parse("[target]\ncommand = []\n").unwrap_err();
        assert!(err.to_string().contains("command is empty"), "{err}");
        let err = parse("[target]\ncommand = [\"x\"]\nready = { log = \"(\" }\n").unwrap_err();
        assert!(
            err.to_string().contains("not a regular expression"),
            "{err}"
        );
        let err =
            parse("[target]\ncommand = [\"x\"]\n[checks]\nexit_code = \"yes\"\n").unwrap_err();
        assert!(
            err.to_string().contains("dir/s.toml:4:13: invalid type"),
            "{err}"
        );
        let err = parse("[target]\ncommand = [\"x\"]\nready = { smoke = \"x\" }\n").unwrap_err();
        assert!(err.to_string().contains("unknown variant `smoke`"), "{err}");
        let err = parse("[target]\n").unwrap_err();
        assert!(err.to_string().contains("missing field `command`"), "{err}");
    }

    #[test]
    fn services_make_a_graph_and_bad_ones_are_named_with_their_line() {
        let two = "[[services]]\nname = \"a\"\ncommand = [\"x\"]\n\n\
                   [[services]]\nname = \"b\"\ncommand = [\"y\", \"{port}\"]\ndepends_on = [\"a\"]\n";
        let scenario = parse(two).unwrap();
        let Target::Services(graph) = &scenario.target else {
            panic!("not a graph: {:?}", scenario.target);
        };
        assert_eq!(
            (graph.start_order.clone(), graph.stop_order.clone()),
            (vec![0, 1], vec![1, 0])
        );
        assert_eq!(scenario.target.describe(), "services a, b");
        let cases = [
            (
                format!("{two}[target]\ncommand = [\"x\"]\n"),
                "s.toml:1:1: [target] and [[services]] are both given",
            ),
            ("name = \"n\"\n".to_owned(), "s.toml:1:1: no target"),
            (
                two.replace("depends_on = [\"a\"]", "depends_on = [\"b\"]"),
                "s.toml:8:1: [[services]] depends_on has a cycle: b -> b",
            ),
            (
                two.replace("depends_on", "needs"),
                "s.toml:8:1: unknown field `needs`",
            ),
            (
                two.replace("{port}", "{prot}"),
                "[[services]] `b` command[1]: unknown placeholder `{prot}`",
            ),
            (
                format!("{two}ready = {{ http = \"http://127.0.0.1:{{port:a}}/{{kafka}}\" }}\n"),
                "[[services]] `b` ready: placeholder `{kafka}` has no value in a ready URL",
            ),
            (
                format!("{two}ready = {{ tcp = \"127.0.0.1:{{port:z}}\" }}\n"),
                "[[services]] `b` ready: placeholder `{port:z}` is the port of a [[services]] \
                 entry, and there is none named `z`",
            ),
            (
                two.replace("{port}", "{port:c}"),
                "[[services]] `b` command[1]: placeholder `{port:c}` is the port of a \
                 [[services]] entry, and there is none named `c`",
            ),
            (
                "[target]\ncommand = [\"x\"]\n[[faults]]\naction = \"restart\"\nservice = \"x\"\n"
                    .to_owned(),
                "[[faults]] step 1: `service` names a [[services]] entry: this scenario has one \
                 target",
            ),
            (
                format!(
                    "{two}[[faults]]\naction = \"rollout\"\nservice = \"a\"\nstop_old = \"join\"\n"
                ),
                "[[faults]] step 1: `stop_old = \"join\"` is a step of the new instance's join",
            ),
            (
                format!(
                    "{two}[[faults]]\naction = \"restart\"\nservice = \"a\"\nstop_old = \"join\"\n"
                ),
                "`stop_old` is not a setting of `restart`",
            ),
            (
                format!(
                    "{two}[[faults]]\naction = \"rollout\"\nservice = \"a\"\nstop_old = \"now\"\n"
                ),
                "unknown variant `now`",
            ),
            (
                format!("{two}[redis]\n"),
                "[redis] service: which of the [[services]] contends for the leader lock",
            ),
            (
                format!("{two}[redis]\nservice = \"c\"\n"),
                "[redis] service = `c` names no [[services]] entry",
            ),
            (
                format!("{two}[redis]\nservice = \"a\"\njob_line = 'ran (\\w+)'\n"),
                "[redis] job_line with [[services]] is not supported yet",
            ),
            (
                "[target]\ncommand = [\"x\"]\n[redis]\nservice = \"x\"\n".to_owned(),
                "[redis] service = `x` names a [[services]] entry: this scenario has one target",
            ),
            (
                format!("{two}[kafka]\nprocessed = {{ by = \"log\", pattern = \"(?<key>x)\" }}\n"),
                "[kafka] processed = { by = \"log\" } with [[services]] is not supported yet",
            ),
            (
                format!("{two}[readiness]\nrequired = [\"kafka\"]\n"),
                "[readiness] service: which of the [[services]] serves",
            ),
            (
                format!("{two}[readiness]\nrequired = [\"kafka\"]\nservice = \"c\"\n"),
                "[readiness] service = `c` names no [[services]] entry",
            ),
            (
                format!(
                    "{}[readiness]\nrequired = [\"kafka\"]\nservice = \"a\"\n",
                    two.replacen("[[services]]\n", "[[services]]\nreplicas = 2\n", 1)
                ),
                "has replicas = 2: readiness_truthful polls one instance",
            ),
            (
                "[target]\ncommand = [\"x\", \"{port}\"]\n[readiness]\nrequired = [\"kafka\"]\n\
                 service = \"a\"\n"
                    .to_owned(),
                "this scenario has one target, whose `{port}` it is",
            ),
            (
                format!("{two}[stop]\norder = [\"a\", \"c\"]\n"),
                "[stop] order names `c`, which is not a service",
            ),
            (
                "[target]\ncommand = [\"x\"]\n[stop]\norder = [\"a\"]\n".to_owned(),
                "s.toml:4:1: [stop] order names services, and there is no [[services]]",
            ),
        ];
        for (text, wanted) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{wanted}\nnot in: {err}");
        }
    }
}
