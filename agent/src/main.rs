//! The `mvm-agent` binary: the kernel starts it as `init=/mvm-agent`.

use std::io::Write;

fn main() {
    if std::process::id() == 1 {
        mvm_agent::init::run();
    }
    // Outside a guest there is nothing for it to do, and its boot steps (mounts, pivot_root,
    // reboot) must not run on a host by accident.
    let _ = writeln!(
        std::io::stderr(),
        "mvm-agent {}: runs only as PID 1 of an mvm microVM (init=/mvm-agent)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
