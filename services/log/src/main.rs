//! The `cairn-log` binary: the library's `serve` behind the shared start-up.

use cairn_log::LogSettings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cairn_kit::cli::run(
        "cairn-log",
        "log",
        LogSettings::validate,
        |settings: &LogSettings| &settings.telemetry,
        |settings| cairn_log::serve(settings, cairn_kit::shutdown::signal()),
    )
    .await
}
