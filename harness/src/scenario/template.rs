//! `{placeholders}` in a target's command and environment: how a service runs unchanged, with
//! its own variable names, on the endpoints and names quiesce gives each run.
//!
//! ```toml
//! [target]
//! command = ["python3", "-m", "app", "--port", "{port}"]
//! env = { KAFKA_BOOTSTRAP_SERVERS = "{kafka}", REDIS_URL = "{redis}", GROUP_ID = "{group}" }
//! ```
//!
//! Every placeholder stands for one of the `QUIESCE_*` values the target also gets in its
//! environment, so both ways of reading them always agree. `{{` and `}}` are a literal brace.
//! A placeholder quiesce does not know, or one whose table the scenario lacks (`{group}`
//! without `[kafka]`), is an error when the file is read, naming the file, line and placeholder.

use std::collections::BTreeMap;

/// A placeholder: its name, the variable whose value it takes, what it is, and which table
/// gives it a value (`None`: every run has one).
pub struct Placeholder {
    pub name: &'static str,
    pub variable: &'static str,
    pub what: &'static str,
    pub needs: Option<&'static str>,
}

/// Every placeholder, in the order the docs list them.
pub const PLACEHOLDERS: [Placeholder; 16] = [
    Placeholder {
        name: "kafka",
        variable: "QUIESCE_KAFKA_BOOTSTRAP",
        what: "the Kafka bootstrap address, host:port (the fault proxy's)",
        needs: None,
    },
    Placeholder {
        name: "kafka_host",
        variable: "QUIESCE_KAFKA_HOST",
        what: "its host",
        needs: None,
    },
    Placeholder {
        name: "kafka_port",
        variable: "QUIESCE_KAFKA_PORT",
        what: "its port",
        needs: None,
    },
    Placeholder {
        name: "redis",
        variable: "QUIESCE_REDIS_URL",
        what: "the Redis URL, redis://host:port (the fault proxy's)",
        needs: None,
    },
    Placeholder {
        name: "redis_host",
        variable: "QUIESCE_REDIS_HOST",
        what: "its host",
        needs: None,
    },
    Placeholder {
        name: "redis_port",
        variable: "QUIESCE_REDIS_PORT",
        what: "its port",
        needs: None,
    },
    Placeholder {
        name: "port",
        variable: "QUIESCE_HTTP_PORT",
        what: "a free loopback port for the target's HTTP endpoints",
        needs: None,
    },
    Placeholder {
        name: "run_id",
        variable: "QUIESCE_RUN_ID",
        what: "an id unique to this run (and to each start of the target)",
        needs: None,
    },
    Placeholder {
        name: "out_dir",
        variable: "QUIESCE_OUT_DIR",
        what: "this run's folder (its logs, its report): where a target may write files of its own",
        needs: None,
    },
    Placeholder {
        name: "probe_file",
        variable: "QUIESCE_PROBE_FILE",
        what: "where a target-side probe writes what was alive at the end",
        needs: None,
    },
    Placeholder {
        name: "input_topic",
        variable: "QUIESCE_KAFKA_INPUT_TOPIC",
        what: "the topic the harness produces to",
        needs: Some("kafka"),
    },
    Placeholder {
        name: "output_topic",
        variable: "QUIESCE_KAFKA_OUTPUT_TOPIC",
        what: "the topic the harness reads outputs from",
        needs: Some("kafka"),
    },
    Placeholder {
        name: "group",
        variable: "QUIESCE_KAFKA_GROUP",
        what: "the consumer group whose commits are judged",
        needs: Some("kafka"),
    },
    Placeholder {
        name: "instance",
        variable: "QUIESCE_INSTANCE",
        what: "`primary`, or `standby` for the second instance a leader scenario starts; in a service graph, the instance's name (`scheduler#2`)",
        needs: Some("redis"),
    },
    Placeholder {
        name: "leader_key",
        variable: "QUIESCE_REDIS_LEADER_KEY",
        what: "the Redis key of the leader lock",
        needs: Some("redis"),
    },
    Placeholder {
        name: "job_log",
        variable: "QUIESCE_REDIS_JOB_LOG",
        what: "the Redis list of leader-only job runs",
        needs: Some("redis.job_log"),
    },
];

/// A placeholder that cannot be filled.
#[derive(Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// `{name}` is not a placeholder quiesce knows.
    Unknown(String),
    /// `{name}` needs a table the scenario does not have.
    NeedsTable { name: String, table: &'static str },
    /// A `{` without its `}`, or a lone `}`.
    Unbalanced,
    /// `{port:NAME}` names no service of the graph.
    NoService(String),
    /// A placeholder a graph's ready URL does not fill (it takes ports alone).
    NotInReady(String),
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Unknown(name) => {
                let known: Vec<String> = PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{}}}", p.name))
                    .collect();
                write!(
                    f,
                    "unknown placeholder `{{{name}}}` (known: {}; `{{{{` and `}}}}` are literal braces)",
                    known.join(", ")
                )
            }
            TemplateError::NeedsTable { name, table } if table.contains('.') => {
                let (table, key) = table.split_once('.').unwrap_or_default();
                write!(
                    f,
                    "placeholder `{{{name}}}` has a value only with [{table}] {key} set (hint: \
                     add `{key} = ...` to [{table}])"
                )
            }
            TemplateError::NeedsTable { name, table } => write!(
                f,
                "placeholder `{{{name}}}` has a value only with a [{table}] table (hint: add `[{table}]`)"
            ),
            TemplateError::Unbalanced => f.write_str(
                "a `{` without its `}` (or a lone `}`): write `{{` and `}}` for literal braces",
            ),
            TemplateError::NotInReady(name) => write!(
                f,
                "placeholder `{{{name}}}` has no value in a ready URL, which takes `{{port}}` and \
                 `{{port:NAME}}`"
            ),
            TemplateError::NoService(name) => write!(
                f,
                "placeholder `{{port:{name}}}` is the port of a [[services]] entry, and there is \
                 none named `{name}`"
            ),
        }
    }
}

/// Each piece of `text`: literal text, or a placeholder's name.
fn pieces(text: &str) -> Result<Vec<(bool, String)>, TemplateError> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        // `{port:api-gw}`: a service's name after the colon.
                        Some(c) if c.is_ascii_alphanumeric() || "_:-".contains(c) => name.push(c),
                        _ => return Err(TemplateError::Unbalanced),
                    }
                }
                out.push((false, std::mem::take(&mut literal)));
                out.push((true, name));
            }
            '}' => return Err(TemplateError::Unbalanced),
            c => literal.push(c),
        }
    }
    out.push((false, literal));
    Ok(out)
}

/// The variable that holds the port of service `name`'s first instance, in a graph: what
/// `{port:NAME}` stands for.
pub fn port_variable(name: &str) -> String {
    format!(
        "QUIESCE_PORT_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Checks every placeholder of `text` against the tables the scenario has (`kafka`, `redis`,
/// and `service:NAME` for each service of a graph).
pub fn check(text: &str, tables: &[&str]) -> Result<(), TemplateError> {
    for (is_name, name) in pieces(text)? {
        if !is_name {
            continue;
        }
        if let Some(service) = name.strip_prefix("port:") {
            if !tables.contains(&format!("service:{service}").as_str()) {
                return Err(TemplateError::NoService(service.to_owned()));
            }
            continue;
        }
        let Some(known) = PLACEHOLDERS.iter().find(|p| p.name == name) else {
            return Err(TemplateError::Unknown(name));
        };
        if let Some(table) = known.needs
            && !tables.contains(&table)
        {
            return Err(TemplateError::NeedsTable { name, table });
        }
    }
    Ok(())
}

/// Checks that every placeholder of `text` is one of `allowed` (a template of its own, such as
/// `[kafka] input_value`).
pub fn check_among(text: &str, allowed: &[&str]) -> Result<(), String> {
    let pieces = pieces(text).map_err(|e| e.to_string())?;
    for (is_name, name) in pieces {
        if is_name && !allowed.contains(&name.as_str()) {
            let known: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
            return Err(format!(
                "unknown placeholder `{{{name}}}` (known: {}; `{{{{` and `}}}}` are literal braces)",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// `text` with each placeholder named in `values` filled in, by name.
pub fn fill_with(text: &str, values: &[(&str, &str)]) -> String {
    fill_by(text, |name| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    })
}

/// `text` with each placeholder `value` knows filled in; the others stay as written.
fn fill_by(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let Ok(pieces) = pieces(text) else {
        return text.to_owned();
    };
    pieces
        .into_iter()
        .map(|(is_name, piece)| match is_name {
            true => value(&piece).unwrap_or_else(|| format!("{{{piece}}}")),
            false => piece,
        })
        .collect()
}

/// The values of one start of a target: each placeholder's, from the variables it gets.
/// `env` is what the run gives the target (`QUIESCE_*`, later entries winning).
pub fn values(env: &[(String, String)]) -> BTreeMap<&'static str, String> {
    let by_var: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut values = BTreeMap::new();
    for p in &PLACEHOLDERS {
        if let Some(v) = by_var.get(p.variable) {
            values.insert(p.name, (*v).to_owned());
        }
    }
    let split = |addr: &str| -> Option<(String, String)> {
        let hostport = addr.rsplit("://").next()?.trim_end_matches('/');
        let (host, port) = hostport.rsplit_once(':')?;
        Some((host.trim_matches(['[', ']']).to_owned(), port.to_owned()))
    };
    for (from, host, port) in [
        ("kafka", "kafka_host", "kafka_port"),
        ("redis", "redis_host", "redis_port"),
    ] {
        if let Some((h, p)) = values.get(from).and_then(|a| split(a)) {
            values.entry(host).or_insert(h);
            values.entry(port).or_insert(p);
        }
    }
    values
}

/// `text` with every placeholder filled from `values`. One without a value stays as written:
/// [`check`] has refused those when the file was read.
pub fn fill(text: &str, values: &BTreeMap<&'static str, String>) -> String {
    fill_by(text, |name| values.get(name).cloned())
}

/// The variables every placeholder has: what [`values`] reads, with the host and port
/// halves of the endpoints added, for the target's environment too.
pub fn derived_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let values = values(env);
    PLACEHOLDERS
        .iter()
        .filter(|p| p.name.ends_with("_host") || p.name.ends_with("_port"))
        .filter_map(|p| Some((p.variable.to_owned(), values.get(p.name)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("QUIESCE_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            ("QUIESCE_REDIS_URL", "redis://127.0.0.1:6390"),
            ("QUIESCE_KAFKA_GROUP", "orders"),
            ("QUIESCE_HTTP_PORT", "8123"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    }

    #[test]
    fn fills_names_endpoints_and_their_halves() {
        let values = values(&env());
        assert_eq!(fill("{kafka}", &values), "127.0.0.1:9092");
        assert_eq!(
            fill(
                "http://{redis_host}:{redis_port}/x?g={group}&p={port}",
                &values
            ),
            "http://127.0.0.1:6390/x?g=orders&p=8123"
        );
        assert_eq!(fill("{{literal}} {kafka_port}", &values), "{literal} 9092");
        assert_eq!(fill("no placeholders", &values), "no placeholders");
        let derived = derived_env(&env());
        assert!(
            derived.contains(&("QUIESCE_REDIS_PORT".into(), "6390".into())),
            "{derived:?}"
        );
    }

    #[test]
    fn unknown_placeholders_and_missing_tables_are_named() {
        assert_eq!(check("{kafka} {port}", &[]), Ok(()));
        assert_eq!(
            check("{kafak}", &["kafka"]),
            Err(TemplateError::Unknown("kafak".into()))
        );
        assert_eq!(
            check("{group}", &["redis"]),
            Err(TemplateError::NeedsTable {
                name: "group".into(),
                table: "kafka"
            })
        );
        assert_eq!(check("{group}", &["kafka"]), Ok(()));
        for bad in ["{kafka", "kafka}", "{a b}"] {
            assert_eq!(check(bad, &[]), Err(TemplateError::Unbalanced), "{bad}");
        }
        assert_eq!(check("{port:api-gw}", &["service:api-gw"]), Ok(()));
        assert_eq!(
            check("{port:store}", &["service:api"]),
            Err(TemplateError::NoService("store".into()))
        );
        let message = TemplateError::Unknown("kafak".into()).to_string();
        assert!(
            message.starts_with("unknown placeholder `{kafak}` (known: {kafka},"),
            "{message}"
        );
    }
}

/// Checks the placeholders of `scenario`'s target (its command and environment values).
/// The error names where (`[target] command[2]`, `[target] env.PORT`), the offending text (to
/// find its line in the file) and what is wrong.
pub fn check_target(scenario: &super::Scenario) -> Result<(), (String, String, TemplateError)> {
    let targets: Vec<(String, super::ProcessTarget)> = match &scenario.target {
        super::Target::Process(target) => vec![("[target]".to_owned(), target.clone())],
        super::Target::Services(graph) => graph
            .services
            .iter()
            .map(|s| (format!("[[services]] `{}`", s.name), s.process()))
            .collect(),
        super::Target::Graph(_) => return Ok(()),
    };
    let mut tables = Vec::new();
    if scenario.kafka.is_some() {
        tables.push("kafka".to_owned());
    }
    if let Some(redis) = &scenario.redis {
        tables.push("redis".to_owned());
        if redis.job_log.is_some() {
            tables.push("redis.job_log".to_owned());
        }
    }
    if let super::Target::Services(graph) = &scenario.target {
        tables.extend(graph.services.iter().map(|s| format!("service:{}", s.name)));
    }
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    for (table, target) in &targets {
        let places = target
            .command
            .iter()
            .enumerate()
            .map(|(i, arg)| (format!("{table} command[{i}]"), arg))
            .chain(
                target
                    .env
                    .iter()
                    .map(|(key, value)| (format!("{table} env.{key}"), value)),
            );
        for (place, text) in places {
            check(text, &tables).map_err(|e| (place, text.clone(), e))?;
        }
        // A graph's ready URL is filled with `{port}` and `{port:NAME}` alone.
        if let (
            super::Target::Services(_),
            super::ReadyProbe::Http(url) | super::ReadyProbe::Tcp(url),
        ) = (&scenario.target, &target.ready)
        {
            let ports: Vec<&str> = tables
                .iter()
                .copied()
                .filter(|t| t.starts_with("service:"))
                .collect();
            let place = format!("{table} ready");
            for (is_name, name) in pieces(url).map_err(|e| (place.clone(), url.clone(), e))? {
                if is_name && name != "port" {
                    check(&format!("{{{name}}}"), &ports)
                        .and_then(|()| match name.starts_with("port:") {
                            true => Ok(()),
                            false => Err(TemplateError::NotInReady(name.clone())),
                        })
                        .map_err(|e| (place.clone(), url.clone(), e))?;
                }
            }
        }
    }
    Ok(())
}

/// Where `needle` first stands in `text`, as 1-based line and column.
pub fn line_of(text: &str, needle: &str) -> Option<(usize, usize)> {
    Some(position(text, text.find(needle)?))
}

/// The 1-based line and column of byte `at` of `text`.
fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = at - before.rfind('\n').map_or(0, |nl| nl + 1) + 1;
    (line, column)
}

/// Where `key` of `[table]` is set in `text` (`key = ...` or `key.field = ...` on a line of
/// its own, or a `[table.key]` header), as 1-based line and column.
pub fn line_of_key(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let pattern = format!(
        r"(?m)^[ \t]*(?:\[{table}\.{key}\]|{key}(?:\.[A-Za-z_]+)?[ \t]*=)",
        table = regex::escape(table),
        key = regex::escape(key)
    );
    let at = regex::Regex::new(&pattern).ok()?.find(text)?;
    let indent = at.as_str().len() - at.as_str().trim_start().len();
    Some(position(text, at.start() + indent))
}

/// The command line and environment of one start of `target`, placeholders filled. `run` is
/// what the run gives the target (`QUIESCE_*`, its run id and probe file included); the target
/// gets its own `env` first, then `run` over it, then the endpoints' host and port halves.
pub fn command_and_env(
    target: &super::ProcessTarget,
    run: &[(String, String)],
) -> (Vec<String>, Vec<(String, String)>) {
    let mut variables = run.to_vec();
    variables.extend(derived_env(run));
    let values = values(&variables);
    // `{port:store}`: another service's port, from the variable the graph gives it.
    let value = |name: &str| {
        values.get(name).cloned().or_else(|| {
            let variable = port_variable(name.strip_prefix("port:")?);
            let (_, v) = variables.iter().rev().find(|(k, _)| *k == variable)?;
            Some(v.clone())
        })
    };
    let command = target.command.iter().map(|a| fill_by(a, value)).collect();
    let env = target
        .env
        .iter()
        .map(|(k, v)| (k.clone(), fill_by(v, value)))
        .chain(variables.iter().cloned())
        .collect();
    (command, env)
}

#[cfg(test)]
mod file_tests {
    use std::path::Path;

    use crate::scenario::Scenario;

    /// A wrapper script once had to rename quiesce's variables into the service's own.
    #[test]
    fn a_bad_placeholder_is_named_with_its_file_and_line() {
        let text = "name = \"s\"\n[target]\ncommand = [\"svc\", \"--port\", \"{port}\"]\n\
                    env = { BROKERS = \"{kafak}\" }\n";
        let err = Scenario::parse(Path::new("svc.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("svc.toml:4:20: [target] env.BROKERS: unknown placeholder `{kafak}`"),
            "{err}"
        );
        let text = "[target]\ncommand = [\"svc\", \"--group\", \"{group}\"]\n";
        let err = Scenario::parse(Path::new("svc.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("svc.toml:2:31: [target] command[2]: placeholder `{group}` has a value only with a [kafka] table"),
            "{err}"
        );
        let ok = "[target]\ncommand = [\"svc\", \"--port\", \"{port}\"]\n";
        let scenario = Scenario::parse(Path::new("svc.toml"), ok).unwrap();
        assert!(
            scenario.needs_port(),
            "{{port}} in the command asks for a port"
        );
    }
}

/// The placeholder names `text` uses, in order (none where it does not parse).
pub fn names(text: &str) -> Vec<String> {
    pieces(text)
        .map(|pieces| {
            pieces
                .into_iter()
                .filter_map(|(is_name, name)| is_name.then_some(name))
                .collect()
        })
        .unwrap_or_default()
}
