//! One thread per vCPU: run it, dispatch its port-I/O and MMIO exits to the buses, and report
//! how it stopped.
//!
//! The main thread pauses a vCPU, has it save its state and resumes it through a
//! [`VcpuHandle`]: a request on a channel, then a kick ([`kick_signal`]) whose handler sets
//! `immediate_exit` in the vCPU's `kvm_run`, so that KVM_RUN returns (or does not enter the
//! guest at all) and the thread reads its requests. This is Firecracker's way of interrupting
//! a vCPU without a race between the check and the entry into the guest.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::Bus;
use crate::exit::ExitReason;
use crate::seccomp::{Filters, ThreadKind};
use crate::snapshot::VcpuState;

thread_local! {
    /// This vCPU thread's `kvm_run` page, for the kick handler (null on other threads).
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn kick_handler(_signo: libc::c_int) {
    // A const-initialised thread-local Cell without a destructor: reading it is a plain
    // load from the thread's TLS block, which is async-signal-safe.
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's kvm_run mapping, set by the vCPU thread while
        // it owns the vCPU fd (which keeps the mapping alive); a volatile byte store is what
        // KVM expects of immediate_exit.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick handler (once per process, before the vCPU threads start).
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: sigaction is given a zeroed struct whose handler is a valid extern "C" fn and
    // whose mask is emptied; no SA_RESTART, so KVM_RUN returns EINTR.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = kick_handler as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(kick_signal(), &act, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What the main thread asks of a vCPU thread.
pub enum VcpuRequest {
    /// Stop running the guest until told to resume.
    Pause,
    /// Run the guest again.
    Resume,
    /// Read the (paused) vCPU's state; the list is KVM's MSR index list.
    Save(Arc<Vec<u32>>),
}

/// A vCPU thread's answer.
pub enum VcpuReply {
    /// It stopped running the guest.
    Paused,
    /// It runs the guest again.
    Resumed,
    /// Its state, or why it could not be read.
    Saved(Result<Box<VcpuState>, String>),
}

/// How long a vCPU may take to answer (a kick is repeated meanwhile).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the kick is repeated while waiting.
const KICK_EVERY: Duration = Duration::from_millis(10);

/// The main thread's end of a running vCPU thread.
pub struct VcpuHandle {
    id: u8,
    thread: JoinHandle<()>,
    requests: Sender<(u64, VcpuRequest)>,
    replies: Receiver<(u64, VcpuReply)>,
    /// The number of the last request sent: a reply to an earlier one (that came after its
    /// asker gave up) is thrown away, never taken for the answer to a later one.
    seq: std::cell::Cell<u64>,
}

impl VcpuHandle {
    /// Sends `req`, kicks the vCPU until it answers it, and returns the answer.
    pub fn ask(&self, req: VcpuRequest) -> Result<VcpuReply, String> {
        let gone = || format!("vCPU {} has stopped", self.id);
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        self.requests.send((seq, req)).map_err(|_| gone())?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            // SAFETY: the thread is alive until its JoinHandle is joined (never before the
            // handle is dropped), so its pthread_t is valid; the signal has a handler.
            unsafe { libc::pthread_kill(self.thread.as_pthread_t(), kick_signal()) };
            match self.replies.recv_timeout(KICK_EVERY) {
                Ok((n, reply)) if n == seq => return Ok(reply),
                // The late answer to a request its asker gave up on.
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(gone()),
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("vCPU {} did not answer in time", self.id));
                }
            }
        }
    }

    /// Its ID.
    pub fn id(&self) -> u8 {
        self.id
    }
}

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

/// What one KVM_RUN came to.
enum Step {
    /// Handled; run again.
    Continue,
    /// Kicked out (or a signal): look at the requests.
    Interrupted,
    /// The vCPU must stop.
    Stop(ExitReason),
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
    pub fn spawn(self, filters: Arc<Filters>) -> std::io::Result<VcpuHandle> {
        let id = self.id;
        let (req_tx, req_rx) = channel();
        let (reply_tx, reply_rx) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || self.run(&filters, &req_rx, &reply_tx))?;
        Ok(VcpuHandle {
            id,
            thread,
            requests: req_tx,
            replies: reply_rx,
            seq: std::cell::Cell::new(0),
        })
    }

    fn run(
        mut self,
        filters: &Filters,
        requests: &Receiver<(u64, VcpuRequest)>,
        replies: &Sender<(u64, VcpuReply)>,
    ) {
        let run_page: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|c| c.set(run_page));
        // Before the first KVM_RUN: nothing the guest does reaches this thread unfiltered. A
        // vCPU that cannot be confined never runs.
        let reason = match filters.apply(ThreadKind::Vcpu) {
            Err(e) => ExitReason::VcpuError(format!("vcpu{}: {e}", self.id)),
            Ok(()) => self.run_guest(requests, replies),
        };
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
        tracing::debug!("vcpu{} stopped: {reason:?}", self.id);
        self.latch.set(reason);
        if let Err(e) = self.exit_evt.write(1) {
            tracing::error!("vcpu{}: cannot signal exit: {e}", self.id);
        }
    }

    fn run_guest(
        &mut self,
        requests: &Receiver<(u64, VcpuRequest)>,
        replies: &Sender<(u64, VcpuReply)>,
    ) -> ExitReason {
        loop {
            match self.run_once() {
                Step::Continue => {}
                Step::Stop(reason) => break reason,
                Step::Interrupted => {
                    self.fd.set_kvm_immediate_exit(0);
                    if let Some(reason) = self.serve(requests, replies) {
                        break reason;
                    }
                }
            }
        }
    }

    /// Serves the requests waiting after a kick; a pause blocks here until a resume. `Some`
    /// when the main thread is gone (the vCPU stops).
    fn serve(
        &mut self,
        requests: &Receiver<(u64, VcpuRequest)>,
        replies: &Sender<(u64, VcpuReply)>,
    ) -> Option<ExitReason> {
        let gone = || {
            Some(ExitReason::VcpuError(
                "the VMM's main thread is gone".into(),
            ))
        };
        let mut paused = false;
        loop {
            let (seq, req) = if paused {
                match requests.recv() {
                    Ok(r) => r,
                    Err(_) => return gone(),
                }
            } else {
                match requests.try_recv() {
                    Ok(r) => r,
                    Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return gone(),
                }
            };
            let reply = match req {
                VcpuRequest::Pause => {
                    paused = true;
                    VcpuReply::Paused
                }
                VcpuRequest::Resume => {
                    paused = false;
                    VcpuReply::Resumed
                }
                VcpuRequest::Save(msrs) => VcpuReply::Saved(
                    VcpuState::save(&self.fd, &msrs)
                        .map(Box::new)
                        .map_err(|e| format!("vCPU {}: {e}", self.id)),
                ),
            };
            if replies.send((seq, reply)).is_err() {
                return gone();
            }
            if !paused {
                return None;
            }
        }
    }

    /// Runs until the next exit and handles it.
    fn run_once(&mut self) -> Step {
        let step = |r: Option<ExitReason>| r.map_or(Step::Continue, Step::Stop);
        match self.fd.run() {
            Ok(exit) => step(match exit {
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
            Err(e) if e.errno() == libc::EINTR => Step::Interrupted,
            Err(e) if e.errno() == libc::EAGAIN => Step::Continue,
            Err(e) => Step::Stop(ExitReason::VcpuError(format!("KVM_RUN failed: {e}"))),
        }
    }
}
