//! `cairnctl`: an etcdctl-compatible command line client for cairn and etcd.
//!
//! Commands, flags, output (`-w simple|json|table`), error messages and exit
//! codes follow etcdctl 3.4, so scripts and habits carry over and the same
//! walkthrough can be run against etcd and against cairn.

mod args;
mod client;
mod commands;
mod error;
mod go_fmt;
mod model;
mod output;
mod txn_parser;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use error::Exit;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => return fail(Exit::Error, &args::clap_error_text(&error)),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(Exit::Error, &error.to_string()),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.quiet => ExitCode::from(error.exit as u8),
        Err(error) => fail(error.exit, &error.message),
    }
}

/// Prints `Error: <message>` and returns the exit code.
fn fail(exit: Exit, message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "Error: {message}");
    ExitCode::from(exit as u8)
}
