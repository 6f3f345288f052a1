//! The command line every service binary shares.

use std::path::PathBuf;

use clap::Parser;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{settings, KitError};

/// `--config FILE` and `--print-config`; everything else is a setting.
#[derive(Debug, Parser)]
#[command(
    about = "a cairn service; settings come from configs/<service>.toml, --config and CAIRN_<SECTION>__<KEY>"
)]
pub struct ServiceArgs {
    /// Settings file; without it `configs/<service>.toml` is read if it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Parses the command line and loads the service's settings. `Ok(None)` means
/// the settings were printed and the process should exit.
pub fn start<S>(service: &str) -> Result<Option<S>, KitError>
where
    S: DeserializeOwned + Serialize + Default,
{
    let args = ServiceArgs::parse();
    let loaded = settings::load::<S>(service, args.config.as_deref())?;
    if args.print_config {
        print!("{}", settings::render(&loaded)?);
        return Ok(None);
    }
    Ok(Some(loaded))
}

/// Exit code for a configuration the service refuses (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Everything a service binary's `main` does: load and check the settings
/// (exit 64 naming the key if they are refused), start telemetry with the
/// settings' `[telemetry]` section, then serve until SIGINT/SIGTERM.
/// `binary` names the process in messages and spans.
pub async fn run<S, E, Fut>(
    binary: &str,
    service: &str,
    validate: impl FnOnce(&S) -> Result<(), E>,
    telemetry: impl FnOnce(&S) -> &crate::telemetry::TelemetrySettings,
    serve: impl FnOnce(S) -> Fut,
) -> std::process::ExitCode
where
    S: DeserializeOwned + Serialize + Default,
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    use std::process::ExitCode;
    let settings = match start::<S>(service) {
        Ok(Some(settings)) => settings,
        Ok(None) => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(error) = validate(&settings) {
        eprintln!("{binary}: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    let _telemetry = match crate::telemetry::init(binary, telemetry(&settings)) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match serve(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{binary} failed");
            eprintln!("{binary}: {error}");
            ExitCode::FAILURE
        }
    }
}
