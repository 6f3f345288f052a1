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
