//! Restoring a fresh cluster from a snapshot: etcd's (a bbolt file, as
//! `etcdctl snapshot save` writes it) or cairn's own (as Mvcc/Snapshot sends
//! it).
//!
//! The replica that receives the file (`Mvcc/Restore`) builds a store from
//! it in `<data_dir>.restoring-<n>` beside its data directory, checks it
//! (checksums, then opened as a store), syncs it and renames it to
//! `<data_dir>.restore-<hash>-<revision>-<n>`: only a whole staged store has
//! that name. It then proposes a `Restore { revision, hash }` command, so the
//! log decides when the state is replaced, the same on every replica:
//!
//! - on a store that is not fresh (revision above 1, or a lease) the command
//!   fails whole, on every replica alike, and the staged store is removed;
//! - on a fresh store, applying stops before the command's entry
//!   (`store::RestorePoint`), the replica stops serving, and its store is
//!   replaced: by the staged store with that hash and revision where it has
//!   one (given the entry's log position and the claims in force, then
//!   swapped in as a seeded copy is), otherwise by a copy of a peer that has
//!   applied the entry (`seed`). Either way the replica goes on from the
//!   entry after it.
//!
//! The proposer answers once the command is committed; the old store is
//! swapped out once every call holding it has ended.
//!
//! A staged store whose restore may still be committed is kept across a
//! restart while the store is fresh, so a replica that crashed between the
//! commit and the swap still finds it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cairn_kit::shutdown::ShutdownWatch;
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::{Restore, RestoreChunk, RestoreResponse};
use cairn_proto::etcd_error::EtcdError;
use tonic::Streaming;

use crate::api::MvccApi;
use crate::error::MvccError;
use crate::log_client::LogClient;
use crate::seed::{self, Prepared, Start};
use crate::store::{Reply, RestorePoint, Store};

/// What cairn's own snapshot starts with (`snapshot`).
const CAIRN_MAGIC: &[u8] = b"CAIRNSNAP1\n";
/// bbolt's meta page magic, at offset 16 of the file (after the page
/// header), in the little-endian order etcd's files have.
const BBOLT_MAGIC: [u8; 4] = 0xED0C_DAEDu32.to_le_bytes();
const BBOLT_MAGIC_AT: usize = 16;
/// Kinds of directory beside the data directory: a store being built, and
/// a whole staged one.
const BUILDING: &str = "restoring";
const STAGED: &str = "restore";
/// Where the upload goes inside the directory a store is built in.
const UPLOAD: &str = "upload";
const BUILT: &str = "store";

/// A store built from a snapshot file, before it is staged.
#[derive(Clone, Debug, PartialEq)]
struct Built {
    format: &'static str,
    revision: i64,
    hash: u32,
    compacted: i64,
    keys: u64,
    leases: u64,
}

/// `Mvcc/Restore`: builds the store, stages it, proposes the restore and
/// answers once it is committed. It does not wait for the swap: the store
/// it was called through must close first (cairnctl waits for the replica
/// to serve the restored revision).
pub(crate) async fn receive(
    api: &MvccApi,
    chunks: Streaming<RestoreChunk>,
) -> Result<RestoreResponse, MvccError> {
    let data_dir = api.replica().store.dir().to_path_buf();
    // A quick refusal before a large upload; the log's order decides.
    if let Some(refused) = api.replica().store.not_fresh() {
        return Err(refused);
    }
    let building = seed::beside(&data_dir, BUILDING)?;
    let built = build_from_upload(chunks, &building).await;
    let staged = match built {
        Ok(built) => stage(&building, &data_dir, &built).map(|staged| (staged, built)),
        Err(error) => Err(error),
    };
    seed::remove(&building);
    let (staged, built) = staged?;
    tracing::info!(
        staged = %staged.display(),
        format = built.format,
        revision = built.revision,
        hash = built.hash,
        keys = built.keys,
        "a restored store is staged; proposing the restore"
    );
    let proposed = api
        .propose(Op::Restore(Restore {
            revision: built.revision,
            hash: built.hash,
        }))
        .await;
    match proposed {
        // Committed: the store is replaced next, from the staged one, and
        // the caller waits for this replica to serve it.
        Ok(Reply::Restore { index }) => Ok(RestoreResponse {
            revision: built.revision,
            hash: built.hash,
            compact_revision: built.compacted,
            keys: built.keys,
            leases: built.leases,
            applied_index: index,
            format: built.format.to_owned(),
        }),
        Ok(_) => Err(MvccError::Corrupt(
            "the apply of a restore answered with another kind".into(),
        )),
        Err(MvccError::Log(failure)) if failure.outcome_unknown() => {
            Err(unknown(&staged, &failure.to_string()))
        }
        Err(error @ MvccError::Etcd(EtcdError::Timeout)) => {
            Err(unknown(&staged, &error.to_string()))
        }
        // Refused (not fresh), or never appended: nothing will use it.
        Err(error) => {
            seed::remove(&staged);
            Err(error)
        }
    }
}

/// A restore whose proposal may yet be committed keeps its staged store:
/// every replica would then need it.
fn unknown(staged: &Path, why: &str) -> MvccError {
    tracing::warn!(staged = %staged.display(), why, "the restore's outcome is unknown; keeping its staged store");
    MvccError::Snapshot(format!(
        "the restore's outcome is unknown ({why}); the cluster's revision (etcdctl endpoint status) says whether it took place"
    ))
}

/// Receives the file into `building` and builds a store from it there.
async fn build_from_upload(
    mut chunks: Streaming<RestoreChunk>,
    building: &Path,
) -> Result<Built, MvccError> {
    std::fs::create_dir_all(building).map_err(io_error)?;
    let upload = building.join(UPLOAD);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&upload).map_err(io_error)?);
    let mut received = 0_u64;
    loop {
        let chunk = chunks.message().await.map_err(|status| {
            MvccError::InvalidArgument(format!(
                "the snapshot upload broke off after {received} bytes: {}",
                status.message()
            ))
        })?;
        let Some(chunk) = chunk else {
            break;
        };
        received += chunk.blob.len() as u64;
        file.write_all(&chunk.blob).map_err(io_error)?;
    }
    file.flush().map_err(io_error)?;
    drop(file);
    let store = building.join(BUILT);
    seed::blocking(move || build(&upload, &store)).await
}

/// Builds a store in `dir` from the snapshot file `upload`, whichever of
/// the two formats it is, and checks it opens; a file that is neither, or
/// is cut short or damaged, is refused as an invalid argument.
fn build(upload: &Path, dir: &Path) -> Result<Built, MvccError> {
    let mut head = Vec::with_capacity(BBOLT_MAGIC_AT + BBOLT_MAGIC.len());
    std::fs::File::open(upload)
        .map_err(io_error)?
        .take((BBOLT_MAGIC_AT + BBOLT_MAGIC.len()) as u64)
        .read_to_end(&mut head)
        .map_err(io_error)?;
    let Some(format) = sniff(&head) else {
        return Err(MvccError::InvalidArgument(
            "not a snapshot: the file is neither etcd's (a bbolt database) nor cairn's".into(),
        ));
    };
    if format == "cairn" {
        let mut input = std::io::BufReader::new(std::fs::File::open(upload).map_err(io_error)?);
        crate::snapshot::unpack(&mut input, dir).map_err(|error| match error {
            MvccError::Snapshot(why) => {
                MvccError::InvalidArgument(format!("not a whole cairn snapshot: {why}"))
            }
            other => other,
        })?;
    } else {
        let bytes = std::fs::read(upload).map_err(io_error)?;
        let buckets = crate::bbolt::read(&bytes).map_err(|error| {
            MvccError::InvalidArgument(format!("not a whole etcd snapshot: {error}"))
        })?;
        drop(bytes);
        crate::etcd_snapshot::import(&buckets, dir).map_err(|error| match error {
            MvccError::EtcdSnapshot(why) => {
                MvccError::InvalidArgument(format!("not a usable etcd snapshot: {why}"))
            }
            other => other,
        })?;
    }
    let store = Store::open(dir).map_err(|error| {
        MvccError::InvalidArgument(format!("the snapshot does not open as a store: {error}"))
    })?;
    let status = store.status();
    let (hash, _, _) = store.hash_kv(0)?;
    drop(store);
    Ok(Built {
        format,
        revision: status.current,
        hash,
        compacted: status.compacted,
        keys: status.keys as u64,
        leases: status.leases as u64,
    })
}

/// Which snapshot format a file's first bytes say it is.
fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(CAIRN_MAGIC) {
        Some("cairn")
    } else if head.get(BBOLT_MAGIC_AT..BBOLT_MAGIC_AT + BBOLT_MAGIC.len())
        == Some(BBOLT_MAGIC.as_slice())
    {
        Some("etcd")
    } else {
        None
    }
}

/// Moves the store built in `building` to its staged name beside the data
/// directory, synced, and returns that path.
fn stage(building: &Path, data_dir: &Path, built: &Built) -> Result<PathBuf, MvccError> {
    let store = building.join(BUILT);
    seed::sync_tree(&store)?;
    let staged = seed::beside(
        data_dir,
        &format!("{STAGED}-{:08x}-{}", built.hash, built.revision),
    )?;
    std::fs::rename(&store, &staged).map_err(io_error)?;
    seed::sync_dir(&seed::parent_of(data_dir))?;
    Ok(staged)
}

/// The staged store beside `data_dir` with `hash` and `revision`, if any.
fn find_staged(data_dir: &Path, hash: u32, revision: i64) -> Option<PathBuf> {
    let name = data_dir.file_name()?.to_string_lossy().into_owned();
    let entries = std::fs::read_dir(seed::parent_of(data_dir)).ok()?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| {
            staged_as(&name, &entry.file_name().to_string_lossy()) == Some((hash, revision))
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found.pop()
}

/// The hash and revision of the staged store `file_name` names, beside the
/// data directory `name`.
fn staged_as(name: &str, file_name: &str) -> Option<(u32, i64)> {
    let rest = file_name
        .strip_prefix(name)?
        .strip_prefix('.')?
        .strip_prefix(STAGED)?
        .strip_prefix('-')?;
    let mut parts = rest.split('-');
    let hash = parts.next().filter(|hash| hash.len() == 8)?;
    let hash = u32::from_str_radix(hash, 16).ok()?;
    let revision = parts.next()?.parse().ok()?;
    let nanos = parts.next()?;
    if parts.next().is_some() || !all_digits(nanos) {
        return None;
    }
    Some((hash, revision))
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Whether `file_name` beside `name` is a store being built from an upload.
fn is_building(name: &str, file_name: &str) -> bool {
    file_name
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_prefix(BUILDING))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(all_digits)
}

/// Removes what restores left beside `data_dir`: stores half built, and,
/// unless `keep_staged` (the store is still fresh, so a committed restore
/// may yet need one), staged stores.
pub(crate) fn remove_leftovers(data_dir: &Path, keep_staged: bool) {
    let Some(name) = data_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
    else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(seed::parent_of(data_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let staged = staged_as(&name, &file_name).is_some();
        if is_building(&name, &file_name) || (staged && !keep_staged) {
            tracing::info!(path = %entry.path().display(), "removing what a restore left");
            seed::remove(&entry.path());
        }
    }
}

/// Replaces this replica's store as the Restore at `point` says: with the
/// staged store it names, when this replica has it, else with a copy of a
/// peer that applied the Restore. Retries until it succeeds; `None` at
/// shutdown.
pub(crate) async fn replace(
    start: &Start<'_>,
    log: &LogClient,
    point: &RestorePoint,
    progress: &(impl Fn(String) + Sync),
    mut shutdown: ShutdownWatch,
) -> Result<Option<Prepared>, MvccError> {
    let prepared = match find_staged(start.data_dir, point.hash, point.revision) {
        Some(staged) => {
            let mut backoff = seed::Backoff::default();
            loop {
                progress(format!(
                    "swapping in the restored store for the restore at log index {}",
                    point.index
                ));
                let swapped = tokio::select! {
                    swapped = swap_in_staged(start, log, point, &staged) => swapped,
                    () = shutdown.cancelled() => return Ok(None),
                };
                match swapped {
                    Ok(prepared) => break Some(prepared),
                    Err(error) => tracing::warn!(
                        %error,
                        staged = %staged.display(),
                        "cannot swap in the restored store yet; retrying"
                    ),
                }
                if !backoff.wait(&mut shutdown).await {
                    return Ok(None);
                }
            }
        }
        None => {
            let peers = seed::other_peers(start).await;
            if peers.is_empty() {
                return Err(MvccError::Settings(format!(
                    "a restore replaced the state at log index {} and this replica does not hold the restored store: it can only copy it from a replica that applied it; set `seed.replicas` (CAIRN_SEED__REPLICAS) to the other replicas' addresses",
                    point.index
                )));
            }
            tracing::warn!(
                index = point.index,
                "a restore replaced the state; copying the restored store from a peer"
            );
            progress(format!(
                "copying the store restored at log index {} from a peer",
                point.index
            ));
            seed::seed(start, &peers, point.index, log, progress, shutdown).await?
        }
    };
    remove_leftovers(start.data_dir, false);
    if let Some(prepared) = &prepared {
        let status = prepared.store.status();
        tracing::info!(
            index = point.index,
            revision = status.current,
            keys = status.keys,
            "the store was replaced by the restored one"
        );
    }
    Ok(prepared)
}

/// Gives the staged store the Restore's log position and the claims in
/// force, then swaps it in as a seeded copy is.
async fn swap_in_staged(
    start: &Start<'_>,
    log: &LogClient,
    point: &RestorePoint,
    staged: &Path,
) -> Result<Prepared, MvccError> {
    {
        let staged = staged.to_path_buf();
        let point = point.clone();
        seed::blocking(move || Store::open(&staged)?.adopt_restore(&point)).await?;
    }
    seed::adopt(start, log, staged, "the restored snapshot").await
}

fn io_error(error: std::io::Error) -> MvccError {
    MvccError::Snapshot(error.to_string())
}

#[cfg(test)]
mod tests;
