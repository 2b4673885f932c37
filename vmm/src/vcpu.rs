//! One thread per vCPU: run it, dispatch its port-I/O and MMIO exits to the buses, and report
//! how it stopped.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::Bus;
use crate::exit::ExitReason;
use crate::seccomp::{Filters, ThreadKind};

/// The first reason any part of the VM gave for stopping; later ones are ignored.
#[derive(Default)]
pub struct ExitLatch {
    reason: Mutex<Option<ExitReason>>,
}

impl ExitLatch {
    /// Records `reason` unless one is already recorded; returns whether this one won.
    pub fn set(&self, reason: ExitReason) -> bool {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
            true
        } else {
            false
        }
    }

    /// The recorded reason.
    pub fn get(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A vCPU ready to run.
pub struct Vcpu {
    fd: VcpuFd,
    id: u8,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    latch: Arc<ExitLatch>,
    exit_evt: EventFd,
}

impl Vcpu {
    /// Wraps a configured vCPU; `exit_evt` is signalled when it stops.
    pub fn new(
        fd: VcpuFd,
        id: u8,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        latch: Arc<ExitLatch>,
        exit_evt: EventFd,
    ) -> Self {
        Self {
            fd,
            id,
            pio,
            mmio,
            latch,
            exit_evt,
        }
    }

    /// Starts the vCPU on its own thread, which installs the vCPU seccomp filter of `filters`
    /// on itself before it runs the guest.
    pub fn spawn(self, filters: Arc<Filters>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.id))
            .spawn(move || self.run(&filters))
    }

    fn run(mut self, filters: &Filters) {
        // Before the first KVM_RUN: nothing the guest does reaches this thread unfiltered. A
        // vCPU that cannot be confined never runs.
        let reason = match filters.apply(ThreadKind::Vcpu) {
            Err(e) => ExitReason::VcpuError(format!("vcpu{}: {e}", self.id)),
            Ok(()) => self.run_guest(),
        };
        tracing::debug!("vcpu{} stopped: {reason:?}", self.id);
        self.latch.set(reason);
        if let Err(e) = self.exit_evt.write(1) {
            tracing::error!("vcpu{}: cannot signal exit: {e}", self.id);
        }
    }

    fn run_guest(&mut self) -> ExitReason {
        loop {
            match self.run_once() {
                Ok(None) => continue,
                Ok(Some(reason)) => break reason,
                Err(reason) => break reason,
            }
        }
    }

    /// Runs until the next exit and handles it; `Some` when the vCPU must stop.
    fn run_once(&mut self) -> Result<Option<ExitReason>, ExitReason> {
        match self.fd.run() {
            Ok(exit) => Ok(match exit {
                VcpuExit::IoIn(port, data) => {
                    if !self.pio.read(u64::from(port), data) {
                        // Nothing decodes this port: the ISA bus floats high.
                        data.fill(0xff);
                    }
                    None
                }
                VcpuExit::IoOut(port, data) => {
                    self.pio.write(u64::from(port), data);
                    None
                }
                VcpuExit::MmioRead(addr, data) => {
                    if !self.mmio.read(addr, data) {
                        data.fill(0);
                    }
                    None
                }
                VcpuExit::MmioWrite(addr, data) => {
                    self.mmio.write(addr, data);
                    None
                }
                VcpuExit::Hlt => Some(ExitReason::Halt),
                VcpuExit::Shutdown => Some(ExitReason::Shutdown),
                VcpuExit::SystemEvent(kind, _) => Some(ExitReason::SystemEvent(kind)),
                VcpuExit::FailEntry(reason, cpu) => Some(ExitReason::VcpuError(format!(
                    "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on cpu {cpu}"
                ))),
                VcpuExit::InternalError => Some(ExitReason::VcpuError(
                    "KVM_EXIT_INTERNAL_ERROR: KVM could not emulate an instruction".into(),
                )),
                other => Some(ExitReason::VcpuError(format!(
                    "unexpected vCPU exit {other:?}"
                ))),
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(None),
            Err(e) => Err(ExitReason::VcpuError(format!("KVM_RUN failed: {e}"))),
        }
    }
}
