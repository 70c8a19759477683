//! Opening client WebSockets: many loopback source addresses, a raised file
//! limit, and the same small socket buffers the router uses.
//!
//! One destination `ip:port` and one source IP allow at most ~28k
//! connections (the ephemeral port range). Spreading clients over
//! `127.0.0.2`, `127.0.0.3`, ... (all of `127.0.0.0/8` is loopback on
//! Linux) multiplies that; `IP_BIND_ADDRESS_NO_PORT` lets the kernel pick
//! the port at `connect` time, so ports are only unique per 4-tuple.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// A client WebSocket over a plain TCP stream.
pub type Socket = WebSocketStream<TcpStream>;

/// Raises `RLIMIT_NOFILE` as far as allowed (first both limits to
/// `wanted`, else the soft limit to the hard one). Returns the soft limit
/// in force. Child processes started afterwards inherit it.
pub fn raise_file_limit(wanted: u64) -> u64 {
    if rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted).is_err() {
        let _ = rlimit::increase_nofile_limit(wanted);
    }
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0)
}

/// Source addresses `127.0.0.2 ..= 127.0.0.(1 + count)`, handed out round
/// robin by client index.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    count: u8,
}

impl Sources {
    /// `count` addresses (at least 1, at most 250).
    pub fn new(count: u8) -> Self {
        Sources {
            count: count.clamp(1, 250),
        }
    }

    /// The source address of client `index`.
    pub fn for_client(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 2 + (index % self.count as usize) as u8)
    }
}

/// Socket buffers like the router's (`router/src/ws/mod.rs`): 4 KiB read,
/// 8 KiB write, so neither side's memory is dominated by tungstenite's
/// 128 KiB defaults.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
}

/// Connects from `source` to `url` (`ws://ip:port/path?query`) and does the
/// WebSocket handshake.
pub async fn connect(url: &str, source: Ipv4Addr) -> anyhow::Result<Socket> {
    let request = url
        .into_client_request()
        .with_context(|| format!("bad url {url}"))?;
    let authority = request
        .uri()
        .authority()
        .ok_or_else(|| anyhow!("no host in {url}"))?
        .as_str()
        .to_string();
    let destination: SocketAddr = authority
        .parse()
        .with_context(|| format!("{authority} is not ip:port"))?;
    let stream = tcp_from(source, destination).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
        .await
        .with_context(|| format!("handshake with {url}"))?;
    Ok(ws)
}

async fn tcp_from(source: Ipv4Addr, destination: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    bind_address_no_port(&socket);
    socket
        .bind(&SocketAddrV4::new(source, 0).into())
        .with_context(|| format!("bind {source}"))?;
    let socket = TcpSocket::from_std_stream(socket.into());
    let stream = socket
        .connect(destination)
        .await
        .with_context(|| format!("connect {source} -> {destination}"))?;
    Ok(stream)
}

/// Best effort: without it, `bind` reserves a port per source address for
/// every connection, which only limits how many fit.
#[allow(unsafe_code)]
fn bind_address_no_port(socket: &socket2::Socket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd, a valid pointer to a c_int and its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_over_loopback() {
        let sources = Sources::new(3);
        let ips: Vec<_> = (0..4).map(|i| sources.for_client(i)).collect();
        assert_eq!(
            ips,
            [
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4),
                Ipv4Addr::new(127, 0, 0, 2)
            ]
        );
    }

    #[tokio::test]
    async fn connects_from_another_loopback_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().1 });
        let _stream = tcp_from(Ipv4Addr::new(127, 0, 0, 7), addr).await.unwrap();
        assert_eq!(accept.await.unwrap().ip(), Ipv4Addr::new(127, 0, 0, 7));
    }
}
