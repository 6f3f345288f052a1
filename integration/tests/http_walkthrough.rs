//! etcd's HTTP/JSON gateway on the cairn edge: the curl walkthrough
//! (`scripts/http-walkthrough.sh`) against a whole cairn must print what it
//! prints against a three-member etcd, byte for byte after the placeholders.

use anyhow::{ensure, Result};
use cairn_integration::etcd::Etcd;
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::walkthrough::{diff, run_http_walkthrough};

/// Lines the reference transcript must contain, so that two runs that both
/// went wrong the same way cannot pass as equal.
const EXPECTED_IN_REFERENCE: [&str; 4] = [
    r#""kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#,
    r#"{"result":{"header":{"cluster_id":"<cluster_id>","member_id":"<member_id>","revision":"9","raft_term":"<raft_term>"},"created":true}}"#,
    r#"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#,
    "### POST /v3/no/such/path {}\n[404]\nNot Found\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_the_edge_as_it_sees_etcd() -> Result<()> {
    let expected = {
        let etcd = Etcd::start_cluster(3).await?;
        run_http_walkthrough(&etcd.endpoint).await?
    };
    for line in EXPECTED_IN_REFERENCE {
        ensure!(
            expected.contains(line),
            "etcd's transcript lacks {line:?}:\n{expected}"
        );
    }
    let stack = Stack::start(StackOptions::default()).await?;
    let actual = run_http_walkthrough(&stack.edge.addr).await?;
    ensure!(
        actual == expected,
        "curl against the edge differs from curl against etcd (- etcd, + cairn):\n{}",
        diff(&expected, &actual)
    );
    println!("{} transcript lines equal", actual.lines().count());
    Ok(())
}
