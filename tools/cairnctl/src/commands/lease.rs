//! `lease grant | revoke | timetolive | list | keep-alive`.

use cairn_proto::etcd_error::EtcdError;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseTimeToLiveOptions};

use super::{lease_id_arg, Ctx};
use crate::args::LeaseCommand;
use crate::error::{client_error_text, CtlError, Exit};
use crate::go_fmt;
use crate::model::{
    LeaseGrantResult, LeaseKeepAliveResult, LeaseListResult, LeaseRevokeResult,
    LeaseTimeToLiveResult,
};
use crate::output::simple;

/// The shortest pause between two renewals.
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(500);

/// Runs the lease subcommand.
pub(super) async fn run(ctx: &Ctx, command: LeaseCommand) -> Result<(), CtlError> {
    match command {
        LeaseCommand::Grant { args } => grant(ctx, &args).await,
        LeaseCommand::Revoke { args } => revoke(ctx, &args).await,
        LeaseCommand::Timetolive { args, keys } => time_to_live(ctx, &args, keys).await,
        LeaseCommand::List => list(ctx).await,
        LeaseCommand::KeepAlive { args, once } => keep_alive(ctx, &args, once).await,
    }
}

/// The one argument a lease command takes, or etcdctl's complaint.
fn single_arg<'a>(args: &'a [String], complaint: &str) -> Result<&'a str, CtlError> {
    match args {
        [arg] => Ok(arg),
        _ => Err(CtlError::bad_args(complaint)),
    }
}

async fn grant(ctx: &Ctx, args: &[String]) -> Result<(), CtlError> {
    let ttl = single_arg(args, "lease grant command needs TTL argument")?;
    let ttl = go_fmt::parse_i64(ttl, 10)
        .map_err(|error| CtlError::bad_args(format!("bad TTL ({error})")))?;
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| async move {
            client.lease_grant(ttl, None).await
        })
        .await
        .map_err(|error| CtlError::general(format!("failed to grant lease ({error})")))?;
    ctx.printer.lease_grant(&LeaseGrantResult::from(&response))
}

async fn revoke(ctx: &Ctx, args: &[String]) -> Result<(), CtlError> {
    let id = lease_id_arg(single_arg(args, "lease revoke command needs 1 argument")?)?;
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| async move {
            client.lease_revoke(id).await
        })
        .await
        .map_err(|error| CtlError::general(format!("failed to revoke lease ({error})")))?;
    ctx.printer
        .lease_revoke(id, &LeaseRevokeResult::from(&response))
}

async fn time_to_live(ctx: &Ctx, args: &[String], with_keys: bool) -> Result<(), CtlError> {
    let id = lease_id_arg(single_arg(
        args,
        "lease timetolive command needs lease ID as argument",
    )?)?;
    let mut options = LeaseTimeToLiveOptions::new();
    if with_keys {
        options = options.with_keys();
    }
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| {
            let options = options.clone();
            async move { client.lease_time_to_live(id, Some(options)).await }
        })
        .await
        .map_err(|error| error.with_exit(Exit::BadConnection))?;
    ctx.printer
        .lease_time_to_live(&LeaseTimeToLiveResult::from(&response), with_keys)
}

async fn list(ctx: &Ctx) -> Result<(), CtlError> {
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| async move { client.leases().await })
        .await?;
    ctx.printer.lease_list(&LeaseListResult::from(&response))
}

/// etcd-client reports a lease the server does not know as this error.
fn is_lease_gone(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::LeaseKeepAliveError(_))
}

/// Renews until the lease is gone (or once with `--once`), printing each
/// renewal. etcd-client's `lease_keep_alive` renews once itself and keeps
/// that answer; a second renewal gives the answer to print.
async fn keep_alive(ctx: &Ctx, args: &[String], once: bool) -> Result<(), CtlError> {
    let id = lease_id_arg(single_arg(
        args,
        "lease keep-alive command needs lease ID as argument",
    )?)?;
    let client = ctx.session.client().await?;
    let opened = ctx
        .session
        .call_raw(&client, |mut client| async move {
            client.lease_keep_alive(id).await
        })
        .await;
    let (mut keeper, mut stream) = match opened {
        Some(Ok(pair)) => pair,
        Some(Err(error)) if is_lease_gone(&error) && !once => return lease_gone(ctx, id),
        Some(Err(error)) if is_lease_gone(&error) => {
            return Err(CtlError::new(
                Exit::BadConnection,
                EtcdError::LeaseNotFound.message(),
            ))
        }
        Some(Err(error)) => {
            return Err(CtlError::new(
                Exit::BadConnection,
                client_error_text(&error),
            ))
        }
        None => return Err(CtlError::deadline_exceeded().with_exit(Exit::BadConnection)),
    };
    let mut patience = ctx.session.command_timeout();
    loop {
        let renewed = async {
            keeper.keep_alive().await?;
            next_answer(&mut stream).await
        };
        let answer = match tokio::time::timeout(patience, renewed).await {
            Ok(Ok(Some(answer))) if answer.ttl > 0 => answer,
            Ok(Err(error)) if once => {
                return Err(CtlError::new(
                    Exit::BadConnection,
                    client_error_text(&error),
                ))
            }
            Err(_elapsed) if once => {
                return Err(CtlError::deadline_exceeded().with_exit(Exit::BadConnection))
            }
            _ if once => {
                return Err(CtlError::new(
                    Exit::BadConnection,
                    EtcdError::LeaseNotFound.message(),
                ))
            }
            _ => return lease_gone(ctx, id),
        };
        ctx.printer.lease_keep_alive(&answer)?;
        if once {
            return Ok(());
        }
        // Renew a third of the way through the TTL, as clientv3 does; give
        // up when a whole TTL passes without an answer.
        let ttl = Duration::from_secs(u64::try_from(answer.ttl).unwrap_or(1));
        patience = ttl.max(MIN_RENEW_INTERVAL);
        tokio::time::sleep((ttl / 3).max(MIN_RENEW_INTERVAL)).await;
    }
}

async fn next_answer(
    stream: &mut LeaseKeepAliveStream,
) -> Result<Option<LeaseKeepAliveResult>, etcd_client::Error> {
    Ok(stream
        .message()
        .await?
        .map(|answer| LeaseKeepAliveResult::from(&answer)))
}

/// The lease expired or was revoked: etcdctl says so in the simple format
/// and ends successfully.
fn lease_gone(ctx: &Ctx, id: i64) -> Result<(), CtlError> {
    if ctx.printer.is_simple() {
        ctx.printer.emit(&simple::lease_expired(id))?;
    }
    Ok(())
}
