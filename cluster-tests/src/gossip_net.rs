//! A switch for SWIM gossip, to partition a cluster.
//!
//! Every member advertises a port of the switch instead of its own gossip
//! socket, so every datagram to it passes here and is forwarded to its real
//! socket — unless the sender is on the other side of a partition. Members
//! are told apart by the source address of what they send (their real
//! gossip socket). The switch cuts gossip only: gRPC links stay connected,
//! but a router routes only to members its gossip shows alive, so each side
//! of a partition believes the other gone and takes its conversations — the
//! split brain that the store's fencing must survive.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::watch;

#[derive(Default)]
struct State {
    /// Real gossip address -> member id.
    members: HashMap<SocketAddr, String>,
    /// (from, to) pairs whose datagrams are dropped.
    blocked: HashSet<(String, String)>,
    dropped: u64,
}

/// The switch. Cheap to clone.
#[derive(Clone, Default)]
pub struct GossipNet {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for GossipNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipNet").finish_non_exhaustive()
    }
}

/// A member's port on the switch: advertise `addr`, then `attach` the
/// member's real address once it is known.
pub struct Port {
    /// What the member advertises.
    pub addr: SocketAddr,
    member: String,
    target: watch::Sender<Option<SocketAddr>>,
    net: GossipNet,
}

impl Port {
    /// Starts forwarding to the member's real gossip socket.
    pub fn attach(&self, real: SocketAddr) {
        self.net
            .state
            .lock()
            .unwrap()
            .members
            .insert(real, self.member.clone());
        let _ = self.target.send(Some(real));
    }
}

impl GossipNet {
    /// An empty switch.
    pub fn new() -> Self {
        GossipNet::default()
    }

    /// Opens a port for `member` (must run inside a Tokio runtime).
    pub fn port(&self, member: &str) -> Port {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind switch port");
        socket.set_nonblocking(true).expect("nonblocking");
        let addr = socket.local_addr().expect("port addr");
        let socket = UdpSocket::from_std(socket).expect("tokio socket");
        let (target, mut targets) = watch::channel(None::<SocketAddr>);
        let state = self.state.clone();
        let to = member.to_string();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Some(real) = *targets.borrow_and_update() else {
                    continue;
                };
                let blocked = {
                    let mut state = state.lock().unwrap();
                    let sender = state.members.get(&from).cloned();
                    let blocked = sender.is_some_and(|s| state.blocked.contains(&(s, to.clone())));
                    if blocked {
                        state.dropped += 1;
                    }
                    blocked
                };
                if !blocked {
                    let _ = socket.send_to(&buf[..len], real).await;
                }
            }
        });
        Port {
            addr,
            member: member.to_string(),
            target,
            net: self.clone(),
        }
    }

    /// Cuts gossip both ways between every member of `a` and of `b`.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        let mut state = self.state.lock().unwrap();
        for x in a {
            for y in b {
                state.blocked.insert((x.to_string(), y.to_string()));
                state.blocked.insert((y.to_string(), x.to_string()));
            }
        }
    }

    /// Lets everything through again.
    pub fn heal(&self) {
        self.state.lock().unwrap().blocked.clear();
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.state.lock().unwrap().dropped
    }
}
