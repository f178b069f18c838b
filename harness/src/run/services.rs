//! A service graph's lifecycle checks (`[[services]]`): every instance judged on its own, as
//! `name/check`.

use std::collections::BTreeMap;

use super::{Findings, evaluate};
use crate::scenario::{Scenario, ServiceGraph, Target};
use crate::target::TargetRun;
use crate::verdict::{CheckName, CheckResult, Outcome};

/// The scenario as one service's instance sees it: that service as the target, with its own
/// stop signal and kill deadline.
fn as_service(scenario: &Scenario, graph: &ServiceGraph, service: usize) -> Scenario {
    let spec = &graph.services[service];
    let mut one = scenario.clone();
    one.target = Target::Process(spec.process());
    one.stop = spec.stop_plan(&scenario.stop, scenario.stop.after_ms);
    one
}

/// Every instance's lifecycle checks, named by the instance; an instance never started has
/// each inconclusive with why (what it depended on is judged, and failed, on its own row).
pub(super) fn judge(
    scenario: &Scenario,
    graph: &ServiceGraph,
    run: &TargetRun,
) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let mut views = BTreeMap::new();
    for instance in &run.instances {
        let view = views
            .entry(instance.service)
            .or_insert_with(|| as_service(scenario, graph, instance.service));
        let judged: Vec<CheckResult> = match &instance.run {
            Ok(observed) => evaluate(view, observed, &Findings::default())
                .into_iter()
                .filter(|r| CheckName::LIFECYCLE.contains(&r.check))
                .collect(),
            Err(why) => view
                .enabled_checks()
                .filter(|c| CheckName::LIFECYCLE.contains(c))
                .map(|check| CheckResult::new(check, Outcome::inconclusive(why.clone())))
                .collect(),
        };
        results.extend(judged.into_iter().map(|mut r| {
            r.service = Some(instance.name.clone());
            r
        }));
    }
    results
}
