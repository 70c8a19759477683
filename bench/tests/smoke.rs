//! The bench's smoke mode, as CI runs it: the real binary against the floor,
//! the Socket.IO peer, the seed's Go server (two instances, PostgreSQL,
//! Redis) and turbochat 1 node + 1 router on PostgreSQL, tiny numbers. It must produce figures for every system with nothing lost, so
//! the instrument cannot rot unnoticed. And the memory mode with its
//! clients split over child processes, as it runs for 100,000 connections.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn smoke_produces_figures_with_nothing_lost() {
    // Building turbochat-node/router (if this test is the first to need
    // them) is the harness's one-time cost, shared with the cluster tests,
    // and so is the seedgo peer's go build: done before the clock starts.
    let bin_dir = harness::bins::bin_dir();
    bench::seedgo::binary().expect("the seedgo peer builds");
    let results = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_turbochat-bench"))
        .args(["smoke", "--results-dir"])
        .arg(results.path())
        .env("TURBOCHAT_BIN_DIR", bin_dir)
        .output()
        .expect("turbochat-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "smoke failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    eprintln!("{stdout}");
    eprintln!("smoke took {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "smoke too slow"
    );

    let files: Vec<_> = std::fs::read_dir(results.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "one JSON result: {files:?}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(report["mode"], "smoke");
    let systems = report["systems"].as_array().expect("systems");
    let names: Vec<&str> = systems
        .iter()
        .filter_map(|s| s["system"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "floor",
            "socketio",
            "seedgo",
            "turbochat-1c",
            "turbochat-1n1r"
        ]
    );
    for system in systems {
        let name = &system["system"];
        let phase = &system["phases"][0];
        let sent = phase["sent"].as_u64().unwrap();
        assert!(sent > 0, "{name}: nothing sent");
        assert_eq!(
            phase["acked"].as_u64(),
            Some(sent),
            "{name}: every send acked"
        );
        assert!(
            phase["delivered"].as_u64().unwrap() > 0,
            "{name}: nothing delivered"
        );
        assert_eq!(
            phase["delivered"], phase["expected_deliveries"],
            "{name}: every delivery arrived"
        );
        assert_eq!(phase["lost"], 0, "{name}: lost");
        assert_eq!(phase["duplicated"], 0, "{name}: duplicated");
        let latency = &phase["latency"];
        assert_eq!(
            latency["count"], phase["delivered"],
            "{name}: a latency per delivery"
        );
        for key in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
            assert!(
                latency[key].as_f64().unwrap() > 0.0,
                "{name}: {key} recorded"
            );
        }
        assert!(phase["delivered_per_sec"].as_f64().unwrap() > 0.0);
        // turbochat's nodes are scraped around the phase (warmup included,
        // so they committed at least what was sent in the measured part);
        // the peers have no such figures.
        let nodes = &phase["nodes"];
        if name == "turbochat-1n1r" || name == "turbochat-1c" {
            assert!(
                nodes["messages_committed"].as_u64().unwrap() >= sent,
                "{name}: the node committed every message: {nodes}"
            );
            assert!(nodes["commits"].as_u64().unwrap() > 0, "{nodes}");
            assert!(nodes["messages_per_commit"].as_f64().unwrap() >= 1.0);
            for key in ["send_commit_p50_ms", "send_commit_p99_ms", "commit_p99_ms"] {
                assert!(nodes[key].as_f64().unwrap() > 0.0, "{name}: {key}: {nodes}");
            }
            // The servers' CPU, PostgreSQL's included, is sampled.
            let cpu = &phase["cpu"];
            // The co-located process is one process, labelled as its node.
            let processes: &[&str] = if name == "turbochat-1c" {
                &["node-1", "postgres"]
            } else {
                &["node-1", "router-1", "postgres"]
            };
            for process in processes {
                assert!(
                    cpu["seconds"][process].as_f64().is_some(),
                    "{name}: CPU of {process}: {cpu}"
                );
            }
            assert!(cpu["total_us_per_message"].as_f64().unwrap() > 0.0, "{cpu}");
            assert!(cpu["wall_seconds"].as_f64().unwrap() > 1.0, "{cpu}");
        } else if name == "seedgo" {
            assert!(nodes.is_null(), "{name} has no nodes: {nodes}");
            // Both instances, and the PostgreSQL backends and Redis they
            // use for every message, are counted.
            let cpu = &phase["cpu"];
            for process in ["seedgo-1", "seedgo-2"] {
                assert!(
                    cpu["seconds"][process].as_f64().is_some(),
                    "{name}: CPU of {process}: {cpu}"
                );
            }
            for service in ["postgres", "redis-server"] {
                assert!(
                    cpu["seconds"][service].as_f64().unwrap() > 0.0,
                    "{name}: every message goes through {service}: {cpu}"
                );
            }
            assert_eq!(
                system["memory"]["processes"].as_array().unwrap().len(),
                2,
                "{name}: two instances"
            );
        } else {
            assert!(nodes.is_null(), "{name} has no nodes: {nodes}");
            assert!(phase["cpu"]["seconds"][name.as_str().unwrap()].is_number());
        }
        let memory = &system["memory"];
        assert!(memory["total_per_connection_bytes"].as_f64().unwrap() > 0.0);
        assert!(memory["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["rss_kib"].as_u64().unwrap() > 0));
    }
    assert!(stdout.contains("latency p99 ms"), "the table is printed");
    assert!(
        stdout.contains("group commit p50/p99 ms"),
        "the nodes' figures are printed"
    );
}

#[test]
fn memory_mode_holds_clients_from_several_processes() {
    let bin_dir = harness::bins::bin_dir();
    let results = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_turbochat-bench"))
        .args([
            "memory",
            "--targets",
            "1n2r",
            "--clients",
            "60",
            "--processes",
            "3",
            "--hold",
            "1",
            "--results-dir",
        ])
        .arg(results.path())
        .env("TURBOCHAT_BIN_DIR", bin_dir)
        .output()
        .expect("turbochat-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "memory failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains("60 idle clients connected"),
        "all 60 clients connected: {stderr}"
    );
    let file = std::fs::read_dir(results.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON result");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let system = &report["systems"][0];
    assert_eq!(system["system"], "turbochat-1n2r");
    assert_eq!(system["connections"], 60);
    let processes = system["memory"]["processes"].as_array().expect("processes");
    assert_eq!(
        processes.len(),
        3,
        "one node and two routers: {processes:?}"
    );
    assert!(
        processes.iter().all(|p| p["rss_kib"].as_u64().unwrap() > 0),
        "every server process sampled: {processes:?}"
    );
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("held by 3 bench processes")),
        "notes say how the clients were held: {}",
        report["notes"]
    );
}
