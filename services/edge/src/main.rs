//! The `cairn-edge` binary: the library's `serve` behind the shared start-up.

use cairn_edge::EdgeSettings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cairn_kit::cli::run(
        "cairn-edge",
        "edge",
        EdgeSettings::validate,
        |settings: &EdgeSettings| &settings.telemetry,
        |settings| cairn_edge::serve(settings, cairn_kit::shutdown::signal()),
    )
    .await
}
