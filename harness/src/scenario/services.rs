//! A service graph: several processes, started in the order of what each depends on and
//! stopped in the reverse order (or the order the file gives), each judged on its own.
//!
//! ```toml
//! [[services]]
//! name = "worker"
//! command = ["python3", "worker.py"]
//! ready = { log = "consuming" }
//! replicas = 2                          # two members of its consumer group
//!
//! [[services]]
//! name = "api"
//! command = ["python3", "-m", "uvicorn", "api:app", "--port", "{port}"]
//! ready = { http = "http://127.0.0.1:{port}/ready" }
//! depends_on = ["worker"]               # started once every worker is ready
//! stop = { signal = "INT", kill_after_ms = 5000 }
//!
//! [stop]
//! after_ms = 2000                       # how long the graph runs once every service is ready
//! order = ["api", "worker"]             # optional; the default is the reverse start order
//! ```
//!
//! Each instance (a service's replica) is its own process group with its own
//! `QUIESCE_RUN_ID`, `QUIESCE_SERVICE`, `QUIESCE_REPLICA` and, for `{port}`, its own port.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ProcessTarget, ReadyProbe, StopSignal};

/// The most replicas a service may ask for.
pub const MAX_REPLICAS: u32 = 16;

/// One service of a graph, as a `[[services]]` entry gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Names it in the report (`worker/stops_within`) and in `depends_on`.
    pub name: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    #[serde(default = "super::default_ready")]
    pub ready: ReadyProbe,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hang: Option<String>,
    /// Started once every instance of each of these is ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// How many copies run at once (leader contention, members of one consumer group).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Its own stop signal and kill deadline; the scenario's `[stop]` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<ServiceStop>,
}

fn one() -> u32 {
    1
}

/// A service's own `stop = { signal = "INT", kill_after_ms = 5000 }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStop {
    pub signal: Option<StopSignal>,
    pub kill_after_ms: Option<u64>,
}

impl Service {
    /// The process each instance runs.
    pub fn process(&self) -> ProcessTarget {
        ProcessTarget {
            command: self.command.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            ready: self.ready.clone(),
            on_hang: self.on_hang.clone(),
        }
    }

    /// How each instance is stopped: its own signal and kill deadline over the scenario's
    /// `[stop]`, run for `after_ms` once ready.
    pub fn stop_plan(&self, stop: &super::StopPlan, after_ms: u64) -> super::StopPlan {
        let own = self.stop.as_ref();
        super::StopPlan {
            signal: own.and_then(|s| s.signal).unwrap_or(stop.signal),
            after_ms,
            kill_after_ms: own
                .and_then(|s| s.kill_after_ms)
                .unwrap_or(stop.kill_after_ms),
            order: Vec::new(),
        }
    }

    /// The name of instance `replica` in reports: the service's name alone when it has one
    /// replica, `name#2` for the second of several.
    pub fn instance_name(&self, replica: u32) -> String {
        match self.replicas {
            1 => self.name.clone(),
            _ => format!("{}#{}", self.name, replica + 1),
        }
    }
}

/// The services of a scenario, checked: names unique, dependencies known and acyclic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceGraph {
    pub services: Vec<Service>,
    /// Indices into `services`, each after everything it depends on (file order where free).
    pub start_order: Vec<usize>,
    /// Indices into `services`: `[stop] order`, or the reverse of `start_order`.
    pub stop_order: Vec<usize>,
}

/// What is wrong with a graph, and the text to find its line by.
#[derive(Debug, PartialEq, Eq)]
pub struct GraphError {
    pub message: String,
    /// A piece of the file that locates the mistake (`name = "api"`), when there is one.
    pub near: Option<String>,
}

fn err(message: String, near: Option<String>) -> GraphError {
    GraphError { message, near }
}

impl ServiceGraph {
    /// Checks `services` and orders them; `stop_order` is `[stop] order` (empty: the reverse).
    pub fn new(services: Vec<Service>, stop_order: &[String]) -> Result<ServiceGraph, GraphError> {
        let index: BTreeMap<&str, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        for (i, service) in services.iter().enumerate() {
            let near = Some(format!("\"{}\"", service.name));
            let valid = !service.name.is_empty()
                && service
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(err(
                    format!(
                        "[[services]] name `{}`: use letters, digits, `-` and `_`",
                        service.name
                    ),
                    near,
                ));
            }
            if index[service.name.as_str()] != i {
                return Err(err(
                    format!("[[services]] `{}` is named twice", service.name),
                    near,
                ));
            }
            // `{port:a-b}` reads QUIESCE_PORT_A_B: `a_b` would read the same.
            let variable = super::template::port_variable(&service.name);
            if let Some(other) = services[..i]
                .iter()
                .find(|o| super::template::port_variable(&o.name) == variable)
            {
                return Err(err(
                    format!(
                        "[[services]] `{}` and `{}` share the variable {variable} (their \
                         `{{port:...}}`): names must differ in more than case, `-` and `_`",
                        other.name, service.name
                    ),
                    near,
                ));
            }
            if service.command.is_empty() || service.command[0].is_empty() {
                return Err(err(
                    format!("[[services]] `{}` has an empty command", service.name),
                    near,
                ));
            }
            if !(1..=MAX_REPLICAS).contains(&service.replicas) {
                return Err(err(
                    format!(
                        "[[services]] `{}`: replicas = {} (1 to {MAX_REPLICAS})",
                        service.name, service.replicas
                    ),
                    Some(format!("replicas = {}", service.replicas)),
                ));
            }
            // Each instance writes in a folder named after it, `#` as `-`.
            let folders = |s: &Service| {
                (0..s.replicas.min(MAX_REPLICAS))
                    .map(|r| (s.instance_name(r), s.instance_name(r).replace('#', "-")))
                    .collect::<Vec<_>>()
            };
            for other in &services[..i] {
                for (theirs, folder) in folders(other) {
                    let clash = folders(service).into_iter().find(|(_, f)| *f == folder);
                    if let Some((ours, _)) = clash {
                        return Err(err(
                            format!(
                                "[[services]] instances `{theirs}` and `{ours}` would share \
                                 the folder `{folder}`: rename `{}`",
                                service.name
                            ),
                            near,
                        ));
                    }
                }
            }
            for dep in &service.depends_on {
                if !index.contains_key(dep.as_str()) {
                    return Err(err(
                        format!(
                            "[[services]] `{}` depends on `{dep}`, which no [[services]] entry names (known: {})",
                            service.name,
                            index.keys().copied().collect::<Vec<_>>().join(", ")
                        ),
                        Some(format!("\"{dep}\"")),
                    ));
                }
            }
        }
        if services.is_empty() {
            return Err(err("[[services]] is empty".to_owned(), None));
        }
        let start_order = start_order(&services, &index)?;
        let stop_order = match stop_order {
            [] => start_order.iter().rev().copied().collect(),
            given => {
                let mut order = Vec::new();
                for name in given {
                    let Some(&i) = index.get(name.as_str()) else {
                        return Err(err(
                            format!("[stop] order names `{name}`, which is not a service"),
                            Some(format!("\"{name}\"")),
                        ));
                    };
                    if order.contains(&i) {
                        return Err(err(
                            format!("[stop] order names `{name}` twice"),
                            Some("order".to_owned()),
                        ));
                    }
                    order.push(i);
                }
                if let Some(missing) = (0..services.len()).find(|i| !order.contains(i)) {
                    return Err(err(
                        format!(
                            "[stop] order leaves out `{}`: name every service once",
                            services[missing].name
                        ),
                        Some("order".to_owned()),
                    ));
                }
                order
            }
        };
        Ok(ServiceGraph {
            services,
            start_order,
            stop_order,
        })
    }

    /// The index of the service named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    /// Indices of the services `i` depends on.
    pub fn dependencies(&self, i: usize) -> Vec<usize> {
        self.services[i]
            .depends_on
            .iter()
            .filter_map(|d| self.services.iter().position(|s| &s.name == d))
            .collect()
    }
}

/// Kahn's order, taking the first free service in file order each time; a cycle is named
/// (`a -> b -> a`).
fn start_order(
    services: &[Service],
    index: &BTreeMap<&str, usize>,
) -> Result<Vec<usize>, GraphError> {
    let deps: Vec<Vec<usize>> = services
        .iter()
        .map(|s| s.depends_on.iter().map(|d| index[d.as_str()]).collect())
        .collect();
    let mut order = Vec::with_capacity(services.len());
    while order.len() < services.len() {
        let next = (0..services.len())
            .find(|i| !order.contains(i) && deps[*i].iter().all(|d| order.contains(d)));
        match next {
            Some(i) => order.push(i),
            None => {
                let cycle = find_cycle(&deps, &order);
                let names: Vec<&str> = cycle.iter().map(|&i| services[i].name.as_str()).collect();
                return Err(err(
                    format!(
                        "[[services]] depends_on has a cycle: {}",
                        names.join(" -> ")
                    ),
                    Some("depends_on".to_owned()),
                ));
            }
        }
    }
    Ok(order)
}

/// A cycle among the services not in `done` (each of which waits on another not in `done`):
/// walk from the first until a service repeats.
fn find_cycle(deps: &[Vec<usize>], done: &[usize]) -> Vec<usize> {
    let first = (0..deps.len()).find(|i| !done.contains(i)).unwrap_or(0);
    let mut path = vec![first];
    loop {
        let last = *path.last().unwrap_or(&first);
        let Some(&next) = deps[last].iter().find(|d| !done.contains(d)) else {
            return path;
        };
        if let Some(at) = path.iter().position(|&p| p == next) {
            let mut cycle = path.split_off(at);
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, deps: &[&str]) -> Service {
        Service {
            name: name.to_owned(),
            command: vec!["true".to_owned()],
            env: BTreeMap::new(),
            cwd: None,
            ready: ReadyProbe::Started(true),
            on_hang: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            replicas: 1,
            stop: None,
        }
    }

    fn names(graph: &ServiceGraph, order: &[usize]) -> Vec<String> {
        order
            .iter()
            .map(|&i| graph.services[i].name.clone())
            .collect()
    }

    #[test]
    fn services_start_after_what_they_depend_on_and_stop_in_reverse() {
        let graph = ServiceGraph::new(
            vec![
                service("api", &["worker", "scheduler"]),
                service("worker", &["store"]),
                service("scheduler", &[]),
                service("store", &[]),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            names(&graph, &graph.start_order),
            ["scheduler", "store", "worker", "api"]
        );
        assert_eq!(
            names(&graph, &graph.stop_order),
            ["api", "worker", "store", "scheduler"]
        );
        let given = ["worker", "api", "store", "scheduler"].map(String::from);
        let graph = ServiceGraph::new(graph.services.clone(), &given).unwrap();
        assert_eq!(names(&graph, &graph.stop_order), given);
    }

    #[test]
    fn a_cycle_is_named() {
        let e = ServiceGraph::new(
            vec![
                service("api", &["worker"]),
                service("worker", &["queue"]),
                service("queue", &["api"]),
                service("free", &[]),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "[[services]] depends_on has a cycle: api -> worker -> queue -> api"
        );
        let e = ServiceGraph::new(vec![service("solo", &["solo"])], &[]).unwrap_err();
        assert_eq!(
            e.message,
            "[[services]] depends_on has a cycle: solo -> solo"
        );
    }

    #[test]
    fn bad_graphs_are_named() {
        let cases: [(Vec<Service>, &[&str], &str); 8] = [
            (
                vec![service("a-b", &[]), service("A_b", &[])],
                &[],
                "`a-b` and `A_b` share the variable QUIESCE_PORT_A_B",
            ),
            (
                vec![
                    Service {
                        replicas: 2,
                        ..service("w", &[])
                    },
                    service("w-2", &[]),
                ],
                &[],
                "instances `w#2` and `w-2` would share the folder `w-2`",
            ),
            (
                vec![service("api", &["wroker"]), service("worker", &[])],
                &[],
                "depends on `wroker`, which no [[services]] entry names (known: api, worker)",
            ),
            (
                vec![service("api", &[]), service("api", &[])],
                &[],
                "`api` is named twice",
            ),
            (vec![service("a b", &[])], &[], "name `a b`"),
            (
                vec![service("api", &[]), service("worker", &[])],
                &["api"],
                "[stop] order leaves out `worker`",
            ),
            (
                vec![service("api", &[])],
                &["api", "api"],
                "names `api` twice",
            ),
            (vec![], &[], "[[services]] is empty"),
        ];
        for (services, order, wanted) in cases {
            let order: Vec<String> = order.iter().map(|s| s.to_string()).collect();
            let e = ServiceGraph::new(services, &order).unwrap_err();
            assert!(e.message.contains(wanted), "{} lacks {wanted}", e.message);
        }
        let mut many = service("api", &[]);
        many.replicas = 0;
        let e = ServiceGraph::new(vec![many], &[]).unwrap_err();
        assert_eq!(e.near.as_deref(), Some("replicas = 0"));
    }
}
