//! The `cairn-log` binary: settings, telemetry, then the library's `serve`.

use std::process::ExitCode;

use cairn_log::LogSettings;

/// Exit code for a configuration the service refuses (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match cairn_kit::cli::start::<LogSettings>("log") {
        Ok(Some(settings)) => settings,
        Ok(None) => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cairn-log: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(error) = settings.validate() {
        eprintln!("cairn-log: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    let _telemetry = match cairn_kit::telemetry::init("cairn-log", &settings.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("cairn-log: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cairn_log::serve(settings, cairn_kit::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cairn-log failed");
            eprintln!("cairn-log: {error}");
            ExitCode::FAILURE
        }
    }
}
