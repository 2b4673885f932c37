//! The frontend side of vhost-user: a device whose queues an external process serves.
//!
//! The monitor keeps the virtio-mmio transport (registers, feature negotiation, config space)
//! and hands the rings to the backend over a unix socket, as Cloud Hypervisor and Firecracker
//! do: at connection SET_OWNER, GET_FEATURES and the protocol-feature exchange; then
//! SET_MEM_TABLE with the memfd regions of guest RAM; when the driver sets DRIVER_OK,
//! SET_FEATURES and per queue SET_VRING_NUM/ADDR/BASE/CALL/KICK/ENABLE; on reset
//! SET_VRING_ENABLE(0) and GET_VRING_BASE, which stops the ring. The message encoding is the
//! `vhost` crate's [`Frontend`].

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// How long one request may wait for the backend's reply: a hung backend must not hang the
/// vCPU that activates the device for ever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Protocol features the frontend uses when the backend offers them: MQ to check the backend
/// has enough queues, REPLY_ACK so every request's failure is seen where it happens.
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

/// A vhost-user conversation failed.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The backend's socket could not be reached.
    #[error("cannot connect to vhost-user backend {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A request failed or its reply was wrong (including a backend that went away).
    #[error("vhost-user {what} failed: {source}")]
    Request {
        /// The request.
        what: &'static str,
        /// The `vhost` crate's error.
        source: vhost::Error,
    },
    /// The backend lacks something the device cannot do without.
    #[error("vhost-user backend {0}")]
    Unsupported(String),
    /// Guest memory is not file-backed, so it cannot be shared with a backend.
    #[error("guest memory is not shared (memfd-backed), a vhost-user backend cannot map it")]
    MemoryNotShared,
    /// A queue's rings are not inside guest memory.
    #[error("queue {0} is outside guest memory")]
    QueueAddress(usize),
}

fn req(what: &'static str) -> impl FnOnce(vhost::Error) -> VhostUserError {
    move |source| VhostUserError::Request { what, source }
}

/// An open connection to one vhost-user backend.
pub struct Connection {
    frontend: Frontend,
    /// Virtio features the backend offers, without VHOST_USER_F_PROTOCOL_FEATURES.
    virtio_features: u64,
    /// Whether VHOST_USER_F_PROTOCOL_FEATURES is in use (rings then start disabled and are
    /// enabled with SET_VRING_ENABLE).
    protocol: bool,
}

/// How long a backend whose socket exists may take to listen on it.
const LISTEN_WAIT: Duration = Duration::from_secs(1);

/// Connects to `path`; a refusal is retried for [`LISTEN_WAIT`]: a backend makes its socket
/// file (bind) a moment before it listens, and its caller only waits for the file.
fn connect_when_listening(path: &Path) -> std::io::Result<UnixStream> {
    let deadline = std::time::Instant::now() + LISTEN_WAIT;
    loop {
        match UnixStream::connect(path) {
            Err(e)
                if e.raw_os_error() == Some(libc::ECONNREFUSED)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

impl Connection {
    /// Connects to the backend at `path`, which must serve at least `num_queues` queues, and
    /// negotiates the protocol.
    pub fn connect(path: &Path, num_queues: usize) -> Result<Self, VhostUserError> {
        let connect_err = |source| VhostUserError::Connect {
            path: path.display().to_string(),
            source,
        };
        let stream = connect_when_listening(path).map_err(connect_err)?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(connect_err)?;
        let mut frontend = Frontend::from_stream(stream, num_queues as u64);
        frontend.set_owner().map_err(req("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(req("GET_FEATURES"))?;
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let protocol = offered & protocol_bit != 0;
        if protocol {
            let theirs = frontend
                .get_protocol_features()
                .map_err(req("GET_PROTOCOL_FEATURES"))?;
            let ours = theirs & wanted_protocol_features();
            frontend
                .set_protocol_features(ours)
                .map_err(req("SET_PROTOCOL_FEATURES"))?;
            if ours.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            if ours.contains(VhostUserProtocolFeatures::MQ) {
                let max = frontend.get_queue_num().map_err(req("GET_QUEUE_NUM"))?;
                if max < num_queues as u64 {
                    return Err(VhostUserError::Unsupported(format!(
                        "serves {max} queues, the device needs {num_queues}"
                    )));
                }
            }
        }
        Ok(Self {
            frontend,
            virtio_features: offered & !protocol_bit,
            protocol,
        })
    }

    /// Virtio feature bits the backend offers.
    pub fn virtio_features(&self) -> u64 {
        self.virtio_features
    }

    /// Tells the backend where guest RAM is: one region per memory region, each with the
    /// memfd and its offset in it.
    pub fn set_mem_table(&self, mem: &GuestMemoryMmap) -> Result<(), VhostUserError> {
        let regions = memory_regions(mem)?;
        // Without POSTCOPY the backend returns no region bases.
        self.frontend
            .set_mem_table(&regions)
            .map(|_| ())
            .map_err(req("SET_MEM_TABLE"))
    }

    /// Starts the backend on the driver's queues: `features` are what the driver accepted;
    /// `kicks[i]` is signalled when the driver notifies queue i and the backend signals
    /// `calls[i]` when it used buffers of it. Only ready queues are started; their indices
    /// are returned (for [`Connection::stop_vrings`]).
    pub fn start_vrings(
        &mut self,
        features: u64,
        mem: &GuestMemoryMmap,
        queues: &[Queue],
        kicks: &[EventFd],
        calls: &[EventFd],
    ) -> Result<Vec<usize>, VhostUserError> {
        let mut acked = features & self.virtio_features;
        if self.protocol {
            acked |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.frontend
            .set_features(acked)
            .map_err(req("SET_FEATURES"))?;
        let mut started = Vec::new();
        for (i, ((queue, kick), call)) in queues.iter().zip(kicks).zip(calls).enumerate() {
            if !queue.ready() {
                continue;
            }
            if let Err(e) = self.start_vring(i, mem, queue, kick, call) {
                // Leave no half-started ring behind; the first error is the one to report.
                started.push(i);
                self.stop_vrings(&started);
                return Err(e);
            }
            started.push(i);
        }
        Ok(started)
    }

    fn start_vring(
        &mut self,
        i: usize,
        mem: &GuestMemoryMmap,
        queue: &Queue,
        kick: &EventFd,
        call: &EventFd,
    ) -> Result<(), VhostUserError> {
        // Ring addresses go to the backend as addresses in the monitor's mapping, which it
        // translates through the regions of SET_MEM_TABLE.
        let host = |gpa: u64| {
            mem.get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|_| VhostUserError::QueueAddress(i))
        };
        let config = VringConfigData {
            queue_max_size: queue.max_size(),
            queue_size: queue.size(),
            flags: 0,
            desc_table_addr: host(queue.desc_table())?,
            used_ring_addr: host(queue.used_ring())?,
            avail_ring_addr: host(queue.avail_ring())?,
            log_addr: None,
        };
        let f = &mut self.frontend;
        f.set_vring_num(i, queue.size())
            .map_err(req("SET_VRING_NUM"))?;
        f.set_vring_addr(i, &config)
            .map_err(req("SET_VRING_ADDR"))?;
        f.set_vring_base(i, queue.next_avail())
            .map_err(req("SET_VRING_BASE"))?;
        f.set_vring_call(i, call).map_err(req("SET_VRING_CALL"))?;
        f.set_vring_kick(i, kick).map_err(req("SET_VRING_KICK"))?;
        if self.protocol {
            f.set_vring_enable(i, true)
                .map_err(req("SET_VRING_ENABLE"))?;
        }
        Ok(())
    }

    /// Stops the given rings (device reset). Errors are only logged: the rings are gone
    /// either way, and a dead backend cannot be asked anything.
    pub fn stop_vrings(&mut self, queues: &[usize]) {
        for &i in queues {
            if self.protocol
                && let Err(e) = self.frontend.set_vring_enable(i, false)
            {
                tracing::debug!("vhost-user: disabling ring {i}: {e}");
            }
            if let Err(e) = self.frontend.get_vring_base(i) {
                tracing::debug!("vhost-user: stopping ring {i}: {e}");
            }
        }
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.frontend.as_raw_fd()
    }
}

/// The SET_MEM_TABLE regions of `mem`: every region must be file-backed.
pub fn memory_regions(
    mem: &GuestMemoryMmap,
) -> Result<Vec<VhostUserMemoryRegionInfo>, VhostUserError> {
    mem.iter()
        .map(|region| {
            VhostUserMemoryRegionInfo::from_guest_region(region)
                .map_err(|_| VhostUserError::MemoryNotShared)
        })
        .collect()
}

/// What an event on the backend's socket means. Between requests (which run to their reply
/// under the device's lock) the backend has nothing to say on it, so anything readable is
/// either end of file (the backend is gone) or a message we did not ask for.
pub fn socket_gone(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `byte` is a writable one-byte buffer owned by this frame; MSG_PEEK leaves the
    // socket's data in place and MSG_DONTWAIT keeps the call from blocking.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        );
    }
    // End of file, or unsolicited bytes that would keep the socket readable for ever.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_memory_cannot_be_shared() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert!(matches!(
            memory_regions(&mem),
            Err(VhostUserError::MemoryNotShared)
        ));
    }

    #[test]
    fn memfd_memory_gives_one_region_per_range_with_offsets() {
        let mem = crate::vm::create_shared_guest_memory(16).unwrap();
        let regions = memory_regions(&mem).unwrap();
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].guest_phys_addr, 0);
        assert_eq!(regions[0].memory_size, 16 << 20);
        assert_eq!(regions[0].mmap_offset, 0);
        assert!(regions[0].mmap_handle >= 0);
    }

    #[test]
    fn socket_states() {
        let (a, b) = UnixStream::pair().unwrap();
        assert!(!socket_gone(a.as_raw_fd()), "idle socket");
        std::io::Write::write_all(&mut &b, b"x").unwrap();
        assert!(socket_gone(a.as_raw_fd()), "unsolicited bytes");
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert!(socket_gone(a.as_raw_fd()), "peer closed");
    }

    #[test]
    fn connecting_to_nothing_is_an_error() {
        let e = Connection::connect(Path::new("/nonexistent/vu.sock"), 2)
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/vu.sock"), "{e}");
    }

    #[test]
    fn a_socket_bound_but_not_yet_listening_is_waited_for() {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("mvm-vu-listen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("late.sock");
        // A backend's first step: the socket file exists, nothing listens yet.
        // SAFETY: socket(2) with constants; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: a descriptor just returned and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_un is plain old data; zeroed is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
            *d = *s as libc::c_char;
        }
        // SAFETY: bind with a pointer to a local sockaddr_un and its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(
            UnixStream::connect(&path).unwrap_err().raw_os_error(),
            Some(libc::ECONNREFUSED)
        );
        let backend = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: listen and accept on the descriptor this thread owns.
            unsafe {
                assert_eq!(libc::listen(fd.as_raw_fd(), 1), 0);
                let c = libc::accept(fd.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut());
                assert!(c >= 0);
                libc::close(c);
            }
        });
        connect_when_listening(&path).unwrap();
        backend.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
