//! The open-loop workload: a fleet of connected clients placed in
//! conversations, and phases of fixed offered load run over it.
//!
//! Open loop: one scheduler assigns message `k` the intended send time
//! `start + k / rate`, whatever happened to earlier messages, and hands it
//! to the sending client's write task through an unbounded queue. Latency
//! is measured from that *intended* time to the moment a receiving client
//! parsed the `message` frame, so a stalled server (or a stalled sender
//! socket) shows up as latency instead of silently lowering the load — no
//! coordinated omission.
//!
//! Every `client_msg_id` is `{phase}.{index}.{intended_ns}`: receivers need
//! no shared table to know when a message was meant to go out, and frames
//! from an earlier phase are told apart from the current one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::dial::{self, Socket, Sources};
use crate::report::Percentiles;
use crate::system::{System, Wire};

/// How long a client may take to be welcomed and subscribed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How clients are placed and connected.
#[derive(Debug, Clone, Serialize)]
pub struct FleetShape {
    /// WebSocket clients.
    pub clients: usize,
    /// Members per conversation (2 = 1:1 direct conversations).
    pub group_size: usize,
    /// Bytes of filler in each message body.
    pub body_bytes: usize,
    /// Loopback source addresses to spread clients over.
    pub source_ips: u8,
    /// Connections being opened at once.
    pub connect_concurrency: usize,
}

/// One phase of offered load.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// Messages per second, all senders together.
    pub rate: f64,
    /// Measured time (after the warmup).
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Sent but not measured, first.
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// After the last send: how long to wait for missing acks and deliveries
    /// before counting them lost.
    #[serde(with = "secs")]
    pub drain: Duration,
}

mod secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// What one phase measured (only messages whose intended send time fell
/// after the warmup).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    /// The load offered.
    pub load: Load,
    /// Messages handed to senders.
    pub sent: u64,
    /// Of those, acked.
    pub acked: u64,
    /// Deliveries expected: each sent message times (members - 1).
    pub expected_deliveries: u64,
    /// Distinct (message, receiver) deliveries.
    pub delivered: u64,
    /// Expected deliveries that never came (within the drain).
    pub lost: u64,
    /// Deliveries of a message a receiver already had.
    pub duplicated: u64,
    /// `error` frames received, by code.
    pub errors: BTreeMap<String, u64>,
    /// Sends a client could not queue or write (its socket was gone).
    pub send_failures: u64,
    /// Client sockets closed by the server or failed during the phase.
    pub disconnects: u64,
    /// Delivered messages per second, from the first intended send to the
    /// last delivery.
    pub delivered_per_sec: f64,
    /// Intended send → receiver got the `message` frame.
    pub latency: Percentiles,
    /// Intended send → sender got the `ack` (durable, for turbochat).
    pub ack_latency: Percentiles,
    /// Intended send → the scheduler actually queued it (the generator's
    /// own lateness; already included in the latencies above).
    pub scheduler_lag: Percentiles,
    /// What turbochat's nodes measured over the phase (see [`crate::server`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<crate::server::NodeFigures>,
    /// CPU the servers (and PostgreSQL) used over the phase, warmup included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<crate::cpu::CpuFigures>,
}

/// Counters of the running phase, shared by every client task.
struct Tally {
    phase: u64,
    measure_from_ns: u64,
    sent: AtomicU64,
    expected: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    duplicated: AtomicU64,
    send_failures: AtomicU64,
    disconnects: AtomicU64,
    last_delivery_ns: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    ack_latency: Mutex<Histogram<u64>>,
    lag: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// Latencies in microseconds, up to 10 minutes, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Tally {
    fn new(phase: u64, measure_from_ns: u64) -> Self {
        Tally {
            phase,
            measure_from_ns,
            sent: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            ack_latency: Mutex::new(histogram()),
            lag: Mutex::new(histogram()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    fn record(histogram: &Mutex<Histogram<u64>>, nanos: u64) {
        let micros = (nanos / 1_000).max(1);
        histogram
            .lock()
            .expect("histogram lock")
            .saturating_record(micros);
    }
}

/// What a client's write task sends.
enum Outgoing {
    /// A message: which phase, its index, its intended time.
    Message {
        phase: u64,
        index: u64,
        intended_ns: u64,
    },
    /// Engine.IO's answer to the server's ping (Socket.IO only).
    Pong,
}

/// Fields of a server frame the clients look at; the rest is skipped.
#[derive(Deserialize)]
struct Incoming<'a> {
    /// The frame's `type` (for Socket.IO: the event's name).
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    client_msg_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sender_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

/// A text frame from the server, as the clients see it.
enum Decoded<'a> {
    Frame(Incoming<'a>),
    /// Engine.IO ping: answer with a pong or be disconnected.
    Ping,
    /// Anything else (Engine.IO/Socket.IO control packets, unparsable text).
    Other,
}

impl Wire {
    /// Decodes one text frame.
    fn decode<'a>(self, text: &'a str) -> Decoded<'a> {
        match self {
            Wire::Frames => serde_json::from_str(text).map_or(Decoded::Other, Decoded::Frame),
            Wire::SocketIo => {
                if text == "2" {
                    return Decoded::Ping;
                }
                // `42["event",{...}]`: Engine.IO message (4), Socket.IO event (2).
                let Some(event) = text.strip_prefix("42") else {
                    return Decoded::Other;
                };
                match serde_json::from_str::<(Cow<'a, str>, Incoming<'a>)>(event) {
                    Ok((name, mut frame)) => {
                        frame.kind = name;
                        Decoded::Frame(frame)
                    }
                    Err(_) => Decoded::Other,
                }
            }
        }
    }

    /// Encodes a client frame of `kind` whose JSON fields are `fields`
    /// (an object without `type`).
    fn encode(self, kind: &str, fields: &str) -> String {
        match self {
            Wire::Frames => match fields.strip_prefix('{') {
                Some("}") | None => format!(r#"{{"type":"{kind}"}}"#),
                Some(rest) => format!(r#"{{"type":"{kind}",{rest}"#),
            },
            Wire::SocketIo => format!(r#"42["{kind}",{fields}]"#),
        }
    }
}

/// `{phase}.{index}.{intended_ns}`.
fn parse_msg_id(id: &str) -> Option<(u64, u64, u64)> {
    let mut parts = id.splitn(3, '.');
    let phase = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    let intended = parts.next()?.parse().ok()?;
    Some((phase, index, intended))
}

/// Splits clients `0..n` into conversations of `size` members; a last
/// lone client joins the previous conversation.
pub fn place(n: usize, size: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(size.max(2))
        .map(|c| c.to_vec())
        .collect();
    if groups.len() > 1 && groups.last().is_some_and(|g| g.len() == 1) {
        let lone = groups.pop().expect("non-empty");
        groups.last_mut().expect("non-empty").extend(lone);
    }
    groups
}

struct Client {
    out: mpsc::UnboundedSender<Outgoing>,
    /// Members of its conversation other than itself.
    peers: u64,
}

/// Connected clients, each subscribed to its one conversation, with a
/// read task and a write task each.
pub struct Fleet {
    epoch: Instant,
    clients: Vec<Client>,
    tally: watch::Sender<Arc<Tally>>,
    closing: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    phase: u64,
    /// Conversations the clients were placed in.
    pub conversations: usize,
    /// How long creating conversations and connecting took.
    pub setup: Duration,
}

/// One client's place: where it connects, from which source address, and
/// the conversation it joins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seat {
    /// The user it connects as.
    pub user: String,
    /// Its WebSocket URL (with its token, for turbochat).
    pub url: String,
    /// Loopback source address.
    pub source: std::net::Ipv4Addr,
    /// The conversation it subscribes to.
    pub conversation: String,
    /// Members of that conversation other than itself.
    pub peers: u64,
}

/// Every client's seat on one system, conversations already created. It
/// serializes, so child processes can each open a share of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// How the clients talk to the system.
    pub wire: Wire,
    /// One per client.
    pub seats: Vec<Seat>,
    /// Conversations created.
    pub conversations: usize,
    /// Connections opened at once.
    pub connect_concurrency: usize,
    /// Bytes of filler in each message body.
    pub body_bytes: usize,
}

impl Plan {
    /// Creates the conversations on `system` and seats every client,
    /// spread over its endpoints and over source addresses.
    pub async fn make(system: &System, shape: &FleetShape) -> anyhow::Result<Plan> {
        if shape.clients < 2 {
            bail!("at least 2 clients are needed");
        }
        if !(2..=256).contains(&shape.group_size) {
            bail!("group size must be 2..=256");
        }
        let run = uuid::Uuid::new_v4().simple().to_string();
        let users: Vec<String> = (0..shape.clients)
            .map(|i| format!("b{}-{i}", &run[..8]))
            .collect();
        let groups = place(shape.clients, shape.group_size);
        let names: Vec<Vec<String>> = groups
            .iter()
            .map(|g| g.iter().map(|&i| users[i].clone()).collect())
            .collect();
        let conversation_ids = system
            .create_conversations(&names)
            .await
            .context("creating conversations")?;
        let mut conversation_of = vec![(String::new(), 0u64); shape.clients];
        for (group, id) in groups.iter().zip(&conversation_ids) {
            for &member in group {
                conversation_of[member] = (id.clone(), group.len() as u64 - 1);
            }
        }
        let sources = Sources::new(shape.source_ips);
        let seats = users
            .into_iter()
            .zip(conversation_of)
            .enumerate()
            .map(|(i, (user, (conversation, peers)))| Seat {
                url: system.ws_url(i, &user),
                user,
                source: sources.for_client(i),
                conversation,
                peers,
            })
            .collect();
        Ok(Plan {
            wire: system.wire(),
            seats,
            conversations: groups.len(),
            connect_concurrency: shape.connect_concurrency.max(1),
            body_bytes: shape.body_bytes,
        })
    }

    /// The seats split into `parts` shares of (nearly) equal size.
    pub fn split(&self, parts: usize) -> Vec<Plan> {
        let size = self.seats.len().div_ceil(parts.max(1)).max(1);
        self.seats
            .chunks(size)
            .map(|seats| Plan {
                seats: seats.to_vec(),
                ..self.clone()
            })
            .collect()
    }
}

impl Fleet {
    /// Creates the conversations on `system`, connects every client (spread
    /// over its endpoints and over source addresses), subscribes each to
    /// its conversation, and starts their tasks.
    pub async fn connect(system: &System, shape: &FleetShape) -> anyhow::Result<Fleet> {
        let started = Instant::now();
        let plan = Plan::make(system, shape).await?;
        let mut fleet = Fleet::open(&plan).await?;
        fleet.setup = started.elapsed();
        Ok(fleet)
    }

    /// Connects and subscribes the clients of `plan` (its conversations
    /// exist already) and starts their tasks.
    pub async fn open(plan: &Plan) -> anyhow::Result<Fleet> {
        let started = Instant::now();
        let wire = plan.wire;
        let opened: Vec<anyhow::Result<(usize, Socket)>> =
            futures::stream::iter(plan.seats.iter().enumerate().map(|(i, seat)| async move {
                let ws = tokio::time::timeout(
                    SETUP_TIMEOUT,
                    open(wire, &seat.url, seat.source, &seat.conversation),
                )
                .await
                .map_err(|_| anyhow!("client {i}: not subscribed within {SETUP_TIMEOUT:?}"))?
                .with_context(|| format!("client {i}"))?;
                Ok((i, ws))
            }))
            .buffer_unordered(plan.connect_concurrency)
            .collect()
            .await;
        let failures = opened.iter().filter(|r| r.is_err()).count();
        if let Some(Err(first)) = opened.iter().find(|r| r.is_err()) {
            bail!(
                "{failures} of {} clients failed to connect; first: {first:#}",
                plan.seats.len()
            );
        }

        let epoch = Instant::now();
        let (tally, watcher) = watch::channel(Arc::new(Tally::new(0, u64::MAX)));
        let closing = Arc::new(AtomicBool::new(false));
        let body: Arc<str> = "x".repeat(plan.body_bytes.max(1)).into();
        let mut slots: Vec<Option<Client>> = (0..plan.seats.len()).map(|_| None).collect();
        let mut tasks = Vec::with_capacity(plan.seats.len() * 2);
        for result in opened {
            let (i, ws) = result.expect("failures handled above");
            let seat = &plan.seats[i];
            let (sink, stream) = ws.split();
            let (out, queue) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(write_task(
                wire,
                sink,
                queue,
                seat.conversation.clone(),
                body.clone(),
                watcher.clone(),
            )));
            tasks.push(tokio::spawn(read_task(
                wire,
                stream,
                out.clone(),
                seat.user.clone(),
                epoch,
                watcher.clone(),
                closing.clone(),
            )));
            slots[i] = Some(Client {
                out,
                peers: seat.peers,
            });
        }
        Ok(Fleet {
            epoch,
            clients: slots
                .into_iter()
                .map(|c| c.expect("every client"))
                .collect(),
            tally,
            closing,
            tasks,
            phase: 0,
            conversations: plan.conversations,
            setup: started.elapsed(),
        })
    }

    /// Connected clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there are no clients (never, once connected).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Offers `load`: sends at the fixed rate for warmup + duration
    /// (senders taken round robin), then waits up to `drain` for every
    /// measured ack and delivery.
    pub async fn run_phase(&mut self, load: &Load) -> PhaseFigures {
        assert!(
            load.rate.is_finite() && load.rate > 0.0,
            "rate must be a positive number of messages per second"
        );
        self.phase += 1;
        let start_ns = self.now_ns() + 20_000_000;
        let measure_from_ns = start_ns + load.warmup.as_nanos() as u64;
        let tally = Arc::new(Tally::new(self.phase, measure_from_ns));
        let _ = self.tally.send(tally.clone());

        let total = ((load.warmup + load.duration).as_secs_f64() * load.rate).round() as u64;
        let senders: Vec<(mpsc::UnboundedSender<Outgoing>, u64)> = self
            .clients
            .iter()
            .map(|c| (c.out.clone(), c.peers))
            .collect();
        let schedule = Schedule {
            epoch: self.epoch,
            phase: self.phase,
            start_ns,
            measure_from_ns,
            period_ns: 1e9 / load.rate,
            total,
        };
        let scheduler_tally = tally.clone();
        // A thread of its own: tokio's timer wheel rounds sleeps up to the
        // next millisecond, which would add up to 1 ms of generator lag to
        // every latency (and dwarf the floor's); a thread sleep is precise
        // to tens of microseconds and never competes with the client tasks.
        tokio::task::spawn_blocking(move || schedule.run(&senders, &scheduler_tally))
            .await
            .expect("the scheduler does not panic");

        let deadline = Instant::now() + load.drain;
        let done = || {
            tally.delivered.load(Ordering::Relaxed) >= tally.expected.load(Ordering::Relaxed)
                && tally.acked.load(Ordering::Relaxed) >= tally.sent.load(Ordering::Relaxed)
        };
        while !done() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.figures(&tally, load, measure_from_ns)
    }

    fn figures(&self, tally: &Tally, load: &Load, measure_from_ns: u64) -> PhaseFigures {
        let sent = tally.sent.load(Ordering::Relaxed);
        let expected = tally.expected.load(Ordering::Relaxed);
        let delivered = tally.delivered.load(Ordering::Relaxed);
        let last = tally.last_delivery_ns.load(Ordering::Relaxed);
        let span = last.saturating_sub(measure_from_ns) as f64 / 1e9;
        // Never credit more than the schedule: the span is at least the
        // measured duration.
        let span = span.max(load.duration.as_secs_f64());
        PhaseFigures {
            load: load.clone(),
            sent,
            acked: tally.acked.load(Ordering::Relaxed),
            expected_deliveries: expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            duplicated: tally.duplicated.load(Ordering::Relaxed),
            errors: tally.errors.lock().expect("errors lock").clone(),
            send_failures: tally.send_failures.load(Ordering::Relaxed),
            disconnects: tally.disconnects.load(Ordering::Relaxed),
            delivered_per_sec: if span > 0.0 {
                delivered as f64 / span
            } else {
                0.0
            },
            latency: Percentiles::of(&tally.latency.lock().expect("histogram lock")),
            ack_latency: Percentiles::of(&tally.ack_latency.lock().expect("histogram lock")),
            scheduler_lag: Percentiles::of(&tally.lag.lock().expect("histogram lock")),
            nodes: None,
            cpu: None,
        }
    }

    /// Closes every client.
    pub async fn close(mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.clients.clear();
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The open-loop timetable of one phase.
struct Schedule {
    epoch: Instant,
    phase: u64,
    start_ns: u64,
    measure_from_ns: u64,
    period_ns: f64,
    total: u64,
}

impl Schedule {
    /// Hands message `k` to client `k % n` at `start + k * period`, on
    /// time or as soon after as this thread wakes; never waits for answers.
    fn run(&self, senders: &[(mpsc::UnboundedSender<Outgoing>, u64)], tally: &Tally) {
        let mut k = 0u64;
        while k < self.total {
            let intended_ns = self.start_ns + (k as f64 * self.period_ns) as u64;
            let now = self.epoch.elapsed().as_nanos() as u64;
            if intended_ns > now {
                std::thread::sleep(Duration::from_nanos(intended_ns - now));
                continue;
            }
            let (out, peers) = &senders[(k % senders.len() as u64) as usize];
            let measured = intended_ns >= self.measure_from_ns;
            if measured {
                Tally::record(&tally.lag, now - intended_ns);
                tally.sent.fetch_add(1, Ordering::Relaxed);
                tally.expected.fetch_add(*peers, Ordering::Relaxed);
            }
            let queued = out.send(Outgoing::Message {
                phase: self.phase,
                index: k,
                intended_ns,
            });
            if queued.is_err() && measured {
                tally.send_failures.fetch_add(1, Ordering::Relaxed);
            }
            k += 1;
        }
    }
}

/// Connects, waits for `welcome`, subscribes and waits for `subscribed`.
/// On Socket.IO, first joins the default namespace (`40`) once the
/// Engine.IO handshake (`0{...}`) came.
async fn open(
    wire: Wire,
    url: &str,
    source: std::net::Ipv4Addr,
    conversation: &str,
) -> anyhow::Result<Socket> {
    let mut ws = dial::connect(url, source).await?;
    if wire == Wire::SocketIo {
        expect_text(&mut ws, "Engine.IO open", |t| t.starts_with('0')).await?;
        ws.send(Message::Text("40".into())).await?;
        expect_text(&mut ws, "Socket.IO connect", |t| t.starts_with("40")).await?;
    }
    expect(wire, &mut ws, "welcome").await?;
    let subscribe = wire.encode(
        "subscribe",
        &serde_json::json!({ "conversation_id": conversation }).to_string(),
    );
    ws.send(Message::Text(subscribe.into())).await?;
    expect(wire, &mut ws, "subscribed").await?;
    Ok(ws)
}

/// Reads until a frame of `kind`, skipping others (presence, ...); an
/// `error` frame fails.
async fn expect(wire: Wire, ws: &mut Socket, kind: &str) -> anyhow::Result<()> {
    let mut failed = None;
    expect_text(ws, kind, |text| match wire.decode(text) {
        Decoded::Frame(frame) if frame.kind == kind => true,
        Decoded::Frame(frame) if frame.kind == "error" => {
            failed = Some(text.to_string());
            true
        }
        _ => false,
    })
    .await?;
    match failed {
        Some(error) => bail!("error frame while waiting for {kind}: {error}"),
        None => Ok(()),
    }
}

/// Reads text frames until one satisfies `wanted`.
async fn expect_text(
    ws: &mut Socket,
    what: &str,
    mut wanted: impl FnMut(&str) -> bool,
) -> anyhow::Result<()> {
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            if wanted(&text) {
                return Ok(());
            }
        }
    }
    bail!("socket closed while waiting for {what}")
}

async fn write_task(
    wire: Wire,
    mut sink: futures::stream::SplitSink<Socket, Message>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    conversation: String,
    body: Arc<str>,
    tally: watch::Receiver<Arc<Tally>>,
) {
    let frame = |m: &Outgoing| {
        let text = match m {
            Outgoing::Message {
                phase,
                index,
                intended_ns,
            } => wire.encode(
                "send",
                &format!(
                    r#"{{"conversation_id":"{conversation}","client_msg_id":"{phase}.{index}.{intended_ns}","body":"{body}"}}"#
                ),
            ),
            Outgoing::Pong => "3".to_string(),
        };
        Message::Text(text.into())
    };
    let fail = |m: &Outgoing| {
        let Outgoing::Message {
            phase, intended_ns, ..
        } = m
        else {
            return;
        };
        let tally = tally.borrow().clone();
        if tally.phase == *phase && *intended_ns >= tally.measure_from_ns {
            tally.send_failures.fetch_add(1, Ordering::Relaxed);
        }
    };
    while let Some(first) = queue.recv().await {
        if sink.feed(frame(&first)).await.is_err() {
            fail(&first);
            break;
        }
        // Whatever else is already due goes out in the same write.
        while let Ok(more) = queue.try_recv() {
            if sink.feed(frame(&more)).await.is_err() {
                fail(&more);
                break;
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    while let Ok(left) = queue.try_recv() {
        fail(&left);
    }
}

async fn read_task(
    wire: Wire,
    mut stream: futures::stream::SplitStream<Socket>,
    out: mpsc::UnboundedSender<Outgoing>,
    user: String,
    epoch: Instant,
    tally: watch::Receiver<Arc<Tally>>,
    closing: Arc<AtomicBool>,
) {
    let mut seen: HashSet<u64> = HashSet::new();
    let mut seen_phase = 0;
    while let Some(message) = stream.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let now_ns = epoch.elapsed().as_nanos() as u64;
        let frame = match wire.decode(&text) {
            Decoded::Frame(frame) => frame,
            Decoded::Ping => {
                let _ = out.send(Outgoing::Pong);
                continue;
            }
            Decoded::Other => continue,
        };
        let tally = tally.borrow().clone();
        if tally.phase != seen_phase {
            seen.clear();
            seen_phase = tally.phase;
        }
        let measured = |id: &Option<Cow<str>>| {
            let (phase, index, intended) = parse_msg_id(id.as_deref()?)?;
            (phase == tally.phase && intended >= tally.measure_from_ns).then_some((index, intended))
        };
        match frame.kind.as_ref() {
            "message" if frame.sender_id.as_deref() != Some(user.as_str()) => {
                let Some((index, intended)) = measured(&frame.client_msg_id) else {
                    continue;
                };
                if seen.insert(index) {
                    tally.delivered.fetch_add(1, Ordering::Relaxed);
                    tally.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
                    Tally::record(&tally.latency, now_ns.saturating_sub(intended));
                } else {
                    tally.duplicated.fetch_add(1, Ordering::Relaxed);
                }
            }
            "ack" => {
                if let Some((_, intended)) = measured(&frame.client_msg_id) {
                    tally.acked.fetch_add(1, Ordering::Relaxed);
                    Tally::record(&tally.ack_latency, now_ns.saturating_sub(intended));
                }
            }
            "error" => {
                let code = frame.code.as_deref().unwrap_or("unknown").to_string();
                *tally
                    .errors
                    .lock()
                    .expect("errors lock")
                    .entry(code)
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    if !closing.load(Ordering::Relaxed) {
        tally.borrow().disconnects.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_pairs_and_groups() {
        assert_eq!(place(4, 2), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(place(5, 2), vec![vec![0, 1], vec![2, 3, 4]]);
        assert_eq!(place(7, 3), vec![vec![0, 1, 2], vec![3, 4, 5, 6]]);
        assert_eq!(place(8, 3), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
    }

    #[test]
    fn frames_encode_for_each_wire() {
        let fields = r#"{"conversation_id":"c1"}"#;
        assert_eq!(
            Wire::Frames.encode("subscribe", fields),
            r#"{"type":"subscribe","conversation_id":"c1"}"#
        );
        assert_eq!(Wire::Frames.encode("ping", "{}"), r#"{"type":"ping"}"#);
        assert_eq!(
            Wire::SocketIo.encode("subscribe", fields),
            r#"42["subscribe",{"conversation_id":"c1"}]"#
        );
    }

    #[test]
    fn socketio_events_decode_as_frames() {
        let text = r#"42["message",{"sender_id":"u1","client_msg_id":"1.2.3","seq":4}]"#;
        let Decoded::Frame(frame) = Wire::SocketIo.decode(text) else {
            panic!("not a frame");
        };
        assert_eq!(frame.kind, "message");
        assert_eq!(frame.sender_id.as_deref(), Some("u1"));
        assert_eq!(frame.client_msg_id.as_deref(), Some("1.2.3"));
        assert!(matches!(Wire::SocketIo.decode("2"), Decoded::Ping));
        assert!(matches!(
            Wire::SocketIo.decode(r#"40{"sid":"x"}"#),
            Decoded::Other
        ));
        let Decoded::Frame(frame) =
            Wire::Frames.decode(r#"{"type":"ack","client_msg_id":"1.2.3"}"#)
        else {
            panic!("not a frame");
        };
        assert_eq!(frame.kind, "ack");
    }

    #[test]
    fn message_ids_round_trip() {
        assert_eq!(parse_msg_id("3.17.123456789"), Some((3, 17, 123456789)));
        assert_eq!(parse_msg_id("3.17"), None);
        assert_eq!(parse_msg_id("a.b.c"), None);
    }
}
