//! `txn`: reads compares, success ops and failure ops from stdin (each list
//! ended by an empty line) and commits them as one transaction.

use std::io::BufRead;

use etcd_client::{CompareOp, Txn, TxnOp};

use super::{del, get, put, Ctx};
use crate::args::TxnArgs;
use crate::error::{CtlError, Exit};
use crate::model::TxnResult;
use crate::txn_parser::{self, CompareResult, CompareTarget, ParseError, TxnOpSpec};

/// Reads the transaction from stdin, commits it and prints the answer.
pub(super) async fn run(ctx: &Ctx, args: &TxnArgs) -> Result<(), CtlError> {
    if !args.args.is_empty() {
        return Err(CtlError::bad_args("txn command does not accept argument"));
    }
    let txn = read_txn(&mut std::io::stdin().lock(), args.interactive, ctx)?;
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await?;
    ctx.printer.txn(&TxnResult::from(&response))
}

/// Reads the three lists; in interactive mode each is announced first.
fn read_txn(input: &mut impl BufRead, interactive: bool, ctx: &Ctx) -> Result<Txn, CtlError> {
    let prompt = |text: &str| {
        if interactive {
            ctx.printer.emit(format!("{text}\n").as_bytes())
        } else {
            Ok(())
        }
    };
    prompt("compares:")?;
    let mut compares = Vec::new();
    while let Some(line) = read_entry(input)? {
        compares.push(compare(&line)?);
    }
    prompt("success requests (get, put, del):")?;
    let success = read_ops(input)?;
    prompt("failure requests (get, put, del):")?;
    let failure = read_ops(input)?;
    Ok(Txn::new().when(compares).and_then(success).or_else(failure))
}

/// The next line of a list, or `None` at the empty line that ends it. Input
/// that ends before that is an error, as in etcdctl.
fn read_entry(input: &mut impl BufRead) -> Result<Option<String>, CtlError> {
    let mut line = Vec::new();
    input
        .read_until(b'\n', &mut line)
        .map_err(|error| CtlError::new(Exit::InvalidInput, error.to_string()))?;
    if line.last() != Some(&b'\n') {
        return Err(CtlError::new(Exit::InvalidInput, "EOF"));
    }
    if line.len() == 1 {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn read_ops(input: &mut impl BufRead) -> Result<Vec<TxnOp>, CtlError> {
    let mut ops = Vec::new();
    while let Some(line) = read_entry(input)? {
        ops.push(op(&line)?);
    }
    Ok(ops)
}

fn invalid_input(error: ParseError) -> CtlError {
    CtlError::new(Exit::InvalidInput, error.0)
}

fn compare(line: &str) -> Result<etcd_client::Compare, CtlError> {
    let parsed = txn_parser::parse_compare(line).map_err(invalid_input)?;
    let op = match parsed.result {
        CompareResult::Equal => CompareOp::Equal,
        CompareResult::NotEqual => CompareOp::NotEqual,
        CompareResult::Greater => CompareOp::Greater,
        CompareResult::Less => CompareOp::Less,
    };
    let key = parsed.key;
    Ok(match parsed.target {
        CompareTarget::Version(version) => etcd_client::Compare::version(key, op, version),
        CompareTarget::Create(revision) => etcd_client::Compare::create_revision(key, op, revision),
        CompareTarget::Mod(revision) => etcd_client::Compare::mod_revision(key, op, revision),
        CompareTarget::Value(value) => etcd_client::Compare::value(key, op, value),
        CompareTarget::Lease(lease) => etcd_client::Compare::lease(key, op, lease),
    })
}

/// An op line, checked with the same rules as the command it names.
fn op(line: &str) -> Result<TxnOp, CtlError> {
    Ok(match txn_parser::parse_op(line).map_err(invalid_input)? {
        TxnOpSpec::Put(args) => {
            let request = put::request(&args, false)?;
            TxnOp::put(request.key, request.value, Some(request.options))
        }
        TxnOpSpec::Get(args) => {
            let (key, options) = get::request(&args)?;
            TxnOp::get(key, Some(options))
        }
        TxnOpSpec::Del(args) => {
            let (key, options) = del::request(&args)?;
            TxnOp::delete(key, Some(options))
        }
    })
}
