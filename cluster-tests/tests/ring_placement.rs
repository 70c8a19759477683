//! Every process places conversations identically, and a fourth node takes
//! about a quarter of them.

use std::time::Duration;

use harness::cluster::{Cluster, Options};
use harness::store::TestStore;

async fn report(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/cluster"))
        .await
        .expect("cluster endpoint")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn separate_processes_agree_and_a_fourth_node_takes_a_quarter() {
    let options = Options {
        nodes: 3,
        routers: 2,
        gossip: true,
        ..Options::default()
    };
    let mut cluster = Cluster::start(TestStore::sqlite(), options).await;
    let mut urls: Vec<String> = (0..2).map(|i| cluster.router_ops_url(i)).collect();
    urls.extend(
        cluster
            .nodes
            .iter()
            .map(|n| format!("http://{}", n.addr("http"))),
    );
    let digest = |r: &serde_json::Value| r["placement_digest"].as_str().unwrap().to_string();

    // Gossip converges: wait until every process has all three nodes.
    harness::eventually("3 nodes on every ring", Duration::from_secs(20), || async {
        for url in &urls {
            if report(url).await["ring"].as_array()?.len() != 3 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let mut digests = Vec::new();
    for url in &urls {
        digests.push(digest(&report(url).await));
    }
    println!("3 nodes: placement digests {digests:?}");
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "identical placement everywhere"
    );

    cluster.add_node();
    harness::eventually("4 nodes on every ring", Duration::from_secs(20), || async {
        for url in &urls {
            if report(url).await["ring"].as_array()?.len() != 4 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let r = report(&urls[0]).await;
    let new_share = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "node-4")
        .and_then(|m| m["ring_share"].as_f64())
        .expect("node-4 has a share");
    println!(
        "4 nodes: node-4 took {:.1}% of the conversations",
        new_share * 100.0
    );
    assert!(
        (0.18..0.32).contains(&new_share),
        "about a quarter: {new_share}"
    );
    let after: Vec<String> = {
        let mut v = Vec::new();
        for url in &urls {
            v.push(digest(&report(url).await));
        }
        v
    };
    assert!(
        after.windows(2).all(|w| w[0] == w[1]),
        "still identical: {after:?}"
    );
    assert_ne!(after[0], digests[0], "placement changed");
}
