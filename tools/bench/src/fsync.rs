//! The disk's raw fsync rate: append a block, `fdatasync`, repeat.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use crate::report::{histogram, record, Summary};

#[derive(Args)]
pub(crate) struct FsyncArgs {
    /// A directory on the disk to measure.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Number of write+sync rounds.
    #[arg(long, default_value_t = 2000)]
    count: u32,
    /// Bytes written before each sync.
    #[arg(long, default_value_t = 4096)]
    size: usize,
}

pub(crate) fn run(args: &FsyncArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.count > 0 && args.count <= 1_000_000,
        "--count must be 1..=1000000"
    );
    std::fs::create_dir_all(&args.dir)?;
    let path = args
        .dir
        .join(format!(".cairn-fsync-{}", std::process::id()));
    let result = measure(&path, args);
    let _ = std::fs::remove_file(&path);
    let summary = result?;
    println!("{}", Summary::HEADER);
    println!("{}", summary.row());
    Ok(())
}

fn measure(path: &std::path::Path, args: &FsyncArgs) -> anyhow::Result<Summary> {
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)?;
    let block = vec![0x5a_u8; args.size];
    let mut latencies = histogram()?;
    let started = Instant::now();
    for _ in 0..args.count {
        let round = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        record(&mut latencies, round.elapsed());
    }
    Ok(Summary::new(
        format!("fsync {} B", args.size),
        &latencies,
        0,
        started.elapsed(),
    ))
}
