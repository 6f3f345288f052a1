//! The `cairn-mvcc` binary: the library's `serve` behind the shared start-up.

use cairn_mvcc::MvccSettings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cairn_kit::cli::run(
        "cairn-mvcc",
        "mvcc",
        MvccSettings::validate,
        |settings: &MvccSettings| &settings.telemetry,
        |settings| cairn_mvcc::serve(settings, cairn_kit::shutdown::signal()),
    )
    .await
}
