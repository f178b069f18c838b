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
    /// Stop the target as soon as every acknowledged record has been processed (else at
    /// `[stop] after_ms`, whichever comes first). Off, the stop lands mid-stream.
    #[serde(default = "yes")]
    pub stop_when_processed: bool,
    /// Stop the target once this many inputs have been processed, while the workload goes
    /// on: the stop lands mid-stream (say, a SIGKILL with work in flight).
    #[serde(default)]
    pub stop_after_processed: Option<usize>,
    /// After the stop, start the target once more, let it consume what is left, and stop it
    /// with SIGTERM: how `no_message_loss` and `no_redelivery` see what a restart consumes.
    #[serde(default = "yes")]
    pub restart: bool,
    /// How long the restarted target gets to consume what is left.
    #[serde(default = "default_restart_timeout")]
    pub restart_timeout_ms: u64,
}

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

fn yes() -> bool {
    true
}

fn default_restart_timeout() -> u64 {
    30_000
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
            stop_when_processed: true,
            stop_after_processed: None,
            restart: true,
            restart_timeout_ms: default_restart_timeout(),
        }
    }
}

impl KafkaWorkload {
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

    /// Values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions < 1 {
            return Err(format!(
                "[kafka] partitions = {} (need at least 1)",
                self.partitions
            ));
        }
        for (key, name) in [
            ("input_topic", &self.input_topic),
            ("output_topic", &self.output_topic),
            ("group", &self.group),
        ] {
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
        if self.input_topic == self.output_topic {
            return Err(format!(
                "[kafka] input_topic and output_topic are both `{}`",
                self.input_topic
            ));
        }
        Ok(())
    }
}
