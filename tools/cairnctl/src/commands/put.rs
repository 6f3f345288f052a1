//! `put`: writes one key, its value from the arguments or stdin.

use std::io::Read;

use etcd_client::PutOptions;

use super::{bytes, Ctx};
use crate::args::PutArgs;
use crate::error::CtlError;
use crate::go_fmt;
use crate::model::PutResult;

const NEEDS_ARGUMENTS: &str = "put command needs 1 argument and input from stdin or 2 arguments";

/// A put ready to send, also used for `put` lines inside a txn.
pub(super) struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub options: PutOptions,
}

/// Checks the arguments in etcdctl's order and builds the request. Without a
/// value argument the value is all of stdin, if `read_stdin` allows it.
pub(super) fn request(args: &PutArgs, read_stdin: bool) -> Result<PutRequest, CtlError> {
    let Some(key) = args.args.first() else {
        return Err(CtlError::bad_args(NEEDS_ARGUMENTS));
    };
    if args.ignore_value && args.args.len() > 1 {
        return Err(CtlError::bad_args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let value = if args.ignore_value {
        Vec::new()
    } else {
        match args.args.get(1) {
            Some(value) => bytes(value),
            None if read_stdin => {
                let mut value = Vec::new();
                match std::io::stdin().read_to_end(&mut value) {
                    Ok(_) if !value.is_empty() => value,
                    _ => return Err(CtlError::bad_args(NEEDS_ARGUMENTS)),
                }
            }
            None => return Err(CtlError::bad_args(NEEDS_ARGUMENTS)),
        }
    };
    let lease = go_fmt::parse_i64(&args.lease, 16).map_err(|error| {
        CtlError::bad_args(format!("bad lease ID ({error}), expecting ID in Hex"))
    })?;
    let mut options = PutOptions::new();
    if lease != 0 {
        options = options.with_lease(lease);
    }
    if args.prev_kv {
        options = options.with_prev_key();
    }
    if args.ignore_value {
        options = options.with_ignore_value();
    }
    if args.ignore_lease {
        options = options.with_ignore_lease();
    }
    Ok(PutRequest {
        key: bytes(key),
        value,
        options,
    })
}

/// Writes the key, then prints the answer.
pub(super) async fn run(ctx: &Ctx, args: &PutArgs) -> Result<(), CtlError> {
    let request = request(args, true)?;
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| {
            let (key, value, options) = (
                request.key.clone(),
                request.value.clone(),
                request.options.clone(),
            );
            async move { client.put(key, value, Some(options)).await }
        })
        .await?;
    ctx.printer.put(&PutResult::from(&response))
}
