//! Which process holds a loopback connection: how a proxied link is tied to the instance that
//! opened it. A proxy sees only the client's address; the kernel's socket table
//! (`/proc/net/tcp`, `/proc/net/tcp6`) names the socket with that address and the proxy's, by
//! inode, and the process holding that inode has it among its `/proc/PID/fd` links. Its
//! `QUIESCE_RUN_ID` names the instance: every process an instance starts inherits it.

use std::net::SocketAddr;

/// The `QUIESCE_RUN_ID` of the process holding the client end of the TCP connection from
/// `client` to `server`: empty for the harness's own; `None` when no process could be found
/// or it has none (a child that cleared its environment is not thereby outside the run: whose
/// it is, is unknown). Linux only.
pub fn run_id_of_client(client: SocketAddr, server: SocketAddr) -> Option<String> {
    let inode = inode_of(client, server)?;
    let pid = holder_of(inode)?;
    match pid == std::process::id() {
        true => Some(String::new()),
        false => run_id_of(pid),
    }
}

/// The inode of the socket whose local address is `local` and remote one `remote`.
fn inode_of(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let table = match local {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (here, there, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        (parse_addr(here)? == local && parse_addr(there)? == remote)
            .then(|| inode.parse().ok())
            .flatten()
    })
}

/// An address as the socket table writes it: the IP's bytes in hex in host order (per 32-bit
/// word), `:`, the port in hex.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let ip: std::net::IpAddr = match words.as_slice() {
        [w] => std::net::Ipv4Addr::from(w.to_ne_bytes()).into(),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = std::net::Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(v6.into(), Into::into)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The process with socket `inode` among its open files.
fn holder_of(inode: u64) -> Option<u32> {
    let link = format!("socket:[{inode}]");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|to| to.as_os_str() == link.as_str())
                })
        })
}

/// `QUIESCE_RUN_ID` of `pid`'s environment.
fn run_id_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|var| {
        let value = var.strip_prefix(b"QUIESCE_RUN_ID=")?;
        String::from_utf8(value.to_vec()).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_the_kernel_writes_them() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("0000000000000000FFFF00000100007F:0050"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0016"),
            Some("[::1]:22".parse().unwrap())
        );
        assert_eq!(parse_addr("zz:1"), None);
    }

    /// A child process connected to a listener here is found by its end of the connection,
    /// and named by its run id.
    #[test]
    fn the_process_holding_a_connection_is_found_by_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket, sys, time\ns = socket.create_connection(('127.0.0.1', {}))\n\
                     print('up', flush=True)\nsys.stdin.read()",
                    server.port()
                ),
            ])
            .env("QUIESCE_RUN_ID", "run-7.worker.1@2")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (_conn, client) = listener.accept().unwrap();
        let owner = run_id_of_client(client, server);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(owner.as_deref(), Some("run-7.worker.1@2"));
        // A connection of this process's own: found, with no run id.
        let _mine = std::net::TcpStream::connect(server).unwrap();
        let (_conn, client) = listener.accept().unwrap();
        assert_eq!(run_id_of_client(client, server).as_deref(), Some(""));
        // A process with no run id: whose it is, is unknown.
        let mut bare = std::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket, sys\ns = socket.create_connection(('127.0.0.1', {}))\n\
                     sys.stdin.read()",
                    server.port()
                ),
            ])
            .env_remove("QUIESCE_RUN_ID")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (_conn, client) = listener.accept().unwrap();
        let owner = run_id_of_client(client, server);
        let _ = bare.kill();
        let _ = bare.wait();
        assert_eq!(owner, None);
        // No process holds a connection from an address nobody connected from.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(run_id_of_client(nobody, server), None);
    }
}
