//! `mvm-runc`: mvm as an OCI runtime with runc's command line (see the `mvm_oci` crate).

use clap::Parser;
use mvm_oci::cli::{Cli, Command};
use mvm_oci::cmd::{self, Context};

fn main() {
    let cli = Cli::parse();
    if cli.version {
        println!(
            "mvm-runc version {}\ncommit: {}\nspec: {}",
            env!("CARGO_PKG_VERSION"),
            option_env!("MVM_COMMIT").unwrap_or("unknown"),
            mvm_oci::state::OCI_VERSION
        );
        return;
    }
    let ctx = Context::new(&cli);
    let Some(command) = cli.command else {
        ctx.log.error("no command given: see --help");
        std::process::exit(1);
    };
    let result = match &command {
        Command::Create(a) => cmd::create(&ctx, a),
        Command::Run(a) => cmd::run(&ctx, a),
        Command::Start { id } => cmd::start(&ctx, id),
        Command::State { id } => cmd::state(&ctx, id),
        Command::Kill { id, signal, .. } => cmd::kill(&ctx, id, signal),
        Command::Delete { id, force } => cmd::delete(&ctx, id, *force),
        Command::Exec(a) => cmd::exec(&ctx, a),
        Command::Ps { id, format, .. } => cmd::ps(&ctx, id, format),
        Command::Pause { id } => cmd::pause(&ctx, id),
        Command::Resume { id } => cmd::resume(&ctx, id),
        Command::Update { id, resources } => cmd::update(&ctx, id, resources.as_deref()),
        Command::Features => cmd::features(),
        Command::List { format, quiet } => cmd::list(&ctx, format, *quiet),
        Command::Relay { id } => Ok(mvm_oci::relay::main(&ctx.store, id, &ctx.log)),
        Command::ExecRelay { id } => Ok(cmd::exec_relay(&ctx, id)),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            ctx.log.error(&e.to_string());
            std::process::exit(1);
        }
    }
}
