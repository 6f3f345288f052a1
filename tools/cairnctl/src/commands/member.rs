//! `member list | add | remove | update | promote`.

use etcd_client::MemberAddOptions;

use super::Ctx;
use crate::args::MemberCommand;
use crate::error::CtlError;
use crate::go_fmt;
use crate::model::{MemberAddResult, MembersResult};

/// Runs the member subcommand.
pub(super) async fn run(ctx: &Ctx, command: MemberCommand) -> Result<(), CtlError> {
    match command {
        MemberCommand::List => list(ctx).await,
        MemberCommand::Add {
            args,
            peer_urls,
            learner,
        } => add(ctx, &args, peer_urls.as_deref(), learner).await,
        MemberCommand::Remove { args } => {
            let id = member_id_arg(&args)?;
            let client = ctx.session.client().await?;
            let response = ctx
                .session
                .call(&client, |mut client| async move {
                    client.member_remove(id).await
                })
                .await?;
            let result = MembersResult::new(response.header(), response.members());
            ctx.printer.member_changed(id, "removed from", &result)
        }
        MemberCommand::Update { args, peer_urls } => {
            let id = member_id_arg(&args)?;
            let urls = peer_urls_arg(peer_urls.as_deref())?;
            let client = ctx.session.client().await?;
            let response = ctx
                .session
                .call(&client, |mut client| {
                    let urls = urls.clone();
                    async move { client.member_update(id, urls).await }
                })
                .await?;
            let result = MembersResult::new(response.header(), response.members());
            ctx.printer.member_changed(id, "updated in", &result)
        }
        MemberCommand::Promote { args } => {
            let id = member_id_arg(&args)?;
            let client = ctx.session.client().await?;
            let response = ctx
                .session
                .call(&client, |mut client| async move {
                    client.member_promote(id).await
                })
                .await?;
            let result = MembersResult::new(response.header(), response.members());
            ctx.printer.member_changed(id, "promoted in", &result)
        }
    }
}

async fn list(ctx: &Ctx) -> Result<(), CtlError> {
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(
            &client,
            |mut client| async move { client.member_list().await },
        )
        .await?;
    ctx.printer
        .member_list(&MembersResult::new(response.header(), response.members()))
}

async fn add(
    ctx: &Ctx,
    args: &[String],
    peer_urls: Option<&str>,
    learner: bool,
) -> Result<(), CtlError> {
    let [name] = args else {
        return Err(CtlError::bad_args("member name not provided"));
    };
    let urls = peer_urls_arg(peer_urls)?;
    let mut options = MemberAddOptions::new();
    if learner {
        options = options.with_is_learner();
    }
    let client = ctx.session.client().await?;
    let response = ctx
        .session
        .call(&client, |mut client| {
            let (urls, options) = (urls.clone(), options.clone());
            async move { client.member_add(urls, Some(options)).await }
        })
        .await?;
    ctx.printer
        .member_added(&MemberAddResult::from(&response), name, &urls)
}

/// A member ID argument: hexadecimal, as `member list` prints IDs.
fn member_id_arg(args: &[String]) -> Result<u64, CtlError> {
    let [id] = args else {
        return Err(CtlError::bad_args("member ID is not provided"));
    };
    go_fmt::parse_u64(id, 16).map_err(|error| {
        CtlError::bad_args(format!("bad member ID arg ({error}), expecting ID in Hex"))
    })
}

/// `--peer-urls`: comma-separated, each checked before anything is sent.
fn peer_urls_arg(peer_urls: Option<&str>) -> Result<Vec<String>, CtlError> {
    let peer_urls = peer_urls.unwrap_or_default();
    if peer_urls.is_empty() {
        return Err(CtlError::bad_args("member peer urls not provided"));
    }
    let urls: Vec<String> = peer_urls.split(',').map(str::to_owned).collect();
    for url in &urls {
        check_url(url.trim()).map_err(CtlError::general)?;
    }
    Ok(urls)
}

/// The rules etcd applies to member URLs: a known scheme, a `host:port`
/// address and no path.
fn check_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
        return Err(format!(
            "URL scheme must be http, https, unix, or unixs: {url}"
        ));
    }
    let (host, path) = match rest.find(['/', '?', '#']) {
        Some(index) => rest.split_at(index),
        None => (rest, ""),
    };
    let has_port = match host.rfind(']') {
        Some(bracket) => host[bracket..].contains(':'),
        None => host.contains(':'),
    };
    if !has_port {
        return Err(format!(
            "URL address does not have the form \"host:port\": {url}"
        ));
    }
    if path.starts_with('/') {
        return Err(format!("URL must not contain a path: {url}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_like_etcd() {
        assert_eq!(check_url("http://127.0.0.1:2380"), Ok(()));
        assert_eq!(check_url("https://[::1]:2380"), Ok(()));
        assert_eq!(
            check_url("notaurl"),
            Err("URL scheme must be http, https, unix, or unixs: notaurl".to_owned())
        );
        assert_eq!(
            check_url("http://host"),
            Err("URL address does not have the form \"host:port\": http://host".to_owned())
        );
        assert_eq!(
            check_url("http://host:1/x"),
            Err("URL must not contain a path: http://host:1/x".to_owned())
        );
    }

    #[test]
    fn member_ids_are_hexadecimal() {
        assert_eq!(
            member_id_arg(&["2e1259d415f2a040".to_owned()]).ok(),
            Some(0x2e1259d415f2a040)
        );
        let error = member_id_arg(&["zz".to_owned()])
            .err()
            .map(|error| error.message);
        assert_eq!(
            error.as_deref(),
            Some("bad member ID arg (strconv.ParseUint: parsing \"zz\": invalid syntax), expecting ID in Hex")
        );
        let missing = member_id_arg(&[]).err().map(|error| error.message);
        assert_eq!(missing.as_deref(), Some("member ID is not provided"));
    }
}
