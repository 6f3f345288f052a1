//! One module per etcdctl command. Each checks its arguments as etcdctl does,
//! makes its requests through [`Session`] and prints through [`Printer`].

mod auth;
mod compaction;
mod del;
mod endpoint;
mod get;
mod lease;
mod member;
mod put;
mod snapshot;
mod txn;
mod watch;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::args::{Cli, Command};
use crate::client::Session;
use crate::error::CtlError;
use crate::output::{Format, Printer};

/// What every command needs: where to connect and how to print.
pub(crate) struct Ctx {
    pub session: Session,
    pub printer: Printer,
}

/// Runs the command the command line names.
pub(crate) async fn run(cli: Cli) -> Result<(), CtlError> {
    let ctx = Ctx {
        session: Session::new(&cli.global),
        printer: Printer {
            format: Format::parse(&cli.global.write_out)?,
            hex: cli.global.hex,
        },
    };
    match cli.command {
        Command::Put(args) => put::run(&ctx, &args).await,
        Command::Get(args) => get::run(&ctx, &args).await,
        Command::Del(args) => del::run(&ctx, &args).await,
        Command::Txn(args) => txn::run(&ctx, &args).await,
        Command::Watch(args) => watch::run(&ctx, &args).await,
        Command::Lease(command) => lease::run(&ctx, command).await,
        Command::Compaction(args) => compaction::run(&ctx, &args).await,
        Command::Member(command) => member::run(&ctx, command).await,
        Command::Endpoint(args) => endpoint::run(&ctx, &args).await,
        Command::Snapshot(command) => snapshot::run(&ctx, command).await,
        Command::User(command) => auth::user(&ctx, command).await,
        Command::Role(command) => auth::role(&ctx, command).await,
        Command::Auth(command) => auth::auth(&ctx, command).await,
    }
}

/// A positional argument as bytes: keys and values need not be UTF-8.
fn bytes(arg: &OsStr) -> Vec<u8> {
    arg.as_bytes().to_vec()
}

/// Parses a lease ID the way etcdctl's lease commands take it: hexadecimal.
fn lease_id_arg(text: &str) -> Result<i64, CtlError> {
    crate::go_fmt::parse_i64(text, 16).map_err(|error| {
        CtlError::bad_args(format!("bad lease ID arg ({error}), expecting ID in Hex"))
    })
}

/// A password read as etcdctl reads one: after `prompt` (when not empty) on
/// stderr, the next line of stdin.
pub(crate) fn read_password(prompt: &str) -> Result<String, CtlError> {
    use std::io::{BufRead, Write};
    if !prompt.is_empty() {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(prompt.as_bytes());
        let _ = stderr.flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| CtlError::general(format!("reading a password: {error}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
