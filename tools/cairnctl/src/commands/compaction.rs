//! `compaction`: discards the history before a revision.

use etcd_client::CompactionOptions;

use super::Ctx;
use crate::args::CompactionArgs;
use crate::error::CtlError;
use crate::go_fmt;

/// Compacts, then says so.
pub(super) async fn run(ctx: &Ctx, args: &CompactionArgs) -> Result<(), CtlError> {
    let [revision] = args.args.as_slice() else {
        return Err(CtlError::bad_args("compaction command needs 1 argument"));
    };
    let revision = go_fmt::parse_i64(revision, 10).map_err(CtlError::general)?;
    let mut options = CompactionOptions::new();
    if args.physical {
        options = options.with_physical();
    }
    let client = ctx.session.client().await?;
    ctx.session
        .call(&client, |mut client| {
            let options = options.clone();
            async move { client.compact(revision, Some(options)).await }
        })
        .await?;
    // etcdctl prints this sentence whatever `-w` says.
    ctx.printer
        .emit(format!("compacted revision {revision}\n").as_bytes())
}
