//! `[kafka.ingress]`: the workload as HTTP requests to the service a graph begins with, and,
//! once it has stopped, where that service wrote each request it acknowledged.
//!
//! A request is acknowledged by a 2xx answer and by nothing else: a 503 while the service
//! drains, a closed port after it exited, or no answer within [`REQUEST_TIMEOUT`] is a refusal
//! the client would retry, not a loss. An acknowledged request must then be in the input
//! topic, naming its key as `written` says; from there it is an input like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::kafka::{AckedRecord, InputRef, KafkaError, Workload, paced, read_back};
use crate::scenario::{Ingress, KafkaWorkload};
use crate::verdict::Outcome;

/// How long a request may take, connection to status line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests in flight at once.
const IN_FLIGHT: usize = 64;

/// The most of a reply read while looking for its status line.
const STATUS_LINE_MAX: usize = 8192;

/// Where the requests go: the service's instances, each `127.0.0.1:port`, in turn.
#[derive(Clone, Debug)]
pub struct IngressTarget {
    pub spec: Ingress,
    /// The name the report gives the answering service (`api`, or `the target`).
    pub service: String,
    pub addresses: Vec<String>,
}

/// What the requests got as answers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Answers {
    pub sent: usize,
    /// 2xx answers.
    pub acknowledged: usize,
    /// Other answers, by status code.
    pub refused: BTreeMap<u16, usize>,
    /// No status line: the connection was refused or closed, or the request timed out.
    pub unanswered: usize,
    /// What the first unanswered request met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_unanswered: Option<String>,
}

impl Answers {
    fn record(&mut self, answer: &Result<u16, String>) {
        self.sent += 1;
        match answer {
            Ok(status) if (200..300).contains(status) => self.acknowledged += 1,
            Ok(status) => *self.refused.entry(*status).or_default() += 1,
            Err(why) => {
                self.unanswered += 1;
                self.first_unanswered.get_or_insert_with(|| why.clone());
            }
        }
    }

    /// `1000 request(s): 640 acknowledged (2xx), 12 refused (503 x12), 348 unanswered`.
    pub fn describe(&self) -> String {
        let refused = match self.refused.is_empty() {
            true => String::new(),
            false => format!(
                ", {} refused ({})",
                self.refused.values().sum::<usize>(),
                self.refused
                    .iter()
                    .map(|(status, n)| format!("{status} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let unanswered = match &self.first_unanswered {
            Some(why) => format!(", {} unanswered ({why})", self.unanswered),
            None => String::new(),
        };
        format!(
            "{} request(s): {} acknowledged (2xx){refused}{unanswered}",
            self.sent, self.acknowledged
        )
    }
}

/// Sends the workload's requests at its rate, the instances taking turns, until all are sent
/// or `stop` is cancelled (requests in flight then still get their answer). Returns the
/// acknowledged requests' keys, not yet placed in the input topic (see [`locate`]).
pub async fn send_requests(
    target: &IngressTarget,
    workload: &Workload<'_>,
    stop: &CancellationToken,
    acked_so_far: &AtomicUsize,
    answers: &Mutex<Answers>,
) -> Vec<String> {
    let prefix = workload.prefix;
    let spec = &target.spec;
    let mut acked: Vec<String> = paced(workload.count, workload.rate, stop)
        .map(|n| {
            let key = format!("{prefix}-{n}");
            let address = &target.addresses[n % target.addresses.len()];
            async move {
                let seq = n.to_string();
                let vars = [("key", key.as_str()), ("seq", &seq), ("run_id", prefix)];
                let path = crate::scenario::template::fill_with(&spec.path, &vars);
                let body = crate::scenario::template::fill_with(&spec.body, &vars);
                let answer = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    request(address, &spec.method, &path, &spec.content_type, &body),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))
                });
                answers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .record(&answer);
                match answer {
                    Ok(status) if (200..300).contains(&status) => {
                        acked_so_far.fetch_add(1, Ordering::Relaxed);
                        Some(key)
                    }
                    _ => None,
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|a| async move { a })
        .collect()
        .await;
    acked.sort();
    acked
}

/// One HTTP/1.1 request on a connection of its own; the answer's status code.
async fn request(
    address: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<u16, String> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let head = match body.is_empty() {
        true => format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
        false => format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    };
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("writing to {address}: {e}"))?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    while !reply.windows(2).any(|w| w == b"\r\n") {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading from {address}: {e}"))?;
        if n == 0 || reply.len() > STATUS_LINE_MAX {
            return Err(format!(
                "{address} closed the connection without a status line"
            ));
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    status_code(&reply).ok_or_else(|| {
        let line = String::from_utf8_lossy(&reply);
        format!(
            "{address} answered `{}`, not HTTP",
            line.lines().next().unwrap_or_default()
        )
    })
}

/// The code of a status line, `HTTP/1.1 202 Accepted`.
fn status_code(reply: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(reply).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse().ok())
}

/// What became of the acknowledged requests: the answers, and the keys the service
/// acknowledged but never wrote to the input topic. Goes into `kafka.json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IngressEvidence {
    /// The service that answered.
    pub service: String,
    pub answers: Answers,
    /// Acknowledged, and in no record of the input topic.
    pub lost: Vec<String>,
    /// Acknowledged requests written more than once (the first record is the one judged).
    pub written_twice: usize,
}

/// Finds each acknowledged request's record in the input topic, once the service has stopped:
/// the records the rest of the run is judged on, and what the service lost on the way in.
pub async fn locate(
    bootstrap: &str,
    workload: &KafkaWorkload,
    target: &IngressTarget,
    keys: Vec<String>,
    answers: Answers,
) -> Result<(Vec<AckedRecord>, IngressEvidence), KafkaError> {
    let written = target.spec.written(&workload.processed);
    let read = read_back(bootstrap, &workload.input_topic, &BTreeMap::new(), &written).await?;
    let wanted: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    let mut found: BTreeMap<String, (i32, i64)> = BTreeMap::new();
    let mut written_twice = 0;
    for output in read.outputs {
        if let (InputRef::Key(key), Some(at)) = (output.input, output.at)
            && wanted.contains(key.as_str())
        {
            match found.contains_key(&key) {
                true => written_twice += 1,
                false => {
                    found.insert(key, at);
                }
            }
        }
    }
    let mut acked = Vec::new();
    let mut lost = Vec::new();
    for key in keys {
        match found.get(&key) {
            Some((partition, offset)) => acked.push(AckedRecord {
                partition: *partition,
                offset: *offset,
                key,
            }),
            None => lost.push(key),
        }
    }
    acked.sort();
    Ok((
        acked,
        IngressEvidence {
            service: target.service.clone(),
            answers,
            lost,
            written_twice,
        },
    ))
}

/// `no_message_loss` seen from the door: an acknowledged request missing from the input topic
/// is lost, whatever the rest of the graph did; else what was judged beyond the door stands,
/// saying what the requests got.
pub fn judge_loss(
    evidence: &IngressEvidence,
    workload: &KafkaWorkload,
    beyond: Option<Outcome>,
) -> Outcome {
    let answered = evidence.answers.describe();
    if !evidence.lost.is_empty() {
        let mut lines = vec![
            format!("`{}` answered {answered}", evidence.service),
            format!(
                "{} of them acknowledged but in no record of `{}`, e.g. {}",
                evidence.lost.len(),
                workload.input_topic,
                evidence
                    .lost
                    .iter()
                    .take(3)
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ];
        if let Some(Outcome::Violation { summary, evidence }) = beyond {
            lines.push(format!("and beyond `{}`: {summary}", workload.input_topic));
            lines.extend(evidence);
        }
        return Outcome::violation(
            format!(
                "{} request(s) answered 2xx by `{}` never reached `{}`: acknowledged, then lost",
                evidence.lost.len(),
                evidence.service,
                workload.input_topic
            ),
            lines,
        );
    }
    match beyond {
        None if evidence.answers.acknowledged == 0 => Outcome::inconclusive(format!(
            "`{}` acknowledged none of its requests ({answered}): nothing was owed",
            evidence.service
        )),
        None => Outcome::inconclusive(format!(
            "`{}` answered {answered}, all written to `{}`; what became of them was not judged",
            evidence.service, workload.input_topic
        )),
        Some(outcome) => outcome.sourced(
            &format!(
                "; `{}` answered {answered}, every acknowledged one written to `{}`",
                evidence.service, workload.input_topic
            ),
            format!("`{}` answered {answered}", evidence.service),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_gives_its_code_and_anything_else_none() {
        assert_eq!(status_code(b"HTTP/1.1 202 Accepted\r\n"), Some(202));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20 OK\r\n"), None);
    }

    #[test]
    fn answers_count_2xx_alone_as_acknowledged() {
        let mut answers = Answers::default();
        for answer in [
            Ok(202),
            Ok(200),
            Ok(503),
            Ok(503),
            Ok(500),
            Err("refused".into()),
        ] {
            answers.record(&answer);
        }
        assert_eq!(answers.acknowledged, 2);
        assert_eq!(
            answers.describe(),
            "6 request(s): 2 acknowledged (2xx), 3 refused (500 x1, 503 x2), 1 unanswered (refused)"
        );
    }
}
