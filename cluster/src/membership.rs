//! SWIM membership over UDP with `foca`.
//!
//! Every node and router is a member. A member's identity carries what
//! others need to route to it: role, id, gossip address, gRPC and HTTP
//! addresses, and its state (joining, active, leaving). A state change is an
//! identity change with a higher generation, which the cluster learns as a
//! rename of the same gossip address.
//!
//! The [`Membership`] task owns foca, the socket and the timers, and
//! publishes a [`ClusterView`] (every member believed alive) on a `watch`
//! channel whenever it changes. Seeds given as addresses are known as down
//! placeholders, and foca periodically announces to down members, so a node
//! that was cut off (partition, SIGSTOP) finds its way back once the network
//! heals. Seeds given as names are resolved again at every join attempt
//! (see [`crate::seeds`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use foca::{Config as FocaConfig, Foca, Identity, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use crate::ring::{NodeInfo, Ring};
use crate::seeds::{Resolver, Seed, Seeder};

/// What a member does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns conversations.
    Node,
    /// Terminates clients; owns nothing.
    Router,
}

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Up, not yet taking conversations.
    Joining,
    /// On the ring (nodes) / serving (routers).
    Active,
    /// Draining: off the ring, finishing in-flight work.
    Leaving,
}

/// A member's identity as gossiped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Stable id (`node.id` / `router.id`); empty for a seed placeholder.
    pub id: String,
    /// Node or router.
    pub role: Role,
    /// UDP gossip address (the identity's address).
    pub gossip: SocketAddr,
    /// gRPC link URL (nodes).
    pub grpc: Option<String>,
    /// HTTP address.
    pub http: Option<String>,
    /// Lifecycle state.
    pub state: MemberState,
    /// Higher wins among identities with the same gossip address.
    pub generation: u64,
}

impl Member {
    fn placeholder(gossip: SocketAddr) -> Self {
        Member {
            id: String::new(),
            role: Role::Router,
            gossip,
            grpc: None,
            http: None,
            state: MemberState::Joining,
            generation: 0,
        }
    }

    fn is_placeholder(&self) -> bool {
        self.generation == 0
    }

    fn with_state(&self, state: MemberState) -> Self {
        Member {
            state,
            generation: self.generation + 1,
            ..self.clone()
        }
    }
}

impl Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Declared down (e.g. frozen past the suspicion timeout): come back
        // as a newer identity rather than stay out forever.
        Some(Member {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// `[cluster]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipConfig {
    /// UDP address to bind. Port 0 picks one (then it is also advertised).
    #[serde(default = "default_listen")]
    pub gossip_listen: SocketAddr,
    /// Address others should send gossip to, when it differs from the bound
    /// one (NAT, a proxy in tests). Default: the bound address.
    #[serde(default)]
    pub gossip_advertise: Option<SocketAddr>,
    /// Members to join through: gossip addresses (`10.0.0.7:7200`) or
    /// `host:port` names (a headless Service), resolved again at every
    /// join attempt.
    #[serde(default)]
    pub seeds: Vec<Seed>,
    /// How often the seeds are resolved and announced to again once this
    /// member knows others (while alone: every 500 ms). It finds members the
    /// name gained meanwhile and merges groups that formed apart.
    #[serde(default = "default_seed_refresh", with = "humantime_serde")]
    pub seed_refresh: Duration,
    /// How often a random member is probed.
    #[serde(default = "default_probe_period", with = "humantime_serde")]
    pub probe_period: Duration,
    /// How long a probe waits for an answer before asking others.
    #[serde(default = "default_probe_rtt", with = "humantime_serde")]
    pub probe_rtt: Duration,
    /// How long a suspected member has to refute before it is declared down.
    #[serde(default = "default_suspect", with = "humantime_serde")]
    pub suspect_to_down: Duration,
    /// Expected cluster size (tunes gossip fan-out).
    #[serde(default = "default_size")]
    pub cluster_size_hint: u32,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            gossip_listen: default_listen(),
            gossip_advertise: None,
            seeds: Vec::new(),
            seed_refresh: default_seed_refresh(),
            probe_period: default_probe_period(),
            probe_rtt: default_probe_rtt(),
            suspect_to_down: default_suspect(),
            cluster_size_hint: default_size(),
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:7200".parse().expect("static address")
}
fn default_seed_refresh() -> Duration {
    Duration::from_secs(10)
}
// Failure detection within ~2 s (a probe cycle, a missed answer, then the
// suspicion timeout), on a LAN or one machine; measured in the kill
// scenarios of cluster-tests, with no false verdict under a loaded 2-core
// test run.
fn default_probe_period() -> Duration {
    Duration::from_millis(250)
}
fn default_probe_rtt() -> Duration {
    Duration::from_millis(80)
}
fn default_suspect() -> Duration {
    Duration::from_millis(800)
}
fn default_size() -> u32 {
    8
}

impl GossipConfig {
    /// The worst-case time for the cluster to declare a dead member down.
    pub fn failure_detection_time(&self) -> Duration {
        self.probe_period * 2 + self.suspect_to_down
    }

    fn foca(&self) -> FocaConfig {
        let mut config = FocaConfig::new_lan(
            NonZeroU32::new(self.cluster_size_hint.max(1)).unwrap_or(NonZeroU32::MIN),
        );
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.suspect_to_down_after = self.suspect_to_down;
        config.remove_down_after = Duration::from_secs(3600).into();
        config.notify_down_members = true;
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(2),
            num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        });
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(200),
            num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        });
        config
    }
}

/// `[cluster]` as both binaries read it: gossip on or off, and its settings.
/// Off (the default) means static membership from configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterSection {
    /// Join the SWIM cluster.
    pub enabled: bool,
    /// Gossip settings.
    #[serde(flatten)]
    pub gossip: GossipConfig,
}

/// One table holds `enabled` and the gossip settings; a key that is neither
/// is refused by name (serde's `flatten` would let it pass silently).
impl<'de> Deserialize<'de> for ClusterSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let enabled = match table.remove("enabled") {
            Some(value) => bool::deserialize(value).map_err(D::Error::custom)?,
            None => false,
        };
        let gossip = GossipConfig::deserialize(serde_json::Value::Object(table))
            .map_err(D::Error::custom)?;
        Ok(ClusterSection { enabled, gossip })
    }
}

/// Keeps `ring` equal to the active nodes of the membership view, logging
/// and counting every change, until `shutdown`.
pub async fn feed_ring(
    mut view: watch::Receiver<ClusterView>,
    ring: crate::RingView,
    vnodes: usize,
    shutdown: CancellationToken,
) {
    loop {
        let next = view.borrow_and_update().ring(vnodes);
        let current = ring.current();
        if next.nodes() != current.nodes() {
            let ids: Vec<&str> = next.nodes().iter().map(|n| n.id.as_str()).collect();
            tracing::info!(nodes = ?ids, "ring changed");
            metrics::counter!("turbochat_ring_changes_total").increment(1);
            metrics::gauge!("turbochat_ring_nodes").set(next.nodes().len() as f64);
            ring.publish(next);
        }
        tokio::select! {
            changed = view.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Every member believed alive, ourselves included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Ourselves as last announced.
    pub me: Member,
    /// How many times the cluster declared us down. When it grows, our
    /// hot state may be stale: others owned our conversations meanwhile.
    pub times_declared_down: u64,
    /// Alive members by id (ourselves included).
    pub members: BTreeMap<String, Member>,
}

impl ClusterView {
    /// The ring over the active nodes.
    pub fn ring(&self, vnodes: usize) -> Ring {
        Ring::new(
            self.members
                .values()
                .filter(|m| m.role == Role::Node && m.state == MemberState::Active)
                .filter_map(|m| {
                    Some(NodeInfo {
                        id: m.id.clone(),
                        grpc: m.grpc.clone()?,
                    })
                }),
            vnodes,
        )
    }
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The UDP socket could not be bound.
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The membership task is gone.
    #[error("membership task stopped")]
    Stopped,
}

enum Request {
    SetState(MemberState, oneshot::Sender<()>),
    Leave(oneshot::Sender<()>),
    Suspect { id: String, grpc: String },
}

/// Handle on the membership task.
#[derive(Clone)]
pub struct Membership {
    view: watch::Receiver<ClusterView>,
    requests: mpsc::Sender<Request>,
    gossip: SocketAddr,
}

impl Membership {
    /// Binds the gossip socket, joins through the seeds (names resolved by
    /// the system resolver), and starts the task. `me.gossip` is replaced
    /// by the bound address.
    pub async fn start(
        me: Member,
        config: GossipConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, MembershipError> {
        Self::start_with_resolver(me, config, crate::seeds::dns(), shutdown).await
    }

    /// [`Membership::start`] with another way to resolve seed names.
    pub async fn start_with_resolver(
        mut me: Member,
        config: GossipConfig,
        resolver: Resolver,
        shutdown: CancellationToken,
    ) -> Result<Self, MembershipError> {
        let socket = UdpSocket::bind(config.gossip_listen)
            .await
            .map_err(|source| MembershipError::Bind {
                addr: config.gossip_listen,
                source,
            })?;
        let bound = socket
            .local_addr()
            .map_err(|source| MembershipError::Bind {
                addr: config.gossip_listen,
                source,
            })?;
        me.gossip = config.gossip_advertise.unwrap_or(bound);
        if me.generation == 0 {
            me.generation = start_generation();
        }
        let mut members = BTreeMap::new();
        members.insert(me.id.clone(), me.clone());
        let (view_tx, view) = watch::channel(ClusterView {
            me: me.clone(),
            times_declared_down: 0,
            members,
        });
        let (requests, requests_rx) = mpsc::channel(16);
        let (found_tx, found) = mpsc::channel(4);
        let placeholders: Vec<SocketAddr> = config
            .seeds
            .iter()
            .filter_map(Seed::as_addr)
            .filter(|s| *s != bound && *s != me.gossip)
            .collect();
        let seeder = Seeder {
            seeds: config.seeds.clone(),
            resolver,
            join_retry: crate::seeds::JOIN_RETRY,
            refresh: config.seed_refresh,
            view: view.clone(),
            found: found_tx,
        };
        tokio::spawn(seeder.run(shutdown.clone()));
        tracing::info!(
            probe_period = ?config.probe_period,
            probe_rtt = ?config.probe_rtt,
            suspect_to_down = ?config.suspect_to_down,
            "gossip failure detection"
        );
        let task = Task {
            foca: Foca::new(
                me,
                config.foca(),
                StdRng::seed_from_u64(start_generation() ^ u64::from(bound.port())),
                PostcardCodec,
            ),
            socket,
            timers: DelayQueue::new(),
            suspicions: DelayQueue::new(),
            suspect_to_down: config.suspect_to_down,
            runtime: foca::AccumulatingRuntime::new(),
            view: view_tx,
            max_packet: config.foca().max_packet_size.get(),
            times_declared_down: 0,
            bound,
            leaving: false,
        };
        tokio::spawn(task.run(placeholders, found, requests_rx, shutdown));
        Ok(Membership {
            view,
            requests,
            gossip: bound,
        })
    }

    /// The bound gossip address (not the advertised one).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip
    }

    /// The current view.
    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Announces a new state (e.g. `Leaving` on SIGTERM).
    pub async fn set_state(&self, state: MemberState) -> Result<(), MembershipError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::SetState(state, tx))
            .await
            .map_err(|_| MembershipError::Stopped)?;
        rx.await.map_err(|_| MembershipError::Stopped)
    }

    /// Evidence from outside gossip that a node's process is gone: its gRPC
    /// address refused a connection (nothing listens there). The member is
    /// suspected at once, as a failed probe would (the cluster hears it), and
    /// declared down after `suspect_to_down` unless it refutes — a live node
    /// refutes within a gossip round, so a wrong suspicion costs nothing.
    /// This skips the wait for a probe to pick the dead member and fail
    /// (0.25–1 s with the defaults). Ignored when `grpc` is not the address
    /// of the member's current identity, or it is suspected already.
    pub fn suspect(&self, id: &str, grpc: &str) {
        // Best effort: a full queue means the task is busy with requests,
        // and the link will report again at its next attempt.
        let _ = self.requests.try_send(Request::Suspect {
            id: id.to_owned(),
            grpc: grpc.to_owned(),
        });
    }

    /// Tells the cluster we are gone (last step of a graceful exit).
    pub async fn leave(&self) -> Result<(), MembershipError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Leave(tx))
            .await
            .map_err(|_| MembershipError::Stopped)?;
        rx.await.map_err(|_| MembershipError::Stopped)
    }
}

fn start_generation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
        .max(1)
}

struct Task {
    foca: Foca<Member, PostcardCodec, StdRng, foca::NoCustomBroadcast>,
    socket: UdpSocket,
    timers: DelayQueue<Timer<Member>>,
    /// Our own suspicions (see [`Membership::suspect`]): when one is due,
    /// the member is declared down if it is still suspect at that
    /// incarnation.
    suspicions: DelayQueue<(Member, foca::Incarnation)>,
    suspect_to_down: Duration,
    runtime: foca::AccumulatingRuntime<Member>,
    view: watch::Sender<ClusterView>,
    max_packet: usize,
    times_declared_down: u64,
    /// The socket's own address (seeds may resolve to ourselves).
    bound: SocketAddr,
    /// We left on purpose: foca then reports us down, which is no news.
    leaving: bool,
}

impl Task {
    async fn run(
        mut self,
        placeholders: Vec<SocketAddr>,
        mut found: mpsc::Receiver<Vec<SocketAddr>>,
        mut requests: mpsc::Receiver<Request>,
        shutdown: CancellationToken,
    ) {
        let down = placeholders
            .iter()
            .map(|s| foca::Member::down(Member::placeholder(*s)));
        if let Err(err) = self.foca.apply_many(down, false, &mut self.runtime) {
            tracing::warn!(?err, "cannot add seeds");
        }
        self.flush().await;
        let mut buf = vec![0u8; self.max_packet.max(1500)];
        loop {
            tokio::select! {
                // The seeds as they resolve now (the first time at once).
                Some(addrs) = found.recv() => self.announce_to(&addrs),
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((len, _from)) = received {
                        if let Err(err) = self.foca.handle_data(&buf[..len], &mut self.runtime) {
                            tracing::debug!(?err, "bad gossip packet");
                        }
                    }
                }
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)), if !self.timers.is_empty() => {
                    if let Err(err) = self.foca.handle_timer(expired.into_inner(), &mut self.runtime) {
                        tracing::debug!(?err, "timer error");
                    }
                }
                Some(due) = std::future::poll_fn(|cx| self.suspicions.poll_expired(cx)), if !self.suspicions.is_empty() => {
                    let (member, incarnation) = due.into_inner();
                    self.declare_down_if_still_suspect(member, incarnation);
                }
                request = requests.recv() => match request {
                    Some(Request::Suspect { id, grpc }) => self.suspect(&id, &grpc),
                    Some(Request::SetState(state, done)) => {
                        let next = self.foca.identity().with_state(state);
                        if let Err(err) = self.foca.change_identity(next, &mut self.runtime) {
                            tracing::warn!(?err, "cannot change identity");
                        }
                        self.publish();
                        let _ = done.send(());
                    }
                    Some(Request::Leave(done)) => {
                        self.leaving = true;
                        let _ = self.foca.leave_cluster(&mut self.runtime);
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                _ = shutdown.cancelled() => {
                    self.leaving = true;
                    let _ = self.foca.leave_cluster(&mut self.runtime);
                    self.flush().await;
                    return;
                }
            }
            self.flush().await;
        }
    }

    /// Suspects the node `id` whose current identity has gRPC address
    /// `grpc`, and schedules the verdict.
    fn suspect(&mut self, id: &str, grpc: &str) {
        let Some(current) = self
            .foca
            .iter_membership_state()
            .find(|m| {
                m.state() == foca::State::Alive
                    && m.id().id == id
                    && m.id().grpc.as_deref() == Some(grpc)
            })
            .cloned()
        else {
            return;
        };
        let (identity, incarnation) = (current.id().clone(), current.incarnation());
        let update = foca::Member::new(identity.clone(), incarnation, foca::State::Suspect);
        if let Err(err) = self
            .foca
            .apply_many(std::iter::once(update), true, &mut self.runtime)
        {
            tracing::debug!(?err, member = %id, "cannot suspect");
            return;
        }
        tracing::info!(member = %id, %grpc, "suspected: its gRPC address refuses connections");
        metrics::counter!("turbochat_members_suspected_total").increment(1);
        self.suspicions
            .insert((identity, incarnation), self.suspect_to_down);
    }

    /// The end of our own suspicion: down, unless the member refuted it (a
    /// higher incarnation) or its state changed meanwhile.
    fn declare_down_if_still_suspect(&mut self, identity: Member, incarnation: foca::Incarnation) {
        let still = self.foca.iter_membership_state().any(|m| {
            m.id() == &identity
                && m.state() == foca::State::Suspect
                && m.incarnation() == incarnation
        });
        if !still {
            return;
        }
        let down = foca::Member::new(identity, incarnation, foca::State::Down);
        if let Err(err) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.runtime)
        {
            tracing::debug!(?err, "cannot declare a suspect down");
        }
    }

    /// Announces ourselves to every seed address that is not a member
    /// already (nor ourselves): the first contact of a join, or of two
    /// groups that formed apart.
    fn announce_to(&mut self, addrs: &[SocketAddr]) {
        let me = self.foca.identity().gossip;
        let known: std::collections::HashSet<SocketAddr> =
            self.foca.iter_members().map(|m| m.id().gossip).collect();
        for addr in addrs {
            let reachable = addr.is_ipv4() == self.bound.is_ipv4();
            if *addr == me || *addr == self.bound || !reachable || known.contains(addr) {
                continue;
            }
            let _ = self
                .foca
                .announce(Member::placeholder(*addr), &mut self.runtime);
        }
    }

    /// Sends queued packets, schedules timers, applies notifications.
    async fn flush(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            let _ = self.socket.send_to(&data, to.gossip).await;
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.insert(timer, after);
        }
        let mut changed = false;
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(m) if !m.is_placeholder() => {
                    tracing::info!(member = %m.id, role = ?m.role, state = ?m.state, "member up");
                    changed = true;
                }
                OwnedNotification::MemberDown(m) if !m.is_placeholder() => {
                    if m.state == MemberState::Leaving {
                        tracing::info!(member = %m.id, role = ?m.role, "member left");
                    } else {
                        tracing::warn!(member = %m.id, role = ?m.role, "member down");
                        metrics::counter!("turbochat_members_down_total").increment(1);
                    }
                    changed = true;
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(member = %new.id, from = ?old.state, to = ?new.state, "member changed");
                    changed = true;
                }
                OwnedNotification::Defunct if self.leaving => {
                    tracing::debug!("left the cluster");
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("declared down by the cluster; rejoining");
                    self.times_declared_down += 1;
                    changed = true;
                }
                _ => {}
            }
        }
        if changed {
            self.publish();
        }
    }

    fn publish(&self) {
        let me = self.foca.identity().clone();
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        for member in self.foca.iter_members().map(|m| m.id()) {
            if member.is_placeholder() {
                continue;
            }
            // Two identities of one id (a restart on a new port): keep the newest.
            match members.get(&member.id) {
                Some(known) if known.generation >= member.generation => {}
                _ => {
                    members.insert(member.id.clone(), member.clone());
                }
            }
        }
        members.insert(me.id.clone(), me.clone());
        metrics::gauge!("turbochat_members").set(members.len() as f64);
        self.view.send_replace(ClusterView {
            me,
            times_declared_down: self.times_declared_down,
            members,
        });
    }
}
