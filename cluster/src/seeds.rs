//! Gossip seeds: `ip:port` or `host:port`, resolved again at every join
//! attempt.
//!
//! On Kubernetes the seeds are the DNS name of the nodes' headless Service:
//! one name, one address per pod, and pods come and go with new addresses.
//! A name resolved once at start would keep pointing at pods long gone, so a
//! [`Seeder`] task resolves every seed again at each attempt — every
//! `JOIN_RETRY` while this member knows no one else, every
//! `cluster.seed_refresh` once it does — and hands the addresses to the
//! membership task, which announces itself to those that are not already
//! members. Announcing to a member of another group merges the two, so
//! groups that formed apart (pods that started together and each saw only
//! itself in DNS) become one cluster.
//!
//! Resolution runs in its own task: a slow or failing DNS server never
//! holds up gossip.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::membership::ClusterView;

/// How often a member that knows no one else tries its seeds.
pub(crate) const JOIN_RETRY: Duration = Duration::from_millis(500);

/// A gossip seed as configured: an address (`10.0.0.7:7200`,
/// `[fd00::7]:7200`) or a name and port (`turbochat-node-gossip:7200`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Seed {
    host: String,
    port: u16,
}

impl Seed {
    /// The seed of one socket address.
    pub fn addr(addr: SocketAddr) -> Self {
        Seed {
            host: match addr {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            },
            port: addr.port(),
        }
    }

    /// The seed's address when it is one (no resolution needed).
    pub fn as_addr(&self) -> Option<SocketAddr> {
        self.to_string().parse().ok()
    }

    /// The addresses the seed stands for now (DNS for a name).
    ///
    /// `getaddrinfo` blocks, up to the resolver's timeouts when a DNS
    /// answer is lost. It runs on a thread of its own rather than tokio's
    /// blocking pool: a runtime waits for its blocking pool when it shuts
    /// down, so a lookup stuck in a timeout would hold up a leaving node's
    /// exit by as long (seen: 19 s in the container test).
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.as_addr() {
            return Ok(vec![addr]);
        }
        let host = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = self.port;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("seed-lookup".into())
            .spawn(move || {
                use std::net::ToSocketAddrs;
                let found = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|addrs| addrs.collect());
                let _ = tx.send(found);
            })?;
        rx.await
            .map_err(|_| io::Error::other("the lookup thread ended without an answer"))?
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Seed {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Seed::addr(addr));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: port {port:?} is not a number from 0 to 65535"))?;
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !name_ok {
            return Err(format!("{text:?}: {host:?} is not a host name or address"));
        }
        Ok(Seed {
            host: host.to_string(),
            port,
        })
    }
}

impl TryFrom<String> for Seed {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Seed> for String {
    fn from(seed: Seed) -> String {
        seed.to_string()
    }
}

impl From<SocketAddr> for Seed {
    fn from(addr: SocketAddr) -> Self {
        Seed::addr(addr)
    }
}

/// The future a [`Resolver`] returns.
pub type Resolution = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a seed into addresses. [`dns`] in production; tests pass their own
/// to make a name move.
pub type Resolver = Arc<dyn Fn(&Seed) -> Resolution + Send + Sync>;

/// The system resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
pub fn dns() -> Resolver {
    Arc::new(|seed: &Seed| {
        let seed = seed.clone();
        Box::pin(async move { seed.resolve().await })
    })
}

/// Resolves the seeds again and again and sends what they stand for to the
/// membership task, until `shutdown`.
pub(crate) struct Seeder {
    pub(crate) seeds: Vec<Seed>,
    pub(crate) resolver: Resolver,
    /// Used while the view holds no one but ourselves.
    pub(crate) join_retry: Duration,
    /// Used once we know others.
    pub(crate) refresh: Duration,
    pub(crate) view: watch::Receiver<ClusterView>,
    pub(crate) found: mpsc::Sender<Vec<SocketAddr>>,
}

impl Seeder {
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        if self.seeds.is_empty() {
            return;
        }
        let mut unresolved: Vec<String> = Vec::new();
        loop {
            let mut addrs = Vec::new();
            let mut failed = Vec::new();
            for seed in &self.seeds {
                match (self.resolver)(seed).await {
                    Ok(found) => addrs.extend(found),
                    Err(err) => failed.push(format!("{seed}: {err}")),
                }
            }
            if failed != unresolved {
                // Logged when it changes, not at every attempt: a headless
                // Service with no pod yet is normal for the first one.
                if !failed.is_empty() {
                    tracing::info!(seeds = ?failed, "gossip seeds do not resolve (yet)");
                }
                unresolved = failed;
            }
            addrs.sort();
            addrs.dedup();
            if !addrs.is_empty() && self.found.send(addrs).await.is_err() {
                return;
            }
            let alone = self.view.borrow().members.len() <= 1;
            let wait = if alone { self.join_retry } else { self.refresh };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // Someone came or went: the name may stand for other
                // addresses now (and if we are alone again, retry soon).
                changed = self.view.changed(), if !alone => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_names() {
        let v4: Seed = "10.0.0.7:7200".parse().unwrap();
        assert_eq!(v4.as_addr(), Some("10.0.0.7:7200".parse().unwrap()));
        let v6: Seed = "[fd00::7]:7200".parse().unwrap();
        assert_eq!(v6.as_addr(), Some("[fd00::7]:7200".parse().unwrap()));
        assert_eq!(v6.to_string(), "[fd00::7]:7200");
        let name: Seed = "turbochat-node-gossip.chat.svc.cluster.local:7200"
            .parse()
            .unwrap();
        assert_eq!(name.as_addr(), None);
        assert_eq!(
            name.to_string(),
            "turbochat-node-gossip.chat.svc.cluster.local:7200"
        );
    }

    #[test]
    fn refuses_what_is_not_host_port() {
        for bad in [
            "node-1",
            "node-1:",
            ":7200",
            "node 1:7200",
            "node-1:99999",
            "a:b",
        ] {
            let err = bad.parse::<Seed>().unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn deserializes_from_strings() {
        #[derive(Deserialize)]
        struct Conf {
            seeds: Vec<Seed>,
        }
        let conf: Conf =
            serde_json::from_str(r#"{"seeds": ["127.0.0.1:7200", "nodes:7200"]}"#).unwrap();
        assert_eq!(conf.seeds.len(), 2);
        let err = serde_json::from_str::<Conf>(r#"{"seeds": ["nodes"]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not host:port"), "{err}");
    }

    #[tokio::test]
    async fn a_name_resolves_through_the_system_resolver() {
        let seed: Seed = "localhost:7200".parse().unwrap();
        let addrs = seed.resolve().await.unwrap();
        assert!(
            addrs.contains(&"127.0.0.1:7200".parse().unwrap()),
            "{addrs:?}"
        );
    }
}
