//! The `external` backend: Kafka and Redis that already run (a staging cluster for a
//! pre-release soak). The harness owns neither, so it can only fault the network in front of
//! them, through the proxies.
//!
//! Kafka clients follow the addresses brokers advertise after their first request, so proxy
//! faults reach every connection only if the cluster advertises the proxy's address. When it
//! does not, `Infra::start` says so: only the bootstrap connection goes through the proxy.

use std::net::SocketAddr;

use crate::infra::{DependencyKind, InfraConfig, InfraError};

/// An existing server, reached at `upstream`.
pub(super) struct ExternalNode {
    kind: DependencyKind,
    upstream: SocketAddr,
    /// For Redis: the URL as given, to keep its credentials and database in the client URL.
    url: Option<RedisUrl>,
}

impl ExternalNode {
    pub(super) fn kind(&self) -> DependencyKind {
        self.kind
    }

    pub(super) fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The URL a client uses: the given one, pointed at the proxy.
    pub(super) fn client_url(&self, proxy: SocketAddr) -> String {
        match &self.url {
            Some(url) => format!("redis://{}{proxy}{}", url.userinfo, url.path),
            None => format!("redis://{proxy}"),
        }
    }
}

/// The parts of a `redis://` URL that matter here.
#[derive(Debug, PartialEq, Eq)]
struct RedisUrl {
    /// `user:pass@` or empty.
    userinfo: String,
    host_port: String,
    /// `/db` or empty.
    path: String,
}

fn parse_redis_url(url: &str) -> Result<RedisUrl, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| "expected a redis://host:port URL (rediss:// is not proxied)".to_owned())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    if host_port.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:6379")
    };
    Ok(RedisUrl {
        userinfo: userinfo.to_owned(),
        host_port,
        path: path.to_owned(),
    })
}

async fn resolve(kind: DependencyKind, address: &str) -> Result<SocketAddr, InfraError> {
    let failed = |reason: String| InfraError::External {
        dependency: kind,
        address: address.to_owned(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| failed(format!("cannot resolve: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| failed("resolves to no address".to_owned()))
}

/// Both external nodes, from `[infra.kafka] external` and `[infra.redis] external` (or
/// `QUIESCE_EXTERNAL_KAFKA` and `QUIESCE_EXTERNAL_REDIS`).
pub(super) async fn nodes(
    config: &InfraConfig,
) -> Result<(ExternalNode, ExternalNode), InfraError> {
    let missing = |kind: DependencyKind, key: &str, var: &str| {
        InfraError::Config(crate::infra::ConfigError::Value {
            origin: "the external backend".to_owned(),
            message: format!(
                "no {kind} address (hint: set `{key}` in [infra.{kind}] or the environment variable {var})"
            ),
        })
    };
    let kafka = config
        .kafka
        .external
        .as_deref()
        .ok_or_else(|| missing(DependencyKind::Kafka, "external", "QUIESCE_EXTERNAL_KAFKA"))?;
    let redis = config
        .redis
        .external
        .as_deref()
        .ok_or_else(|| missing(DependencyKind::Redis, "external", "QUIESCE_EXTERNAL_REDIS"))?;
    // A bootstrap list: the proxy fronts the first broker.
    let kafka_first = kafka.split(',').next().unwrap_or(kafka).trim();
    let kafka_addr = resolve(DependencyKind::Kafka, kafka_first).await?;
    let url = parse_redis_url(redis).map_err(|reason| InfraError::External {
        dependency: DependencyKind::Redis,
        address: redis.to_owned(),
        reason,
    })?;
    let redis_addr = resolve(DependencyKind::Redis, &url.host_port).await?;
    Ok((
        ExternalNode {
            kind: DependencyKind::Kafka,
            upstream: kafka_addr,
            url: None,
        },
        ExternalNode {
            kind: DependencyKind::Redis,
            upstream: redis_addr,
            url: Some(url),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_keep_credentials_and_database() {
        let url = parse_redis_url("redis://app:s3cret@cache.internal:6380/2").unwrap();
        assert_eq!(url.userinfo, "app:s3cret@");
        assert_eq!(url.host_port, "cache.internal:6380");
        assert_eq!(url.path, "/2");
        let node = ExternalNode {
            kind: DependencyKind::Redis,
            upstream: "10.0.0.1:6380".parse().unwrap(),
            url: Some(url),
        };
        assert_eq!(
            node.client_url("127.0.0.1:4000".parse().unwrap()),
            "redis://app:s3cret@127.0.0.1:4000/2"
        );
        assert_eq!(
            parse_redis_url("redis://cache").unwrap().host_port,
            "cache:6379"
        );
        assert!(parse_redis_url("rediss://cache:6379").is_err());
        assert!(parse_redis_url("redis:///0").is_err());
    }
}
