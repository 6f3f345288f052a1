//! The `cairn-lease` binary: the library's `serve` behind the shared start-up.

use cairn_lease::LeaseSettings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cairn_kit::cli::run(
        "cairn-lease",
        "lease",
        LeaseSettings::validate,
        |settings: &LeaseSettings| &settings.telemetry,
        |settings| cairn_lease::serve(settings, cairn_kit::shutdown::signal()),
    )
    .await
}
