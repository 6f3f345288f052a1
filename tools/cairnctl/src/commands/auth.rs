//! `user …`, `role …` and `auth enable | disable`, with etcdctl 3.4's
//! arguments, messages and simple output, so an auth script reads the same
//! with either client.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use etcd_client::{Permission, PermissionType, RoleRevokePermissionOptions, UserAddOptions};

use super::{read_password, Ctx};
use crate::args::{AuthCommand, Interactive, PermissionRange, RoleCommand, UserCommand};
use crate::error::CtlError;
use crate::output::Format;

/// The one argument a command takes, or etcdctl's complaint.
fn one<'a>(args: &'a [String], complaint: &str) -> Result<&'a str, CtlError> {
    match args {
        [only] => Ok(only),
        _ => Err(CtlError::bad_args(complaint)),
    }
}

/// The two arguments a command takes, or etcdctl's complaint.
fn two<'a>(args: &'a [String], complaint: &str) -> Result<(&'a str, &'a str), CtlError> {
    match args {
        [first, second] => Ok((first, second)),
        _ => Err(CtlError::bad_args(complaint)),
    }
}

/// Auth results are printed in etcdctl's simple format only.
fn simple_only(ctx: &Ctx) -> Result<(), CtlError> {
    match ctx.printer.format {
        Format::Simple => Ok(()),
        _ => Err(CtlError::new(
            crate::error::Exit::BadFeature,
            "cairnctl prints user, role and auth results in the simple format only",
        )),
    }
}

fn say(ctx: &Ctx, text: String) -> Result<(), CtlError> {
    ctx.printer.emit(text.as_bytes())
}

/// A new password: from stdin with `--interactive=false`, else asked for
/// twice, as etcdctl does.
fn new_password(user: &str, interactive: Interactive) -> Result<String, CtlError> {
    if !interactive.interactive {
        return read_password("");
    }
    let first = read_password(&format!("Password of {user}: "))?;
    let again = read_password(&format!("Type password of {user} again for confirmation: "))?;
    if first != again {
        return Err(CtlError::general("given passwords are different."));
    }
    Ok(first)
}

/// Runs a `user` subcommand.
pub(super) async fn user(ctx: &Ctx, command: UserCommand) -> Result<(), CtlError> {
    simple_only(ctx)?;
    let client = ctx.session.client().await?;
    let session = &ctx.session;
    match command {
        UserCommand::Add {
            args,
            interactive,
            no_password,
        } => {
            let given = one(&args, "user add command requires user name as its argument")?;
            let (name, password) = match given.split_once(':') {
                Some((name, password)) => (name.to_owned(), password.to_owned()),
                None if no_password => (given.to_owned(), String::new()),
                None => (given.to_owned(), new_password(given, interactive)?),
            };
            let options = no_password.then(|| UserAddOptions::new().with_no_pwd());
            session
                .call(&client, |mut client| {
                    let (name, password) = (name.clone(), password.clone());
                    let options = options.clone();
                    async move { client.user_add(name, password, options).await }
                })
                .await?;
            say(ctx, format!("User {name} created\n"))
        }
        UserCommand::Get { args } => {
            let name = one(&args, "user get command requires user name as its argument")?;
            let found = session
                .call(
                    &client,
                    |mut client| async move { client.user_get(name).await },
                )
                .await?;
            let roles: String = found
                .roles()
                .iter()
                .map(|role| format!(" {role}"))
                .collect();
            say(ctx, format!("User: {name}\nRoles:{roles}\n"))
        }
        UserCommand::List => {
            let listed = session
                .call(
                    &client,
                    |mut client| async move { client.user_list().await },
                )
                .await?;
            say(
                ctx,
                listed
                    .users()
                    .iter()
                    .map(|user| format!("{user}\n"))
                    .collect(),
            )
        }
        UserCommand::Delete { args } => {
            let name = one(
                &args,
                "user delete command requires user name as its argument",
            )?;
            session
                .call(&client, |mut client| async move {
                    client.user_delete(name).await
                })
                .await?;
            say(ctx, format!("User {name} deleted\n"))
        }
        UserCommand::Passwd { args, interactive } => {
            let name = one(
                &args,
                "user passwd command requires user name as its argument",
            )?;
            let password = new_password(name, interactive)?;
            session
                .call(&client, |mut client| {
                    let password = password.clone();
                    async move { client.user_change_password(name, password).await }
                })
                .await?;
            say(ctx, "Password updated\n".to_owned())
        }
        UserCommand::GrantRole { args } => {
            let (name, role) = two(
                &args,
                "user grant command requires user name and role name as its argument",
            )?;
            session
                .call(&client, |mut client| async move {
                    client.user_grant_role(name, role).await
                })
                .await?;
            say(ctx, format!("Role {role} is granted to user {name}\n"))
        }
        UserCommand::RevokeRole { args } => {
            let (name, role) = two(
                &args,
                "user revoke-role requires user name and role name as its argument",
            )?;
            session
                .call(&client, |mut client| async move {
                    client.user_revoke_role(name, role).await
                })
                .await?;
            say(ctx, format!("Role {role} is revoked from user {name}\n"))
        }
    }
}

/// The end of the range of keys starting with `key`, as clientv3 computes it.
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A permission's key and range end from the arguments after the role (and
/// type), as etcdctl reads them with `--prefix` and `--from-key`.
fn permission_range(
    args: &[OsString],
    range: PermissionRange,
) -> Result<(Vec<u8>, Vec<u8>), CtlError> {
    let key = args
        .first()
        .map(|key| key.as_bytes().to_vec())
        .unwrap_or_default();
    if key.is_empty() {
        if range.prefix && range.from_key {
            return Err(CtlError::bad_args(
                "--from-key and --prefix flags are mutually exclusive",
            ));
        }
        // The empty key is "\0": with --prefix or --from-key, every key.
        let end = if range.prefix || range.from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = match args.get(1) {
        Some(_) if range.prefix => {
            return Err(CtlError::bad_args(
                "unexpected endkey argument with --prefix",
            ))
        }
        Some(_) if range.from_key => {
            return Err(CtlError::bad_args(
                "unexpected endkey argument with --from-key",
            ))
        }
        Some(end) => end.as_bytes().to_vec(),
        None if range.prefix => prefix_end(&key),
        None if range.from_key => vec![0],
        None => Vec::new(),
    };
    Ok((key, end))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// etcdctl's listing of one permission's keys in `role get`.
fn permission_line(permission: &Permission) -> String {
    let (key, end) = (permission.key(), permission.range_end());
    if end.is_empty() {
        return format!("\t{}\n", text(key));
    }
    let mut line = if end == [0] {
        format!("\t[{}, <open ended>", text(key))
    } else {
        format!("\t[{}, {})", text(key), text(end))
    };
    if prefix_end(key) == end {
        line.push_str(&format!(" (prefix {})", text(key)));
    }
    line.push('\n');
    line
}

/// Runs a `role` subcommand.
pub(super) async fn role(ctx: &Ctx, command: RoleCommand) -> Result<(), CtlError> {
    simple_only(ctx)?;
    let client = ctx.session.client().await?;
    let session = &ctx.session;
    match command {
        RoleCommand::Add { args } => {
            let name = one(&args, "role add command requires role name as its argument")?;
            session
                .call(
                    &client,
                    |mut client| async move { client.role_add(name).await },
                )
                .await?;
            say(ctx, format!("Role {name} created\n"))
        }
        RoleCommand::Get { args } => {
            let name = one(&args, "role get command requires role name as its argument")?;
            let found = session
                .call(
                    &client,
                    |mut client| async move { client.role_get(name).await },
                )
                .await?;
            let permissions = found.permissions();
            let lines = |wanted: PermissionType| -> String {
                permissions
                    .iter()
                    .filter(|permission| {
                        let kind = permission.get_type();
                        kind == wanted as i32 || kind == PermissionType::Readwrite as i32
                    })
                    .map(permission_line)
                    .collect()
            };
            say(
                ctx,
                format!(
                    "Role {name}\nKV Read:\n{}KV Write:\n{}",
                    lines(PermissionType::Read),
                    lines(PermissionType::Write)
                ),
            )
        }
        RoleCommand::List => {
            let listed = session
                .call(
                    &client,
                    |mut client| async move { client.role_list().await },
                )
                .await?;
            say(
                ctx,
                listed
                    .roles()
                    .iter()
                    .map(|role| format!("{role}\n"))
                    .collect(),
            )
        }
        RoleCommand::Delete { args } => {
            let name = one(
                &args,
                "role delete command requires role name as its argument",
            )?;
            session
                .call(&client, |mut client| async move {
                    client.role_delete(name).await
                })
                .await?;
            say(ctx, format!("Role {name} deleted\n"))
        }
        RoleCommand::GrantPermission { args, range } => {
            if args.len() < 3 || args.len() > 4 {
                return Err(CtlError::bad_args(
                    "role grant command requires role name, permission type, and key [endkey] as its argument",
                ));
            }
            let name = text(args[0].as_bytes());
            let kind = match text(args[1].as_bytes()).to_uppercase().as_str() {
                "READ" => PermissionType::Read,
                "WRITE" => PermissionType::Write,
                "READWRITE" => PermissionType::Readwrite,
                other => {
                    return Err(CtlError::bad_args(format!(
                        "invalid permission type {}",
                        other.to_lowercase()
                    )))
                }
            };
            let (key, end) = permission_range(&args[2..], range)?;
            let permission = Permission::new(kind, key).with_range_end(end);
            session
                .call(&client, |mut client| {
                    let (name, permission) = (name.clone(), permission.clone());
                    async move { client.role_grant_permission(name, permission).await }
                })
                .await?;
            say(ctx, format!("Role {name} updated\n"))
        }
        RoleCommand::RevokePermission { args, range } => {
            if args.len() < 2 || args.len() > 3 {
                return Err(CtlError::bad_args(
                    "role revoke-permission command requires role name and key [endkey] as its argument",
                ));
            }
            let name = text(args[0].as_bytes());
            let (key, end) = permission_range(&args[1..], range)?;
            session
                .call(&client, |mut client| {
                    let (name, key, end) = (name.clone(), key.clone(), end.clone());
                    let options = RoleRevokePermissionOptions::new().with_range_end(end);
                    async move {
                        client
                            .role_revoke_permission(name, key, Some(options))
                            .await
                    }
                })
                .await?;
            let (key, end) = (text(&key), text(&end));
            let line = if end.is_empty() {
                format!("Permission of key {key} is revoked from role {name}\n")
            } else if end != "\0" {
                format!("Permission of range [{key}, {end}) is revoked from role {name}\n")
            } else {
                format!("Permission of range [{key}, <open ended> is revoked from role {name}\n")
            };
            say(ctx, line)
        }
    }
}

/// Runs `auth enable` or `auth disable`.
pub(super) async fn auth(ctx: &Ctx, command: AuthCommand) -> Result<(), CtlError> {
    let client = ctx.session.client().await?;
    let session = &ctx.session;
    match command {
        AuthCommand::Enable => {
            // As etcdctl: a root user without the root role gets it (the role
            // made first if need be), then enabling is tried again.
            loop {
                let enabled = session
                    .call_raw(
                        &client,
                        |mut client| async move { client.auth_enable().await },
                    )
                    .await
                    .ok_or_else(CtlError::deadline_exceeded)?;
                match enabled {
                    Ok(_) => break,
                    Err(error)
                        if crate::error::client_error_text(&error)
                            == "etcdserver: root user does not have root role" =>
                    {
                        session
                            .call(&client, |mut client| async move {
                                client.role_add("root").await
                            })
                            .await?;
                        session
                            .call(&client, |mut client| async move {
                                client.user_grant_role("root", "root").await
                            })
                            .await?;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            say(ctx, "Authentication Enabled\n".to_owned())
        }
        AuthCommand::Disable => {
            session
                .call(
                    &client,
                    |mut client| async move { client.auth_disable().await },
                )
                .await?;
            say(ctx, "Authentication Disabled\n".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_clientv3_ends_it() {
        assert_eq!(prefix_end(b"dir/"), b"dir0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn role_get_lists_keys_ranges_prefixes_and_open_ends_as_etcdctl() {
        let single = Permission::read("foo");
        let range = Permission::read("bar").with_range_end("baz");
        let prefix = Permission::read("dir/").with_range_end("dir0");
        let open = Permission::read("z").with_range_end(vec![0]);
        assert_eq!(permission_line(&single), "\tfoo\n");
        assert_eq!(permission_line(&range), "\t[bar, baz)\n");
        assert_eq!(permission_line(&prefix), "\t[dir/, dir0) (prefix dir/)\n");
        assert_eq!(permission_line(&open), "\t[z, <open ended>\n");
    }
}
