//! The `turbochat` binary as an app process: its disk queue survives
//! `kill -9`, and its commands work against a real router and node.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exactly, client, cluster, Recorder, DEADLINE};
use turbochat_client::dev_token::unverified_subject;
use turbochat_client::queue::{DiskQueue, QUEUE_FILE};
use turbochat_client::{Api, ConversationId, DevToken};
use turbochat_protocol::ids::direct_conversation_id;

/// `turbochat --url URL --user USER --data-dir DIR args...`.
fn turbochat(url: &str, user: &str, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_turbochat"));
    command
        .args(["--url", url, "--user", user, "--data-dir"])
        .arg(dir)
        .args(args)
        .env_remove("TURBOCHAT_TOKEN")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    command
}

/// Runs to completion (with a deadline).
fn run(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("turbochat starts");
    wait_output(child)
}

fn wait_output(mut child: Child) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "turbochat did not finish in {DEADLINE:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls (blocking) until the queue file mentions `text`.
fn wait_queued(dir: &Path, text: &str) {
    let path = dir.join(QUEUE_FILE);
    let started = Instant::now();
    while !std::fs::read_to_string(&path).is_ok_and(|log| log.contains(text)) {
        assert!(
            started.elapsed() < DEADLINE,
            "{text} never reached {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (b) The app (the CLI) is killed with SIGKILL while its messages wait in
/// the disk queue (the router is down); restarted with the same data
/// directory once the router is back, it sends them, each exactly once, in
/// the order they were queued. One more is killed around its ack with the
/// router up: sent again after restart, it is still stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_app_sends_its_queued_messages_after_restart() {
    let mut cluster = cluster().await;
    let url = cluster.router_url(0);
    let api = Api::new(&url, DevToken::new("alice"), Duration::from_secs(10));
    let conversation = api
        .create_direct("bob", Some("car-7"))
        .await
        .unwrap()
        .conversation_id;
    let id = conversation.to_string();
    let data = tempfile::tempdir().unwrap();

    tokio::task::block_in_place(|| cluster.routers[0].kill9());
    let offline = ["offline-1", "offline-2", "offline-3"];
    for text in offline {
        let mut child = turbochat(
            &url,
            "alice",
            data.path(),
            &["send", &id, text, "--timeout", "10m"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        tokio::task::block_in_place(|| wait_queued(data.path(), text));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    {
        let queue = DiskQueue::open(data.path()).unwrap();
        let bodies: Vec<&str> = queue.entries().iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, offline, "all three survived the kills, in order");
    }

    tokio::task::block_in_place(|| cluster.routers[0].restart());

    // Killed right after queuing with the router up: maybe sent, maybe
    // acked, maybe neither. Whatever happened, flush settles it.
    let mut child = turbochat(&url, "alice", data.path(), &["send", &id, "online-4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::task::block_in_place(|| wait_queued(data.path(), "online-4"));
    child.kill().unwrap();
    child.wait().unwrap();

    let output =
        tokio::task::block_in_place(|| run(turbochat(&url, "alice", data.path(), &["flush"])));
    assert!(output.status.success(), "flush failed: {}", stderr(&output));
    assert!(DiskQueue::open(data.path()).unwrap().is_empty());

    let expected: Vec<String> = ["offline-1", "offline-2", "offline-3", "online-4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut stored = api
        .history(conversation, None, Some(200))
        .await
        .unwrap()
        .messages;
    stored.sort_by_key(|m| m.seq);
    assert_exactly(&stored, 1, &expected);

    // A second client sees them too, once each.
    let dir = tempfile::tempdir().unwrap();
    let bob = client(&url, "bob", dir.path()).await;
    let rb = Recorder::start(&bob);
    bob.subscribe_from(conversation, 0).await.unwrap();
    rb.wait_messages(conversation, 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_exactly(&rb.messages(conversation), 1, &expected);
    bob.close().await;
}

/// mint-token, create-direct, send (prints the seq), history,
/// conversations, and a refused send's exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_work_against_a_real_router() {
    let cluster = cluster().await;
    let url = cluster.router_url(0);
    let data = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let output =
            tokio::task::block_in_place(|| run(turbochat(&url, "alice", data.path(), args)));
        (output.status.code(), stdout(&output), stderr(&output))
    };

    let (code, token, _) = cli(&["mint-token", "--sub", "dave"]);
    assert_eq!(code, Some(0));
    assert_eq!(unverified_subject(token.trim()).as_deref(), Some("dave"));

    let (code, id, err) = cli(&["create-direct", "bob", "--listing", "car-9"]);
    assert_eq!(code, Some(0), "{err}");
    let conversation: ConversationId = id.trim().parse().unwrap();
    assert_eq!(
        conversation,
        direct_conversation_id("alice", "bob", Some("car-9"))
    );
    let id = conversation.to_string();

    for (text, seq) in [("first", "1"), ("second", "2")] {
        let (code, out, err) = cli(&["send", &id, text]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out.trim(), seq);
    }

    let (code, out, _) = cli(&["history", &id]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("#1 ") && lines[0].ends_with("alice: first"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("#2 ") && lines[1].ends_with("alice: second"),
        "{out}"
    );

    let (code, out, _) = cli(&["conversations", "--json"]);
    assert_eq!(code, Some(0));
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["conversation_id"], id.as_str());
    assert_eq!(first["last_message"]["body"], "second");

    // bob and carol's conversation is not alice's: refused, exit 1.
    let foreign = direct_conversation_id("bob", "carol", None);
    Api::new(&url, DevToken::new("bob"), Duration::from_secs(10))
        .create_direct("carol", None)
        .await
        .unwrap();
    let (code, out, err) = cli(&["send", &foreign.to_string(), "hi"]);
    assert_eq!(code, Some(1), "{out} {err}");
    assert!(err.contains("not_found"), "{err}");
}

/// `tail` prints events as JSON lines; `chat` sends stdin lines and leaves
/// after `/quit` once they are acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_json_lines_and_chat_sends_stdin() {
    let cluster = cluster().await;
    let url = cluster.router_url(0);
    let api = Api::new(&url, DevToken::new("alice"), Duration::from_secs(10));
    let conversation = api
        .create_direct("bob", None)
        .await
        .unwrap()
        .conversation_id;
    let id = conversation.to_string();

    let bob_dir = tempfile::tempdir().unwrap();
    let mut tail = turbochat(&url, "bob", bob_dir.path(), &["tail"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let tail_out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(tail_out).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next_event = |kind: &str| -> serde_json::Value {
        let started = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(started.elapsed());
            let line = lines_rx.recv_timeout(left).expect("tail prints");
            let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            if value["event"] == kind {
                return value;
            }
        }
    };
    tokio::task::block_in_place(|| next_event("subscribed"));

    let alice_dir = tempfile::tempdir().unwrap();
    let mut chat = turbochat(&url, "alice", alice_dir.path(), &["chat", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"hello from chat\n/quit\n")
        .unwrap();
    let output = tokio::task::block_in_place(|| wait_output(chat));
    assert!(output.status.success(), "{}", stderr(&output));

    let message = tokio::task::block_in_place(|| next_event("message"));
    assert_eq!(message["body"], "hello from chat");
    assert_eq!(message["sender_id"], "alice");
    assert_eq!(message["seq"], 1);
    tail.kill().unwrap();
    tail.wait().unwrap();
}

/// Block, report and unsend from the command line (and so through the
/// SDK's `Api`), against a real router and node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_report_and_unsend_from_the_command_line() {
    let cluster = cluster().await;
    let url = cluster.router_url(0);
    let data = tempfile::tempdir().unwrap();
    let cli = |user: &str, args: &[&str]| {
        let output = tokio::task::block_in_place(|| run(turbochat(&url, user, data.path(), args)));
        (output.status.code(), stdout(&output), stderr(&output))
    };
    let (code, id, err) = cli("alice", &["create-direct", "bob", "--listing", "van-1"]);
    assert_eq!(code, Some(0), "{err}");
    let id = id.trim().to_string();
    let (code, seq, err) = cli("alice", &["send", &id, "pay by gift card"]);
    assert_eq!((code, seq.trim()), (Some(0), "1"), "{err}");

    let (code, out, err) = cli(
        "bob",
        &[
            "report",
            "--conversation",
            &id,
            "--seq",
            "1",
            "--reason",
            "scam",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.trim().parse::<i64>().unwrap() > 0, "{out}");
    let (code, _, err) = cli("bob", &["report", "--seq", "1", "--reason", "scam"]);
    assert_eq!(code, Some(1), "a report names a message or a user: {err}");

    let (code, out, err) = cli("bob", &["block", "alice"]);
    assert_eq!((code, out.trim()), (Some(0), "blocked alice"), "{err}");
    let (code, out, _) = cli("bob", &["blocks"]);
    assert_eq!((code, out.trim()), (Some(0), "alice"));

    // Bob cannot unsend alice's message; she can.
    let (code, _, err) = cli("bob", &["unsend", &id, "1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("forbidden"), "{err}");
    let (code, out, err) = cli("alice", &["unsend", &id, "1"]);
    assert_eq!((code, out.trim()), (Some(0), "unsent"), "{err}");
    let (code, out, _) = cli("bob", &["history", &id]);
    assert_eq!(code, Some(0));
    assert!(out.trim().ends_with("alice: (deleted)"), "{out}");

    let (code, out, _) = cli("bob", &["unblock", "alice"]);
    assert_eq!((code, out.trim()), (Some(0), "unblocked"));
    let (code, out, _) = cli("bob", &["blocks"]);
    assert_eq!((code, out.trim()), (Some(0), ""));
}
