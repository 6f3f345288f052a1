//! The cross-process test harness: real cairn binaries as child processes, each
//! with its own data directory on disk, talking gRPC over loopback.
//!
//! Tests wait on observed state (a leader, an applied index), never on sleeps.
//! Binaries are taken from the cargo target directory the tests were built in
//! (`just test` builds them first); `CAIRNTEST_BIN_DIR` overrides it.

pub mod certs;
pub mod checker;
pub mod clients;
pub mod edge;
pub mod etcd;
mod lease;
pub mod log_cluster;
pub mod mvcc_cluster;
pub mod nemesis;
pub mod raw_grpc;
pub mod relay;
pub mod service;
pub mod stack;
pub mod walkthrough;
pub mod watch;
pub mod workload;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
pub use rustix::process::Signal;

/// Checks that a call was refused with etcd's `code` and `message`; `what`
/// names the call for the failure where it was answered instead.
pub fn refused_as<T>(
    answer: std::result::Result<T, tonic::Status>,
    what: &str,
    code: tonic::Code,
    message: &str,
) -> Result<()> {
    let Err(refused) = answer else {
        bail!("{what} was answered");
    };
    if refused.code() != code || refused.message() != message {
        bail!("{what}: {refused:?}");
    }
    Ok(())
}

/// Where the cairn binaries under test are.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("CAIRNTEST_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // target/<profile>/deps/<test-binary> → target/<profile>
            let exe = std::env::current_exe().context("locating the test binary")?;
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
                .context("test binary has no target directory")?
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build the binaries first (`cargo build --bins`, which `just test` does)",
            path.display()
        );
    }
    Ok(path)
}

/// A free loopback port. Another process could take it before the node binds
/// it, but ports are handed out without reuse across a run, so clashes are rare.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Certificate files every cairn process this test process starts gets as
/// its `internal_tls`, and the configuration the harness calls their
/// internal ports with.
static INTERNAL_TLS: std::sync::OnceLock<(InternalTlsFiles, tonic::transport::ClientTlsConfig)> =
    std::sync::OnceLock::new();

/// A process's internal TLS identity, as files.
#[derive(Clone, Debug)]
pub struct InternalTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Turns on internal TLS for every service this test process starts from
/// now on (a test binary of its own, since it is for the whole process).
pub fn use_internal_tls(files: InternalTlsFiles) -> Result<()> {
    let client = cairn_kit::tls::client_config(&files.ca, Some((&files.cert, &files.key)))?;
    INTERNAL_TLS
        .set((files, client))
        .map_err(|_| anyhow::anyhow!("internal TLS is set once per test process"))
}

/// A channel to a cairn service's internal port (a log node, a replica):
/// with the internal certificate when [`use_internal_tls`] was called.
pub fn peer_channel(addr: &str) -> Result<tonic::transport::Channel> {
    let Some((_, tls)) = INTERNAL_TLS.get() else {
        return channel(addr);
    };
    Ok(
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls.clone())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy(),
    )
}

/// A channel to a cairn service on loopback that connects on first use.
pub fn channel(addr: &str) -> Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy(),
    )
}

/// Polls `probe` every 50 ms until it yields a value or `patience` runs out.
pub async fn eventually<T, F, Fut>(patience: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {patience:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a cairn service binary with `--config config`, its output appended
/// to `output`. The child reads CAIRN_* as settings; the test's own must not
/// leak in.
pub fn spawn_service(binary: &Path, config: &Path, output: &Path) -> Result<tokio::process::Child> {
    let output = OpenOptions::new().create(true).append(true).open(output)?;
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CAIRN_") {
            command.env_remove(key);
        }
    }
    if let Some((files, _)) = INTERNAL_TLS.get() {
        command
            .env("CAIRN_INTERNAL_TLS__CERT_FILE", &files.cert)
            .env("CAIRN_INTERNAL_TLS__KEY_FILE", &files.key)
            .env("CAIRN_INTERNAL_TLS__CA_FILE", &files.ca);
    }
    Ok(command.spawn()?)
}

/// The last `lines` lines of a process's output file, to explain a failure.
pub fn tail_of(output: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Adds to a failure the last lines every process printed into `dir` (each
/// writes `<name>.log` there; `CAIRNTEST_OUTPUT_LINES` lines of each, 40
/// unless set): a test that fails on a machine nobody can log
/// in to still says what each process saw.
pub fn with_process_output<T>(dir: &Path, outcome: Result<T>) -> Result<T> {
    outcome.map_err(|error| {
        let mut outputs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
                    .collect()
            })
            .unwrap_or_default();
        outputs.sort();
        let lines = std::env::var("CAIRNTEST_OUTPUT_LINES")
            .ok()
            .and_then(|lines| lines.parse().ok())
            .unwrap_or(40);
        let mut said = String::from("what the processes printed last:");
        for output in &outputs {
            let name = output.file_name().unwrap_or_default().to_string_lossy();
            said.push_str(&format!("\n--- {name} ---\n{}", tail_of(output, lines)));
        }
        anyhow::anyhow!("{error:?}\n\n{said}")
    })
}

/// The seed of a randomized run: `CAIRNTEST_SEED` when set (to replay a
/// failure), otherwise from the clock. Printed with `what` the run is, so a
/// failure says how to replay it.
pub fn run_seed(what: &str) -> u64 {
    let seed = std::env::var("CAIRNTEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64)
        });
    eprintln!("{what} seed: {seed} (CAIRNTEST_SEED={seed} replays it)");
    seed
}

/// A duration a test run can be given in the environment (`90s`, `10m`,
/// `1h`, or plain seconds), so a recipe can run a long version of a test
/// that CI runs short.
pub fn duration_from_env(name: &str, default: Duration) -> Result<Duration> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("{name}={text}: expected e.g. 90s, 10m or 1h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => bail!("{name}={text}: the unit must be s, m or h"),
    };
    Ok(Duration::from_secs(seconds))
}

/// Sends `signal` (e.g. `Signal::STOP`, `Signal::CONT`) to a running child,
/// with the system call itself: a minimal machine may have no `kill` program.
pub fn signal_child(
    child: Option<&tokio::process::Child>,
    signal: Signal,
    what: &str,
) -> Result<()> {
    let pid = child
        .and_then(tokio::process::Child::id)
        .with_context(|| format!("{what} is not running"))?;
    let process = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .with_context(|| format!("{what} has no usable pid ({pid})"))?;
    rustix::process::kill_process(process, signal)
        .with_context(|| format!("sending {signal:?} to {what} (pid {pid})"))
}

/// Kills a child with SIGKILL and reaps it: no shutdown path runs, like a
/// power cut for the process (the OS keeps what it had written).
pub async fn kill_child(child: Option<tokio::process::Child>, what: &str) -> Result<()> {
    let mut child = child.with_context(|| format!("{what} is not running"))?;
    child.start_kill()?;
    child.wait().await?;
    Ok(())
}
