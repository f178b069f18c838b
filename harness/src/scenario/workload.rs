//! The `[kafka]` table: the verifiable workload and the topics the target reads and writes.

use serde::{Deserialize, Serialize};

/// A Kafka workload: the harness creates the topics, produces sequence-numbered records to
/// `input_topic` once the target is ready, and reads back what the target wrote to
/// `output_topic` (one record per processed input; see [`crate::kafka`]).
///
/// The target learns the names from `QUIESCE_KAFKA_INPUT_TOPIC`, `QUIESCE_KAFKA_OUTPUT_TOPIC`
/// and `QUIESCE_KAFKA_GROUP`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaWorkload {
    #[serde(default = "default_input")]
    pub input_topic: String,
    #[serde(default = "default_output")]
    pub output_topic: String,
    /// The target's consumer group: whose committed offsets are judged.
    #[serde(default = "default_group")]
    pub group: String,
    /// Partitions of the input topic (the output topic gets as many).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Records produced once the target is ready.
    #[serde(default = "default_records")]
    pub records: usize,
    /// Records per second; 0 sends as fast as the broker acknowledges.
    #[serde(default)]
    pub rate: u32,
    /// `true`: stop the target only once every acknowledged record has been processed (or at
    /// `[stop] after_ms`, whichever comes first): nothing is in flight at the stop, so
    /// in-flight loss cannot be seen. `false`: stop at `[stop] after_ms` alone. Not written
    /// (the default): see [`KafkaWorkload::stop_rule`], the stop lands mid-stream.
    #[serde(default)]
    pub stop_when_processed: Option<bool>,
    /// Stop the target once this many inputs have been processed, while the workload goes
    /// on: the stop lands mid-stream (say, a SIGKILL with work in flight). Not written, and
    /// no `stop_when_processed`: half of `records`.
    #[serde(default)]
    pub stop_after_processed: Option<usize>,
    /// How long the workload's producer lets a record wait for others to share its batch
    /// (librdkafka's `linger.ms`), as a service's producer does.
    #[serde(default = "default_linger")]
    pub linger_ms: u32,
    /// The most records in one of the workload's batches (`batch.num.messages`). 1 sends each
    /// record alone, which hides a broker that mishandles a fetch inside a batch (see
    /// `quiesce conformance`).
    #[serde(default = "default_batch_records")]
    pub batch_records: u32,
    /// After the stop, start the target once more, let it consume what is left, and stop it
    /// with SIGTERM: how `no_message_loss` and `no_redelivery` see what a restart consumes.
    #[serde(default = "yes")]
    pub restart: bool,
    /// How long the restarted target gets to consume what is left.
    #[serde(default = "default_restart_timeout")]
    pub restart_timeout_ms: u64,
    /// The value of each input record: `{key}` (the record's key, unique to the run),
    /// `{seq}` (its sequence number) and `{run_id}` are filled in; `{{`, `}}` are braces. A
    /// service that validates its input gets a document it accepts, e.g.
    /// `'{{"order_id": "{key}", "amount": {seq}}}'`.
    #[serde(default = "default_input_value")]
    pub input_value: String,
    /// How the harness learns which inputs the target processed (see [`ProcessedBy`]).
    #[serde(default)]
    pub processed: ProcessedBy,
    /// A chain of services (`[[services]]`): the topics between the input and the output, in
    /// order, each with the group that consumes it. Each hop's commits are then judged
    /// against what reached the next topic (each record naming its input as `processed`
    /// says), not against the end of the chain, which lags them by design.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<Hop>,
    /// The workload comes in over HTTP, not Kafka: `[kafka.ingress]`. The service that answers
    /// writes each request it acknowledges to `input_topic` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
}

/// HTTP requests as the workload, for a graph that begins at an API: `records` requests at
/// `rate`, each naming a key unique to the run (`{key}` in `path` or `body`). A 2xx answer
/// acknowledges a request; any other answer, or none, does not (a 503 while the API drains is
/// a refusal, not a loss). Every acknowledged request must reach `input_topic`, written there
/// by the service and naming its key as `written` says, and from there the output, as any input.
///
/// ```toml
/// [kafka.ingress]
/// service = "api"                 # a [[services]] entry: its replicas take turns
/// method = "POST"
/// path = "/orders"
/// body = '{{"order_id": "{key}", "amount": {seq}}}'
/// written = { by = "json_pointer", pointer = "/order_id" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingress {
    /// The `[[services]]` entry whose instances answer; none with a `[target]`, which answers
    /// on `{port}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default = "default_method")]
    pub method: String,
    /// The request's path: `{key}`, `{seq}` and `{run_id}` are filled in.
    pub path: String,
    /// The request's body, filled in as `path` is (empty: no body).
    #[serde(default)]
    pub body: String,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// How a record the service wrote to `input_topic` names the request it came from (not
    /// written: as `processed` names inputs when that is by key, header or JSON pointer; else
    /// by the record's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<ProcessedBy>,
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_content_type() -> String {
    "application/json".to_owned()
}

impl Ingress {
    /// How a record in the input topic names its request.
    pub fn written(&self, processed: &ProcessedBy) -> ProcessedBy {
        match (&self.written, processed.names_by_key()) {
            (Some(written), _) => written.clone(),
            (None, true) => processed.clone(),
            (None, false) => ProcessedBy::Key {},
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&self.method.as_str()) {
            return Err(format!(
                "[kafka.ingress] method = `{}` (need GET, POST, PUT, PATCH or DELETE)",
                self.method
            ));
        }
        if !self.path.starts_with('/') || self.path.chars().any(char::is_whitespace) {
            return Err(format!(
                "[kafka.ingress] path = `{}`: a request path begins with `/` and holds no \
                 spaces (the host is the service's, on its own port)",
                self.path
            ));
        }
        for (key, text) in [("path", &self.path), ("body", &self.body)] {
            crate::scenario::template::check_among(text, &INPUT_PLACEHOLDERS)
                .map_err(|e| format!("[kafka.ingress] {key}: {e}"))?;
        }
        if !(self.path.contains("{key}") || self.body.contains("{key}")) {
            return Err(
                "[kafka.ingress]: neither `path` nor `body` holds `{key}`: a request \
                        must name its key for its record to be found (hint: body = \
                        '{{\"id\": \"{key}\"}}')"
                    .to_owned(),
            );
        }
        match &self.written {
            Some(written) if !written.names_by_key() => Err(
                "[kafka.ingress] written: a record the service wrote is matched to its request \
                 by the request's key (by = \"key\", \"header\" or \"json_pointer\")"
                    .to_owned(),
            ),
            Some(written) => written.validate(),
            None => Ok(()),
        }
    }
}

/// A topic inside a chain and the group that consumes it: `[[kafka.via]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    pub topic: String,
    pub group: String,
}

/// Where the evidence that an input was processed comes from. Every input the harness
/// produces has a key unique to the run (`{run_id}-{seq}`): an output names its input by that
/// key, or, under the contract, by where the input was.
///
/// ```toml
/// processed = { by = "contract" }                        # {"partition": P, "offset": O}
/// processed = { by = "key" }                             # output key = input key
/// processed = { by = "json_pointer", pointer = "/id" }   # a string in the output value
/// processed = { by = "header", name = "input-key" }      # an output header's value
/// processed = { by = "log", pattern = 'done (?<key>\S+)' } # a line the target prints
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessedBy {
    /// Output records whose value is `{"partition": P, "offset": O}`, where the input was.
    Contract {},
    /// Output records whose key is the input's key.
    Key {},
    /// Output records whose JSON value holds the input's key at this pointer (RFC 6901).
    JsonPointer { pointer: String },
    /// Output records with a header of this name whose value is the input's key.
    Header { name: String },
    /// Lines of the target's stdout or stderr matching this regular expression; its group
    /// named `key` (else its first group) is the input's key. No output topic is read.
    Log { pattern: String },
}

impl Default for ProcessedBy {
    fn default() -> Self {
        ProcessedBy::Contract {}
    }
}

impl ProcessedBy {
    /// Whether an output names its input by the input's key (not by where it was, and not in
    /// a log).
    pub fn names_by_key(&self) -> bool {
        matches!(
            self,
            ProcessedBy::Key {} | ProcessedBy::JsonPointer { .. } | ProcessedBy::Header { .. }
        )
    }

    /// What the checks' evidence says the processed inputs were learned from.
    pub fn describe(&self, output_topic: &str) -> String {
        match self {
            ProcessedBy::Contract {} => format!(
                "output records in `{output_topic}` naming their input's partition and offset"
            ),
            ProcessedBy::Key {} => {
                format!("output records in `{output_topic}` keyed by their input's key")
            }
            ProcessedBy::JsonPointer { pointer } => format!(
                "output records in `{output_topic}` holding their input's key at `{pointer}`"
            ),
            ProcessedBy::Header { name } => format!(
                "output records in `{output_topic}` holding their input's key in header `{name}`"
            ),
            ProcessedBy::Log { pattern } => {
                format!("lines of the target's output matching `{pattern}`")
            }
        }
    }

    /// The log pattern, compiled (`None` for the other sources, or an invalid pattern, which
    /// [`KafkaWorkload::validate`] refuses).
    pub fn log_pattern(&self) -> Option<regex::Regex> {
        match self {
            ProcessedBy::Log { pattern } => regex::Regex::new(pattern).ok(),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            ProcessedBy::JsonPointer { pointer } if pointer.is_empty() => Err(
                "[kafka] processed.pointer is empty: that is the whole value, not a key in it \
                 (hint: `/order_id` names the member `order_id`)"
                    .to_owned(),
            ),
            ProcessedBy::JsonPointer { pointer } if !pointer.starts_with('/') => Err(format!(
                "[kafka] processed.pointer = `{pointer}` is not a JSON pointer (hint: `/{pointer}`)"
            )),
            ProcessedBy::Header { name } if name.is_empty() => {
                Err("[kafka] processed.name is empty: which header holds the input's key?".into())
            }
            ProcessedBy::Log { pattern } => {
                let re = regex::Regex::new(pattern).map_err(|e| {
                    format!("[kafka] processed.pattern is not a regular expression: {e}")
                })?;
                match re.captures_len() {
                    1 => Err(format!(
                        "[kafka] processed.pattern = `{pattern}` captures nothing: put the \
                         input's key in a group, e.g. `processed (?<key>\\S+)`"
                    )),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// The placeholders of `[kafka] input_value`.
pub const INPUT_PLACEHOLDERS: [&str; 3] = ["key", "seq", "run_id"];

fn default_input() -> String {
    "quiesce-input".to_owned()
}

fn default_output() -> String {
    "quiesce-output".to_owned()
}

fn default_group() -> String {
    "quiesce-target".to_owned()
}

fn default_partitions() -> i32 {
    3
}

fn default_records() -> usize {
    1_000
}

fn default_linger() -> u32 {
    crate::kafka::Batching::default().linger_ms
}

fn default_batch_records() -> u32 {
    crate::kafka::Batching::default().max_records
}

fn yes() -> bool {
    true
}

fn default_restart_timeout() -> u64 {
    30_000
}

fn default_input_value() -> String {
    "seq-{seq}".to_owned()
}

impl Default for KafkaWorkload {
    fn default() -> Self {
        KafkaWorkload {
            input_topic: default_input(),
            output_topic: default_output(),
            group: default_group(),
            partitions: default_partitions(),
            records: default_records(),
            rate: 0,
            stop_when_processed: None,
            stop_after_processed: None,
            linger_ms: default_linger(),
            batch_records: default_batch_records(),
            restart: true,
            restart_timeout_ms: default_restart_timeout(),
            input_value: default_input_value(),
            processed: ProcessedBy::Contract {},
            via: Vec::new(),
            ingress: None,
        }
    }
}

/// When a Kafka workload asks for the target's stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopRule {
    /// Once this many inputs have outputs, while the workload goes on: records are in
    /// flight at the stop, which is where shutdown bugs live (an offset stored for a record
    /// polled but not processed, a producer purged with outputs queued).
    Midstream(usize),
    /// Once every acknowledged input has an output: nothing is in flight.
    AllProcessed,
    /// At `[stop] after_ms` alone.
    Timer,
}

impl KafkaWorkload {
    /// When the stop comes: `stop_after_processed`, else `stop_when_processed`, else (the
    /// default) mid-stream once half of the records have been processed.
    pub fn stop_rule(&self) -> StopRule {
        match (self.stop_after_processed, self.stop_when_processed) {
            (Some(n), _) => StopRule::Midstream(n),
            (None, Some(true)) => StopRule::AllProcessed,
            (None, Some(false)) => StopRule::Timer,
            (None, None) => StopRule::Midstream((self.records / 2).max(1)),
        }
    }

    /// How the workload's producer batches.
    pub fn batching(&self) -> crate::kafka::Batching {
        crate::kafka::Batching {
            linger_ms: self.linger_ms,
            max_records: self.batch_records,
        }
    }

    /// What the target is told: the topic and group names.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "QUIESCE_KAFKA_INPUT_TOPIC".to_owned(),
                self.input_topic.clone(),
            ),
            (
                "QUIESCE_KAFKA_OUTPUT_TOPIC".to_owned(),
                self.output_topic.clone(),
            ),
            ("QUIESCE_KAFKA_GROUP".to_owned(), self.group.clone()),
        ]
    }

    /// `input_value` and `processed`: on error, which of the two (to find its line) and what
    /// is wrong.
    pub fn check_evidence(&self) -> Result<(), (&'static str, String)> {
        self.processed.validate().map_err(|e| ("processed", e))?;
        crate::scenario::template::check_among(&self.input_value, &INPUT_PLACEHOLDERS)
            .map_err(|e| ("input_value", format!("[kafka] input_value: {e}")))
    }

    /// Values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions < 1 {
            return Err(format!(
                "[kafka] partitions = {} (need at least 1)",
                self.partitions
            ));
        }
        let hops = self
            .via
            .iter()
            .flat_map(|hop| [("via.topic", &hop.topic), ("via.group", &hop.group)]);
        for (key, name) in [
            ("input_topic", &self.input_topic),
            ("output_topic", &self.output_topic),
            ("group", &self.group),
        ]
        .into_iter()
        .chain(hops)
        {
            let valid = !name.is_empty()
                && name.len() <= 249
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(format!(
                    "[kafka] {key} = `{name}` is not a valid Kafka name (letters, digits, `.`, `_`, `-`)"
                ));
            }
        }
        // librdkafka's ranges for linger.ms and batch.num.messages
        if !(1..=1_000_000).contains(&self.batch_records) {
            return Err(format!(
                "[kafka] batch_records = {} (need 1 to 1000000)",
                self.batch_records
            ));
        }
        if self.linger_ms > 900_000 {
            return Err(format!(
                "[kafka] linger_ms = {} (need at most 900000)",
                self.linger_ms
            ));
        }
        if !self.via.is_empty() && !self.processed.names_by_key() {
            return Err(
                "[kafka] via: a hop's records are matched to the next hop's by the \
                        input's key, and `processed` names inputs by where they were (hint: \
                        processed = { by = \"key\" }, or by header or json_pointer)"
                    .to_owned(),
            );
        }
        if let Some(ingress) = &self.ingress {
            ingress.validate()?;
        }
        let mut topics = vec![&self.input_topic, &self.output_topic];
        for hop in &self.via {
            if topics.contains(&&hop.topic) {
                return Err(format!(
                    "[kafka] via: topic `{}` is in the chain twice",
                    hop.topic
                ));
            }
            topics.push(&hop.topic);
        }
        if let (Some(n), Some(all)) = (self.stop_after_processed, self.stop_when_processed) {
            return Err(format!(
                "[kafka] stop_after_processed = {n} and stop_when_processed = {all}: the stop \
                 comes after {n} processed inputs, or when all are (or at [stop] after_ms); give one"
            ));
        }
        if self
            .stop_after_processed
            .is_some_and(|n| n == 0 || n > self.records)
        {
            return Err(format!(
                "[kafka] stop_after_processed = {} (need 1 to records = {})",
                self.stop_after_processed.unwrap_or_default(),
                self.records
            ));
        }
        if let Err((_, e)) = self.check_evidence() {
            return Err(e);
        }
        if self.input_topic == self.output_topic {
            return Err(format!(
                "[kafka] input_topic and output_topic are both `{}`",
                self.input_topic
            ));
        }
        Ok(())
    }
}

/// The `[redis]` table: leader election and recurrent jobs on Redis.
///
/// The target contends for `leader_key`, whatever value it writes there: the harness learns
/// the target's value and its standby's from the commands each sends (see
/// `run::lock_tap`). Leader-only work is evidenced by one of: `job_line`, a line of an
/// instance's output per run of a job (the group named `job`, else the first, is the job's
/// name); or `job_log`, a Redis list the service pushes one JSON entry to per run: `{"instance":
/// I, "job": J, "started_ms": S, "ended_ms": E}` (Unix milliseconds). Without either,
/// `single_leader` and `jobs_once_per_interval` are off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisLeadership {
    #[serde(default = "default_leader_key")]
    pub leader_key: String,
    /// The Redis list of job runs, if the service keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_log: Option<String>,
    /// A regular expression for the line an instance prints per run of a leader-only job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_line: Option<String>,
    /// The jobs' interval: two runs of one job closer than half of it are one interval's
    /// duplicates.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// How soon after the stop the key must be gone or another instance's.
    #[serde(default = "default_release")]
    pub release_within_ms: u64,
    /// How long the target gets, once ready, to take the key.
    #[serde(default = "default_lead")]
    pub lead_within_ms: u64,
    /// Run a second instance (`QUIESCE_INSTANCE=standby`) once the target leads, to measure
    /// the failover (process targets).
    #[serde(default = "yes")]
    pub standby: bool,
    /// With `[[services]]`: the service whose instances contend for the lock (its replicas,
    /// and the instances a restart or a rollout starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

fn default_leader_key() -> String {
    "quiesce:leader".to_owned()
}

fn default_interval() -> u64 {
    500
}

fn default_release() -> u64 {
    1_000
}

fn default_lead() -> u64 {
    10_000
}

impl Default for RedisLeadership {
    fn default() -> Self {
        RedisLeadership {
            leader_key: default_leader_key(),
            job_log: None,
            job_line: None,
            interval_ms: default_interval(),
            release_within_ms: default_release(),
            lead_within_ms: default_lead(),
            standby: true,
            service: None,
        }
    }
}

impl RedisLeadership {
    /// What the target is told (besides `QUIESCE_INSTANCE`, which differs per instance).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "QUIESCE_REDIS_LEADER_KEY".to_owned(),
                self.leader_key.clone(),
            ),
            (
                "QUIESCE_JOB_INTERVAL_MS".to_owned(),
                self.interval_ms.to_string(),
            ),
        ];
        if let Some(log) = &self.job_log {
            env.push(("QUIESCE_REDIS_JOB_LOG".to_owned(), log.clone()));
        }
        env
    }

    /// Whether leader-only work has evidence: without it the job checks are off.
    pub fn has_jobs(&self) -> bool {
        self.job_log.is_some() || self.job_line.is_some()
    }

    /// Why the job checks are off, if they are.
    pub fn jobs_off(&self) -> Option<&'static str> {
        (!self.has_jobs()).then_some(
            "single_leader and jobs_once_per_interval are off: [redis] names no evidence of \
             leader-only work (hint: job_line = a pattern for the line an instance prints per \
             run, with the job's name as a group, or job_log = the Redis list it pushes runs to)",
        )
    }

    /// The compiled `job_line`.
    pub fn job_pattern(&self) -> Option<regex::Regex> {
        self.job_line
            .as_deref()
            .and_then(|p| regex::Regex::new(p).ok())
    }

    /// Values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if self.leader_key.is_empty() || self.job_log.as_deref() == Some("") {
            return Err("[redis] leader_key and job_log must not be empty".to_owned());
        }
        if Some(&self.leader_key) == self.job_log.as_ref() {
            return Err(format!(
                "[redis] leader_key and job_log are both `{}`",
                self.leader_key
            ));
        }
        if self.job_log.is_some() && self.job_line.is_some() {
            return Err(
                "[redis] job_log and job_line are two sources of the same evidence: \
                        keep one"
                    .to_owned(),
            );
        }
        if let Some(line) = &self.job_line {
            let pattern = regex::Regex::new(line).map_err(|e| {
                format!("[redis] job_line `{line}` is not a regular expression: {e}")
            })?;
            if pattern.captures_len() < 2 {
                return Err(format!(
                    "[redis] job_line `{line}` has no group for the job's name (hint: \
                     `ran (?<job>\\w+)`)"
                ));
            }
        }
        if self.interval_ms == 0 {
            return Err("[redis] interval_ms must be above 0".to_owned());
        }
        Ok(())
    }
}

/// The `[readiness]` table: the target's `/health` and `/ready`, polled through the run, with
/// an outage of each dependency played once it is ready (the proxy taken down, then up).
///
/// `{port}` in a URL (and in `[target] ready`) becomes a free loopback port the harness
/// chose, which the target gets as `QUIESCE_HTTP_PORT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    #[serde(default = "default_health")]
    pub health: String,
    #[serde(default = "default_ready_url")]
    pub ready: String,
    /// Without these the target cannot serve: `/ready` must turn 503 within `within_ms` of
    /// one going down, and 200 again once it is back.
    #[serde(default)]
    pub required: Vec<crate::infra::DependencyKind>,
    /// The target must run on, degraded, without these: `/ready` stays 200.
    #[serde(default)]
    pub optional: Vec<crate::infra::DependencyKind>,
    #[serde(default = "default_within")]
    pub within_ms: u64,
    /// How long each dependency stays down.
    #[serde(default = "default_outage")]
    pub outage_ms: u64,
    /// Stop the target once the outages are over (else at `[stop] after_ms`).
    #[serde(default = "yes")]
    pub stop_after_outages: bool,
    /// With `[[services]]`: the service whose `/health` and `/ready` these are (its first
    /// instance's `{port}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

fn default_health() -> String {
    "http://127.0.0.1:{port}/health".to_owned()
}

fn default_ready_url() -> String {
    "http://127.0.0.1:{port}/ready".to_owned()
}

fn default_within() -> u64 {
    2_000
}

fn default_outage() -> u64 {
    3_000
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            health: default_health(),
            ready: default_ready_url(),
            required: Vec::new(),
            optional: Vec::new(),
            within_ms: default_within(),
            outage_ms: default_outage(),
            stop_after_outages: true,
            service: None,
        }
    }
}

impl Readiness {
    /// Values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        for (key, url) in [("health", &self.health), ("ready", &self.ready)] {
            if !url.starts_with("http://") {
                return Err(format!("[readiness] {key} `{url}` must be an http:// URL"));
            }
        }
        if let Some(both) = self.required.iter().find(|d| self.optional.contains(d)) {
            return Err(format!("[readiness] {both} is both required and optional"));
        }
        // No outage to play: readiness_truthful would judge /ready through nothing at all.
        if self.required.is_empty() && self.optional.is_empty() {
            return Err(
                "[readiness] required and optional are both empty: readiness_truthful needs at \
                 least one dependency to take down (hint: required = [\"kafka\"], or turn \
                 readiness_truthful off)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(text: &str) -> KafkaWorkload {
        toml::from_str(text).expect("a valid [kafka] table")
    }

    /// The stop once waited for every input to be processed unless told otherwise, so it
    /// landed with nothing in flight and in-flight loss passed.
    #[test]
    fn with_no_stop_option_the_stop_lands_mid_stream() {
        assert_eq!(
            kafka("records = 1000").stop_rule(),
            StopRule::Midstream(500)
        );
        assert_eq!(kafka("records = 1").stop_rule(), StopRule::Midstream(1));
        assert_eq!(
            kafka("stop_when_processed = true").stop_rule(),
            StopRule::AllProcessed
        );
        assert_eq!(
            kafka("stop_when_processed = false").stop_rule(),
            StopRule::Timer
        );
        assert_eq!(
            kafka("stop_after_processed = 40").stop_rule(),
            StopRule::Midstream(40)
        );
    }

    #[test]
    fn every_source_of_processed_evidence_parses() {
        assert_eq!(kafka("").processed, ProcessedBy::Contract {});
        assert_eq!(
            kafka("processed = { by = \"key\" }").processed,
            ProcessedBy::Key {}
        );
        assert_eq!(
            kafka("[processed]\nby = \"json_pointer\"\npointer = \"/order/id\"").processed,
            ProcessedBy::JsonPointer {
                pointer: "/order/id".into()
            }
        );
        assert_eq!(
            kafka("processed = { by = \"header\", name = \"input-key\" }").processed,
            ProcessedBy::Header {
                name: "input-key".into()
            }
        );
        let log = kafka("processed = { by = \"log\", pattern = 'done (?<key>\\S+)' }");
        assert!(log.validate().is_ok());
        assert_eq!(
            crate::kafka::log::key_in(&log.processed.log_pattern().unwrap(), "done r-1").as_deref(),
            Some("r-1")
        );
        assert_eq!(kafka("").input_value, "seq-{seq}");
    }

    /// Each mistake in the evidence settings is named with the file, line and column.
    #[test]
    fn bad_evidence_settings_are_named_with_their_line() {
        let bad = |kafka_table: &str| {
            let text =
                format!("[target]\ncommand = [\"svc\"]\n\n[kafka]\nrecords = 10\n{kafka_table}\n");
            crate::scenario::Scenario::parse(std::path::Path::new("svc.toml"), &text)
                .unwrap_err()
                .to_string()
        };
        let err = bad("processed = { by = \"json_pointer\", pointer = \"order_id\" }");
        assert!(
            err.starts_with("svc.toml:6:1: [kafka] processed.pointer = `order_id` is not a JSON pointer (hint: `/order_id`)"),
            "{err}"
        );
        let err = bad("processed = { by = \"log\", pattern = 'shipped \\S+' }");
        assert!(
            err.starts_with("svc.toml:6:1:") && err.contains("captures nothing"),
            "{err}"
        );
        let err = bad("processed = { by = \"log\", pattern = 'shipped (' }");
        assert!(err.contains("not a regular expression"), "{err}");
        let err = bad("input_value = '{{\"id\": \"{order}\"}}'");
        assert!(
            err.starts_with("svc.toml:6:1: [kafka] input_value: unknown placeholder `{order}` (known: {key}, {seq}, {run_id}"),
            "{err}"
        );
        let err = bad("processed.by = \"log\"\nprocessed.pattern = 'shipped'");
        assert!(
            err.starts_with("svc.toml:6:1:") && err.contains("captures nothing"),
            "{err}"
        );
        let err = bad("processed = { by = \"json_pointer\", pointer = \"\" }");
        assert!(err.contains("that is the whole value"), "{err}");
        let err = bad("processed = { by = \"topic\" }");
        assert!(err.contains("unknown variant `topic`"), "{err}");
        let err = bad("processed = { by = \"key\", pointer = \"/id\" }");
        assert!(err.contains("unknown field `pointer`"), "{err}");
    }

    /// Empty lists were accepted, and readiness_truthful then passed on no outage at all.
    #[test]
    fn a_readiness_table_with_nothing_to_take_down_is_bad_input() {
        let empty: Readiness =
            toml::from_str("required = []\noptional = []").expect("a [readiness] table");
        let err = empty.validate().unwrap_err();
        assert!(err.contains("both empty"), "{err}");
        let one: Readiness = toml::from_str("required = []\noptional = [\"redis\"]").unwrap();
        assert!(one.validate().is_ok());
    }

    #[test]
    fn stop_options_that_contradict_or_cannot_be_reached_are_bad_input() {
        let both = kafka("stop_after_processed = 40\nstop_when_processed = true");
        let err = both.validate().unwrap_err();
        assert!(err.contains("give one"), "{err}");
        for n in [0, 1001] {
            let err = kafka(&format!("records = 1000\nstop_after_processed = {n}"))
                .validate()
                .unwrap_err();
            assert!(
                err.contains(&format!("stop_after_processed = {n}")),
                "{err}"
            );
        }
        assert!(kafka("stop_after_processed = 1000").validate().is_ok());
    }
}
