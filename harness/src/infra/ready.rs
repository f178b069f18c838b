//! Readiness: a dependency is ready when it answers its protocol, not when a port is open.
//!
//! Redis must answer `PING`. Kafka must answer `ApiVersions` and then a `Metadata` request; the
//! metadata also says which address the broker advertises, which must be the proxy's, or
//! clients would bypass the proxy (and its faults) after their first request.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One probe attempt's budget; the caller retries until its own deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a probe did not get a healthy answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {ATTEMPT_TIMEOUT:?}")]
    Timeout { addr: SocketAddr },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} answered, but not as expected: {detail}")]
    Protocol { addr: SocketAddr, detail: String },
}

/// A broker as the cluster advertises it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AdvertisedBroker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl AdvertisedBroker {
    /// `host:port`, an IPv6 host in brackets (`[::1]:9092`), as a socket address prints, so
    /// it compares equal to the proxy's address.
    pub fn address(&self) -> String {
        match self.host.contains(':') && !self.host.starts_with('[') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

/// What a Kafka probe learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaReady {
    /// The brokers in the metadata; `None` when no Metadata version both sides speak
    /// (the broker answered ApiVersions, so it is up, but its advertised address is unknown).
    pub brokers: Option<Vec<AdvertisedBroker>>,
}

async fn with_timeout<T>(
    addr: SocketAddr,
    fut: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(ATTEMPT_TIMEOUT, fut)
        .await
        .unwrap_or(Err(ProbeError::Timeout { addr }))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })
}

/// Sends `PING`; `+PONG` is ready, and so is `-NOAUTH` (the server answers; the client will
/// authenticate). `-LOADING` and anything else is not.
pub async fn redis_ping(addr: SocketAddr) -> Result<(), ProbeError> {
    with_timeout(addr, async {
        let mut stream = connect(addr).await?;
        let io = |source| ProbeError::Io { addr, source };
        stream
            .write_all(b"*1\r\n$4\r\nPING\r\n")
            .await
            .map_err(io)?;
        let mut reply = Vec::with_capacity(64);
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") && reply.len() < 512 {
            if stream.read(&mut byte).await.map_err(io)? == 0 {
                break;
            }
            reply.push(byte[0]);
        }
        let reply = String::from_utf8_lossy(&reply).trim_end().to_owned();
        if reply == "+PONG" || reply.starts_with("-NOAUTH") {
            Ok(())
        } else {
            Err(ProbeError::Protocol {
                addr,
                detail: format!("PING got {reply:?}"),
            })
        }
    })
    .await
}

const API_METADATA: i16 = 3;
const API_VERSIONS: i16 = 18;

/// Asks ApiVersions, then Metadata in the highest non-flexible version both sides speak.
pub async fn kafka_metadata(addr: SocketAddr) -> Result<KafkaReady, ProbeError> {
    with_timeout(addr, async {
        let mut stream = connect(addr).await?;
        let versions = round_trip(&mut stream, addr, API_VERSIONS, 0, 1, &[]).await?;
        let metadata_range = parse_api_versions(addr, versions)?;
        let Some(version) = metadata_range.and_then(|(min, max)| {
            let (lo, hi) = (min.max(1), max.min(8));
            (lo <= hi).then_some(hi)
        }) else {
            return Ok(KafkaReady { brokers: None });
        };
        let mut body = BytesMut::new();
        body.put_i32(-1); // topics: null = all (v1+)
        if version >= 4 {
            body.put_u8(0); // allow_auto_topic_creation
        }
        if version >= 8 {
            body.put_u8(0); // include_cluster_authorized_operations
            body.put_u8(0); // include_topic_authorized_operations
        }
        let reply = round_trip(&mut stream, addr, API_METADATA, version, 2, &body).await?;
        let brokers = parse_metadata_brokers(addr, version, reply)?;
        Ok(KafkaReady {
            brokers: Some(brokers),
        })
    })
    .await
}

/// Writes one request (header v1) and reads its response body (after the correlation id).
async fn round_trip(
    stream: &mut TcpStream,
    addr: SocketAddr,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    body: &[u8],
) -> Result<BytesMut, ProbeError> {
    let io = |source| ProbeError::Io { addr, source };
    const CLIENT_ID: &[u8] = b"quiesce-probe";
    let mut request = BytesMut::new();
    let size = 2 + 2 + 4 + 2 + CLIENT_ID.len() + body.len();
    request.put_i32(size as i32);
    request.put_i16(api_key);
    request.put_i16(api_version);
    request.put_i32(correlation_id);
    request.put_i16(CLIENT_ID.len() as i16);
    request.put_slice(CLIENT_ID);
    request.put_slice(body);
    stream.write_all(&request).await.map_err(io)?;
    let size = stream.read_i32().await.map_err(io)?;
    if !(4..=64 * 1024 * 1024).contains(&size) {
        return Err(ProbeError::Protocol {
            addr,
            detail: format!("response size {size}"),
        });
    }
    let mut response = BytesMut::zeroed(size as usize);
    stream.read_exact(&mut response).await.map_err(io)?;
    let got = response.get_i32();
    if got != correlation_id {
        return Err(ProbeError::Protocol {
            addr,
            detail: format!("correlation id {got}, expected {correlation_id}"),
        });
    }
    Ok(response)
}

fn short(addr: SocketAddr, what: &str) -> ProbeError {
    ProbeError::Protocol {
        addr,
        detail: format!("response ends inside {what}"),
    }
}

/// Returns the Metadata version range, if the broker lists it.
fn parse_api_versions(
    addr: SocketAddr,
    mut body: BytesMut,
) -> Result<Option<(i16, i16)>, ProbeError> {
    if body.remaining() < 6 {
        return Err(short(addr, "ApiVersions"));
    }
    let error = body.get_i16();
    if error != 0 {
        return Err(ProbeError::Protocol {
            addr,
            detail: format!("ApiVersions error code {error}"),
        });
    }
    let count = body.get_i32();
    let mut metadata = None;
    for _ in 0..count.max(0) {
        if body.remaining() < 6 {
            return Err(short(addr, "ApiVersions"));
        }
        let (key, min, max) = (body.get_i16(), body.get_i16(), body.get_i16());
        if key == API_METADATA {
            metadata = Some((min, max));
        }
    }
    Ok(metadata)
}

fn get_string(addr: SocketAddr, body: &mut BytesMut) -> Result<Option<String>, ProbeError> {
    if body.remaining() < 2 {
        return Err(short(addr, "a string"));
    }
    let len = body.get_i16();
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if body.remaining() < len {
        return Err(short(addr, "a string"));
    }
    let bytes = body.split_to(len);
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn parse_metadata_brokers(
    addr: SocketAddr,
    version: i16,
    mut body: BytesMut,
) -> Result<Vec<AdvertisedBroker>, ProbeError> {
    if version >= 3 {
        if body.remaining() < 4 {
            return Err(short(addr, "Metadata"));
        }
        body.advance(4); // throttle_time_ms
    }
    if body.remaining() < 4 {
        return Err(short(addr, "Metadata"));
    }
    let count = body.get_i32();
    let mut brokers = Vec::new();
    for _ in 0..count.max(0) {
        if body.remaining() < 4 {
            return Err(short(addr, "Metadata brokers"));
        }
        let node_id = body.get_i32();
        let host = get_string(addr, &mut body)?.unwrap_or_default();
        if body.remaining() < 4 {
            return Err(short(addr, "Metadata brokers"));
        }
        let port = body.get_i32();
        let _rack = get_string(addr, &mut body)?;
        brokers.push(AdvertisedBroker {
            node_id,
            host,
            port,
        });
    }
    Ok(brokers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection fake that answers PING with `reply`.
    async fn fake_redis(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
        });
        addr
    }

    #[tokio::test]
    async fn redis_ping_accepts_pong_and_noauth_only() {
        assert!(redis_ping(fake_redis(b"+PONG\r\n").await).await.is_ok());
        assert!(
            redis_ping(fake_redis(b"-NOAUTH Authentication required.\r\n").await)
                .await
                .is_ok()
        );
        let loading = redis_ping(fake_redis(b"-LOADING Redis is loading\r\n").await).await;
        assert!(
            matches!(loading, Err(ProbeError::Protocol { .. })),
            "{loading:?}"
        );
    }

    #[tokio::test]
    async fn closed_port_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(matches!(
            redis_ping(addr).await,
            Err(ProbeError::Connect { .. })
        ));
        assert!(matches!(
            kafka_metadata(addr).await,
            Err(ProbeError::Connect { .. })
        ));
    }

    #[test]
    fn metadata_v1_brokers_parse() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut body = BytesMut::new();
        body.put_i32(1);
        body.put_i32(7);
        body.put_i16(9);
        body.put_slice(b"127.0.0.1");
        body.put_i32(19092);
        body.put_i16(-1);
        body.put_i32(7); // controller id, ignored
        let brokers = parse_metadata_brokers(addr, 1, body).unwrap();
        assert_eq!(brokers[0].address(), "127.0.0.1:19092");
        assert_eq!(brokers[0].node_id, 7);
        let truncated = parse_metadata_brokers(addr, 1, BytesMut::from(&[0u8, 0, 0, 1, 0][..]));
        assert!(truncated.is_err());
    }
}
