//! etcd's Lock and Election through the edge, with the clients people use:
//! Debian's etcdctl (`lock`, `elect`, which build both from KV, leases and
//! watches) and the `etcd-client` crate (which calls the Lock and Election
//! services), against a whole cairn.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::walkthrough::etcdctl_path;
use etcd_client::{Client, EventType, LockOptions};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a waiter may take to notice that the lock or leadership is free.
const HANDOVER: Duration = Duration::from_secs(10);
/// How long a waiter is watched to show that it does wait.
const STILL_WAITING: Duration = Duration::from_millis(1500);

/// One etcdctl process whose output is read line by line.
struct Ctl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Ctl {
    fn spawn(endpoint: &str, args: &[&str]) -> Result<Self> {
        let mut child = etcdctl(endpoint)?
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcdctl")?;
        let stdout = child.stdout.take().context("etcdctl's stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line printed within `patience`.
    async fn line(&mut self, patience: Duration) -> Result<Option<String>> {
        match tokio::time::timeout(patience, self.lines.next_line()).await {
            Ok(line) => Ok(line?),
            Err(_) => Ok(None),
        }
    }

    async fn expect_line(&mut self, what: &str) -> Result<String> {
        match self.line(HANDOVER).await? {
            Some(line) => Ok(line),
            None => bail!("etcdctl printed no {what} within {HANDOVER:?}"),
        }
    }
}

fn etcdctl(endpoint: &str) -> Result<Command> {
    let mut command = Command::new(etcdctl_path()?);
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// Revokes the lease whose ID ends a lock or election key (`name/<hex>`).
async fn revoke_lease_of(endpoint: &str, key: &str) -> Result<()> {
    let (_, hex) = key.rsplit_once('/').context("a key without a lease")?;
    let status = etcdctl(endpoint)?
        .args(["lease", "revoke", hex])
        .stdout(Stdio::null())
        .status()
        .await?;
    ensure!(status.success(), "etcdctl lease revoke {hex}: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_serialises_holders_and_a_revoked_lease_hands_the_lock_on() -> Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let endpoint = stack.edge.addr.as_str();
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("record");

    // Two processes contend for one lock, each holding it for a second.
    let mut contenders = Vec::new();
    for name in ["first", "second"] {
        let script = format!(
            "echo {name} start >> {path}; sleep 1; echo {name} end >> {path}",
            path = record.display()
        );
        contenders.push(
            etcdctl(endpoint)?
                .args(["lock", "jobs", "--", "sh", "-c", &script])
                .stdout(Stdio::null())
                .spawn()?,
        );
    }
    for mut contender in contenders {
        let status = tokio::time::timeout(Duration::from_secs(30), contender.wait()).await??;
        ensure!(status.success(), "etcdctl lock: {status}");
    }
    check_one_after_the_other(&record)?;

    // A holder whose lease is revoked hands the lock to the waiter at once.
    let mut holder = Ctl::spawn(endpoint, &["lock", "held"])?;
    let held = holder.expect_line("lock key").await?;
    ensure!(held.starts_with("held/"), "the holder printed {held:?}");
    let mut waiter = Ctl::spawn(endpoint, &["lock", "held"])?;
    if let Some(line) = waiter.line(STILL_WAITING).await? {
        bail!("the waiter took a held lock: {line:?}");
    }
    revoke_lease_of(endpoint, &held).await?;
    let taken = waiter.expect_line("lock key after the revoke").await?;
    ensure!(
        taken.starts_with("held/") && taken != held,
        "the waiter printed {taken:?} (holder had {held:?})"
    );
    holder.child.kill().await?;
    waiter.child.kill().await?;
    Ok(())
}

/// The record of two lock holders shows one whole hold, then the other.
fn check_one_after_the_other(record: &Path) -> Result<()> {
    let lines: Vec<String> = std::fs::read_to_string(record)?
        .lines()
        .map(str::to_owned)
        .collect();
    ensure!(lines.len() == 4, "record: {lines:?}");
    let first = lines[0].split(' ').next().unwrap_or_default().to_owned();
    let second = if first == "first" { "second" } else { "first" };
    let expected = [
        format!("{first} start"),
        format!("{first} end"),
        format!("{second} start"),
        format!("{second} end"),
    ];
    ensure!(lines == expected, "the holds overlapped: {lines:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_listen_observes_a_change_of_leader() -> Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let endpoint = stack.edge.addr.as_str();
    let mut observer = Ctl::spawn(endpoint, &["elect", "-l", "vote"])?;
    let mut one = Ctl::spawn(endpoint, &["elect", "vote", "one"])?;
    let one_key = one.expect_line("leader key").await?;
    ensure!(
        one_key.starts_with("vote/"),
        "candidate one printed {one_key:?}"
    );
    ensure!(one.expect_line("value").await? == "one");
    ensure!(observer.expect_line("leader key").await? == one_key);
    ensure!(observer.expect_line("leader value").await? == "one");

    let mut two = Ctl::spawn(endpoint, &["elect", "vote", "two"])?;
    if let Some(line) = two.line(STILL_WAITING).await? {
        bail!("a second candidate led while the first did: {line:?}");
    }
    revoke_lease_of(endpoint, &one_key).await?;
    let two_key = two.expect_line("leader key").await?;
    ensure!(
        two_key.starts_with("vote/") && two_key != one_key,
        "{two_key:?}"
    );
    ensure!(observer.expect_line("new leader key").await? == two_key);
    ensure!(observer.expect_line("new leader value").await? == "two");
    for ctl in [&mut observer, &mut one, &mut two] {
        ctl.child.kill().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_crate_locks_elects_and_defragments_through_the_edge() -> Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let mut client = Client::connect([stack.edge.addr.as_str()], None).await?;

    // Lock: the second caller waits until the first unlocks.
    let first = client.lock("crate-lock", None).await?;
    let first_key = first.key().to_vec();
    ensure!(first_key.starts_with(b"crate-lock/"), "{first_key:?}");
    let mut second_client = client.clone();
    let mut second = tokio::spawn(async move {
        second_client
            .lock("crate-lock", None)
            .await
            .map(|answer| answer.key().to_vec())
    });
    ensure!(
        tokio::time::timeout(STILL_WAITING, &mut second)
            .await
            .is_err(),
        "the lock was granted twice"
    );
    // A waiter that gives up leaves no key behind.
    let mut quitter_client = client.clone();
    let quitter = tokio::spawn(async move { quitter_client.lock("crate-lock", None).await });
    tokio::time::sleep(STILL_WAITING).await;
    quitter.abort();
    let waiting = || {
        let mut client = client.clone();
        async move {
            let options = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only();
            let count = client.get("crate-lock/", Some(options)).await.ok()?.count();
            (count == 2).then_some(())
        }
    };
    cairn_integration::eventually(HANDOVER, "the quitter's key to go", waiting).await?;
    client.unlock(first_key.clone()).await?;
    let second_key = tokio::time::timeout(HANDOVER, second).await???;
    ensure!(second_key != first_key, "{second_key:?}");
    client.unlock(second_key).await?;

    // A lock on a lease of the caller's is held on that lease.
    let lease = client.lease_grant(30, None).await?.id();
    let on_lease = client
        .lock("crate-lock", Some(LockOptions::new().with_lease(lease)))
        .await?;
    ensure!(
        on_lease.key() == format!("crate-lock/{lease:x}").as_bytes(),
        "{:?}",
        String::from_utf8_lossy(on_lease.key())
    );
    client.lease_revoke(lease).await?;

    // Election: campaign, proclaim, leader, observe, resign.
    let lease = client.lease_grant(30, None).await?.id();
    let campaign = client.campaign("crate-vote", "v1", lease).await?;
    let leader = campaign.leader().context("no leader key")?.clone();
    ensure!(leader.lease() == lease, "{leader:?}");
    let now = client.leader("crate-vote").await?;
    ensure!(now.kv().map(|kv| kv.value()) == Some(&b"v1"[..]), "{now:?}");
    let mut observed = client.observe("crate-vote").await?;
    let current = observed.message().await?.context("observe ended")?;
    ensure!(current.kv().map(|kv| kv.value()) == Some(&b"v1"[..]));
    client
        .proclaim(
            "v2",
            Some(etcd_client::ProclaimOptions::new().with_leader(leader.clone())),
        )
        .await?;
    let proclaimed = tokio::time::timeout(HANDOVER, observed.message())
        .await??
        .context("observe ended")?;
    ensure!(proclaimed.kv().map(|kv| kv.value()) == Some(&b"v2"[..]));
    client
        .resign(Some(
            etcd_client::ResignOptions::new().with_leader(leader.clone()),
        ))
        .await?;
    let gone = client.leader("crate-vote").await;
    ensure!(
        gone.as_ref()
            .err()
            .map(ToString::to_string)
            .is_some_and(|text| text.contains("election: no leader")),
        "{gone:?}"
    );
    let stale = client
        .proclaim(
            "v3",
            Some(etcd_client::ProclaimOptions::new().with_leader(leader)),
        )
        .await;
    ensure!(
        stale
            .as_ref()
            .err()
            .map(ToString::to_string)
            .is_some_and(|text| text.contains("election: not leader")),
        "{stale:?}"
    );

    // Defragment answers as etcd's does, with no header.
    client.defragment().await?;

    // The watch underneath saw the lock keys come and go.
    let mut history = client
        .watch(
            "crate-lock/",
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(1),
            ),
        )
        .await?;
    let answer = loop {
        let answer = history.next().await.context("watch ended")??;
        if !answer.events().is_empty() {
            break answer;
        }
    };
    let deletes = answer
        .events()
        .iter()
        .filter(|event| event.event_type() == EventType::Delete)
        .count();
    ensure!(deletes == 4, "{answer:?}");
    Ok(())
}
