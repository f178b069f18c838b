//! Ctrl-C and SIGTERM as a stream of events, so that every long wait in the CLI can also end
//! on a signal, and tests can use a handler that never fires.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// A signal the harness acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (a CI runner cancelling the job).
    Terminate,
}

/// Receives [`SignalEvent`]s.
pub struct SignalHandler {
    streams: Option<(Signal, Signal)>,
}

impl SignalHandler {
    /// Listens for SIGINT and SIGTERM. Once created, these signals no longer end the process
    /// by default: the caller must act on them.
    pub fn new() -> std::io::Result<Self> {
        Ok(SignalHandler {
            streams: Some((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )),
        })
    }

    /// A handler that never fires.
    pub fn noop() -> Self {
        SignalHandler { streams: None }
    }

    /// The next signal; pending forever for a no-op handler.
    pub async fn recv(&mut self) -> SignalEvent {
        match &mut self.streams {
            Some((int, term)) => tokio::select! {
                Some(()) = int.recv() => SignalEvent::Interrupt,
                Some(()) = term.recv() => SignalEvent::Terminate,
                else => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}
