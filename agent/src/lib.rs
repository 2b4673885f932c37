//! mvm-agent: the guest's PID 1.
//!
//! It builds the container's root file system from the image and writable disks, then serves
//! the host over vsock with the protocol of `mvm-agent-protocol`: it starts the container's
//! process, forwards its stdio and signals, reports its exit and powers the VM off.
//!
//! The connection-serving part ([`session`]) works over any stream and is tested on the host;
//! the PID-1 parts ([`boot`], [`init`], [`shutdown`], [`vsock`]) only make sense in the guest.

pub mod boot;
pub mod caps;
pub mod changes;
pub mod console;
pub mod copy;
pub mod dns_forward;
pub mod exec_path;
pub mod init;
pub mod mini_init;
pub mod netdev;
pub mod pidns;
pub mod procs;
pub mod pty;
pub mod reaper;
pub mod rlimit;
pub mod session;
pub mod shutdown;
pub mod spawn;
#[doc(hidden)]
pub mod test_util;
pub mod users;
pub mod vsock;
