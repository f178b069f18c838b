//! Shared pieces of the benchmarks.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The runtime the benches drive the harness on: two workers, as on the CI machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The local backend, whatever the environment says.
pub fn local_backend() -> quiesce::infra::InfraConfig {
    quiesce::infra::InfraConfig {
        backend: quiesce::infra::BackendKind::Local,
        ..quiesce::infra::InfraConfig::default()
    }
}

/// A TCP server that echoes every byte back, for as long as the runtime lives.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Writes `msg` and reads its echo.
pub async fn round_trip(stream: &mut TcpStream, msg: &[u8], buf: &mut [u8]) {
    stream.write_all(msg).await.expect("write");
    stream
        .read_exact(&mut buf[..msg.len()])
        .await
        .expect("read");
}
