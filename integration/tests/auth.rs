//! etcd's auth through the edge of a whole cairn: Debian's etcdctl runs a
//! session (`scripts/auth-walkthrough.sh`) against a real etcd, etcdctl and
//! cairnctl run it against cairn, and all must print the same; then what a
//! transcript cannot show: a permission revoked under eight writers, tokens
//! that must be refused, compaction for root only, lease revokes, watches
//! and maintenance under permissions, and password guessing that costs only
//! the guessed user.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cairn_integration::edge::Edge;
use cairn_integration::etcd::Etcd;
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::walkthrough::{diff, etcdctl_path, run_script};
use cairn_integration::{bin_path, eventually, refused_as};
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{AuthenticateRequest, CompactionRequest, PutRequest, RangeRequest};
use etcd_client::{Client, ConnectOptions, Permission};
use tonic::transport::Channel;
use tonic::Code;

/// Lines the reference transcript must hold, so two runs that went wrong
/// the same way cannot pass as equal.
const EXPECTED_IN_REFERENCE: [&str; 6] = [
    "### ctl auth enable\nstderr: Error: etcdserver: root user does not exist\n[exit 1]\n",
    "### ctl get foo\nstderr: Error: etcdserver: user name is empty\n[exit 1]\n",
    "stderr: Error: etcdserver: authentication failed, invalid user ID or password\n[exit 2]\n",
    "### ctl --user alice:alicepw put foo bar\nstderr: Error: etcdserver: permission denied\n",
    "### ctl --user root:rootpw user delete root\nstderr: Error: etcdserver: invalid auth management\n",
    "### ctl --user alice:alicepw get dir/ --prefix\ndir/a\n1\ndir/b\n2\n[exit 0]\n",
];

/// Settings for the replicas: passwords hashed at bcrypt's lowest cost, so
/// the tests spend their time on auth, not on hashing.
fn cheap_hashing() -> StackOptions {
    StackOptions {
        mvcc_extra: "[auth]\nbcrypt_cost = 4\ntoken_ttl_secs = 2\n".into(),
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_and_cairnctl_see_cairns_auth_as_etcdctl_sees_etcds() -> Result<()> {
    let etcdctl = etcdctl_path()?;
    let script = cairn_integration::walkthrough::auth_script_path();
    let expected = {
        let etcd = Etcd::start().await?;
        run_script(&script, &etcd.endpoint, Some(&etcdctl)).await?
    };
    for line in EXPECTED_IN_REFERENCE {
        ensure!(
            expected.contains(line),
            "etcd's transcript lacks {line:?}:\n{expected}"
        );
    }
    for (client, ctl) in [("etcdctl", etcdctl), ("cairnctl", bin_path("cairnctl")?)] {
        // Each client gets a fresh cairn: no users, auth off.
        let stack = Stack::start(StackOptions::default()).await?;
        let actual = run_script(&script, &stack.edge.addr, Some(&ctl)).await?;
        ensure!(
            actual == expected,
            "{client} against cairn differs from etcdctl against etcd (- etcd, + cairn):\n{}",
            diff(&expected, &actual)
        );
        println!(
            "{client}: {} transcript lines equal",
            actual.lines().count()
        );
    }
    Ok(())
}

/// A client of the edge as `user`.
async fn connect(stack: &Stack, user: Option<(&str, &str)>) -> Result<Client> {
    let options = user.map(|(name, password)| ConnectOptions::new().with_user(name, password));
    Client::connect([stack.edge.addr.as_str()], options)
        .await
        .context("connecting to the edge")
}

/// root (with the root role), a role `writer` with READWRITE on `w/`, a
/// user `bob` holding it, a user `carol` with no role; auth on.
async fn users_and_auth_on(stack: &Stack) -> Result<()> {
    let mut admin = connect(stack, None).await?;
    admin.user_add("root", "rootpw", None).await?;
    admin.user_grant_role("root", "root").await?;
    admin.role_add("writer").await?;
    admin
        .role_grant_permission("writer", Permission::read_write("w/").with_prefix())
        .await?;
    admin.user_add("bob", "bobpw", None).await?;
    admin.user_grant_role("bob", "writer").await?;
    admin.user_add("carol", "carolpw", None).await?;
    admin.auth_enable().await?;
    Ok(())
}

fn is_denied(error: &etcd_client::Error) -> bool {
    error.to_string().contains("etcdserver: permission denied")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_permission_stops_every_write_that_applies_after_it() -> Result<()> {
    let stack = Stack::start(cheap_hashing()).await?;
    users_and_auth_on(&stack).await?;
    let written = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let mut bob = connect(&stack, Some(("bob", "bobpw"))).await?;
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            // Each attempt: the revision it was applied at, or the error.
            let mut outcomes: Vec<Result<i64, String>> = Vec::new();
            for attempt in 0..5_000 {
                let key = format!("w/{writer}/{attempt}");
                match bob.put(key, "v", None).await {
                    Ok(put) => {
                        written.fetch_add(1, Ordering::Relaxed);
                        let revision = put.header().map_or(0, |header| header.revision());
                        outcomes.push(Ok(revision));
                    }
                    Err(error) => {
                        let denied = is_denied(&error);
                        outcomes.push(Err(error.to_string()));
                        if denied {
                            break;
                        }
                    }
                }
            }
            outcomes
        }));
    }
    // Revoke once the writers are well under way.
    while written.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut root = connect(&stack, Some(("root", "rootpw"))).await?;
    let revoked = root
        .role_revoke_permission(
            "writer",
            "w/",
            Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
        )
        .await?;
    let revoked_at = revoked.header().map_or(0, |header| header.revision());
    let mut successes = 0;
    for (writer, task) in writers.into_iter().enumerate() {
        let outcomes = task.await?;
        let last = outcomes.last().context("a writer made no attempt")?;
        ensure!(
            matches!(last, Err(error) if error.contains("permission denied")),
            "writer {writer} never heard \"permission denied\": its last outcome was {last:?}"
        );
        for outcome in &outcomes {
            match outcome {
                Ok(revision) => {
                    successes += 1;
                    ensure!(
                        *revision <= revoked_at,
                        "writer {writer}'s put was applied at revision {revision}, after the revoke (at {revoked_at})"
                    );
                }
                Err(error) => ensure!(
                    error.contains("permission denied")
                        || error.contains("revision of auth store is old"),
                    "writer {writer} heard {error}"
                ),
            }
        }
    }
    // The store agrees: nothing under w/ was written after the revoke.
    let all = root
        .get("w/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await?;
    ensure!(
        all.kvs().len() == successes,
        "{} keys under w/, {successes} acknowledged puts",
        all.kvs().len()
    );
    for kv in all.kvs() {
        ensure!(
            kv.mod_revision() <= revoked_at,
            "{} was written at {}, after the revoke at {revoked_at}",
            kv.key_str()?,
            kv.mod_revision()
        );
    }
    ensure!(successes >= 40, "only {successes} puts before the revoke");
    println!("{successes} puts acknowledged, all at or before revision {revoked_at}; every writer then denied");
    Ok(())
}

/// A Range through `stack`'s edge with `token`.
async fn range_with(stack: &Stack, token: &str) -> Result<(), tonic::Status> {
    range_at(&stack.edge, token).await
}

/// A Range through `edge` with `token` as metadata.
async fn range_at(edge: &Edge, token: &str) -> Result<(), tonic::Status> {
    let value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = token
        .parse()
        .map_err(|_| tonic::Status::internal("a token is ASCII"))?;
    let mut kv: KvClient<Channel> = edge
        .kv()
        .map_err(|error| tonic::Status::internal(error.to_string()))?;
    let mut request = tonic::Request::new(RangeRequest {
        key: b"w/a".to_vec(),
        ..Default::default()
    });
    request.metadata_mut().insert("token", value);
    kv.range(request).await.map(|_| ())
}

async fn token_of(stack: &Stack, name: &str, password: &str) -> Result<String> {
    let mut auth = AuthClient::new(stack.edge.channel()?);
    Ok(auth
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?
        .into_inner()
        .token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_truncated_stale_and_expired_tokens_are_invalid() -> Result<()> {
    let stack = Stack::start(cheap_hashing()).await?;
    users_and_auth_on(&stack).await?;
    let token = token_of(&stack, "bob", "bobpw").await?;
    range_with(&stack, &token).await?;

    let (payload, signature) = token.split_once('.').context("a token has two parts")?;
    let mut flipped = signature.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let forged = format!("{payload}.{}", String::from_utf8(flipped)?);
    let carol = token_of(&stack, "carol", "carolpw").await?;
    let spliced = format!(
        "{}.{signature}",
        carol.split_once('.').context("two parts")?.0
    );
    for (what, bad) in [
        ("forged signature", forged.as_str()),
        ("another user's payload", spliced.as_str()),
        ("truncated", &token[..token.len() / 2]),
        ("not a token", "simple-token.42"),
    ] {
        refused_as(
            range_with(&stack, bad).await,
            &format!("a {what} token"),
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
        )?;
    }

    // A password change makes older tokens invalid.
    let mut root = connect(&stack, Some(("root", "rootpw"))).await?;
    root.user_change_password("bob", "bobpw2").await?;
    let refused = range_with(&stack, &token)
        .await
        .err()
        .context("a token from before the password change was accepted")?;
    ensure!(
        refused.message() == "etcdserver: invalid auth token",
        "{refused:?}"
    );

    // Tokens live two seconds here.
    let fresh = token_of(&stack, "bob", "bobpw2").await?;
    range_with(&stack, &fresh).await?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let refused = range_with(&stack, &fresh)
        .await
        .err()
        .context("an expired token was accepted")?;
    ensure!(
        refused.message() == "etcdserver: invalid auth token",
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_compacts_once_auth_is_on() -> Result<()> {
    let stack = Stack::start(cheap_hashing()).await?;
    users_and_auth_on(&stack).await?;
    let mut root = connect(&stack, Some(("root", "rootpw"))).await?;
    root.put("w/a", "1", None).await?;
    root.put("w/a", "2", None).await?;
    let mut kv = stack.edge.kv()?;
    let nobody = kv
        .compact(CompactionRequest {
            revision: 2,
            physical: false,
        })
        .await
        .err()
        .context("a compaction with no user was accepted")?;
    ensure!(
        nobody.message() == "etcdserver: user name is empty",
        "{nobody:?}"
    );
    let mut bob = connect(&stack, Some(("bob", "bobpw"))).await?;
    let denied = bob.compact(2, None).await.err().context("bob compacted")?;
    ensure!(is_denied(&denied), "{denied}");
    root.compact(2, None).await?;
    // And a write with no user at all.
    let refused = kv
        .put(PutRequest {
            key: b"w/b".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .err()
        .context("a put with no user was accepted")?;
    ensure!(
        refused.message() == "etcdserver: user name is empty",
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_passwords_for_one_user_do_not_hold_up_another() -> Result<()> {
    let stack = Stack::start(cheap_hashing()).await?;
    users_and_auth_on(&stack).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let mut guesses = Vec::new();
    for connection in 0..10 {
        let channel = stack.edge.channel()?;
        let done = done.clone();
        guesses.push(tokio::spawn(async move {
            let mut auth = AuthClient::new(channel);
            let mut calls = Vec::new();
            for guess in 0..100 {
                let mut auth = auth.clone();
                let done = done.clone();
                calls.push(async move {
                    let answer = auth
                        .authenticate(AuthenticateRequest {
                            name: "bob".into(),
                            password: format!("guess-{connection}-{guess}"),
                        })
                        .await;
                    done.fetch_add(1, Ordering::Relaxed);
                    answer
                });
            }
            let answers = futures::future::join_all(calls).await;
            let _ = &mut auth;
            answers
        }));
    }
    // While bob's guesses queue, carol logs in.
    while done.load(Ordering::Relaxed) < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let carol = token_of(&stack, "carol", "carolpw").await?;
    let guessed_by_then = done.load(Ordering::Relaxed);
    ensure!(!carol.is_empty(), "carol got no token");
    for guesses in guesses {
        for answer in guesses.await? {
            match answer {
                Ok(_) => bail!("a wrong password was accepted"),
                Err(status) => ensure!(
                    status.message()
                        == "etcdserver: authentication failed, invalid user ID or password",
                    "{status:?}"
                ),
            }
        }
    }
    ensure!(
        guessed_by_then < 900,
        "carol's login waited for {guessed_by_then} of bob's 1,000 wrong guesses"
    );
    // And bob can still log in with the right password.
    token_of(&stack, "bob", "bobpw").await?;
    println!("carol logged in after {guessed_by_then} of bob's 1,000 guesses were answered");
    Ok(())
}

/// The first answer to a watch of `key` (a prefix when `prefix`) created
/// with `token`.
async fn first_watch_answer(
    stack: &Stack,
    token: &str,
    key: &str,
    prefix: bool,
) -> Result<cairn_proto::etcdserverpb::WatchResponse> {
    use cairn_proto::etcdserverpb::watch_client::WatchClient;
    use cairn_proto::etcdserverpb::watch_request::RequestUnion;
    use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
    let range_end = if prefix {
        let mut end = key.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        end
    } else {
        Vec::new()
    };
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            range_end,
            ..Default::default()
        })),
    };
    let (requests, outgoing) = tokio::sync::mpsc::channel(1);
    requests.send(create).await?;
    let mut call = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outgoing));
    if !token.is_empty() {
        call.metadata_mut().insert("token", token.parse()?);
    }
    let mut answers = WatchClient::new(stack.edge.channel()?)
        .watch(call)
        .await?
        .into_inner();
    let first = answers
        .message()
        .await?
        .context("the watch ended without an answer")?;
    drop(requests);
    Ok(first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_and_maintenance_follow_the_callers_permissions() -> Result<()> {
    let stack = Stack::start(cheap_hashing()).await?;
    users_and_auth_on(&stack).await?;
    let bob = token_of(&stack, "bob", "bobpw").await?;
    let root = token_of(&stack, "root", "rootpw").await?;

    let allowed = first_watch_answer(&stack, &bob, "w/", true).await?;
    ensure!(
        allowed.created && !allowed.canceled,
        "bob's watch of w/: {allowed:?}"
    );
    for (who, token, key, prefix) in [
        ("bob", bob.as_str(), "x", false),
        ("bob", bob.as_str(), "w", true),
        ("no user", "", "w/a", false),
    ] {
        let refused = first_watch_answer(&stack, token, key, prefix).await?;
        ensure!(
            refused.created
                && refused.canceled
                && refused.cancel_reason == "etcdserver: permission denied",
            "{who}'s watch of {key} (prefix {prefix}): {refused:?}"
        );
    }
    let everything = first_watch_answer(&stack, &root, "", true).await?;
    ensure!(
        everything.created && !everything.canceled,
        "root's watch: {everything:?}"
    );

    use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use cairn_proto::etcdserverpb::HashKvRequest;
    let hash_as = |token: String| {
        let channel = stack.edge.channel();
        async move {
            let mut request = tonic::Request::new(HashKvRequest { revision: 0 });
            request.metadata_mut().insert("token", token.parse()?);
            Ok::<_, anyhow::Error>(MaintenanceClient::new(channel?).hash_kv(request).await)
        }
    };
    let denied = hash_as(bob.clone())
        .await?
        .err()
        .context("bob read the hash")?;
    ensure!(denied.code() == Code::PermissionDenied, "{denied:?}");
    hash_as(root).await?.context("root reads the hash")?;
    // Anyone may list the members, as in etcd.
    let mut members = connect(&stack, Some(("bob", "bobpw"))).await?;
    ensure!(
        !members.member_list().await?.members().is_empty(),
        "no members"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_lease_needs_write_on_every_key_it_holds() -> Result<()> {
    let stack = Stack::start(cheap_hashing()).await?;
    users_and_auth_on(&stack).await?;
    let mut bob = connect(&stack, Some(("bob", "bobpw"))).await?;
    let mut root = connect(&stack, Some(("root", "rootpw"))).await?;
    let own = bob.lease_grant(60, None).await?.id();
    let on_lease = |id| Some(etcd_client::PutOptions::new().with_lease(id));
    bob.put("w/mine", "1", on_lease(own)).await?;
    bob.lease_revoke(own).await?;
    ensure!(
        bob.get("w/mine", None).await?.kvs().is_empty(),
        "w/mine outlived its lease"
    );

    let shared = bob.lease_grant(60, None).await?.id();
    bob.put("w/shared", "1", on_lease(shared)).await?;
    root.put("outside", "1", on_lease(shared)).await?;
    let denied = bob
        .lease_revoke(shared)
        .await
        .err()
        .context("bob revoked a lease holding a key outside w/")?;
    ensure!(is_denied(&denied), "{denied}");
    ensure!(
        root.get("outside", None).await?.kvs().len() == 1,
        "the refused revoke deleted a key"
    );
    root.lease_revoke(shared).await?;
    ensure!(
        root.get("outside", None).await?.kvs().is_empty(),
        "root's revoke left the key"
    );
    Ok(())
}

/// curl's answer to a POST of `body` to the edge's JSON gateway at `path`.
async fn curl_json(stack: &Stack, path: &str, body: &str, token: Option<&str>) -> Result<String> {
    let mut command = tokio::process::Command::new("curl");
    command.args(["-s", "-X", "POST", "-d", body]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: {token}")]);
    }
    let output = command
        .arg(format!("http://{}{path}", stack.edge.addr))
        .output()
        .await
        .context("running curl")?;
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_gateway_logs_in_and_takes_the_token_in_authorization() -> Result<()> {
    let stack = Stack::start(cheap_hashing()).await?;
    users_and_auth_on(&stack).await?;
    let answer = curl_json(
        &stack,
        "/v3/auth/authenticate",
        r#"{"name":"bob","password":"bobpw"}"#,
        None,
    )
    .await?;
    let token = answer
        .split_once("\"token\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(token, _)| token.to_owned())
        .with_context(|| format!("no token in {answer}"))?;
    // "w/a" and "x" in base64.
    let put = curl_json(
        &stack,
        "/v3/kv/put",
        r#"{"key":"dy9h","value":"MQ=="}"#,
        Some(&token),
    )
    .await?;
    ensure!(
        put.contains("\"header\""),
        "bob's put through the gateway: {put}"
    );
    let denied = curl_json(
        &stack,
        "/v3/kv/put",
        r#"{"key":"eA==","value":"MQ=="}"#,
        Some(&token),
    )
    .await?;
    ensure!(
        denied.contains("etcdserver: permission denied"),
        "bob's put of x: {denied}"
    );
    let nobody = curl_json(&stack, "/v3/kv/range", r#"{"key":"dy9h"}"#, None).await?;
    ensure!(
        nobody.contains("etcdserver: user name is empty"),
        "a range with no token: {nobody}"
    );
    let forged = curl_json(
        &stack,
        "/v3/kv/range",
        r#"{"key":"dy9h"}"#,
        Some("forged.token"),
    )
    .await?;
    ensure!(
        forged.contains("etcdserver: invalid auth token"),
        "a forged token: {forged}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_at_every_edge_and_after_the_replicas_restart() -> Result<()> {
    let mut stack = Stack::start(StackOptions {
        mvcc_extra: "[auth]\nbcrypt_cost = 4\n".into(),
        ..StackOptions::default()
    })
    .await?;
    users_and_auth_on(&stack).await?;
    let token = token_of(&stack, "bob", "bobpw").await?;
    let dir = stack.cluster.dir().to_owned();
    let mut second = Edge::configure_named(&dir, "edge-2", &stack.backends, "")?;
    second.start().await?;
    range_at(&second, &token)
        .await
        .context("bob's token at a second edge")?;
    for replica in &mut stack.replicas {
        replica.kill().await?;
        replica.start()?;
    }
    for replica in &stack.replicas {
        replica.wait_applied(0, Duration::from_secs(30)).await?;
    }
    eventually(
        Duration::from_secs(20),
        "bob's token after the replicas restart",
        || async { range_at(&second, &token).await.ok() },
    )
    .await?;
    range_with(&stack, &token).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_etcdctl_hides_reach_a_raw_client_with_etcds_codes() -> Result<()> {
    use cairn_proto::etcdserverpb::{
        AuthEnableRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    };
    let stack = Stack::start(cheap_hashing()).await?;
    let mut auth = AuthClient::new(stack.edge.channel()?);
    // Logging in while auth is off: clients carry on without a token.
    refused_as(
        auth.authenticate(AuthenticateRequest {
            name: "root".into(),
            password: "rootpw".into(),
        })
        .await,
        "a login while auth is off",
        Code::FailedPrecondition,
        "etcdserver: authentication is not enabled",
    )?;
    auth.user_add(AuthUserAddRequest {
        name: "root".into(),
        password: "rootpw".into(),
        ..Default::default()
    })
    .await?;
    // etcdctl answers this one itself, by granting the role.
    refused_as(
        auth.auth_enable(AuthEnableRequest {}).await,
        "enabling auth for a root without the root role",
        Code::FailedPrecondition,
        "etcdserver: root user does not have root role",
    )?;
    auth.user_grant_role(AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await?;
    auth.auth_enable(AuthEnableRequest {}).await?;
    refused_as(
        auth.user_add(AuthUserAddRequest::default()).await,
        "adding a nameless user",
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    )?;
    Ok(())
}
