//! `endpoint status | health`: one connection per endpoint, so each
//! endpoint answers for itself.

use cairn_proto::etcd_error::EtcdError;
use std::time::Instant;

use super::Ctx;
use crate::args::{EndpointArgs, EndpointCommand};
use crate::error::{CtlError, Exit};
use crate::go_fmt;
use crate::model::{EndpointHealth, EndpointStatus, Status};

/// Runs the endpoint subcommand on `--endpoints` or, with `--cluster`, on every member.
pub(super) async fn run(ctx: &Ctx, args: &EndpointArgs) -> Result<(), CtlError> {
    let endpoints = if args.cluster {
        cluster_endpoints(ctx).await?
    } else {
        ctx.session.endpoints.clone()
    };
    match args.command {
        EndpointCommand::Status => status(ctx, &endpoints).await,
        EndpointCommand::Health => health(ctx, &endpoints).await,
    }
}

/// `--cluster`: every client URL in the member list.
async fn cluster_endpoints(ctx: &Ctx) -> Result<Vec<String>, CtlError> {
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(
            &client,
            |mut client| async move { client.member_list().await },
        )
        .await?;
    Ok(response
        .members()
        .iter()
        .flat_map(|member| member.client_urls().iter().cloned())
        .collect())
}

async fn status(ctx: &Ctx, endpoints: &[String]) -> Result<(), CtlError> {
    let mut statuses = Vec::new();
    let mut failed = false;
    for endpoint in endpoints {
        let answer = async {
            let client = ctx
                .session
                .client_for(std::slice::from_ref(endpoint), false)
                .await?;
            ctx.session
                .call(&client, |mut client| async move { client.status().await })
                .await
        };
        match answer.await {
            Ok(response) => statuses.push(EndpointStatus {
                endpoint: endpoint.clone(),
                status: Status::from(&response),
            }),
            Err(error) => {
                eprintln!("Failed to get the status of endpoint {endpoint} ({error})");
                failed = true;
            }
        }
    }
    ctx.printer.endpoint_status(&statuses)?;
    if failed {
        return Err(CtlError::quiet(Exit::Error));
    }
    Ok(())
}

/// An endpoint is healthy when it answers a linearizable read, which needs
/// a leader and a quorum. A permission error still proves that.
async fn check(ctx: &Ctx, endpoint: &str) -> EndpointHealth {
    let started = Instant::now();
    let answer = async {
        let client = ctx
            .session
            .client_for(&[endpoint.to_owned()], false)
            .await?;
        ctx.session
            .call(&client, |mut client| async move {
                client.get("health", None).await
            })
            .await
    };
    let error = match answer.await {
        Ok(_) => String::new(),
        Err(error) if error.message == EtcdError::PermissionDenied.message() => String::new(),
        Err(error) => error.message,
    };
    EndpointHealth {
        endpoint: endpoint.to_owned(),
        health: error.is_empty(),
        took: go_fmt::duration_string(started.elapsed()),
        error,
    }
}

async fn health(ctx: &Ctx, endpoints: &[String]) -> Result<(), CtlError> {
    let checks =
        futures::future::join_all(endpoints.iter().map(|endpoint| check(ctx, endpoint))).await;
    ctx.printer.endpoint_health(&checks)?;
    if checks.iter().any(|check| !check.health) {
        return Err(CtlError::general("unhealthy cluster"));
    }
    Ok(())
}
