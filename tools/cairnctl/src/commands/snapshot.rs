//! `snapshot save`: streams one member's backend into a file, written under
//! `<file>.part` and renamed once complete and synced.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

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
