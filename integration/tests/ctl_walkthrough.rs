//! cairnctl against etcdctl: the walkthrough (`scripts/ctl-walkthrough.sh`)
//! run on a fresh etcd with Debian's etcdctl and on another fresh etcd with
//! cairnctl must give the same transcript, byte for byte.

use anyhow::{ensure, Result};
use cairn_integration::bin_path;
use cairn_integration::etcd::Etcd;
use cairn_integration::walkthrough::{diff, etcd_transcript, run_walkthrough};

/// Lines the reference transcript must contain, so that two runs that both
/// went wrong the same way cannot pass as equal.
const EXPECTED_IN_REFERENCE: [&str; 5] = [
    "### ctl get key1 key6\nkey1\nvalue1\nkey2\nvalue2\n",
    "### ctl txn -i\ncompares:\n",
    "PUT\nkey-end\ndone\n[stopped]\n",
    "stderr: Error: etcdserver: mvcc: required revision has been compacted\n[exit 1]\n",
    "stderr: Error: watch is canceled by the server\n[exit 5]\n",
];

#[tokio::test]
async fn cairnctl_transcript_matches_etcdctl() -> Result<()> {
    let cairnctl = bin_path("cairnctl")?;

    let reference = etcd_transcript().await?;
    for expected in EXPECTED_IN_REFERENCE {
        ensure!(
            reference.contains(expected),
            "etcdctl's transcript lacks {expected:?}:\n{reference}"
        );
    }

    let transcript = {
        let etcd = Etcd::start().await?;
        run_walkthrough(&cairnctl, &etcd.endpoint).await?
    };
    ensure!(
        transcript == reference,
        "cairnctl's transcript differs from etcdctl's (- etcdctl, + cairnctl):\n{}",
        diff(&reference, &transcript)
    );
    Ok(())
}
