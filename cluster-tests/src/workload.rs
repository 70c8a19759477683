//! Steady chat traffic for the cluster scenarios, with the checks every
//! scenario makes from the clients' side.
//!
//! Each conversation has one sender (on router `i % routers`) and one
//! receiver (on the next router). A sender sends a new message every tick
//! and re-sends, with the same `client_msg_id`, anything not acked within a
//! timeout or answered with a retryable error — what the SDK does. A
//! receiver reconnects when its socket drops and resumes from its last seq.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Api;
use crate::tokens::valid;

/// Workload shape.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Conversations (each with its own sender and receiver).
    pub conversations: usize,
    /// Time between two new messages of one sender.
    pub interval: Duration,
    /// Re-send a message not acked after this long.
    pub ack_timeout: Duration,
    /// How the senders send.
    pub senders: Senders,
}

/// How a sender sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Senders {
    /// A new message every tick, whatever is unacked.
    Ticking,
    /// Half the conversations: `burst` new messages back to back every tick
    /// (several in flight at once); the other half: SDK-like, one message
    /// in flight, the next a tick after its ack. Both re-send what is
    /// unacked in send order.
    PipelinedAndSdk {
        /// Messages per tick of a pipelined sender.
        burst: usize,
    },
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            conversations: 12,
            interval: Duration::from_millis(50),
            ack_timeout: Duration::from_secs(2),
            senders: Senders::Ticking,
        }
    }
}

impl Shape {
    /// Pipelined (3 in flight per tick) and SDK-like senders, half each,
    /// with the SDK's 10 s ack timeout. A tick of 200 ms keeps a pipelined
    /// sender (15 messages/s) inside the router's default per-user send
    /// rate (20/s): a refused send retried after later ones were acked
    /// would be the client's own reordering.
    pub fn pipelined_and_sdk() -> Shape {
        Shape {
            conversations: 12,
            interval: Duration::from_millis(200),
            ack_timeout: Duration::from_secs(10),
            senders: Senders::PipelinedAndSdk { burst: 3 },
        }
    }
}

/// What one sender does each tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Ticking,
    Pipelined(usize),
    Sdk,
}

/// What the senders and receivers saw.
#[derive(Debug, Default)]
struct Record {
    /// client_msg_id -> acked seq, per conversation.
    acked: HashMap<String, BTreeMap<String, u64>>,
    /// Every message id sent at least once.
    sent: HashMap<String, Vec<String>>,
    /// Seqs received per conversation, in arrival order (before dedupe).
    received: HashMap<String, Vec<u64>>,
    /// Ack times (for the longest pause).
    ack_times: Vec<Instant>,
    /// Ack times per conversation (for the longest pause one conversation saw).
    ack_times_by_conversation: HashMap<String, Vec<Instant>>,
    /// When each (conversation, seq) was acked and first received.
    acked_at: HashMap<(String, u64), Instant>,
    received_at: HashMap<(String, u64), Instant>,
    /// Error answers to sends (each retried).
    refused: usize,
    /// Sends re-sent because no answer came within the ack timeout.
    timeouts: usize,
}

/// Running traffic.
pub struct Traffic {
    record: Arc<Mutex<Record>>,
    stop_sending: watch::Sender<bool>,
    stop_all: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    conversations: Vec<(String, String, String)>,
    api: Api,
    started: Instant,
}

/// The figures a scenario prints and checks.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Distinct messages the senders sent.
    pub sent: usize,
    /// Of those, acked.
    pub acked: usize,
    /// Messages in the store.
    pub stored: usize,
    /// Delivered to receivers (after dedupe).
    pub delivered: usize,
    /// Acked messages missing from the store or from a receiver.
    pub lost: usize,
    /// Deliveries dropped as duplicates by the receivers.
    pub duplicates_before_dedupe: usize,
    /// Longest time with no ack at all (the outage seen by clients).
    pub longest_ack_pause: Duration,
    /// Longest time one conversation went without an ack.
    pub longest_conversation_pause: Duration,
    /// Pairs of one sender's messages stored in the opposite order to the
    /// one they were first sent in.
    pub inversions: usize,
    /// Error answers to sends.
    pub refused: usize,
    /// Sends not answered within the client's ack timeout.
    pub timeouts: usize,
    /// Longest time from a message's ack to its receiver getting it.
    pub longest_delivery_lag: Duration,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} acked {} stored {} delivered {} lost {} duplicated-before-dedupe {} longest-ack-pause {:?} longest-conversation-pause {:?} inversions {} refused {} timeouts {} longest-delivery-lag {:?}",
            self.sent, self.acked, self.stored, self.delivered, self.lost,
            self.duplicates_before_dedupe, self.longest_ack_pause,
            self.longest_conversation_pause, self.inversions, self.refused, self.timeouts,
            self.longest_delivery_lag
        )
    }
}

impl Traffic {
    /// Creates the conversations and starts senders and receivers.
    pub async fn start(routers: &[String], shape: Shape) -> Traffic {
        // The checks read history through the last router (scenarios that
        // kill a router kill the first).
        let api = Api::new(routers.last().expect("a router"));
        let record = Arc::new(Mutex::new(Record::default()));
        let (stop_sending, sending) = watch::channel(false);
        let (stop_all, all) = watch::channel(false);
        let run = uuid::Uuid::new_v4().simple().to_string();
        let mut conversations = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..shape.conversations {
            let sender = format!("s{i}-{}", &run[..8]);
            let receiver = format!("r{i}-{}", &run[..8]);
            let conversation = api.create_direct(&valid(&sender), &receiver, None).await;
            conversations.push((conversation.clone(), sender.clone(), receiver.clone()));
            let send_routers = rotate(routers, i);
            let recv_routers = rotate(routers, i + 1);
            let style = match shape.senders {
                Senders::Ticking => Style::Ticking,
                Senders::PipelinedAndSdk { burst } if i % 2 == 0 => Style::Pipelined(burst),
                Senders::PipelinedAndSdk { .. } => Style::Sdk,
            };
            tasks.push(tokio::spawn(receive(
                recv_routers,
                valid(&receiver),
                conversation.clone(),
                record.clone(),
                all.clone(),
            )));
            tasks.push(tokio::spawn(send(
                send_routers,
                valid(&sender),
                conversation,
                shape.clone(),
                style,
                record.clone(),
                sending.clone(),
                all.clone(),
            )));
        }
        Traffic {
            record,
            stop_sending,
            stop_all,
            tasks,
            conversations,
            api,
            started: Instant::now(),
        }
    }

    /// Acks so far.
    pub fn acked(&self) -> usize {
        self.record.lock().unwrap().ack_times.len()
    }

    /// The longest time with no ack at all from `since` until now (the
    /// outage all clients saw at once during one step of a scenario).
    pub fn longest_ack_pause_since(&self, since: Instant) -> Duration {
        let r = self.record.lock().unwrap();
        longest_gap(&r.ack_times, since, Instant::now())
    }

    /// The longest time one conversation went without an ack from `since`
    /// until now (its sender kept sending: the outage of the conversations
    /// a failed or moving owner held).
    pub fn longest_conversation_pause_since(&self, since: Instant) -> Duration {
        let now = Instant::now();
        let r = self.record.lock().unwrap();
        r.ack_times_by_conversation
            .values()
            .map(|times| longest_gap(times, since, now))
            .max()
            .unwrap_or_default()
    }

    /// Waits until `n` more acks arrived (traffic flows), or panics.
    pub async fn wait_for_acks(&self, more: usize, deadline: Duration) {
        let target = self.acked() + more;
        crate::eventually("acks", deadline, || async {
            (self.acked() >= target).then_some(())
        })
        .await;
    }

    /// Stops new sends, waits until every sent message is acked and every
    /// receiver has caught up, stops, and checks against the store.
    pub async fn finish(mut self, deadline: Duration) -> Figures {
        let _ = self.stop_sending.send(true);
        let record = self.record.clone();
        crate::eventually("every sent message acked", deadline, || {
            let record = record.clone();
            async move {
                let r = record.lock().unwrap();
                let all = r.sent.iter().all(|(c, ids)| {
                    let acked = r.acked.get(c).map(|a| a.len()).unwrap_or(0);
                    acked == ids.len()
                });
                all.then_some(())
            }
        })
        .await;
        // Receivers catch up to the highest acked seq.
        let targets: HashMap<String, u64> = {
            let r = record.lock().unwrap();
            r.acked
                .iter()
                .map(|(c, a)| (c.clone(), a.values().copied().max().unwrap_or(0)))
                .collect()
        };
        let behind = |record: &Record| -> Vec<String> {
            targets
                .iter()
                .filter_map(|(c, max)| {
                    let got = record
                        .received
                        .get(c)
                        .and_then(|v| v.iter().max())
                        .copied()
                        .unwrap_or(0);
                    (got < *max).then(|| format!("{c}: receiver at {got}, acked up to {max}"))
                })
                .collect()
        };
        let caught_up = tokio::time::timeout(deadline, async {
            while !behind(&record.lock().unwrap()).is_empty() {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        if caught_up.is_err() {
            let lagging = behind(&record.lock().unwrap());
            panic!("timed out after {deadline:?} waiting for receivers: {lagging:?}");
        }
        let _ = self.stop_all.send(true);
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.check().await
    }

    async fn check(&self) -> Figures {
        let (mut sent, mut acked, mut stored, mut delivered, mut lost, mut dups) =
            (0, 0, 0, 0, 0, 0);
        let mut inversions = 0;
        let mut checks = Vec::new();
        {
            let r = self.record.lock().unwrap();
            for (conversation, sender, _) in &self.conversations {
                sent += r.sent.get(conversation).map(|v| v.len()).unwrap_or(0);
                let acks = r.acked.get(conversation).cloned().unwrap_or_default();
                acked += acks.len();
                let arrivals = r.received.get(conversation).cloned().unwrap_or_default();
                // Client-side dedupe by seq, as the SDK does.
                let mut last = 0u64;
                let mut seen = Vec::new();
                for seq in arrivals {
                    if seq <= last {
                        dups += 1;
                    } else {
                        assert_eq!(seq, last + 1, "gap in {conversation}: {last} then {seq}");
                        seen.push(seq);
                        last = seq;
                    }
                }
                delivered += seen.len();
                checks.push((conversation.clone(), sender.clone(), acks, seen));
            }
        }
        for (conversation, sender, acks, seen) in checks {
            let history = self.api.all_messages(&valid(&sender), &conversation).await;
            stored += history.len();
            let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
            let expected: Vec<u64> = (1..=history.len() as u64).collect();
            assert_eq!(
                seqs, expected,
                "store seqs of {conversation} are gapless and unique"
            );
            let by_id: HashMap<&str, u64> = history
                .iter()
                .map(|m| {
                    (
                        m["client_msg_id"].as_str().unwrap(),
                        m["seq"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(by_id.len(), history.len(), "no message stored twice");
            // Ids are `{conversation}-{n}`, n in the order first sent.
            let mut in_send_order: Vec<(usize, u64)> = by_id
                .iter()
                .filter_map(|(id, seq)| Some((id.rsplit('-').next()?.parse().ok()?, *seq)))
                .collect();
            in_send_order.sort();
            inversions += in_send_order.windows(2).filter(|w| w[1].1 < w[0].1).count();
            for (id, seq) in &acks {
                match by_id.get(id.as_str()) {
                    Some(stored_seq) => assert_eq!(stored_seq, seq, "ack seq matches the store"),
                    None => lost += 1,
                }
            }
            lost += acks.len().saturating_sub(seen.len());
        }
        let longest_ack_pause = {
            let r = self.record.lock().unwrap();
            let mut times = r.ack_times.clone();
            times.sort();
            times
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or_default()
        };
        let longest_conversation_pause = self.longest_conversation_pause_since(self.started);
        let (refused, timeouts, longest_delivery_lag) = {
            let r = self.record.lock().unwrap();
            let lag = r
                .acked_at
                .iter()
                .filter_map(|(key, acked)| {
                    Some(r.received_at.get(key)?.saturating_duration_since(*acked))
                })
                .max()
                .unwrap_or_default();
            (r.refused, r.timeouts, lag)
        };
        Figures {
            sent,
            acked,
            stored,
            delivered,
            lost,
            duplicates_before_dedupe: dups,
            longest_ack_pause,
            longest_conversation_pause,
            inversions,
            refused,
            timeouts,
            longest_delivery_lag,
        }
    }
}

/// The longest gap between consecutive `times` within `[since, now]`,
/// counting from `since` to the first and from the last to `now`.
fn longest_gap(times: &[Instant], since: Instant, now: Instant) -> Duration {
    let mut times: Vec<Instant> = times.iter().copied().filter(|t| *t >= since).collect();
    times.sort();
    let mut last = since;
    let mut longest = Duration::ZERO;
    for t in times.into_iter().chain(std::iter::once(now)) {
        longest = longest.max(t.saturating_duration_since(last));
        last = t;
    }
    longest
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(router: &str, token: &str) -> Option<Socket> {
    let url = format!(
        "{}/ws?token={token}",
        router.replacen("http://", "ws://", 1)
    );
    tokio_tungstenite::connect_async(url)
        .await
        .ok()
        .map(|(ws, _)| ws)
}

/// The routers starting at the `i`-th: a client tries the next when one
/// is gone.
fn rotate(routers: &[String], i: usize) -> Vec<String> {
    (0..routers.len())
        .map(|k| routers[(i + k) % routers.len()].clone())
        .collect()
}

/// Connects to the first router that answers, starting after the last one
/// used when that one failed.
async fn connect_any(routers: &[String], token: &str, next: &mut usize) -> Option<Socket> {
    for _ in 0..routers.len() {
        let router = &routers[*next % routers.len()];
        if let Some(ws) = connect(router, token).await {
            return Some(ws);
        }
        *next += 1;
    }
    None
}

#[allow(clippy::too_many_arguments)]
async fn send(
    routers: Vec<String>,
    token: String,
    conversation: String,
    shape: Shape,
    style: Style,
    record: Arc<Mutex<Record>>,
    mut sending: watch::Receiver<bool>,
    mut all: watch::Receiver<bool>,
) {
    let mut next_id = 0usize;
    let mut router = 0usize;
    // n -> when it is due to go (again): sent in n order.
    let mut unacked: BTreeMap<usize, Instant> = BTreeMap::new();
    // n -> when it was last sent (for the client's ack timeout).
    let mut in_flight: HashMap<usize, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(shape.interval);
    let mut last_ack = Instant::now();
    let id_of = |n: usize| format!("{conversation}-{n}");
    'reconnect: loop {
        if *all.borrow() {
            return;
        }
        let Some(mut ws) = connect_any(&routers, &token, &mut router).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // After a reconnect, re-send everything unacked, in order.
        let now = Instant::now();
        for at in unacked.values_mut() {
            *at = now;
        }
        in_flight.clear();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = Instant::now();
                    if !*sending.borrow() {
                        let new = match style {
                            Style::Ticking => 1,
                            Style::Pipelined(burst) => burst,
                            Style::Sdk => usize::from(unacked.is_empty()
                                && now.duration_since(last_ack) >= shape.interval),
                        };
                        for _ in 0..new {
                            let n = next_id;
                            next_id += 1;
                            record.lock().unwrap().sent.entry(conversation.clone()).or_default().push(id_of(n));
                            unacked.insert(n, now);
                        }
                    }
                    for (n, due) in unacked.iter_mut() {
                        let timed_out = in_flight
                            .get(n)
                            .is_some_and(|at| now.duration_since(*at) >= shape.ack_timeout);
                        if timed_out {
                            record.lock().unwrap().timeouts += 1;
                            *due = now;
                        }
                        if *due > now || (in_flight.contains_key(n) && !timed_out) {
                            continue;
                        }
                        in_flight.insert(*n, now);
                        let frame = json!({"type": "send", "conversation_id": conversation,
                            "client_msg_id": id_of(*n), "body": "load"});
                        if ws.send(Message::Text(frame.to_string().into())).await.is_err() {
                            router += 1;
                            continue 'reconnect;
                        }
                    }
                }
                message = ws.next() => {
                    let Some(Ok(Message::Text(text))) = message else {
                        if matches!(message, Some(Ok(_))) { continue; }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        router += 1;
                        continue 'reconnect;
                    };
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let Some(id) = frame["client_msg_id"].as_str() else { continue };
                    let Some(n) = id.rsplit('-').next().and_then(|n| n.parse::<usize>().ok()) else { continue };
                    match frame["type"].as_str() {
                        Some("ack") if unacked.remove(&n).is_some() => {
                            in_flight.remove(&n);
                            let mut r = record.lock().unwrap();
                            r.acked.entry(conversation.clone()).or_default()
                                .insert(id.to_string(), frame["seq"].as_u64().unwrap_or(0));
                            let now = Instant::now();
                            last_ack = now;
                            let seq = frame["seq"].as_u64().unwrap_or(0);
                            r.acked_at.entry((conversation.clone(), seq)).or_insert(now);
                            r.ack_times.push(now);
                            r.ack_times_by_conversation.entry(conversation.clone()).or_default().push(now);
                        }
                        Some("error") if unacked.contains_key(&n) => {
                            record.lock().unwrap().refused += 1;
                            // Retryable: this and everything after it go
                            // again, in order, a little later.
                            let again = Instant::now() + Duration::from_millis(100);
                            for (k, due) in unacked.range_mut(n..) {
                                in_flight.remove(k);
                                *due = again;
                            }
                        }
                        _ => {}
                    }
                }
                _ = sending.changed() => {}
                _ = all.changed() => return,
            }
        }
    }
}

async fn receive(
    routers: Vec<String>,
    token: String,
    conversation: String,
    record: Arc<Mutex<Record>>,
    mut all: watch::Receiver<bool>,
) {
    let mut last = 0u64;
    let mut router = 0usize;
    loop {
        if *all.borrow() {
            return;
        }
        let Some(mut ws) = connect_any(&routers, &token, &mut router).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let frame = json!({"type": "subscribe", "conversation_id": conversation, "since": last});
        if ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            continue;
        }
        loop {
            tokio::select! {
                message = ws.next() => {
                    let Some(Ok(message)) = message else {
                        router += 1;
                        break;
                    };
                    let Message::Text(text) = message else { continue };
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if frame["type"] == "message" {
                        let seq = frame["seq"].as_u64().unwrap_or(0);
                        let mut r = record.lock().unwrap();
                        r.received.entry(conversation.clone()).or_default().push(seq);
                        r.received_at.entry((conversation.clone(), seq)).or_insert_with(Instant::now);
                        drop(r);
                        last = last.max(seq);
                    }
                }
                _ = all.changed() => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
