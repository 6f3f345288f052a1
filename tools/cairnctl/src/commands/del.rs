//! `del`: deletes a key or a range.

use etcd_client::DeleteOptions;

use super::{bytes, Ctx};
use crate::args::DelArgs;
use crate::error::CtlError;
use crate::model::DeleteResult;

/// The key and options of a delete, also used for `del` lines in a txn.
pub(super) fn request(args: &DelArgs) -> Result<(Vec<u8>, DeleteOptions), CtlError> {
    if args.args.is_empty() || args.args.len() > 2 {
        return Err(CtlError::bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    }
    if args.prefix && args.from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut options = DeleteOptions::new();
    if let Some(range_end) = args.args.get(1) {
        if args.prefix || args.from_key {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        options = options.with_range(bytes(range_end));
    }
    if args.prefix {
        options = options.with_prefix();
    }
    if args.prev_kv {
        options = options.with_prev_key();
    }
    if args.from_key {
        options = options.with_from_key();
    }
    Ok((bytes(&args.args[0]), options))
}

/// Deletes the key or range, then prints the answer.
pub(super) async fn run(ctx: &Ctx, args: &DelArgs) -> Result<(), CtlError> {
    let (key, options) = request(args)?;
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| {
            let (key, options) = (key.clone(), options.clone());
            async move { client.delete(key, Some(options)).await }
        })
        .await?;
    ctx.printer.delete(&DeleteResult::from(&response))
}
