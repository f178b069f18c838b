//! What infrastructure to start, from a file, the environment and the command line.
//!
//! Precedence, highest first: command line, environment (`QUIESCE_*`), the `[infra]` table of
//! the file, defaults. The file is the `[infra]` table of a scenario file (or a file holding
//! only that table); unknown keys are errors, reported with file, line and column.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Default Kafka image, as the testcontainers modules use it.
pub const DEFAULT_KAFKA_IMAGE: &str = "apache/kafka-native:3.8.0";
/// Default Redis image.
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7";
/// Default seconds a dependency has to answer its protocol after it was started.
pub const DEFAULT_READY_TIMEOUT_SECS: u64 = 60;

/// Where Kafka and Redis come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `containers` when a Docker daemon answers a ping, else `local`.
    #[default]
    Auto,
    /// `redis-server` and the tansu broker as child processes.
    Local,
    /// Containers through testcontainers.
    Containers,
    /// Clusters that already run; no lifecycle control.
    External,
}

impl BackendKind {
    pub const NAMES: [&'static str; 4] = ["auto", "local", "containers", "external"];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Local => "local",
            BackendKind::Containers => "containers",
            BackendKind::External => "external",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendKind::Auto),
            "local" => Ok(BackendKind::Local),
            "containers" | "container" | "docker" => Ok(BackendKind::Containers),
            "external" => Ok(BackendKind::External),
            _ => Err(format!(
                "unknown backend `{s}` (expected one of: {})",
                BackendKind::NAMES.join(", ")
            )),
        }
    }
}

/// How a Kafka image is configured: Apache Kafka reads `KAFKA_*` environment variables, tansu
/// takes command-line flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaFlavor {
    Apache,
    Tansu,
}

impl FromStr for KafkaFlavor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "apache" => Ok(KafkaFlavor::Apache),
            "tansu" => Ok(KafkaFlavor::Tansu),
            _ => Err(format!(
                "unknown kafka flavor `{s}` (expected apache or tansu)"
            )),
        }
    }
}

impl KafkaFlavor {
    /// The flavor an image name suggests: tansu images say so in their name.
    pub fn guess(image: &str) -> Self {
        if image.to_ascii_lowercase().contains("tansu") {
            KafkaFlavor::Tansu
        } else {
            KafkaFlavor::Apache
        }
    }
}

/// Kafka settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Image for the containers backend.
    pub image: Option<String>,
    /// How that image is configured; guessed from its name when absent.
    pub flavor: Option<KafkaFlavor>,
    /// The tansu binary for the local backend.
    pub tansu: Option<PathBuf>,
    /// Bootstrap address (`host:port`) of an existing cluster, for the external backend.
    pub external: Option<String>,
    /// Where the fault proxy listens (default: a free loopback port).
    pub listen: Option<SocketAddr>,
}

/// Redis settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Image for the containers backend.
    pub image: Option<String>,
    /// The redis-server binary for the local backend.
    pub server: Option<PathBuf>,
    /// URL (`redis://[user:pass@]host:port[/db]`) of an existing server, for the external backend.
    pub external: Option<String>,
    /// Where the fault proxy listens (default: a free loopback port).
    pub listen: Option<SocketAddr>,
}

/// The `[infra]` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfraConfig {
    #[serde(default)]
    pub backend: BackendKind,
    /// Seconds each dependency has to answer its protocol once started.
    pub ready_timeout_secs: Option<u64>,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub redis: RedisConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InfraFile {
    #[serde(default)]
    infra: InfraConfig,
}

/// Bad configuration: the user can fix it. Maps to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Value { origin: String, message: String },
}

/// Reads `[infra]` from a TOML file; other top-level tables are not this module's business
/// and are rejected only if they are not known to the scenario format.
pub fn load(path: &Path) -> Result<InfraConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses `[infra]` from TOML text; `path` is only for messages.
pub fn parse(path: &Path, text: &str) -> Result<InfraConfig, ConfigError> {
    toml::from_str::<InfraFile>(text)
        .map(|file| file.infra)
        .map_err(|e| toml_error(path, text, &e))
}

/// A TOML error with 1-based line and column.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}

impl InfraConfig {
    /// Applies `QUIESCE_*` variables from `env` (a lookup, so tests need not touch the process
    /// environment).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let value = |name: &str, message: String| ConfigError::Value {
            origin: format!("environment variable {name}"),
            message,
        };
        if let Some(v) = env("QUIESCE_BACKEND") {
            self.backend = v.parse().map_err(|m| value("QUIESCE_BACKEND", m))?;
        }
        if let Some(v) = env("QUIESCE_READY_TIMEOUT_SECS") {
            self.ready_timeout_secs = Some(v.trim().parse().map_err(|_| {
                value(
                    "QUIESCE_READY_TIMEOUT_SECS",
                    format!("`{v}` is not a whole number of seconds"),
                )
            })?);
        }
        if let Some(v) = env("QUIESCE_KAFKA_IMAGE") {
            self.kafka.image = Some(v);
        }
        if let Some(v) = env("QUIESCE_KAFKA_FLAVOR") {
            self.kafka.flavor = Some(v.parse().map_err(|m| value("QUIESCE_KAFKA_FLAVOR", m))?);
        }
        if let Some(v) = env("QUIESCE_TANSU") {
            self.kafka.tansu = Some(v.into());
        }
        if let Some(v) = env("QUIESCE_EXTERNAL_KAFKA") {
            self.kafka.external = Some(v);
        }
        if let Some(v) = env("QUIESCE_KAFKA_LISTEN") {
            self.kafka.listen =
                Some(parse_listen(&v).map_err(|m| value("QUIESCE_KAFKA_LISTEN", m))?);
        }
        if let Some(v) = env("QUIESCE_REDIS_IMAGE") {
            self.redis.image = Some(v);
        }
        if let Some(v) = env("QUIESCE_REDIS_SERVER") {
            self.redis.server = Some(v.into());
        }
        if let Some(v) = env("QUIESCE_EXTERNAL_REDIS") {
            self.redis.external = Some(v);
        }
        if let Some(v) = env("QUIESCE_REDIS_LISTEN") {
            self.redis.listen =
                Some(parse_listen(&v).map_err(|m| value("QUIESCE_REDIS_LISTEN", m))?);
        }
        Ok(())
    }

    /// The ready deadline per dependency.
    pub fn ready_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.ready_timeout_secs
                .unwrap_or(DEFAULT_READY_TIMEOUT_SECS),
        )
    }

    pub fn kafka_image(&self) -> &str {
        self.kafka.image.as_deref().unwrap_or(DEFAULT_KAFKA_IMAGE)
    }

    pub fn redis_image(&self) -> &str {
        self.redis.image.as_deref().unwrap_or(DEFAULT_REDIS_IMAGE)
    }

    pub fn kafka_flavor(&self) -> KafkaFlavor {
        self.kafka
            .flavor
            .unwrap_or_else(|| KafkaFlavor::guess(self.kafka_image()))
    }
}

/// A listen address: `PORT` (on 127.0.0.1) or `IP:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not a port or an IP:PORT address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn file_then_env_precedence() {
        let mut config = parse(
            Path::new("s.toml"),
            "[infra]\nbackend = \"local\"\n[infra.redis]\nimage = \"redis:7.2\"\n",
        )
        .unwrap();
        assert_eq!(config.backend, BackendKind::Local);
        config
            .apply_env(env(&[
                ("QUIESCE_BACKEND", "containers"),
                ("QUIESCE_KAFKA_IMAGE", "quiesce-local/tansu:0.6.0"),
            ]))
            .unwrap();
        assert_eq!(config.backend, BackendKind::Containers);
        assert_eq!(config.redis_image(), "redis:7.2");
        assert_eq!(config.kafka_flavor(), KafkaFlavor::Tansu);
        assert_eq!(InfraConfig::default().kafka_image(), DEFAULT_KAFKA_IMAGE);
        assert_eq!(InfraConfig::default().kafka_flavor(), KafkaFlavor::Apache);
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse(
            Path::new("s.toml"),
            "[infra]\nbackend = \"local\"\n  redis_port = 1\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("s.toml:3:3: unknown field `redis_port`"),
            "{text}"
        );
    }

    #[test]
    fn unknown_backend_is_a_value_error() {
        let err = parse(Path::new("s.toml"), "[infra]\nbackend = \"podman\"\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("s.toml:2:11: unknown variant `podman`"),
            "{err}"
        );
        let mut config = InfraConfig::default();
        let err = config
            .apply_env(env(&[("QUIESCE_BACKEND", "podman")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable QUIESCE_BACKEND: unknown backend `podman` (expected one of: auto, local, containers, external)"
        );
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("9092").unwrap(),
            "127.0.0.1:9092".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.2:1").unwrap(),
            "127.0.0.2:1".parse().unwrap()
        );
        assert!(parse_listen("localhost:x").is_err());
    }
}
