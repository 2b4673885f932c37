//! `mvm-vmm`: run one microVM from a JSON config file and/or flags (`args.rs`).

mod args;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for a configuration the monitor refuses (nothing was started).
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for a VM that could not be built or started.
const EXIT_BUILD_FAILED: u8 = 1;

fn main() -> ExitCode {
    let args = match args::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "mvm-vmm: {}",
                first.strip_prefix("error: ").unwrap_or(first)
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cfg = match args::build_config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("mvm-vmm: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match mvm_vmm::builder::run(&cfg) {
        Ok(record) => {
            tracing::info!("VM ended: {:?}", record.reason);
            // Exit right away: vCPU threads are still parked in the kernel.
            std::process::exit(record.exit_code)
        }
        Err(e) => {
            eprintln!("mvm-vmm: {e}");
            ExitCode::from(EXIT_BUILD_FAILED)
        }
    }
}
