//! `takeover_within` for each service a graph's fault schedule rolls out: how long the
//! partitions of the replaced instances went unconsumed, from the Fetch and SyncGroup requests
//! on the wire (see [`crate::kafka::fetch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::kafka::fetch::{self, Evidence, Instance};
use crate::kafka::wire::{GroupEvent, GroupRequest, GroupTap};
use crate::scenario::{Action, Scenario, Target};
use crate::target::TargetRun;
use crate::verdict::{CheckName, CheckResult, Outcome};

/// What the tap saw of the run's groups, as `service` (its instances' run ids) is judged on.
/// `fetched` is the tap's, read once for the run.
fn evidence(
    groups: &GroupTap,
    fetched: &[crate::kafka::fetch::Fetched],
    names: &[&String],
    service: &BTreeSet<&str>,
) -> Evidence {
    let fetched = fetched.to_vec();
    let mut evidence = Evidence {
        untied: (fetched.iter())
            .filter(|f| f.owner.is_none())
            .map(|f| f.at)
            .collect(),
        fetched,
        ..Evidence::default()
    };
    let mut owners_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for group in names {
        let events: Vec<GroupEvent> = groups.events(group);
        let assigned = groups.assigned(group);
        for at in groups.unreadable(group) {
            evidence.unsure.push((
                at,
                format!(
                    "a leader's SyncGroup of group `{group}` carried an assignment that could not \
                     be read (not the consumer protocol's, or cut): who held what is not known \
                     from then on"
                ),
            ));
        }
        for event in &events {
            let ours = event.owner.as_deref().is_some_and(|o| service.contains(o));
            match &event.request {
                GroupRequest::Join {
                    group_instance_id: Some(id),
                    ..
                } if ours => evidence.unsure.push((
                    event.at,
                    format!(
                        "a member of the service is static (group.instance.id `{id}`): a \
                         replacement takes its id and partitions without a rebalance, so the \
                         assignments on the wire do not say which instance holds them"
                    ),
                )),
                _ => {}
            }
            if event.owner.is_none() {
                evidence.untied.push(event.at);
            }
            for member in event.request.member_ids() {
                let owners = owners_of.entry(member.to_owned()).or_default();
                if let Some(owner) = event.owner.as_ref().filter(|o| !o.is_empty())
                    && owners.insert(owner.clone())
                    && owners.len() == 2
                    && ours
                {
                    evidence.unsure.push((
                        event.at,
                        format!("member `{member}` spoke from two instances' processes"),
                    ));
                }
            }
        }
        evidence.assigned.extend(assigned);
    }
    evidence.members = (owners_of.into_iter())
        .map(|(member, owners)| {
            let owner = match owners.len() {
                1 => owners.into_iter().next().unwrap_or_default(),
                _ => String::new(),
            };
            (member, owner)
        })
        .collect();
    evidence.assigned.sort_by_key(|(at, _)| *at);
    evidence.untied.sort();
    evidence.unsure.sort_by_key(|(at, _)| *at);
    evidence
}

/// One row per service the schedule rolls out, named after the service; and every
/// partition move's takeover time, in ms, of the rows that were decided.
pub(super) fn rows(
    scenario: &Scenario,
    observed: &TargetRun,
    groups: &GroupTap,
) -> (Vec<CheckResult>, Vec<u64>) {
    let (Target::Services(graph), Some(kafka)) = (&scenario.target, &scenario.kafka) else {
        return Default::default();
    };
    if !scenario.judges_takeover() {
        return Default::default();
    }
    let deadline = Duration::from_millis(
        (scenario.checks.takeover_within.as_ref())
            .map_or_else(Default::default, |c| c.params.clone())
            .deadline_ms,
    );
    let rolled: BTreeSet<&str> = (scenario.faults.iter())
        .filter(|f| f.action == Action::Rollout)
        .filter_map(|f| f.service.as_deref())
        .collect();
    let names: Vec<&String> = std::iter::once(&kafka.group)
        .chain(kafka.via.iter().map(|hop| &hop.group))
        .collect();
    let (fetched, full) = groups.fetched();
    let mut rows = Vec::new();
    let mut takeovers = Vec::new();
    for name in rolled {
        let Some(s) = graph.services.iter().position(|x| x.name == name) else {
            continue;
        };
        let sent = |run: &TargetRun| run.stop_sent_at.map(|d| run.started_at + d);
        let instances: Vec<Instance> = (observed.instances.iter())
            .filter(|i| i.service == s)
            .filter_map(|i| {
                let run = i.run.as_ref().ok()?;
                Some(Instance {
                    name: &i.name,
                    run_id: &i.run_id,
                    started: run.started_at,
                    stop_sent: sent(run),
                    exited: sent(run).zip(run.stopped_after).map(|(s, d)| s + d),
                    rolled_out: i.rolled_out,
                    replacement: i.incarnation > 1,
                })
            })
            .collect();
        // The service's own stop (of the instances no rollout replaced) ends the watch.
        let until = (instances.iter())
            .filter(|i| !i.rolled_out)
            .filter_map(|i| i.stop_sent)
            .min()
            .unwrap_or_else(Instant::now);
        let outcome = match full {
            Some(at) if at <= until => Outcome::inconclusive(format!(
                "past {} partition fetches the tap kept no more",
                crate::kafka::wire::MAX_FETCHED
            )),
            _ => {
                let service: BTreeSet<&str> = instances.iter().map(|i| i.run_id).collect();
                let evidence = evidence(groups, &fetched, &names, &service);
                let (outcome, times) = fetch::judge(&evidence, &instances, until, deadline);
                takeovers.extend(times.iter().map(|t| t.as_millis() as u64));
                outcome
            }
        };
        rows.push(CheckResult {
            check: CheckName::TakeoverWithin,
            service: Some(name.to_owned()),
            outcome,
        });
    }
    (rows, takeovers)
}
