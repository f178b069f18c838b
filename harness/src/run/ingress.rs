//! `[kafka.ingress]`: the workload as HTTP requests to the service a graph begins with, and,
//! once it has stopped, where that service wrote each request it acknowledged.
//!
//! A request is acknowledged by a 2xx answer and by nothing else: a 503 while the service
//! drains, a closed port after it exited, or no answer within [`REQUEST_TIMEOUT`] is a refusal
//! the client would retry, not a loss. An acknowledged request must then be in the input
//! topic, naming its key as `written` says; from there every record of the run's requests
//! (acknowledged or not, each copy of one written twice) is an input like any other.

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

/// Where the requests go: the service's instances, each on `127.0.0.1:port`, in turn.
#[derive(Clone, Debug)]
pub struct IngressTarget {
    pub spec: Ingress,
    /// The name the report gives the answering service: its `[[services]]` name, or `target`.
    pub service: String,
    /// Each instance's name (`api#2`) and port; request `n` goes to instance `n % len`.
    pub instances: Vec<(String, u16)>,
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
            let address = format!(
                "127.0.0.1:{}",
                target.instances[n % target.instances.len()].1
            );
            async move {
                let seq = n.to_string();
                let vars = [("key", key.as_str()), ("seq", &seq), ("run_id", prefix)];
                let path = crate::scenario::template::fill_with(&spec.path, &vars);
                let body = crate::scenario::template::fill_with(&spec.body, &vars);
                let answer = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    request(&address, &spec.method, &path, &spec.content_type, &body),
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
    loop {
        // An interim answer (1xx: 100 Continue, 103 Early Hints) is not the answer: the final
        // one follows it, after the blank line that ends its head.
        if let Some(code) = final_status(&reply) {
            return code.ok_or_else(|| {
                let line = String::from_utf8_lossy(&reply);
                format!(
                    "{address} answered `{}`, not HTTP",
                    line.lines().next().unwrap_or_default()
                )
            });
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading from {address}: {e}"))?;
        if n == 0 || reply.len() > STATUS_LINE_MAX {
            return Err(format!(
                "{address} closed the connection without a final status line"
            ));
        }
        reply.extend_from_slice(&chunk[..n]);
    }
}

/// The code of the first status line of `reply` that is not interim: `None` while more must
/// be read, `Some(None)` when a line there is not HTTP. Lines end in CRLF or a bare LF.
fn final_status(reply: &[u8]) -> Option<Option<u16>> {
    let mut rest = reply;
    loop {
        let end = rest.iter().position(|b| *b == b'\n')?;
        let Some(code) = status_code(&rest[..end]) else {
            return Some(None);
        };
        if !(100..200).contains(&code) {
            return Some(Some(code));
        }
        // Past the interim answer's head: its lines up to the first empty one.
        let mut head = &rest[end + 1..];
        loop {
            let line_end = head.iter().position(|b| *b == b'\n')?;
            let empty = head[..line_end].iter().all(|b| *b == b'\r');
            head = &head[line_end + 1..];
            if empty {
                break;
            }
        }
        rest = head;
    }
}

/// The code of a status line, `HTTP/1.1 202 Accepted`.
fn status_code(reply: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(reply)
        .ok()?
        .lines()
        .next()?
        .trim_end_matches('\r');
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
    /// Its instances, in the order they took the requests.
    pub instances: Vec<String>,
    pub answers: Answers,
    /// Acknowledged, and in no record of the input topic once the graph had stopped.
    pub lost: Vec<String>,
    /// Requests written more than once (each copy is an input).
    pub written_twice: usize,
    /// Requests not acknowledged (refused, unanswered) that were written all the same: inputs
    /// like the rest, owed nothing at the door.
    pub written_unacknowledged: usize,
    /// Records of the input topic in which `written` found no request key: a sign that
    /// `written` is wrong for this service.
    pub unreadable: crate::kafka::Unmatched,
}

/// Finds the records the service wrote to the input topic for this run's requests (keys
/// beginning `prefix-`), once the graph has stopped: every one of them is an input the rest
/// of the graph owes processing (acknowledged or not, and each copy of one written twice). An
/// acknowledged request in none of them is what the service lost on the way in.
pub async fn locate(
    bootstrap: &str,
    workload: &KafkaWorkload,
    target: &IngressTarget,
    (acknowledged, prefix): (Vec<String>, &str),
    answers: Answers,
) -> Result<(Vec<AckedRecord>, IngressEvidence), KafkaError> {
    let written = target.spec.written(&workload.processed);
    let read = read_back(bootstrap, &workload.input_topic, &BTreeMap::new(), &written).await?;
    let ours = format!("{prefix}-");
    let mut records = Vec::new();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for output in read.outputs {
        if let (InputRef::Key(key), Some((partition, offset))) = (output.input, output.at)
            && key.starts_with(&ours)
        {
            *copies.entry(key.clone()).or_default() += 1;
            records.push(AckedRecord {
                partition,
                offset,
                key,
            });
        }
    }
    records.sort();
    let acknowledged_set: BTreeSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let lost = acknowledged
        .iter()
        .filter(|k| !copies.contains_key(k.as_str()))
        .cloned()
        .collect();
    let evidence = IngressEvidence {
        service: target.service.clone(),
        instances: target
            .instances
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
        answers,
        lost,
        written_twice: copies.values().filter(|n| **n > 1).count(),
        written_unacknowledged: copies
            .keys()
            .filter(|k| !acknowledged_set.contains(k.as_str()))
            .count(),
        unreadable: read.unmatched,
    };
    Ok((records, evidence))
}

/// `no_message_loss` seen from the door: an acknowledged request in no record of the input
/// topic is lost, whatever the rest of the graph did (unless the topic holds records
/// `written` cannot read, when the scenario may be what is wrong); else what was judged
/// beyond the door stands, saying what the requests got.
pub fn judge_loss(
    evidence: &IngressEvidence,
    workload: &KafkaWorkload,
    beyond: Option<Outcome>,
) -> Outcome {
    let door = evidence.describe(&workload.input_topic);
    if !evidence.lost.is_empty() {
        let lost = format!(
            "{} request(s) answered 2xx by `{}` were not in `{}` once the graph had stopped, \
             e.g. {}",
            evidence.lost.len(),
            evidence.service,
            workload.input_topic,
            evidence
                .lost
                .iter()
                .take(3)
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if evidence.unreadable.count > 0 {
            return Outcome::inconclusive(format!(
                "{lost}; but {} record(s) there name no request as [kafka.ingress] `written` \
                 reads them (e.g. {}): is `written` right for this service? ({door})",
                evidence.unreadable.count,
                evidence.unreadable.examples.join("; ")
            ));
        }
        let mut lines = vec![door, lost];
        if evidence.instances.len() > 1 {
            lines.push(evidence.lost_by_instance());
        }
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
            "`{}` acknowledged none of its requests: nothing was owed ({door})",
            evidence.service
        )),
        None => Outcome::inconclusive(format!(
            "what became of the requests beyond `{}` was not judged ({door})",
            workload.input_topic
        )),
        Some(outcome) => outcome.sourced(&format!("; {door}"), door),
    }
}

impl IngressEvidence {
    /// `` lost by instance: `api#1` 12, `api#2` 9 ``: request `n` went to instance
    /// `n % instances`, `n` the key's last part.
    fn lost_by_instance(&self) -> String {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for key in &self.lost {
            let seq = key.rsplit('-').next().and_then(|n| n.parse::<usize>().ok());
            if let Some(seq) = seq {
                *by.entry(&self.instances[seq % self.instances.len()])
                    .or_default() += 1;
            }
        }
        let counts: Vec<String> = by.iter().map(|(i, n)| format!("`{i}` {n}")).collect();
        format!("lost by instance: {}", counts.join(", "))
    }

    /// `` `api` answered 1000 request(s): ..., every acknowledged one written to `orders` ``,
    /// with what else was written.
    fn describe(&self, topic: &str) -> String {
        let mut text = format!("`{}` answered {}", self.service, self.answers.describe());
        if self.lost.is_empty() && self.answers.acknowledged > 0 {
            text.push_str(&format!(", every acknowledged one written to `{topic}`"));
        }
        if self.written_unacknowledged > 0 {
            text.push_str(&format!(
                "; {} request(s) not acknowledged were written all the same (inputs like the \
                 rest)",
                self.written_unacknowledged
            ));
        }
        if self.written_twice > 0 {
            text.push_str(&format!(
                "; {} request(s) written twice or more (each copy an input)",
                self.written_twice
            ));
        }
        text
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

    /// An interim answer is not the answer; a bare LF ends a line as CRLF does; a reply cut
    /// short is read further.
    #[test]
    fn the_final_status_comes_after_interim_answers() {
        let hinted = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 202 Accepted\r\n";
        assert_eq!(final_status(hinted), Some(Some(202)));
        assert_eq!(
            final_status(b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\n"),
            Some(Some(200))
        );
        assert_eq!(final_status(b"HTTP/1.1 202 Accepted\n"), Some(Some(202)));
        assert_eq!(
            final_status(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n"),
            None
        );
        assert_eq!(final_status(b"HTTP/1.1 202 Acc"), None);
        assert_eq!(final_status(b"220 smtp ready\r\n"), Some(None));
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
