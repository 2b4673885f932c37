//! The control socket ([`mvm_vmm_config::api`]): pause, resume and snapshot a running VM.
//!
//! Served by the event loop like a device, so a snapshot is taken while no device serves a
//! queue: with the vCPUs paused and the event loop busy writing, guest memory and the devices'
//! queue positions are read at one instant.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use event_manager::{EventOps, Events, MutEventSubscriber};
use kvm_ioctls::VmFd;
use mvm_vmm_config::api::{ApiRequest, ApiResponse, MAX_REQUEST_BYTES, RunState, SNAPSHOT_FILES};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::devices::bus::lock;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::virtio::mmio::MmioTransport;
use crate::snapshot::file::{Header, memory_bytes};
use crate::snapshot::identity::CpuIdentity;
use crate::snapshot::{Shape, VmSnapshot, VmState, write_memory, write_state};
use crate::vcpu::{VcpuHandle, VcpuReply, VcpuRequest};

/// Clients served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 4;

/// Everything a snapshot reads, and the vCPUs to pause.
pub struct Controller {
    /// The VM.
    pub vm: Arc<VmFd>,
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// The running vCPUs.
    pub vcpus: Vec<VcpuHandle>,
    /// KVM's MSR index list.
    pub msr_index: Arc<Vec<u32>>,
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The virtio transports in slot order.
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    /// The VM's shape.
    pub shape: Shape,
    /// The host CPU.
    pub cpu: CpuIdentity,
    /// Why this VM cannot be snapshotted, if it cannot.
    pub refusal: Option<String>,
    /// Whether the vCPUs are paused.
    pub paused: bool,
}

impl Controller {
    fn state(&self) -> RunState {
        if self.paused {
            RunState::Paused
        } else {
            RunState::Running
        }
    }

    fn ok(&self) -> ApiResponse {
        ApiResponse {
            ok: true,
            state: Some(self.state()),
            ..ApiResponse::default()
        }
    }

    /// Carries out one request; `files` are the descriptors sent with it.
    pub fn handle(&mut self, req: ApiRequest, files: Vec<File>) -> ApiResponse {
        let started = Instant::now();
        let done = match req {
            ApiRequest::Status => Ok(self.ok()),
            ApiRequest::Pause => self.pause().map(|()| self.ok()),
            ApiRequest::Resume => self.resume().map(|()| self.ok()),
            ApiRequest::Snapshot => match <[File; SNAPSHOT_FILES]>::try_from(files) {
                Ok([state, memory]) => self.snapshot(&state, &memory),
                Err(got) => Err(format!(
                    "a snapshot request carries {SNAPSHOT_FILES} descriptors (the state file, \
                     then the memory file), this one had {}",
                    got.len()
                )),
            },
        };
        let mut resp = done.unwrap_or_else(ApiResponse::error);
        resp.micros = Some(started.elapsed().as_micros() as u64);
        resp
    }

    /// Pauses every vCPU, or none: those paused before one that fails are resumed.
    fn pause(&mut self) -> Result<(), String> {
        for (i, v) in self.vcpus.iter().enumerate() {
            let failed = match v.ask(VcpuRequest::Pause) {
                Ok(VcpuReply::Paused) => continue,
                Ok(_) => format!("vCPU {} answered a pause with something else", v.id()),
                Err(e) => e,
            };
            for w in &self.vcpus[..i] {
                let _ = w.ask(VcpuRequest::Resume);
            }
            return Err(failed);
        }
        self.paused = true;
        Ok(())
    }

    /// Resumes every vCPU (all are asked, even after one fails).
    fn resume(&mut self) -> Result<(), String> {
        let mut failed = None;
        for v in &self.vcpus {
            match v.ask(VcpuRequest::Resume) {
                Ok(VcpuReply::Resumed) => {}
                Ok(_) => {
                    failed.get_or_insert(format!(
                        "vCPU {} answered a resume with something else",
                        v.id()
                    ));
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.paused = false;
        Ok(())
    }

    fn snapshot(&mut self, state_file: &File, memory_file: &File) -> Result<ApiResponse, String> {
        if let Some(why) = &self.refusal {
            return Err(why.clone());
        }
        if !self.paused {
            return Err("the VM must be paused before a snapshot".into());
        }
        let msrs = self.msr_index.clone();
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for v in &self.vcpus {
            match v.ask(VcpuRequest::Save(msrs.clone()))? {
                VcpuReply::Saved(Ok(s)) => vcpus.push(*s),
                VcpuReply::Saved(Err(e)) => return Err(e),
                _ => {
                    return Err(format!(
                        "vCPU {} answered something else than its state",
                        v.id()
                    ));
                }
            }
        }
        let snap = VmSnapshot {
            shape: self.shape.clone(),
            vm: VmState::save(&self.vm).map_err(|e| e.to_string())?,
            vcpus,
            serial: lock(&self.serial).state(),
            devices: self
                .transports
                .iter()
                .map(|t| lock(t).save_state())
                .collect(),
        };
        let header = Header::new(self.cpu.clone(), memory_bytes(&self.mem));
        // Memory first: a state file only ever names a complete memory file.
        let written = write_memory(memory_file, &self.mem, &header).map_err(|e| e.to_string())?;
        let bytes = write_state(state_file, &header, &snap).map_err(|e| e.to_string())?;
        Ok(ApiResponse {
            state_bytes: Some(bytes),
            memory_bytes_written: Some(written),
            ..self.ok()
        })
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Descriptors received with what is in `buf` (at most [`SNAPSHOT_FILES`]).
    files: Vec<File>,
}

/// The listener and its clients, on the event loop.
pub struct ApiServer {
    listener: UnixListener,
    clients: Vec<Client>,
    controller: Controller,
}

impl ApiServer {
    /// Serves `listener` (already bound, non-blocking) for `controller`.
    pub fn new(listener: UnixListener, controller: Controller) -> Self {
        Self {
            listener,
            clients: Vec::new(),
            controller,
        }
    }

    fn accept(&mut self, ops: &mut EventOps) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            if ops
                .add(Events::new_raw(stream.as_raw_fd(), EventSet::IN))
                .is_ok()
            {
                self.clients.push(Client {
                    stream,
                    buf: Vec::new(),
                    files: Vec::new(),
                });
            }
        }
    }

    /// Reads what client `i` sent and answers each complete line; false when it is done.
    fn serve(&mut self, i: usize) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            let c = &mut self.clients[i];
            let mut fds = [-1; SNAPSHOT_FILES];
            let mut iov = [libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            }];
            // SAFETY: the iovec points at `chunk`, which lives through the call and may take
            // any bytes; `fds` has room for the descriptors asked for (the kernel closes any
            // beyond).
            match unsafe { c.stream.recv_with_fds(&mut iov, &mut fds) } {
                Ok((0, 0)) => return false,
                Ok((n, nfds)) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    for &fd in fds.iter().take(nfds) {
                        // SAFETY: a descriptor the kernel just installed for us, owned by
                        // nothing else.
                        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                        if c.files.len() < SNAPSHOT_FILES {
                            c.files.push(file);
                        }
                    }
                }
                Err(e) if e.errno() == libc::EAGAIN => break,
                Err(e) if e.errno() == libc::EINTR => {}
                Err(_) => return false,
            }
            if c.buf.len() > MAX_REQUEST_BYTES {
                break;
            }
        }
        loop {
            let c = &mut self.clients[i];
            let Some(end) = c.buf.iter().position(|&b| b == b'\n') else {
                if c.buf.len() > MAX_REQUEST_BYTES {
                    let resp = ApiResponse::error(format!(
                        "request longer than {MAX_REQUEST_BYTES} bytes"
                    ));
                    let _ = reply(&mut c.stream, &resp);
                    return false;
                }
                return true;
            };
            let line: Vec<u8> = c.buf.drain(..=end).collect();
            // Descriptors go with the line they came with; any left over are closed here.
            let files = std::mem::take(&mut c.files);
            let resp = match serde_json::from_slice::<ApiRequest>(&line) {
                Ok(req) => self.controller.handle(req, files),
                Err(e) => ApiResponse::error(format!("bad request: {e}")),
            };
            if reply(&mut self.clients[i].stream, &resp).is_err() {
                return false;
            }
        }
    }
}

/// Writes one response line (small enough for the socket buffer of a reading client).
fn reply(stream: &mut UnixStream, resp: &ApiResponse) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

impl MutEventSubscriber for ApiServer {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(self.listener.as_raw_fd(), EventSet::IN)) {
            tracing::error!("cannot watch the API socket: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            self.accept(ops);
            return;
        }
        let Some(i) = self.clients.iter().position(|c| c.stream.as_raw_fd() == fd) else {
            return;
        };
        let hung_up = events
            .event_set()
            .intersects(EventSet::HANG_UP | EventSet::ERROR);
        if !self.serve(i) || hung_up {
            let c = self.clients.swap_remove(i);
            let _ = ops.remove(Events::new_raw(c.stream.as_raw_fd(), EventSet::IN));
        }
    }
}
