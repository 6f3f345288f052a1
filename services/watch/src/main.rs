//! The `cairn-watch` binary: the library's `serve` behind the shared start-up.

use cairn_watch::WatchSettings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cairn_kit::cli::run(
        "cairn-watch",
        "watch",
        WatchSettings::validate,
        |settings: &WatchSettings| &settings.telemetry,
        |settings| cairn_watch::serve(settings, cairn_kit::shutdown::signal()),
    )
    .await
}
