//! Which partitions each consumer fetched, and when, read off the wire: the evidence of the
//! takeover time of a rollout.
//!
//! A consumer fetches only the partitions assigned to it, and names in each Fetch request the
//! offset it wants next from each. So the first Fetch naming a partition that another
//! instance of the service sends after an old instance's SIGTERM is the moment that partition
//! is consumed again, whatever the broker or the service says about it. The requests are read
//! by the [`GroupTap`](super::wire::GroupTap) that reads the membership requests; nothing of
//! the bytes is changed.
//!
//! Limits: a client in an incremental fetch session (KIP-227, Java's) names a partition only
//! when its position changed, so a partition a surviving instance already held is seen from
//! its next record on; topics are told apart by name up to Fetch v12 and by id from v13, and
//! a takeover between clients that name them differently is not judged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::{Reader, StringReader};
use crate::verdict::Outcome;

const FETCH: i16 = 1;

/// How a Fetch request names a topic: by name up to v12, by id from v13 (KIP-516).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FetchTopic {
    Name(String),
    Id([u8; 16]),
}

impl std::fmt::Display for FetchTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchTopic::Name(name) => f.write_str(name),
            FetchTopic::Id(id) => {
                write!(f, "topic id ")?;
                id.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// What one Fetch request asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// In an incremental session (epoch > 0): only partitions whose position changed are named.
    pub incremental: bool,
    /// Each topic with its partitions and the offset wanted next from each.
    pub topics: Vec<(FetchTopic, Vec<(i32, i64)>)>,
}

/// The body of request `frame` if it is an `api_key` request, past its header: its version,
/// and a reader in its encoding (flexible from version `flexible_from`).
fn body(frame: &[u8], api_key: i16, flexible_from: i16) -> Option<(i16, StringReader<'_>)> {
    let mut r = Reader(frame);
    let (key, version) = (r.i16()?, r.i16()?);
    if key != api_key {
        return None;
    }
    let _correlation_id = r.i32()?;
    // The header's client id is never a compact string, even in header v2.
    let _client_id = r.nullable_string()?;
    let flexible = version >= flexible_from;
    if flexible {
        r.tagged_fields()?;
    }
    Some((version, StringReader { r, flexible }))
}

/// The Fetch request in `frame` (a whole request, its size cut off), or `None` for another
/// request or one that does not parse.
pub fn parse_fetch(frame: &[u8]) -> Option<FetchRequest> {
    let (version, mut s) = body(frame, FETCH, 12)?;
    let r = &mut s.r;
    // From v15 the replica id is a tagged field (KIP-903).
    if version <= 14 {
        let _replica_id = r.i32()?;
    }
    let (_max_wait_ms, _min_bytes) = (r.i32()?, r.i32()?);
    if version >= 3 {
        let _max_bytes = r.i32()?;
    }
    if version >= 4 {
        let _isolation_level = r.take(1)?;
    }
    let mut incremental = false;
    if version >= 7 {
        let (_session_id, epoch) = (r.i32()?, r.i32()?);
        incremental = epoch > 0;
    }
    let count = s.array_len()?;
    let mut topics = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let topic = match version >= 13 {
            true => FetchTopic::Id(s.r.take(16)?.try_into().ok()?),
            false => FetchTopic::Name(s.string()?),
        };
        let n = s.array_len()?;
        let mut partitions = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let partition = s.r.i32()?;
            if version >= 9 {
                let _current_leader_epoch = s.r.i32()?;
            }
            let offset = s.r.i64()?;
            if version >= 12 {
                let _last_fetched_epoch = s.r.i32()?;
            }
            if version >= 5 {
                let _log_start_offset = s.r.i64()?;
            }
            let _partition_max_bytes = s.r.i32()?;
            if s.flexible {
                s.r.tagged_fields()?;
            }
            partitions.push((partition, offset));
        }
        if s.flexible {
            s.r.tagged_fields()?;
        }
        topics.push((topic, partitions));
    }
    Some(FetchRequest {
        incremental,
        topics,
    })
}

const SYNC_GROUP: i16 = 14;

/// What a group leader's SyncGroup request assigned: each member's partitions, by topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub group: String,
    pub generation: i32,
    pub members: Vec<(String, Vec<(String, i32)>)>,
}

/// What a SyncGroup request said of its group's assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sync {
    /// A leader's, read.
    Assigned(Assigned),
    /// A leader's (it carries assignments), in group `.0`, that could not be read: a
    /// custom protocol's, or cut.
    Unreadable(String),
}

/// The assignments a leader's SyncGroup request in `frame` carries (the consumer protocol's,
/// `ConsumerProtocolAssignment`); `None` for another request, or a follower's SyncGroup (no
/// assignments).
pub fn parse_sync_assignments(frame: &[u8]) -> Option<Sync> {
    let (version, mut s) = body(frame, SYNC_GROUP, 4)?;
    let Some(group) = s.string() else {
        return Some(Sync::Unreadable(String::new()));
    };
    let assigned = sync_body(version, s, &group);
    match assigned {
        Some(a) if a.members.is_empty() => None,
        Some(a) => Some(Sync::Assigned(a)),
        None => Some(Sync::Unreadable(group)),
    }
}

/// The rest of a SyncGroup request, past its group: its generation and assignments.
fn sync_body(version: i16, mut s: StringReader<'_>, group: &str) -> Option<Assigned> {
    let flexible = s.flexible;
    let generation = s.r.i32()?;
    let _member_id = s.string()?;
    if version >= 3 {
        let _group_instance_id = s.nullable_string()?;
    }
    if version >= 5 {
        let (_protocol_type, _protocol_name) = (s.nullable_string()?, s.nullable_string()?);
    }
    let count = s.array_len()?;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let member = s.string()?;
        let len = match flexible {
            true => usize::try_from(s.r.varint()?).ok()?.checked_sub(1)?,
            false => usize::try_from(s.r.i32()?).ok()?,
        };
        let partitions = consumer_assignment(s.r.take(len)?)?;
        if flexible {
            s.r.tagged_fields()?;
        }
        members.push((member, partitions));
    }
    Some(Assigned {
        group: group.to_owned(),
        generation,
        members,
    })
}

/// The partitions in a `ConsumerProtocolAssignment` (any version: its partitions come first,
/// in the classic encoding); empty bytes assign nothing.
fn consumer_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let mut s = StringReader { r, flexible: false };
    let topics = s.array_len()?;
    let mut partitions = Vec::new();
    for _ in 0..topics {
        let topic = s.string()?;
        for _ in 0..s.array_len()? {
            partitions.push((topic.clone(), s.r.i32()?));
        }
    }
    Some(partitions)
}

/// One partition named in one Fetch request, as the tap saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub at: Instant,
    pub link: u64,
    pub topic: FetchTopic,
    pub partition: i32,
    pub offset: i64,
    pub incremental: bool,
    /// The run id of the process that opened its connection (see
    /// [`GroupEvent::owner`](super::wire::GroupEvent)).
    pub owner: Option<String>,
}

/// One instance of the rolled-out service, for [`judge`].
#[derive(Clone, Debug)]
pub struct Instance<'a> {
    pub name: &'a str,
    pub run_id: &'a str,
    pub started: Instant,
    /// Its stop signal (a rollout's, or the graph's).
    pub stop_sent: Option<Instant>,
    /// When it exited.
    pub exited: Option<Instant>,
    /// A rollout replaced it.
    pub rolled_out: bool,
    /// A rollout or a restart started it, in another's place.
    pub replacement: bool,
}

/// What the wire says of the run's groups, for [`judge`].
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Every partition fetch, in the order seen.
    pub fetched: Vec<Fetched>,
    /// Every leader's SyncGroup of the run's groups, in the order seen.
    pub assigned: Vec<(Instant, Assigned)>,
    /// The run id of the process each member id spoke from ("" for a member whose
    /// connection could not be tied to a process, or that spoke from two).
    pub members: BTreeMap<String, String>,
    /// When requests came on connections whose process could not be found.
    pub untied: Vec<Instant>,
    /// Why the assignments cannot be trusted, with when: a static member, a member id used
    /// by two instances, a generation whose leader's assignment was not read.
    pub unsure: Vec<(Instant, String)>,
}

/// A member whose process could not be found.
const UNTIED: &str = "?";

/// A group's partition of a topic.
type Partition = (String, String, i32);

/// Who owned each partition when (`None`: no one): every assignment of every group, in order.
struct Owners(BTreeMap<Partition, Vec<(Instant, Option<String>)>>);

impl Owners {
    fn of(evidence: &Evidence) -> Owners {
        let mut by: BTreeMap<Partition, Vec<(Instant, Option<String>)>> = BTreeMap::new();
        let mut last: BTreeMap<&str, Vec<Partition>> = BTreeMap::new();
        for (at, a) in &evidence.assigned {
            let now: BTreeMap<Partition, String> = (a.members.iter())
                .flat_map(|(member, partitions)| {
                    let owner = match evidence.members.get(member).map(String::as_str) {
                        Some("") | None => UNTIED.to_owned(),
                        Some(run_id) => run_id.to_owned(),
                    };
                    (partitions.iter())
                        .map(move |(t, p)| ((a.group.clone(), t.clone(), *p), owner.clone()))
                })
                .collect();
            for gone in last.get(a.group.as_str()).into_iter().flatten() {
                if !now.contains_key(gone) {
                    by.entry(gone.clone()).or_default().push((*at, None));
                }
            }
            for (p, owner) in &now {
                by.entry(p.clone())
                    .or_default()
                    .push((*at, Some(owner.clone())));
            }
            last.insert(&a.group, now.into_keys().collect());
        }
        Owners(by)
    }

    /// Who owned `p` at `t`, by the last assignment before.
    fn at(&self, p: &Partition, t: Instant) -> Option<&str> {
        let changes = self.0.get(p)?;
        let i = changes.partition_point(|(at, _)| *at <= t);
        changes.get(i.checked_sub(1)?)?.1.as_deref()
    }

    /// Whether `p` was owned by a member no process could be tied to, at any time in
    /// `from..=to`.
    fn untied(&self, p: &Partition, from: Instant, to: Instant) -> bool {
        self.at(p, from) == Some(UNTIED)
            || (self.0.get(p).into_iter().flatten())
                .any(|(at, o)| *at >= from && *at <= to && o.as_deref() == Some(UNTIED))
    }
}

/// The `p`th percentile (0 to 100) of sorted `values`, nearest rank.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// `takeover_within` of one rolled-out service. A partition counts as consumed by an instance
/// at a Fetch naming it that the instance's processes send while a member of theirs is
/// assigned it (the group leader's SyncGroup says who), before that instance's own stop
/// signal.
///
/// - The takeover of each partition a replaced instance was assigned at its SIGTERM: from
///   the SIGTERM to the first such Fetch by another instance.
/// - The longest gap of each partition the service held during the rollout: no such Fetch by
///   anyone, for each gap that begins from the first replacement's start (its join rebalances
///   the group) to `deadline` after the last replaced instance exited, measured whole (a new
///   owner that fetched once and then stopped polling is no takeover; a stall that begins
///   later is not the rollout's).
///
/// Either past `deadline` fails. Inconclusive: a span short of it with no Fetch, requests on
/// connections whose process could not be found, assignments that cannot be trusted, and an
/// instance fetching a partition on two connections at once (a consumer besides its group
/// member: which fetches are the member's cannot be told).
///
/// With the outcome, when it is decided, each partition move's takeover time, sorted.
pub fn judge(
    evidence: &Evidence,
    instances: &[Instance],
    until: Instant,
    deadline: Duration,
) -> (Outcome, Vec<Duration>) {
    let ms = |d: Duration| d.as_millis();
    let owners = Owners::of(evidence);
    let is_ours = |run_id: &str| instances.iter().any(|i| i.run_id == run_id);
    let named = |run_id: &str| {
        (instances.iter())
            .find(|i| i.run_id == run_id)
            .map_or_else(|| run_id.to_owned(), |i| i.name.to_owned())
    };
    let replaced: Vec<(&Instance, Instant)> = (instances.iter())
        .filter(|i| i.rolled_out)
        .filter_map(|i| Some((i, i.stop_sent?)))
        .collect();
    let Some(first) = replaced.iter().map(|(_, s)| *s).min() else {
        return (
            Outcome::inconclusive(
                "the rollout replaced no instance (halted, or cut short by the graph's stop)",
            ),
            Vec::new(),
        );
    };
    if first >= until {
        return (
            Outcome::inconclusive("the service's stop began before the rollout's first SIGTERM"),
            Vec::new(),
        );
    }
    // The rollout's span: from its first new instance's start to the deadline after its last
    // old instance's exit (a stall long after it is not the rollout's).
    let begun = (instances.iter())
        .filter(|i| i.replacement)
        .map(|i| i.started)
        .min()
        .map_or(first, |s| s.min(first));
    // An exit not seen counts as the stop: the span then runs to it.
    let last_exit = (replaced.iter())
        .map(|(i, _)| i.exited.unwrap_or(until))
        .max()
        .unwrap_or(until);
    let ended = (last_exit + deadline).min(until);
    let stop_of = |run_id: &str| {
        (instances.iter())
            .find(|i| i.run_id == run_id)
            .and_then(|i| i.stop_sent)
    };
    // The service's own fetches from the span on (the harness's read-back and other
    // services' consumers are theirs).
    let ours: Vec<&Fetched> = (evidence.fetched.iter())
        .filter(|f| f.at >= begun && f.at <= until)
        .filter(|f| f.owner.as_deref().is_some_and(is_ours))
        .collect();
    if ours.iter().any(|f| matches!(f.topic, FetchTopic::Id(_))) {
        return (
            Outcome::inconclusive(
                "its consumers name topics by id (Fetch v13+), which the group's assignments name \
             by name: their partitions cannot be matched",
            ),
            Vec::new(),
        );
    }
    if ours.iter().any(|f| f.incremental) {
        return (
            Outcome::inconclusive(
                "its consumers fetch in incremental sessions (KIP-227), which name a partition \
             only when its position changed: a quiet partition looks unconsumed",
            ),
            Vec::new(),
        );
    }
    if let Some((_, why)) = (evidence.unsure.iter()).find(|(at, _)| *at <= until) {
        return (Outcome::inconclusive(why.clone()), Vec::new());
    }
    // An instance fetching one partition on two connections at once runs a consumer besides
    // its group member: its fetches cannot be told apart.
    let mut spans: BTreeMap<(&str, &FetchTopic, i32, u64), (Instant, Instant)> = BTreeMap::new();
    for f in &ours {
        let owner = f.owner.as_deref().unwrap_or_default();
        let span = spans
            .entry((owner, &f.topic, f.partition, f.link))
            .or_insert((f.at, f.at));
        span.1 = f.at;
    }
    let spans: Vec<_> = spans.into_iter().collect();
    for (i, ((owner, topic, partition, link), (from, to))) in spans.iter().enumerate() {
        let overlapping = spans[i + 1..].iter().find(|((o, t, p, l), (f2, t2))| {
            (o, t, p) == (owner, topic, partition) && l != link && f2 <= to && from <= t2
        });
        if overlapping.is_some() {
            return (
                Outcome::inconclusive(format!(
                    "`{}` fetched {topic}/{partition} on two connections at once: a consumer besides \
                 its group member, whose fetches cannot be told from the member's",
                    named(owner)
                )),
                Vec::new(),
            );
        }
    }
    // The fetches that are consumption: of a partition its sender's member was assigned, in
    // one of the run's groups, before the sender's own stop.
    let consumed: Vec<(&Fetched, Partition, &str)> = (ours.iter())
        .filter_map(|f| {
            let FetchTopic::Name(topic) = &f.topic else {
                return None;
            };
            let owner = f.owner.as_deref()?;
            let running = stop_of(owner).is_none_or(|stop| f.at < stop);
            let group = (owners.0.keys())
                .filter(|(_, t, p)| t == topic && *p == f.partition)
                .find(|p| owners.at(p, f.at) == Some(owner))?;
            running.then(|| (*f, group.clone(), owner))
        })
        .collect();
    let untied_since = |t: Instant| {
        (evidence.untied.iter())
            .filter(|u| **u >= t && **u <= until)
            .count()
    };
    let mut times = Vec::new();
    let mut late = Vec::new();
    let mut unknown = Vec::new();
    let mut lines = Vec::new();
    for (old, stop) in &replaced {
        let held: Vec<Partition> = (owners.0.keys())
            .filter(|p| owners.at(p, *stop) == Some(old.run_id))
            .cloned()
            .collect();
        let mut slowest: Option<(Duration, &Partition, &str)> = None;
        for p in &held {
            let taken = (consumed.iter())
                .find(|(f, q, by)| q == p && f.at >= *stop && *by != old.run_id)
                .map(|(f, _, by)| (f.at.saturating_duration_since(*stop), *by));
            let (_, topic, partition) = p;
            match taken {
                Some((after, by)) => {
                    times.push(after);
                    if after > deadline {
                        late.push(format!(
                            "`{}`'s partition {topic}/{partition} was consumed again (a Fetch by \
                             `{}`, its owner) only {} ms after its SIGTERM",
                            old.name,
                            named(by),
                            ms(after)
                        ));
                    }
                    if slowest.is_none_or(|(s, _, _)| s < after) {
                        slowest = Some((after, p, by));
                    }
                }
                None => {
                    let observed = until.saturating_duration_since(*stop);
                    let why = format!(
                        "`{}`'s partition {topic}/{partition} was not consumed again in the {} \
                         ms from its SIGTERM to the service's stop",
                        old.name,
                        ms(observed)
                    );
                    let untied = untied_since(*stop);
                    match (untied, owners.untied(p, *stop, until), observed >= deadline) {
                        (0, false, true) => late.push(why),
                        (0, false, false) => unknown.push(format!("{why}, short of the deadline")),
                        _ => unknown.push(format!(
                            "{why}, while requests came on connections whose process could not \
                             be found"
                        )),
                    }
                }
            }
        }
        if let Some((after, (_, topic, partition), by)) = slowest {
            lines.push(format!(
                "`{}`: its {} partition(s) consumed again within {} ms of its SIGTERM \
                 (slowest {topic}/{partition}, by `{}`)",
                old.name,
                held.len(),
                ms(after),
                named(by)
            ));
        }
    }
    // The longest gap of every partition the service held in the rollout's span.
    let mut longest: Option<(Duration, Partition, Instant)> = None;
    let mut open: Vec<(Partition, Instant)> = Vec::new();
    for p in owners.0.keys() {
        let held_by_us = owners.at(p, begun).is_some_and(is_ours)
            || (owners.0[p].iter())
                .any(|(at, o)| *at >= begun && *at <= ended && o.as_deref().is_some_and(is_ours));
        if !held_by_us {
            continue;
        }
        // Each gap that begins in the span counts whole, to the next Fetch or the stop.
        let mut from = begun;
        let mut gaps = Vec::new();
        for (f, _, _) in consumed.iter().filter(|(_, q, _)| q == p) {
            gaps.push((f.at.saturating_duration_since(from), from));
            from = f.at;
        }
        gaps.push((until.saturating_duration_since(from), from));
        if from <= ended && until.saturating_duration_since(from) < deadline {
            open.push((p.clone(), from));
        }
        let (gap, at) = (gaps.into_iter())
            .filter(|(_, from)| *from <= ended)
            .max_by_key(|(g, _)| *g)
            .unwrap_or((Duration::ZERO, begun));
        if longest.as_ref().is_none_or(|(l, _, _)| *l < gap) {
            longest = Some((gap, p.clone(), at));
        }
    }
    // A gap that begins in the span and is still open at the service's stop (its own, or a
    // signal or restart of its instances), shorter than the deadline, was seen only in part:
    // whether it would have run past the deadline cannot be told.
    if let Some((p, from)) = open.iter().min_by_key(|(_, from)| *from) {
        let (_, topic, partition) = p;
        unknown.push(format!(
            "partition {topic}/{partition} was fetched by no instance from {} ms after the \
             rollout's first new instance started to the service's stop {} ms later, short of \
             the {} ms deadline: that gap was seen only in part",
            ms(from.saturating_duration_since(begun)),
            ms(until.saturating_duration_since(*from)),
            ms(deadline)
        ));
    }
    if let Some((gap, p, at)) = &longest
        && *gap > deadline
    {
        let (_, topic, partition) = p;
        let line = format!(
            "partition {topic}/{partition} was consumed by no instance for {} ms, from {} ms \
             after the rollout's first new instance started",
            ms(*gap),
            ms(at.saturating_duration_since(begun))
        );
        match (untied_since(*at), owners.untied(p, *at, *at + *gap)) {
            (0, false) => late.push(line),
            _ => unknown.push(format!(
                "{line}, while requests came on connections whose process could not be found"
            )),
        }
    }
    times.sort();
    let spread = match times.is_empty() {
        true => String::new(),
        false => format!(
            "takeover p50 {} ms, p95 {} ms, max {} ms over {} partition move(s)",
            ms(percentile(&times, 50)),
            ms(percentile(&times, 95)),
            ms(percentile(&times, 100)),
            times.len()
        ),
    };
    let gap = longest
        .as_ref()
        .map_or_else(String::new, |(gap, (_, topic, partition), _)| {
            format!("; longest gap {} ms ({topic}/{partition})", ms(*gap))
        });
    if !late.is_empty() {
        let outcome = Outcome::Violation {
            summary: format!(
                "partitions went unconsumed for longer than {} ms in the rollout",
                ms(deadline)
            ),
            evidence: late
                .into_iter()
                .chain((!spread.is_empty()).then(|| format!("{spread}{gap}")))
                .collect(),
        };
        return (outcome, times);
    }
    if !unknown.is_empty() {
        return (Outcome::inconclusive(unknown.join("; ")), Vec::new());
    }
    if times.is_empty() {
        return (
            Outcome::inconclusive(
                "no replaced instance was assigned a partition (no leader's SyncGroup gave one to a \
             member of its processes)",
            ),
            Vec::new(),
        );
    }
    let outcome = Outcome::Pass {
        detail: format!(
            "{spread}{gap}, each from a replaced instance's SIGTERM to the first Fetch of the \
             partition by its next owner (the group leader's SyncGroup says who); {}",
            lines.join("; ")
        ),
        limits: None,
    };
    (outcome, times)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Fetch request as librdkafka or aiokafka writes one, at `version`.
    fn fetch(version: i16, epoch: i32, topics: &[(&str, &[(i32, i64)])]) -> Vec<u8> {
        let flexible = version >= 12;
        let mut b = Vec::new();
        b.extend(FETCH.to_be_bytes());
        b.extend(version.to_be_bytes());
        b.extend(9i32.to_be_bytes());
        b.extend(3i16.to_be_bytes());
        b.extend(b"svc");
        if flexible {
            b.push(0);
        }
        if version <= 14 {
            b.extend((-1i32).to_be_bytes());
        }
        b.extend(500i32.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        if version >= 3 {
            b.extend(52_428_800i32.to_be_bytes());
        }
        if version >= 4 {
            b.push(0);
        }
        if version >= 7 {
            b.extend(0i32.to_be_bytes());
            b.extend(epoch.to_be_bytes());
        }
        let len = |b: &mut Vec<u8>, n: usize| match flexible {
            true => b.push(n as u8 + 1),
            false => b.extend((n as i32).to_be_bytes()),
        };
        len(&mut b, topics.len());
        for (topic, partitions) in topics {
            match (version >= 13, flexible) {
                (true, _) => b.extend([topic.len() as u8; 16]),
                (false, true) => {
                    b.push(topic.len() as u8 + 1);
                    b.extend(topic.as_bytes());
                }
                (false, false) => {
                    b.extend((topic.len() as i16).to_be_bytes());
                    b.extend(topic.as_bytes());
                }
            }
            len(&mut b, partitions.len());
            for (partition, offset) in *partitions {
                b.extend(partition.to_be_bytes());
                if version >= 9 {
                    b.extend((-1i32).to_be_bytes());
                }
                b.extend(offset.to_be_bytes());
                if version >= 12 {
                    b.extend((-1i32).to_be_bytes());
                }
                if version >= 5 {
                    b.extend((-1i64).to_be_bytes());
                }
                b.extend(1_048_576i32.to_be_bytes());
                if flexible {
                    b.push(0);
                }
            }
            if flexible {
                b.push(0);
            }
        }
        if version >= 7 {
            // No forgotten topics; the parse reads no further than the topics.
            len(&mut b, 0);
        }
        b
    }

    /// Every version a client may send parses to the topics, partitions and offsets written.
    #[test]
    fn fetch_requests_of_every_version_parse() {
        let topics: &[(&str, &[(i32, i64)])] = &[("orders", &[(0, 5), (3, 1_000_000_007)])];
        for version in 0..=17 {
            let parsed = parse_fetch(&fetch(version, -1, topics))
                .unwrap_or_else(|| panic!("Fetch v{version} parses"));
            let topic = match version >= 13 {
                true => FetchTopic::Id([6; 16]),
                false => FetchTopic::Name("orders".into()),
            };
            assert_eq!(
                parsed,
                FetchRequest {
                    incremental: false,
                    topics: vec![(topic, vec![(0, 5), (3, 1_000_000_007)])],
                },
                "v{version}"
            );
        }
        assert!(parse_fetch(&fetch(12, 3, topics)).unwrap().incremental);
        // Another request, or a cut one, is not a Fetch.
        let mut other = fetch(4, -1, topics);
        other[1] = 3;
        assert_eq!(parse_fetch(&other), None);
        let whole = fetch(11, -1, topics);
        assert_eq!(parse_fetch(&whole[..whole.len() - 20]), None);
    }

    /// A leader's SyncGroup request at `version`, assigning `members` their partitions of
    /// `orders` (and one member nothing: empty bytes, as some clients send).
    fn sync(version: i16, members: &[(&str, &[i32])]) -> Vec<u8> {
        let flexible = version >= 4;
        let string = |b: &mut Vec<u8>, s: &str| match flexible {
            true => {
                b.push(s.len() as u8 + 1);
                b.extend(s.as_bytes());
            }
            false => {
                b.extend((s.len() as i16).to_be_bytes());
                b.extend(s.as_bytes());
            }
        };
        let mut b = Vec::new();
        b.extend(SYNC_GROUP.to_be_bytes());
        b.extend(version.to_be_bytes());
        b.extend(9i32.to_be_bytes());
        b.extend(3i16.to_be_bytes());
        b.extend(b"svc");
        if flexible {
            b.push(0);
        }
        string(&mut b, "g");
        b.extend(2i32.to_be_bytes());
        string(&mut b, "m-1");
        if version >= 3 {
            b.extend(if flexible {
                vec![0]
            } else {
                (-1i16).to_be_bytes().to_vec()
            });
        }
        if version >= 5 {
            string(&mut b, "consumer");
            string(&mut b, "range");
        }
        // A leader's lists one more member, with empty bytes (as some clients send).
        let n = members.len() + usize::from(!members.is_empty());
        match flexible {
            true => b.push(n as u8 + 1),
            false => b.extend((n as i32).to_be_bytes()),
        }
        for (member, partitions) in members {
            string(&mut b, member);
            let mut a = Vec::new();
            a.extend(0i16.to_be_bytes());
            a.extend(1i32.to_be_bytes());
            a.extend(6i16.to_be_bytes());
            a.extend(b"orders");
            a.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                a.extend(p.to_be_bytes());
            }
            a.extend((-1i32).to_be_bytes());
            match flexible {
                true => b.push(a.len() as u8 + 1),
                false => b.extend((a.len() as i32).to_be_bytes()),
            }
            b.extend(a);
            if flexible {
                b.push(0);
            }
        }
        if !members.is_empty() {
            string(&mut b, "m-empty");
            match flexible {
                true => b.extend([1, 0]),
                false => b.extend(0i32.to_be_bytes()),
            }
        }
        if flexible {
            b.push(0);
        }
        b
    }

    /// A leader's assignments parse at every version; a follower's SyncGroup has none.
    #[test]
    fn sync_group_assignments_of_every_version_parse() {
        for version in 0..=5 {
            let parsed = parse_sync_assignments(&sync(version, &[("m-1", &[0, 2]), ("m-2", &[1])]))
                .unwrap_or_else(|| panic!("SyncGroup v{version} parses"));
            let Sync::Assigned(parsed) = parsed else {
                panic!("v{version}: {parsed:?}")
            };
            let orders = |ps: &[i32]| ps.iter().map(|p| ("orders".to_owned(), *p)).collect();
            assert_eq!(
                parsed,
                Assigned {
                    group: "g".into(),
                    generation: 2,
                    members: vec![
                        ("m-1".into(), orders(&[0, 2])),
                        ("m-2".into(), orders(&[1])),
                        ("m-empty".into(), Vec::new()),
                    ],
                },
                "v{version}"
            );
        }
        // No assignments at all: a follower's.
        for version in [0, 4] {
            assert_eq!(parse_sync_assignments(&sync(version, &[])), None);
        }
        // A leader's whose assignment is cut (or not the consumer protocol's) is said unread.
        let whole = sync(0, &[("m-1", &[0, 2])]);
        assert_eq!(
            parse_sync_assignments(&whole[..whole.len() - 12]),
            Some(Sync::Unreadable("g".into()))
        );
    }

    const OLD: &str = "R.worker.1";
    const NEW: &str = "R.worker.1@2";

    fn t(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn fetch_at(t0: Instant, ms: u64, owner: Option<&str>, partition: i32) -> Fetched {
        Fetched {
            at: t(t0, ms),
            link: 1,
            topic: FetchTopic::Name("orders".into()),
            partition,
            offset: 10,
            incremental: false,
            owner: owner.map(Into::into),
        }
    }

    /// Fetches of `partitions` by `owner` every 500 ms over [from, to).
    fn polling(t0: Instant, owner: &str, partitions: &[i32], from: u64, to: u64) -> Vec<Fetched> {
        (from..to)
            .step_by(500)
            .flat_map(|ms| {
                partitions
                    .iter()
                    .map(move |p| fetch_at(t0, ms, Some(owner), *p))
            })
            .collect()
    }

    /// The evidence lines of a violation.
    fn violation(outcome: &Outcome) -> &[String] {
        match outcome {
            Outcome::Violation { evidence, .. } => evidence,
            other => panic!("{other:?}"),
        }
    }

    /// `evidence` with `fetched` too, in time order.
    fn more(evidence: &mut Evidence, fetched: Vec<Fetched>) {
        evidence.fetched.extend(fetched);
        evidence.fetched.sort_by_key(|f| f.at);
    }

    fn assign(t0: Instant, ms: u64, members: &[(&str, &[i32])]) -> (Instant, Assigned) {
        let members = (members.iter())
            .map(|(m, ps)| {
                (
                    m.to_string(),
                    ps.iter().map(|p| ("orders".into(), *p)).collect(),
                )
            })
            .collect();
        (
            t(t0, ms),
            Assigned {
                group: "g".into(),
                generation: 1,
                members,
            },
        )
    }

    /// The old worker held 0 and 1 until its SIGTERM at 1000 ms; the new one was assigned
    /// both at `assigned_ms` and fetched them from `polls_from` on; the service stopped at
    /// `until_ms`.
    fn rollout(t0: Instant, assigned_ms: u64, polls_from: u64, until_ms: u64) -> Evidence {
        let mut fetched = polling(t0, OLD, &[0, 1], 100, 1000);
        fetched.extend(polling(t0, NEW, &[0, 1], polls_from, until_ms));
        fetched.sort_by_key(|f| f.at);
        Evidence {
            fetched,
            assigned: vec![
                assign(t0, 50, &[("m-old", &[0, 1])]),
                assign(t0, assigned_ms, &[("m-new", &[0, 1])]),
            ],
            members: BTreeMap::from([
                ("m-old".to_owned(), OLD.to_owned()),
                ("m-new".to_owned(), NEW.to_owned()),
            ]),
            untied: Vec::new(),
            unsure: Vec::new(),
        }
    }

    fn judged(t0: Instant, evidence: &Evidence, until_ms: u64) -> Outcome {
        let instances = [
            Instance {
                name: "worker",
                run_id: OLD,
                started: t0,
                stop_sent: Some(t(t0, 1000)),
                exited: Some(t(t0, 1050)),
                rolled_out: true,
                replacement: false,
            },
            Instance {
                name: "worker@2",
                run_id: NEW,
                started: t(t0, 900),
                stop_sent: Some(t(t0, until_ms)),
                exited: None,
                rolled_out: false,
                replacement: true,
            },
        ];
        judge(
            evidence,
            &instances,
            t(t0, until_ms),
            Duration::from_secs(5),
        )
        .0
    }

    /// Each partition the old instance was assigned at its SIGTERM counts from it to the first
    /// Fetch by the partition's next owner; the old one's own fetches after it, and fetches
    /// before the new one is assigned (a consumer of its own), do not count.
    #[test]
    fn a_partition_is_taken_over_at_the_first_fetch_by_its_next_owner() {
        let t0 = Instant::now();
        let mut evidence = rollout(t0, 1200, 1300, 9000);
        // The old one draining after its SIGTERM; the new one's own consumer, unassigned.
        evidence.fetched.push(fetch_at(t0, 1050, Some(OLD), 0));
        evidence.fetched.push(fetch_at(t0, 1100, Some(NEW), 0));
        evidence.fetched.sort_by_key(|f| f.at);
        let outcome = judged(t0, &evidence, 9000);
        let Outcome::Pass { detail, .. } = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            detail.contains("takeover p50 300 ms, p95 300 ms, max 300 ms over 2"),
            "{detail}"
        );
        assert!(detail.contains("by `worker@2`"), "{detail}");
    }

    /// The stall: the old member never left, and its partitions went to the new one only at
    /// its session timeout.
    #[test]
    fn partitions_taken_over_at_the_session_timeout_fail() {
        let t0 = Instant::now();
        let evidence = rollout(t0, 11_000, 11_100, 20_000);
        let outcome = judged(t0, &evidence, 20_000);
        let evidence = violation(&outcome);
        assert!(
            evidence[0].contains("only 10100 ms after its SIGTERM"),
            "{evidence:?}"
        );
    }

    /// Hostile: the new instance runs a consumer of its own that fetches every partition from
    /// its start, while its group member gets them only at the session timeout.
    #[test]
    fn fetches_by_an_unassigned_consumer_are_no_takeover() {
        let t0 = Instant::now();
        let mut evidence = rollout(t0, 11_000, 11_100, 20_000);
        more(&mut evidence, polling(t0, NEW, &[0, 1], 1100, 11_000));
        let outcome = judged(t0, &evidence, 20_000);
        assert!(matches!(outcome, Outcome::Violation { .. }), "{outcome:?}");
    }

    /// Hostile: the new owner fetches once (its client buffers the records) and then polls
    /// no more for seconds: a gap past the deadline fails.
    #[test]
    fn a_new_owner_that_stops_polling_fails_on_the_gap() {
        let t0 = Instant::now();
        let mut evidence = rollout(t0, 1200, 1300, 1400);
        more(&mut evidence, polling(t0, NEW, &[1], 1400, 12_000));
        more(&mut evidence, polling(t0, NEW, &[0], 9000, 12_000));
        let outcome = judged(t0, &evidence, 12_000);
        let evidence = violation(&outcome);
        assert!(
            evidence[0].contains("partition orders/0 was consumed by no instance for 7700 ms"),
            "{evidence:?}"
        );
    }

    /// Partitions of topics the old instance read outside its group (its own output, at its
    /// start) are not its to hand over.
    #[test]
    fn only_assigned_partitions_are_taken_over() {
        let t0 = Instant::now();
        let mut evidence = rollout(t0, 1200, 1300, 9000);
        let mut other = fetch_at(t0, 200, Some(OLD), 0);
        other.topic = FetchTopic::Name("orders-processed".into());
        evidence.fetched.insert(0, other);
        let outcome = judged(t0, &evidence, 9000);
        assert!(matches!(outcome, Outcome::Pass { .. }), "{outcome:?}");
    }

    /// No takeover seen while requests came that no process could be tied to (a supervisor
    /// with a cleared environment): inconclusive, not failed; nor when the service stopped
    /// before the deadline; nor with no rollout, nor with incremental fetch sessions.
    #[test]
    fn what_the_wire_cannot_tell_is_inconclusive() {
        let t0 = Instant::now();
        let mut evidence = rollout(t0, 1200, 1300, 9000);
        evidence.fetched.retain(|f| f.owner.as_deref() != Some(NEW));
        evidence.members.insert("m-new".into(), String::new());
        evidence.untied.push(t(t0, 1300));
        let outcome = judged(t0, &evidence, 9000);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("could not be found")),
            "{outcome:?}"
        );
        let mut evidence = rollout(t0, 1200, 1300, 9000);
        evidence.fetched.retain(|f| f.owner.as_deref() != Some(NEW));
        let outcome = judged(t0, &evidence, 4000);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("short of the deadline")),
            "{outcome:?}"
        );
        // Hostile: the new owner takes the partitions over, then stops polling 1 s later;
        // the service's stop comes 4 s after that, within the deadline of the old one's
        // exit: the 4 s seen of that gap says nothing of its length.
        // And one whose last Fetch is at 5.8 s, the service's stop at 10.7 s: a 4.9 s gap open
        // at the stop, begun inside the span (to 5 s after the old one's exit at 1.05 s).
        for (polls_to, until) in [(2300, 5500), (6000, 10_700)] {
            let evidence = rollout(t0, 1200, 1300, polls_to);
            let outcome = judged(t0, &evidence, until);
            assert!(
                matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("seen only in part")),
                "{polls_to} {until}: {outcome:?}"
            );
        }
        let mut evidence = rollout(t0, 1200, 1300, 9000);
        evidence
            .fetched
            .iter_mut()
            .for_each(|f| f.incremental = true);
        let outcome = judged(t0, &evidence, 9000);
        assert!(
            matches!(outcome, Outcome::Inconclusive { .. }),
            "{outcome:?}"
        );
        let (none, times) = judge(&evidence, &[], t(t0, 9000), Duration::from_secs(5));
        assert!(times.is_empty());
        assert!(matches!(none, Outcome::Inconclusive { .. }), "{none:?}");
    }

    /// The rollout's cost begins at the new member's join: a partition it was assigned then
    /// and did not consume for 8 s, all before the old instance's SIGTERM, fails; a stall
    /// that begins after the rollout (its last exit and the deadline) is not the rollout's.
    #[test]
    fn gaps_count_from_the_join_to_the_deadline_after_the_last_exit() {
        let t0 = Instant::now();
        let mut evidence = rollout(t0, 1200, 1300, 30_000);
        // Partition 1 moved to the new member at 950, which fetched it only at 9000.
        evidence
            .assigned
            .insert(1, assign(t0, 950, &[("m-old", &[0]), ("m-new", &[1])]));
        evidence
            .fetched
            .retain(|f| !(f.partition == 1 && f.at < t(t0, 9000) && f.at >= t(t0, 900)));
        let outcome = judged(t0, &evidence, 30_000);
        let lines = violation(&outcome);
        assert!(
            lines[0].contains("orders/1 was consumed by no instance for 8400 ms"),
            "{lines:?}"
        );
        // A stall of 7 s from 8 s on, after the old one's exit (1050) and the deadline.
        let mut evidence = rollout(t0, 1200, 1300, 30_000);
        evidence
            .fetched
            .retain(|f| !(f.at > t(t0, 8000) && f.at < t(t0, 15_000)));
        let outcome = judged(t0, &evidence, 30_000);
        assert!(matches!(outcome, Outcome::Pass { .. }), "{outcome:?}");
    }

    /// Hostile: a consumer of its own in the new instance fetching the partitions its member
    /// holds, on another connection, hides whether the member consumes: inconclusive.
    #[test]
    fn two_connections_of_one_instance_on_a_partition_are_inconclusive() {
        let t0 = Instant::now();
        let mut evidence = rollout(t0, 1200, 1300, 9000);
        let mut tail = polling(t0, NEW, &[0, 1], 1100, 9000);
        tail.iter_mut().for_each(|f| f.link = 2);
        more(&mut evidence, tail);
        let outcome = judged(t0, &evidence, 9000);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("two connections")),
            "{outcome:?}"
        );
    }

    /// What makes the assignments untrustworthy (a static member, a member id from two
    /// instances, a leader's assignment not read) makes the check inconclusive; another group
    /// of the run on the same topic does not mix its owners with the service's.
    #[test]
    fn untrustworthy_assignments_are_inconclusive_and_groups_apart() {
        let t0 = Instant::now();
        let mut evidence = rollout(t0, 1200, 1300, 9000);
        evidence
            .unsure
            .push((t(t0, 10), "a member of the service is static".into()));
        let outcome = judged(t0, &evidence, 9000);
        assert!(
            matches!(outcome, Outcome::Inconclusive { .. }),
            "{outcome:?}"
        );
        let mut evidence = rollout(t0, 1200, 1300, 9000);
        let (at, mut audit) = assign(t0, 1250, &[("m-audit", &[0, 1])]);
        audit.group = "audit".into();
        evidence.assigned.insert(2, (at, audit));
        evidence
            .members
            .insert("m-audit".into(), "R.audit.1".into());
        let outcome = judged(t0, &evidence, 9000);
        assert!(matches!(outcome, Outcome::Pass { .. }), "{outcome:?}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms: Vec<Duration> = (1..=20).map(|i| Duration::from_millis(i * 10)).collect();
        assert_eq!(percentile(&ms, 50), Duration::from_millis(100));
        assert_eq!(percentile(&ms, 95), Duration::from_millis(190));
        assert_eq!(percentile(&ms, 100), Duration::from_millis(200));
        assert_eq!(percentile(&ms[..1], 50), Duration::from_millis(10));
    }
}
