//! `snapshot save`: streams one member's backend into a file, written under
//! `<file>.part` and renamed once complete and synced. `snapshot restore`:
//! streams a snapshot file to one replica of a fresh cairn cluster, which
//! replaces the cluster's state with it (`services/mvcc/src/restore.rs`).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use cairn_proto::cairn::mvcc::v1::mvcc_client::MvccClient;
use cairn_proto::cairn::mvcc::v1::{RestoreChunk, RestoreResponse, StatusRequest};

use super::Ctx;
use crate::args::SnapshotCommand;
use crate::error::{CtlError, Exit};
use crate::go_fmt;

/// etcd appends a SHA-256 of the snapshot, so a complete one is 32 bytes
/// past a 512-byte boundary.
const CHECKSUM_SIZE: u64 = 32;

/// Runs the snapshot subcommand.
pub(super) async fn run(ctx: &Ctx, command: SnapshotCommand) -> Result<(), CtlError> {
    match command {
        SnapshotCommand::Save { args } => save(ctx, &args).await,
        SnapshotCommand::Restore { args, replica } => restore(ctx, &args, replica).await,
    }
}

fn interrupted(message: String) -> CtlError {
    CtlError::new(Exit::Interrupted, message)
}

async fn save(ctx: &Ctx, args: &[OsString]) -> Result<(), CtlError> {
    let [path] = args else {
        return Err(CtlError::bad_args("snapshot save expects one argument"));
    };
    if ctx.session.endpoints.len() != 1 {
        return Err(interrupted(format!(
            "snapshot must be requested to one selected node, not multiple [{}]",
            ctx.session.endpoints.join(" ")
        )));
    }
    let path = PathBuf::from(path);
    let mut part_name = path.clone().into_os_string();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&part)
        .map_err(|error| {
            interrupted(format!(
                "could not open {0} (open {0}: {1})",
                part.display(),
                go_fmt::io_error_text(&error)
            ))
        })?;

    let client = ctx.session.client().await?;
    let mut stream = ctx
        .session
        .call(&client, |mut client| async move { client.snapshot().await })
        .await
        .map_err(|error| error.with_exit(Exit::Interrupted))?;
    let mut size = 0u64;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|error| CtlError::from(error).with_exit(Exit::Interrupted))?
    {
        file.write_all(chunk.blob())
            .map_err(|error| interrupted(go_fmt::io_error_text(&error)))?;
        size += chunk.blob().len() as u64;
    }
    if size % 512 != CHECKSUM_SIZE {
        return Err(interrupted(format!(
            "sha256 checksum not found [bytes: {size}]"
        )));
    }
    file.sync_all()
        .map_err(|error| interrupted(go_fmt::io_error_text(&error)))?;
    drop(file);
    std::fs::rename(&part, &path).map_err(|error| {
        interrupted(format!(
            "could not rename {} to {} ({})",
            part.display(),
            path.display(),
            go_fmt::io_error_text(&error)
        ))
    })?;
    ctx.printer
        .emit(format!("Snapshot saved at {}\n", path.display()).as_bytes())
}

/// Bytes per chunk a snapshot is sent to the replica in.
const RESTORE_CHUNK: usize = 64 * 1024;

async fn restore(ctx: &Ctx, args: &[OsString], replica: Option<String>) -> Result<(), CtlError> {
    let [path] = args else {
        return Err(CtlError::bad_args("snapshot restore expects one argument"));
    };
    let Some(replica) = replica.filter(|replica| !replica.trim().is_empty()) else {
        return Err(CtlError::bad_args(
            "snapshot restore needs --replica HOST:PORT: the internal gRPC address of one cairn-mvcc replica of the fresh cluster to restore",
        ));
    };
    let path = PathBuf::from(path);
    let file = tokio::fs::File::open(&path).await.map_err(|error| {
        CtlError::general(format!(
            "could not open {0} (open {0}: {1})",
            path.display(),
            go_fmt::io_error_text(&error)
        ))
    })?;
    let replica = replica.trim();
    // With --cacert/--cert/--key the replica is called with TLS, as a
    // replica under internal TLS requires (the certificate must be one its
    // CA signed).
    let tls = ctx.session.tls()?;
    let address = if replica.contains("://") {
        replica.to_owned()
    } else if tls.is_some() {
        format!("https://{replica}")
    } else {
        format!("http://{replica}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(address)
        .map_err(|error| CtlError::bad_args(format!("bad --replica {replica}: {error}")))?;
    let endpoint = match tls {
        Some(tls) => endpoint
            .tls_config(tls)
            .map_err(|error| CtlError::bad_args(format!("bad TLS files: {error}")))?,
        None => endpoint,
    };
    let channel = endpoint
        .connect_timeout(ctx.session.dial_timeout())
        .connect()
        .await
        .map_err(|error| {
            CtlError::general(format!("cannot reach the replica at {replica}: {error}"))
        })?;
    // A read that fails ends the upload; the failure is reported rather
    // than the replica's refusal of a file cut short.
    let read_failed = std::sync::Arc::new(std::sync::Mutex::new(None::<std::io::Error>));
    let chunks = {
        let read_failed = read_failed.clone();
        futures::stream::unfold(Some(file), move |file| {
            let read_failed = read_failed.clone();
            async move {
                let mut file = file?;
                let mut blob = vec![0; RESTORE_CHUNK];
                match tokio::io::AsyncReadExt::read(&mut file, &mut blob).await {
                    Ok(0) => None,
                    Ok(read) => {
                        blob.truncate(read);
                        Some((RestoreChunk { blob }, Some(file)))
                    }
                    Err(error) => {
                        if let Ok(mut failed) = read_failed.lock() {
                            *failed = Some(error);
                        }
                        None
                    }
                }
            }
        })
    };
    let mut client = MvccClient::new(channel);
    let restored = client.restore(chunks).await;
    if let Some(error) = read_failed.lock().ok().and_then(|mut failed| failed.take()) {
        return Err(CtlError::general(format!(
            "could not read {}: {}",
            path.display(),
            go_fmt::io_error_text(&error)
        )));
    }
    let restored = restored
        .map_err(|status| CtlError::general(status.message().to_owned()))?
        .into_inner();
    serving(&mut client, &restored).await?;
    ctx.printer.emit(restored_text(&restored).as_bytes())
}

/// How long a committed restore may take to be served by the replica that
/// staged it (it swaps its store once the calls on the old one have ended).
const SERVING_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits until the replica serves the restored store: the restore is
/// answered once committed, before the store is swapped.
async fn serving(
    client: &mut MvccClient<tonic::transport::Channel>,
    restored: &RestoreResponse,
) -> Result<(), CtlError> {
    let deadline = tokio::time::Instant::now() + SERVING_WAIT;
    loop {
        if let Ok(status) = client.status(StatusRequest {}).await {
            let status = status.into_inner();
            if status.applied_index >= restored.applied_index
                && status.current_revision >= restored.revision
            {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CtlError::general(format!(
                "the restore was committed at log index {}, but the replica did not serve it within {SERVING_WAIT:?}",
                restored.applied_index
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// What `snapshot restore` prints once the cluster holds the snapshot.
fn restored_text(restored: &RestoreResponse) -> String {
    format!(
        "Restored {} snapshot: revision {}, {} keys, {} leases, compact revision {}, hash {} (log index {})\n",
        restored.format,
        restored.revision,
        restored.keys,
        restored.leases,
        restored.compact_revision,
        restored.hash,
        restored.applied_index
    )
}
