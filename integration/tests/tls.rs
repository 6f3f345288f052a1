//! TLS on the edge with etcd's settings (`cert_file`, `key_file`,
//! `trusted_ca_file`, `client_cert_auth`): etcdctl, cairnctl and curl with a
//! certificate from the trusted CA get in over gRPC and the JSON gateway; a
//! certificate from another CA, no certificate, and plaintext do not, and
//! connections that never start a handshake hold up no one; a missing
//! certificate or a key that is not the certificate's stops the edge at start.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn_integration::certs::{Authority, Pem};
use cairn_integration::clients::{etcdctl, run_client};
use cairn_integration::edge::{Backends, Edge};
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::walkthrough::{etcdctl_path, find_on_path};
use cairn_integration::{bin_path, with_process_output};

/// The edge's `[tls]` table.
fn tls_table(server: &Pem, trusted_ca: &Path, client_cert_auth: bool) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\ntrusted_ca_file = \"{}\"\nclient_cert_auth = {client_cert_auth}\n",
        server.cert.display(),
        server.key.display(),
        trusted_ca.display(),
    )
}

/// A second edge of `stack`, serving TLS with a certificate from `ca` and
/// taking only clients with a certificate from `ca`.
async fn edge_taking_certificates_of(ca: &Authority, stack: &Stack, dir: &Path) -> Result<Edge> {
    let server = ca.server("edge-tls")?;
    let mut edge = Edge::configure_named(
        dir,
        "edge-tls",
        &stack.backends,
        &tls_table(&server, &ca.cert, true),
    )?;
    edge.start().await?;
    Ok(edge)
}

/// etcdctl's flags for `addr` with TLS: the CA it trusts, and its own
/// certificate when it has one.
fn tls_flags(addr: &str, ca: &Path, client: Option<&Pem>) -> Vec<String> {
    let mut flags = vec![
        format!("--endpoints={addr}"),
        format!("--cacert={}", ca.display()),
        "--dial-timeout=2s".to_owned(),
        "--command-timeout=4s".to_owned(),
    ];
    if let Some(client) = client {
        flags.push(format!("--cert={}", client.cert.display()));
        flags.push(format!("--key={}", client.key.display()));
    }
    flags
}

/// `flags` then `command`, as etcdctl takes them.
fn with(flags: &[String], command: &[&str]) -> Vec<String> {
    flags
        .iter()
        .cloned()
        .chain(command.iter().map(|word| (*word).to_owned()))
        .collect()
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// curl's answer to a JSON range of `key` (base64) over HTTPS, with HTTP
/// `version` (`--http1.1` or `--http2`).
async fn curl_range(
    addr: &str,
    ca: &Path,
    client: &Pem,
    key: &str,
    version: &str,
) -> Result<String> {
    let curl = find_on_path("curl").context("curl not found")?;
    let url = format!("https://{addr}/v3/kv/range");
    let body = format!("{{\"key\":\"{key}\"}}");
    let args = [
        "-sS",
        version,
        "--cacert",
        &ca.display().to_string(),
        "--cert",
        &client.cert.display().to_string(),
        "--key",
        &client.key.display().to_string(),
        "-X",
        "POST",
        "-d",
        &body,
        &url,
    ]
    .map(str::to_owned);
    let ran = run_client(&curl, &as_strs(&args)).await?;
    ensure!(ran.ok, "curl {args:?} failed: {}{}", ran.stdout, ran.stderr);
    Ok(ran.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_certificate_from_the_trusted_ca_get_in() -> Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let dir = stack.cluster.dir().to_owned();
    let outcome = async {
        let ca = Authority::new(&dir, "cairn-ca")?;
        let stranger_ca = Authority::new(&dir, "stranger-ca")?;
        let alice = ca.client("alice")?;
        let mallory = stranger_ca.client("mallory")?;
        let edge = edge_taking_certificates_of(&ca, &stack, &dir).await?;
        let addr = edge.addr.clone();

        // Connections that never start their handshake hold up no one.
        let mut silent = Vec::new();
        for _ in 0..64 {
            silent.push(tokio::net::TcpStream::connect(&addr).await?);
        }

        // In: etcdctl, cairnctl and curl (HTTP/1.1 and HTTP/2) with alice's certificate.
        let alices = tls_flags(&addr, &ca.cert, Some(&alice));
        let put = etcdctl(&as_strs(&with(&alices, &["put", "greeting", "hello"]))).await?;
        ensure!(put == "OK\n", "put over TLS printed {put:?}");
        let got = etcdctl(&as_strs(&with(&alices, &["get", "greeting"]))).await?;
        ensure!(got == "greeting\nhello\n", "get over TLS printed {got:?}");
        let cairnctl = run_client(
            &bin_path("cairnctl")?,
            &as_strs(&with(&alices, &["get", "greeting"])),
        )
        .await?;
        ensure!(
            cairnctl.ok && cairnctl.stdout == "greeting\nhello\n",
            "cairnctl over TLS: {}{}",
            cairnctl.stdout,
            cairnctl.stderr
        );
        // "greeting" and "hello" in base64.
        for version in ["--http1.1", "--http2"] {
            let json = curl_range(&addr, &ca.cert, &alice, "Z3JlZXRpbmc=", version).await?;
            ensure!(
                json.contains("\"value\":\"aGVsbG8=\""),
                "curl {version} over TLS got {json}"
            );
        }

        // Out: each of these tries to write, and must not.
        let refused = [
            (
                "a certificate from another CA",
                tls_flags(&addr, &ca.cert, Some(&mallory)),
            ),
            ("no certificate", tls_flags(&addr, &ca.cert, None)),
            (
                "a client that does not trust the edge's CA",
                tls_flags(&addr, &stranger_ca.cert, Some(&mallory)),
            ),
            (
                "plaintext",
                vec![
                    format!("--endpoints={addr}"),
                    "--dial-timeout=2s".to_owned(),
                    "--command-timeout=4s".to_owned(),
                ],
            ),
        ];
        for (who, flags) in &refused {
            let ran = run_client(
                &etcdctl_path()?,
                &as_strs(&with(flags, &["put", "intruder", who])),
            )
            .await?;
            ensure!(!ran.ok, "{who} got in: {}{}", ran.stdout, ran.stderr);
            eprintln!("{who}: refused: {}", ran.stderr.trim());
        }
        let intruder = etcdctl(&as_strs(&with(&alices, &["get", "intruder"]))).await?;
        ensure!(intruder.is_empty(), "a refused client wrote: {intruder:?}");
        drop(silent);
        Ok(())
    }
    .await;
    with_process_output(&dir, outcome)
}

/// Starts an edge whose `[tls]` is `tls` and waits for it to exit; what it
/// printed and its exit status.
async fn edge_refusing_to_start(dir: &Path, tls: &str) -> Result<(bool, String)> {
    let backends = Backends {
        mvcc: vec!["127.0.0.1:1".to_owned()],
        log: vec!["127.0.0.1:1".to_owned()],
        ..Backends::default()
    };
    let edge = Edge::configure(dir, &backends, tls)?;
    let config = dir.join("edge.toml");
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(bin_path("cairn-edge")?)
            .arg("--config")
            .arg(&config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("the edge at {} kept running", edge.addr))??;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_or_a_key_that_is_not_its_own_stops_the_edge_at_start() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let ca = Authority::new(dir.path(), "cairn-ca")?;
    let server = ca.server("edge")?;
    let other = ca.client("other")?;

    let mismatched = Pem {
        cert: server.cert.clone(),
        key: other.key.clone(),
    };
    let (ok, said) =
        edge_refusing_to_start(dir.path(), &tls_table(&mismatched, &ca.cert, false)).await?;
    ensure!(!ok, "the edge started with another certificate's key");
    ensure!(
        said.contains("tls:") && said.contains("edge.crt") && said.contains("other.key"),
        "the edge did not say which files do not fit: {said}"
    );

    let missing = Pem {
        cert: dir.path().join("nowhere.crt"),
        key: server.key.clone(),
    };
    let (ok, said) =
        edge_refusing_to_start(dir.path(), &tls_table(&missing, &ca.cert, false)).await?;
    ensure!(!ok, "the edge started without its certificate");
    ensure!(
        said.contains("nowhere.crt"),
        "the edge did not name the missing file: {said}"
    );
    Ok(())
}

/// What etcdctl printed, out and err, for a check that expects a refusal.
async fn etcdctl_outcome(flags: &[String], command: &[&str]) -> Result<String> {
    let ran = run_client(&etcdctl_path()?, &as_strs(&with(flags, command))).await?;
    Ok(format!("{}{}", ran.stdout, ran.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_its_common_names_user_once_auth_is_on() -> Result<()> {
    let stack = Stack::start(StackOptions {
        mvcc_extra: "[auth]\nbcrypt_cost = 4\n".into(),
        ..StackOptions::default()
    })
    .await?;
    let dir = stack.cluster.dir().to_owned();
    let outcome = async {
        // Users and roles through the plaintext edge, then auth on.
        let plain = [format!("--endpoints={}", stack.edge.addr)];
        for command in [
            &["user", "add", "root:rootpw"][..],
            &["user", "grant-role", "root", "root"],
            &["role", "add", "writer"],
            &[
                "role",
                "grant-permission",
                "writer",
                "readwrite",
                "w/",
                "--prefix=true",
            ],
            &["user", "add", "bob", "--no-password"],
            &["user", "grant-role", "bob", "writer"],
            &["auth", "enable"],
        ] {
            etcdctl(&as_strs(&with(&plain, command))).await?;
        }
        let ca = Authority::new(&dir, "cairn-ca")?;
        let edge = edge_taking_certificates_of(&ca, &stack, &dir).await?;
        let bob = tls_flags(&edge.addr, &ca.cert, Some(&ca.client("bob")?));
        let root = tls_flags(&edge.addr, &ca.cert, Some(&ca.client("root")?));
        let nobody = tls_flags(&edge.addr, &ca.cert, Some(&ca.client("nobody")?));

        // bob's certificate: bob's permissions, with no token, for KV, Lock
        // (which the edge serves itself) and watches.
        ensure!(etcdctl(&as_strs(&with(&bob, &["put", "w/a", "1"]))).await? == "OK\n");
        let denied = etcdctl_outcome(&bob, &["put", "x", "1"]).await?;
        ensure!(
            denied.contains("etcdserver: permission denied"),
            "bob put x: {denied}"
        );
        let locked = etcdctl(&as_strs(&with(&bob, &["lock", "w/mutex", "echo", "held"]))).await?;
        ensure!(locked.contains("held"), "bob's lock printed {locked:?}");
        let lock_denied = etcdctl_outcome(&bob, &["lock", "x-mutex", "echo", "held"]).await?;
        ensure!(
            lock_denied.contains("etcdserver: permission denied"),
            "bob locked x-mutex: {lock_denied}"
        );
        let watch_denied = etcdctl_outcome(&bob, &["watch", "x"]).await?;
        ensure!(
            watch_denied.contains("permission denied"),
            "bob watched x: {watch_denied}"
        );
        // root's certificate: root's, for what only root may do.
        let users = etcdctl(&as_strs(&with(&root, &["user", "list"]))).await?;
        ensure!(users == "bob\nroot\n", "root's user list: {users:?}");
        let bob_list = etcdctl_outcome(&bob, &["user", "list"]).await?;
        ensure!(
            bob_list.contains("etcdserver: permission denied"),
            "bob listed users: {bob_list}"
        );
        // A certificate whose name is no user's gets nothing.
        let stranger = etcdctl_outcome(&nobody, &["get", "w/a"]).await?;
        ensure!(
            stranger.contains("etcdserver: permission denied"),
            "nobody read w/a: {stranger}"
        );
        // A token still wins over the certificate.
        let as_root = etcdctl(&as_strs(&with(
            &bob,
            &["--user", "root:rootpw", "put", "x", "1"],
        )))
        .await?;
        ensure!(
            as_root == "OK\n",
            "root's token through bob's certificate: {as_root:?}"
        );
        Ok(())
    }
    .await;
    with_process_output(&dir, outcome)
}
