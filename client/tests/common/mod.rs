//! Helpers shared by the SDK's integration tests: a real router + node
//! (from the cluster-tests harness), SDK clients, and a recorder of events.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use turbochat_client::{
    connect, Client, ClientConfig, ConversationId, DevToken, Event, MessageState, MessageView,
    TokenProvider,
};

/// Generous limit for anything that waits on the network.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Client logs on the test's output (`TURBOCHAT_TEST_CLIENT_LOG`, default
/// `turbochat_client=debug`; shown for failing tests).
pub fn logs() {
    let filter = std::env::var("TURBOCHAT_TEST_CLIENT_LOG")
        .unwrap_or_else(|_| "turbochat_client=debug".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// One node and one router on a fresh SQLite file.
pub async fn cluster() -> Cluster {
    logs();
    Cluster::start(TestStore::sqlite(), Options::default()).await
}

/// Client settings for tests: the defaults, with a short backoff cap so a
/// reconnect after a long outage does not wait 30 s.
pub fn config(url: &str, dir: &Path) -> ClientConfig {
    let mut config = ClientConfig::new(url, dir);
    config.backoff.max = Duration::from_secs(2);
    config
}

/// An SDK client for `user` with dev tokens.
pub async fn client(url: &str, user: &str, dir: &Path) -> Client {
    client_with(config(url, dir), DevToken::new(user)).await
}

/// An SDK client with any config and token provider.
pub async fn client_with(config: ClientConfig, tokens: impl TokenProvider) -> Client {
    connect(config, tokens).await.expect("client starts")
}

/// A TCP proxy in front of a router whose connections a test can cut.
///
/// (The harness has one too, `harness::proxy::Proxy`, but after a `cut()`
/// its `heal()` does not work: every connection accepted later is closed at
/// once, because each connection task clones a `watch::Receiver` that has
/// not seen the cut's epoch bump and so wakes immediately.)
pub struct CutProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    refusing: bool,
    connections: Vec<tokio::task::AbortHandle>,
}

impl CutProxy {
    /// Forwards connections on a fresh port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap();
                if state.refusing {
                    continue; // dropped: the client sees a reset
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state.connections.push(task.abort_handle());
            }
        });
        CutProxy {
            addr,
            state,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.refusing = true;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.state.lock().unwrap().refusing = false;
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Every event a client emitted, in order.
#[derive(Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// Starts recording `client`'s events (from its start, if this is the
    /// first `events()` call).
    pub fn start(client: &Client) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut stream = client.events();
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.recv().await {
                sink.lock().unwrap().push(event);
            }
        });
        Recorder { events }
    }

    /// A copy of everything so far.
    pub fn all(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// How many events match.
    pub fn count(&self, matches: impl Fn(&Event) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches(e))
            .count()
    }

    /// Messages delivered in `conversation`, in delivery order.
    pub fn messages(&self, conversation: ConversationId) -> Vec<MessageView> {
        messages_in(&self.all(), conversation)
    }

    /// The states `client_msg_id` went through.
    pub fn states(&self, client_msg_id: &str) -> Vec<MessageState> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::MessageState {
                    client_msg_id: id,
                    state,
                    ..
                } if id == client_msg_id => Some(state.clone()),
                _ => None,
            })
            .collect()
    }

    /// The seq `client_msg_id` was acked with, if it was.
    pub fn sent_seq(&self, client_msg_id: &str) -> Option<u64> {
        self.states(client_msg_id).iter().find_map(|s| match s {
            MessageState::Sent { seq, .. } => Some(*seq),
            _ => None,
        })
    }

    /// Waits until `check` holds on the recorded events.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[Event]) -> bool) {
        harness::eventually(what, DEADLINE, || {
            let snapshot = self.all();
            let ok = check(&snapshot);
            async move { ok.then_some(()) }
        })
        .await;
    }

    /// Waits until at least `n` messages were delivered in `conversation`.
    pub async fn wait_messages(&self, conversation: ConversationId, n: usize) {
        self.wait_for(&format!("{n} messages in {conversation}"), |events| {
            messages_in(events, conversation).len() >= n
        })
        .await;
    }
}

/// The messages of `conversation` among `events`.
pub fn messages_in(events: &[Event], conversation: ConversationId) -> Vec<MessageView> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.conversation_id == conversation => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Whether an event list has a `subscribed` for `conversation`.
pub fn subscribed(events: &[Event], conversation: ConversationId) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Subscribed { conversation_id, .. } if *conversation_id == conversation))
        .count()
}

/// Asserts `messages` are exactly `bodies`, in order, with consecutive seqs
/// starting at `first_seq`.
pub fn assert_exactly(messages: &[MessageView], first_seq: u64, bodies: &[String]) {
    let got: Vec<(u64, &str)> = messages.iter().map(|m| (m.seq, m.body.as_str())).collect();
    let want: Vec<(u64, &str)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (first_seq + i as u64, b.as_str()))
        .collect();
    assert_eq!(got, want, "each message once, in seq order");
}
