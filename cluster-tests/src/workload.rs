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
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            conversations: 12,
            interval: Duration::from_millis(50),
            ack_timeout: Duration::from_secs(2),
        }
    }
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
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} acked {} stored {} delivered {} lost {} duplicated-before-dedupe {} longest-ack-pause {:?}",
            self.sent, self.acked, self.stored, self.delivered, self.lost,
            self.duplicates_before_dedupe, self.longest_ack_pause
        )
    }
}

impl Traffic {
    /// Creates the conversations and starts senders and receivers.
    pub async fn start(routers: &[String], shape: Shape) -> Traffic {
        let api = Api::new(&routers[0]);
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
            let send_router = routers[i % routers.len()].clone();
            let recv_router = routers[(i + 1) % routers.len()].clone();
            tasks.push(tokio::spawn(receive(
                recv_router,
                valid(&receiver),
                conversation.clone(),
                record.clone(),
                all.clone(),
            )));
            tasks.push(tokio::spawn(send(
                send_router,
                valid(&sender),
                conversation,
                shape.clone(),
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
        let _ = self.started;
        Figures {
            sent,
            acked,
            stored,
            delivered,
            lost,
            duplicates_before_dedupe: dups,
            longest_ack_pause,
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

async fn send(
    router: String,
    token: String,
    conversation: String,
    shape: Shape,
    record: Arc<Mutex<Record>>,
    mut sending: watch::Receiver<bool>,
    mut all: watch::Receiver<bool>,
) {
    let mut next_id = 0usize;
    // id -> last attempt
    let mut unacked: BTreeMap<String, Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(shape.interval);
    'reconnect: loop {
        if *all.borrow() {
            return;
        }
        let Some(mut ws) = connect(&router, &token).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // After a reconnect, re-send everything unacked.
        for (_, at) in unacked.iter_mut() {
            *at = Instant::now() - shape.ack_timeout;
        }
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !*sending.borrow() {
                        let id = format!("{conversation}-{next_id}");
                        next_id += 1;
                        record.lock().unwrap().sent.entry(conversation.clone()).or_default().push(id.clone());
                        unacked.insert(id, Instant::now() - shape.ack_timeout);
                    }
                    let now = Instant::now();
                    for (id, at) in unacked.iter_mut() {
                        if now.duration_since(*at) >= shape.ack_timeout {
                            *at = now;
                            let frame = json!({"type": "send", "conversation_id": conversation,
                                "client_msg_id": id, "body": "load"});
                            if ws.send(Message::Text(frame.to_string().into())).await.is_err() {
                                continue 'reconnect;
                            }
                        }
                    }
                }
                message = ws.next() => {
                    let Some(Ok(Message::Text(text))) = message else {
                        if matches!(message, Some(Ok(_))) { continue; }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue 'reconnect;
                    };
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let Some(id) = frame["client_msg_id"].as_str() else { continue };
                    match frame["type"].as_str() {
                        Some("ack") if unacked.remove(id).is_some() => {
                            let mut r = record.lock().unwrap();
                            r.acked.entry(conversation.clone()).or_default()
                                .insert(id.to_string(), frame["seq"].as_u64().unwrap_or(0));
                            let now = Instant::now();
                            r.ack_times.push(now);
                            r.ack_times_by_conversation.entry(conversation.clone()).or_default().push(now);
                        }
                        Some("error") => {
                            // Retryable: try again on a later tick.
                            if let Some(at) = unacked.get_mut(id) {
                                *at = Instant::now() - shape.ack_timeout + Duration::from_millis(100);
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
    router: String,
    token: String,
    conversation: String,
    record: Arc<Mutex<Record>>,
    mut all: watch::Receiver<bool>,
) {
    let mut last = 0u64;
    loop {
        if *all.borrow() {
            return;
        }
        let Some(mut ws) = connect(&router, &token).await else {
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
                    let Some(Ok(message)) = message else { break };
                    let Message::Text(text) = message else { continue };
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if frame["type"] == "message" {
                        let seq = frame["seq"].as_u64().unwrap_or(0);
                        record.lock().unwrap().received.entry(conversation.clone()).or_default().push(seq);
                        last = last.max(seq);
                    }
                }
                _ = all.changed() => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
