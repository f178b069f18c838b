//! Network faults between the service under test and its dependencies.
//!
//! Every dependency, whatever the backend, sits behind a [`FaultProxy`] in the harness process.
//! The proxy is the only address the target ever sees, which buys two things: the address
//! survives restarts of the dependency (a broker restarted on another port, a container
//! restarted with another mapping), and network faults (`down`, latency, blackholes, resets,
//! bandwidth) work the same on every backend, including clusters the harness does not own.
//!
//! The toxics follow Toxiproxy's names and semantics, so fault schedules written for Toxiproxy
//! carry over. We evaluated the `noxious` crate (a Rust port of Toxiproxy) and wrote our own;
//! see `docs/fault-proxy.md` for why.

mod proxy;
mod toxic;

pub use proxy::{FaultProxy, Observer, ProxyStatus, ProxySwitch};
pub use toxic::{Stream, Toxic, ToxicKind};

use std::net::SocketAddr;

/// What can go wrong when driving a proxy.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(
        "cannot listen on {addr}: address already in use (hint: choose another port or stop the program holding it)"
    )]
    AddressInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy `{proxy}` has no toxic named `{toxic}`")]
    UnknownToxic { proxy: String, toxic: String },
    #[error(
        "proxy `{proxy}` already has a toxic named `{toxic}` (hint: give the new one another name)"
    )]
    DuplicateToxic { proxy: String, toxic: String },
    #[error("invalid toxic: {reason}")]
    InvalidToxic { reason: String },
    #[error("proxy `{proxy}` is closed")]
    Closed { proxy: String },
}
