//! `watch`: prints events on a key or range until the server ends the
//! watch; `-i` reads `watch …` and `progress` lines from stdin instead.

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use clap::Parser;
use etcd_client::{WatchOptions, WatchRequestSender, WatchResponseStream};
use tokio::sync::mpsc;

use super::{bytes, Ctx};
use crate::args::{clap_error_text, WatchArgs};
use crate::client::is_unreachable;
use crate::error::{CtlError, Exit};
use crate::model::WatchResult;
use crate::txn_parser::split_words;

/// The key and options of a watch, from `watch`'s own arguments.
fn request(args: &WatchArgs) -> Result<(Vec<u8>, WatchOptions), CtlError> {
    let Some(key) = args.args.first() else {
        return Err(CtlError::bad_args("bad number of arguments"));
    };
    let mut options = WatchOptions::new().with_start_revision(args.rev);
    if let Some(range_end) = args.args.get(1) {
        if args.prefix {
            return Err(CtlError::bad_args(
                "`range_end` and `--prefix` are mutually exclusive",
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
    Ok((bytes(key), options))
}

/// Watches until the server ends the watch (or reads watch lines with `-i`).
pub(super) async fn run(ctx: &Ctx, args: &WatchArgs) -> Result<(), CtlError> {
    if args.interactive {
        return interactive(ctx).await;
    }
    let (key, options) = request(args)?;
    let client = ctx.session.watch_client().await?;
    let (_watcher, mut stream) = open(&client, key, options).await?;
    while let Ok(Some(response)) = stream.message().await {
        if show(ctx, &WatchResult::from(&response))? {
            break;
        }
    }
    Err(CtlError::new(
        Exit::Interrupted,
        "watch is canceled by the server",
    ))
}

/// Starts a watch, waiting for an endpoint to become reachable for as long
/// as it takes, as clientv3 does.
async fn open(
    client: &etcd_client::Client,
    key: Vec<u8>,
    options: WatchOptions,
) -> Result<(WatchRequestSender, WatchResponseStream), CtlError> {
    let mut backoff = Duration::from_millis(25);
    loop {
        match client
            .watch_client()
            .watch(key.clone(), Some(options.clone()))
            .await
        {
            Err(error) if is_unreachable(&error) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            result => return result.map(|stream| stream.split()).map_err(CtlError::from),
        }
    }
}

/// Prints one answer the way etcdctl does and says whether it ended the
/// watch. Creation acknowledgements are not shown, as clientv3 hides them.
fn show(ctx: &Ctx, result: &WatchResult) -> Result<bool, CtlError> {
    if result.created {
        return Ok(false);
    }
    if result.canceled {
        eprintln!("watch was canceled ({})", result.cancel_error());
    }
    if result.is_progress_notify() {
        ctx.printer
            .emit(format!("progress notify: {}\n", result.header.revision).as_bytes())?;
    }
    ctx.printer.watch(result)?;
    Ok(result.canceled)
}

/// `watch` as a line of interactive input: the command name, then the
/// same arguments as the command.
#[derive(Debug, Parser)]
#[command(name = "watch")]
struct WatchLine {
    #[command(flatten)]
    args: WatchArgs,
}

/// The one watch stream of an interactive session; every `watch` line adds a
/// watcher to it.
#[derive(Default)]
struct Streams {
    watcher: Option<WatchRequestSender>,
    stream: Option<WatchResponseStream>,
}

async fn interactive(ctx: &Ctx) -> Result<(), CtlError> {
    let mut lines = stdin_lines();
    let client = ctx.session.watch_client().await?;
    let mut watch_client = client.watch_client();
    let mut streams = Streams::default();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else {
                    return Err(CtlError::new(
                        Exit::InvalidInput,
                        "Error reading watch request line: EOF",
                    ));
                };
                handle_line(&line, &mut watch_client, &mut streams).await?;
            }
            answer = next_answer(&mut streams.stream) => match answer {
                Some(result) => {
                    show(ctx, &result)?;
                }
                None => streams = Streams::default(),
            },
        }
    }
}

/// Complete lines of stdin, read on their own thread; the channel closes at
/// the end of input (an unterminated last line is dropped, as in etcdctl).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(_) if line.last() == Some(&b'\n') => {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if sender.blocking_send(text).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    receiver
}

async fn next_answer(stream: &mut Option<WatchResponseStream>) -> Option<WatchResult> {
    match stream {
        Some(stream) => match stream.message().await {
            Ok(Some(response)) => Some(WatchResult::from(&response)),
            _ => None,
        },
        None => std::future::pending().await,
    }
}

/// Acts on one line of input. A flag that does not parse ends the session
/// (exit code 128), as in etcdctl; other mistakes are reported and skipped.
async fn handle_line(
    line: &str,
    client: &mut etcd_client::WatchClient,
    streams: &mut Streams,
) -> Result<(), CtlError> {
    let line = line.trim_end_matches(['\n', '\r']);
    let words = match split_words(line) {
        Ok(words) => words,
        Err(error) => {
            eprintln!("Invalid command {line} ({error})");
            return Ok(());
        }
    };
    match words.first().map(Vec::as_slice) {
        None => eprintln!("Invalid command: {line} (watch and progress supported)"),
        Some(b"watch") if words.len() < 2 => {
            eprintln!("Invalid command {line} (command type or key is not provided)");
        }
        Some(b"watch") => {
            let parsed = WatchLine::try_parse_from(words.into_iter().map(OsString::from_vec))
                .map_err(|error| CtlError::bad_args(clap_error_text(&error)))?;
            match request(&parsed.args) {
                Ok((key, options)) => add_watch(client, streams, key, options, line).await,
                Err(error) => eprintln!("Invalid command {line} ({error})"),
            }
        }
        Some(b"progress") => {
            if let Some(watcher) = streams.watcher.as_mut() {
                if let Err(error) = watcher.request_progress().await {
                    eprintln!("progress request failed ({error})");
                }
            }
        }
        Some(_) => eprintln!("Invalid command {line} (only support watch)"),
    }
    Ok(())
}

async fn add_watch(
    client: &mut etcd_client::WatchClient,
    streams: &mut Streams,
    key: Vec<u8>,
    options: WatchOptions,
    line: &str,
) {
    let result = match streams.watcher.as_mut() {
        Some(watcher) => watcher.watch(key, Some(options)).await,
        None => match client.watch(key, Some(options)).await {
            Ok(opened) => {
                let (watcher, stream) = opened.split();
                *streams = Streams {
                    watcher: Some(watcher),
                    stream: Some(stream),
                };
                Ok(())
            }
            Err(error) => Err(error),
        },
    };
    if let Err(error) = result {
        eprintln!(
            "Invalid command {line} ({})",
            crate::error::client_error_text(&error)
        );
    }
}
