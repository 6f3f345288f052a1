//! `get`: reads a key or a range, with etcdctl's sorting and paging options.

use etcd_client::{GetOptions, SortOrder, SortTarget};

use super::{bytes, Ctx};
use crate::args::GetArgs;
use crate::error::{CtlError, Exit};
use crate::go_fmt;
use crate::model::RangeResult;

/// The key and options of a range read, also used for `get` lines in a txn.
pub(super) fn request(args: &GetArgs) -> Result<(Vec<u8>, GetOptions), CtlError> {
    let Some(key) = args.args.first() else {
        return Err(CtlError::bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    };
    if args.prefix && args.from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut options = GetOptions::new();
    match args.consistency.as_str() {
        "l" => {}
        "s" => options = options.with_serializable(),
        other => {
            return Err(CtlError::new(
                Exit::BadFeature,
                format!(
                    "unknown consistency flag {}",
                    go_fmt::quote(other.as_bytes())
                ),
            ))
        }
    }
    if let Some(range_end) = args.args.get(1) {
        if args.prefix || args.from_key {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        options = options.with_range(bytes(range_end));
    }
    options = options.with_limit(args.limit).with_revision(args.rev);
    let order = match args.order.to_uppercase().as_str() {
        "" => SortOrder::None,
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        _ => {
            return Err(CtlError::new(
                Exit::BadFeature,
                format!("bad sort order {}", args.order),
            ))
        }
    };
    let target = match args.sort_by.to_uppercase().as_str() {
        "" | "KEY" => SortTarget::Key,
        "CREATE" => SortTarget::Create,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(CtlError::new(
                Exit::BadFeature,
                format!("bad sort target {}", args.sort_by),
            ))
        }
    };
    options = options.with_sort(target, order);
    if args.prefix {
        options = options.with_prefix();
    }
    if args.from_key {
        options = options.with_from_key();
    }
    if args.keys_only {
        options = options.with_keys_only();
    }
    if args.count_only {
        options = options.with_count_only();
    }
    Ok((bytes(key), options))
}

/// Reads the key or range, then prints the answer.
pub(super) async fn run(ctx: &Ctx, args: &GetArgs) -> Result<(), CtlError> {
    let (key, options) = request(args)?;
    if args.print_value_only && !ctx.printer.is_simple() {
        return Err(CtlError::bad_args(
            "print-value-only is only for `--write-out=simple`",
        ));
    }
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| {
            let (key, options) = (key.clone(), options.clone());
            async move { client.get(key, Some(options)).await }
        })
        .await?;
    ctx.printer.get(
        &RangeResult::from(&response),
        args.print_value_only,
        args.count_only,
    )
}
