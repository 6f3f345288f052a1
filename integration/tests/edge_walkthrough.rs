//! The etcdctl walkthrough against the cairn edge: a whole cairn (three log
//! nodes, NATS, two replicas, two lease instances, two watch gateways, the
//! edge) must print what a three-member etcd prints, byte for byte after
//! the placeholders, with Debian's etcdctl and with cairnctl.

use anyhow::{ensure, Result};
use cairn_integration::bin_path;
use cairn_integration::etcd::Etcd;
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::walkthrough::{diff, etcdctl_path, run_walkthrough};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_and_cairnctl_see_the_edge_as_etcdctl_sees_etcd() -> Result<()> {
    let etcdctl = etcdctl_path()?;
    let etcd = Etcd::start_cluster(3).await?;
    let expected = run_walkthrough(&etcdctl, &etcd.endpoint).await?;
    drop(etcd);
    for (client, ctl) in [("etcdctl", etcdctl), ("cairnctl", bin_path("cairnctl")?)] {
        // Each client gets a fresh cairn: the transcript starts at revision 1.
        let stack = Stack::start(StackOptions::default()).await?;
        let actual = run_walkthrough(&ctl, &stack.edge.addr).await?;
        ensure!(
            actual == expected,
            "{client} against the edge differs from etcdctl against etcd (- etcd, + cairn):\n{}\n\
             lease instances:\n{}\n{}",
            diff(&expected, &actual),
            stack.leases[0].output_tail(10),
            stack.leases[1].output_tail(10)
        );
        println!(
            "{client}: {} transcript lines equal",
            actual.lines().count()
        );
    }
    Ok(())
}
