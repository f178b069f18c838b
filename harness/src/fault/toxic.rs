//! Toxics: what a [`FaultProxy`](super::FaultProxy) does to the bytes it forwards.
//!
//! The names, attributes and JSON shape are Toxiproxy's, so a schedule written for Toxiproxy
//! means the same thing here: `{"name": "lag", "type": "latency", "stream": "downstream",
//! "toxicity": 1.0, "attributes": {"latency": 200, "jitter": 20}}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which direction of a connection a toxic acts on, in Toxiproxy's words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client to dependency (requests).
    Upstream,
    /// Dependency to client (responses). Toxiproxy's default, and ours.
    #[default]
    Downstream,
}

impl Stream {
    /// The Toxiproxy name of the stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// The fault itself, with Toxiproxy's attribute names and units (milliseconds, KB/s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "attributes", rename_all = "snake_case")]
pub enum ToxicKind {
    /// Delay every chunk by `latency` ms, plus or minus up to `jitter` ms.
    Latency {
        latency: u64,
        #[serde(default)]
        jitter: u64,
    },
    /// Forward nothing. After `timeout` ms the connection is closed; with 0 it stays open and
    /// silent (a blackhole) until the toxic is removed. Data sent meanwhile is dropped.
    Timeout { timeout: u64 },
    /// Reset the connection (TCP RST, "connection reset by peer") `timeout` ms after the first
    /// data that meets the toxic; that data is dropped.
    ResetPeer {
        #[serde(default)]
        timeout: u64,
    },
    /// Limit the stream to `rate` KB/s (1 KB = 1000 bytes, as in Toxiproxy).
    Bandwidth { rate: u64 },
}

impl ToxicKind {
    /// The Toxiproxy type name, as used in default toxic names.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Bandwidth { .. } => "bandwidth",
        }
    }
}

fn full_toxicity() -> f32 {
    1.0
}

/// A named toxic on one stream of a proxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Toxic {
    /// Unique within its proxy; defaults to `<type>_<stream>` as in Toxiproxy.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub stream: Stream,
    /// The probability, from 0 to 1, that a given connection is affected.
    #[serde(default = "full_toxicity")]
    pub toxicity: f32,
    #[serde(flatten)]
    pub kind: ToxicKind,
}

impl Toxic {
    /// A toxic on the downstream with full toxicity and the default name.
    pub fn new(kind: ToxicKind) -> Self {
        Self::on(Stream::Downstream, kind)
    }

    /// A toxic on `stream` with full toxicity and the default name.
    pub fn on(stream: Stream, kind: ToxicKind) -> Self {
        let name = format!("{}_{}", kind.type_name(), stream.as_str());
        Toxic {
            name,
            stream,
            toxicity: 1.0,
            kind,
        }
    }

    /// Renames the toxic.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the share of connections affected (0 to 1).
    pub fn with_toxicity(mut self, toxicity: f32) -> Self {
        self.toxicity = toxicity;
        self
    }

    /// Fills the default name and checks the attributes.
    pub(crate) fn normalized(mut self) -> Result<Self, String> {
        if self.name.is_empty() {
            self.name = format!("{}_{}", self.kind.type_name(), self.stream.as_str());
        }
        if !(0.0..=1.0).contains(&self.toxicity) || self.toxicity.is_nan() {
            return Err(format!(
                "toxicity of `{}` is {}, expected a number from 0 to 1",
                self.name, self.toxicity
            ));
        }
        if let ToxicKind::Bandwidth { rate: 0 } = self.kind {
            return Err(format!(
                "bandwidth toxic `{}` has rate 0 (hint: use a `timeout` toxic to stop all data)",
                self.name
            ));
        }
        Ok(self)
    }
}

/// The toxics that apply to one stream of one connection at one moment.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct StreamEffects {
    pub latency: Option<(Duration, Duration)>,
    /// `Some(None)`: blackhole; `Some(Some(d))`: close the connection `d` after activation.
    pub timeout: Option<Option<Duration>>,
    pub reset_after: Option<Duration>,
    /// Bytes per second.
    pub bandwidth: Option<u64>,
}

/// Decides, deterministically, whether a toxic of `toxicity` applies to a connection.
///
/// Toxiproxy rolls the dice once per connection; hashing the ids keeps that property without
/// per-connection state.
pub(crate) fn applies(toxicity: f32, link_id: u64, toxic_id: u64) -> bool {
    if toxicity >= 1.0 {
        return true;
    }
    if toxicity <= 0.0 {
        return false;
    }
    // SplitMix64 of the pair: well spread, and the same answer every time it is asked.
    let mut z = link_id
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(toxic_id);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) < f64::from(toxicity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxiproxy_json_round_trips() {
        let json = r#"{"name":"lag","type":"latency","stream":"upstream","toxicity":0.5,
                       "attributes":{"latency":200,"jitter":20}}"#;
        let toxic: Toxic = serde_json::from_str(json).unwrap();
        assert_eq!(
            toxic,
            Toxic::on(
                Stream::Upstream,
                ToxicKind::Latency {
                    latency: 200,
                    jitter: 20
                }
            )
            .named("lag")
            .with_toxicity(0.5)
        );
        let back: serde_json::Value = serde_json::to_value(&toxic).unwrap();
        assert_eq!(back["type"], "latency");
        assert_eq!(back["attributes"]["jitter"], 20);
    }

    #[test]
    fn defaults_follow_toxiproxy() {
        let toxic: Toxic =
            serde_json::from_str(r#"{"type":"timeout","attributes":{"timeout":0}}"#).unwrap();
        let toxic = toxic.normalized().unwrap();
        assert_eq!(toxic.name, "timeout_downstream");
        assert_eq!(toxic.stream, Stream::Downstream);
        assert_eq!(toxic.toxicity, 1.0);
    }

    #[test]
    fn bad_attributes_are_rejected() {
        let zero = Toxic::new(ToxicKind::Bandwidth { rate: 0 }).normalized();
        assert!(zero.unwrap_err().contains("rate 0"));
        let over = Toxic::new(ToxicKind::Timeout { timeout: 1 })
            .with_toxicity(1.5)
            .normalized();
        assert!(over.unwrap_err().contains("from 0 to 1"));
        let unknown = serde_json::from_str::<Toxic>(r#"{"type":"slicer","attributes":{}}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn toxicity_splits_connections_in_proportion() {
        let hits = (0..10_000).filter(|link| applies(0.3, *link, 7)).count();
        assert!((2_700..3_300).contains(&hits), "{hits} of 10000 at 0.3");
        assert!((0..100).all(|link| applies(1.0, link, 1)));
        assert!((0..100).all(|link| !applies(0.0, link, 1)));
    }
}
