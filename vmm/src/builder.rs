//! Builds a microVM from a [`VmConfig`] and runs it to its end.
//!
//! The order follows Firecracker's builder: memory, VM, kernel, devices (and their kernel
//! command-line words), boot structures, vCPUs; then the vCPU threads run while the main
//! thread serves the devices from one epoll loop until something ends the VM.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{Kvm, VcpuFd};
use linux_loader::cmdline::Cmdline;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::{boot, cpuid, layout, mptable, msr, regs};
use crate::config::{ConfigError, RestoreSource, SerialOutput, VmConfig};
use crate::devices::bus::{Bus, lock};
use crate::devices::legacy::EventFdTrigger;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::manager::{DeviceError, DeviceManager, EventLoop};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::fs::Fs;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::vsock::Vsock;
use crate::exit::{ExitReason, ExitRecord, ExitRecordFile};
use crate::snapshot::identity::CpuIdentity;
use crate::snapshot::{DeviceKind, Shape, SnapshotError, VmSnapshot};
use crate::vcpu::{ExitLatch, Vcpu};
use crate::vm::{self, VmError};

/// Anything that stops a VM from being built or started.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The jail could not be entered.
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    /// KVM or guest memory.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Loading the kernel or writing boot structures.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// vCPU register setup.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// CPUID.
    #[error("CPUID: {0}")]
    Cpuid(#[from] cpuid::CpuidError),
    /// The MP table.
    #[error("MP table: {0}")]
    Mptable(#[from] mptable::MptableError),
    /// The boot MSRs.
    #[error("MSRs: {0}")]
    Msr(#[from] msr::MsrError),
    /// A device could not be created or placed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A snapshot could not be read or restored.
    #[error("cannot restore the snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The event loop could not be created.
    #[error("event loop: {0}")]
    EventLoop(#[source] event_manager::Error),
    /// A KVM call.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// Its error.
        source: kvm_ioctls::Error,
    },
    /// An OS resource (eventfd, thread, file).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Its error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BuildError {
    move |source| BuildError::Kvm { what, source }
}

/// Things the monitor flushes when the VM ends.
struct Flushables {
    serial: Arc<Mutex<SerialDevice>>,
    disks: Vec<Arc<Mutex<Block>>>,
}

/// Watches everything that ends the VM: vCPU exits, the i8042 reset line, and SIGTERM,
/// SIGINT and SIGHUP (through a signalfd, so no handler runs in signal context).
struct ExitWatcher {
    vcpu_exit: EventFd,
    reset: EventFd,
    signals: OwnedFd,
    latch: Arc<ExitLatch>,
    done: bool,
}

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [
            self.vcpu_exit.as_raw_fd(),
            self.reset.as_raw_fd(),
            self.signals.as_raw_fd(),
        ] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                tracing::error!("cannot watch exit event: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.reset.as_raw_fd() {
            let _ = self.reset.read();
            self.latch.set(ExitReason::I8042Reset);
        } else if fd == self.signals.as_raw_fd() {
            let signo = read_signalfd(self.signals.as_raw_fd()).unwrap_or(libc::SIGTERM);
            self.latch.set(ExitReason::Signal(signo));
        } else {
            let _ = self.vcpu_exit.read();
        }
        self.done = self.latch.get().is_some();
    }
}

fn read_signalfd(fd: RawFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of exactly `size` bytes owned by this frame.
    let n = unsafe { libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    (n == size as isize).then_some(info.ssi_signo as i32)
}

/// Blocks the signals that stop the monitor in this thread (and so in every thread spawned
/// after) and returns a signalfd that receives them.
fn block_exit_signals() -> Result<OwnedFd, BuildError> {
    // SAFETY: sigset_t is plain old data initialised by sigemptyset before use; the calls only
    // touch that local set and this thread's mask; signalfd returns a new fd we take ownership
    // of only when it is valid.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io_err("block signals")(std::io::Error::last_os_error()));
        }
        // A closed console or socket must surface as EPIPE, not kill the monitor.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io_err("signalfd")(std::io::Error::last_os_error()));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn serial_output(out: &SerialOutput) -> Result<Box<dyn Write + Send>, BuildError> {
    Ok(match out {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
        SerialOutput::None => Box::new(std::io::sink()),
        SerialOutput::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io_err(format!(
                    "cannot open serial output {}",
                    path.display()
                )))?,
        ),
    })
}

/// Sets LINT0 to ExtINT and LINT1 to NMI, as the MP table tells the guest.
fn set_lint(vcpu: &VcpuFd) -> Result<(), BuildError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_NMI: u32 = 0x4;
    const APIC_MODE_EXTINT: u32 = 0x7;
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("get LAPIC"))?;
    let get = |regs: &[std::os::raw::c_char], off: usize| -> u32 {
        let b: Vec<u8> = regs[off..off + 4].iter().map(|c| *c as u8).collect();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    for (off, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let v = (get(&lapic.regs, off) & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *b as std::os::raw::c_char;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm_err("set LAPIC"))
}

/// Builds the VM described by `config` (booting its kernel, or restoring its snapshot), runs
/// it until it ends, and returns how it ended. The exit record is written to
/// `config.exit_record` when set.
pub fn run(config: &VmConfig) -> Result<ExitRecord, BuildError> {
    config.validate()?;
    let signals = block_exit_signals()?;
    let kvm = vm::open_kvm()?;
    // The host CPU is read while /dev/kvm's capabilities are in reach (before the seccomp
    // filter): a snapshot names it, a restore compares it.
    let cpu = if config.api_socket.is_some() || config.restore.is_some() {
        Some(CpuIdentity::host(&kvm)?)
    } else {
        None
    };
    let restore = match (&config.restore, &cpu) {
        (Some(from), Some(cpu)) => Some(read_snapshot(config, from, cpu)?),
        _ => None,
    };
    // vhost-user backends must map guest RAM themselves, which private anonymous memory does
    // not allow; without one, anonymous memory keeps transparent huge pages available.
    let mem = match restore {
        Some((_, ref memory)) => vm::restore_guest_memory(
            config.mem_mib,
            memory.try_clone().map_err(io_err("snapshot memory"))?,
        )?,
        None if config.fs.is_empty() => vm::create_guest_memory(config.mem_mib)?,
        None => vm::create_shared_guest_memory(config.mem_mib)?,
    };
    let vm = Arc::new(vm::create_vm(&kvm, &mem)?);

    let mut cmdline = Cmdline::new(layout::CMDLINE_MAX_SIZE)
        .map_err(|e| boot::BootError::Cmdline(e.to_string()))?;
    let origin = match restore {
        Some((snapshot, _)) => Origin::Restore(snapshot),
        None => {
            let kernel = boot::load_kernel(&mem, &config.kernel)?;
            let initrd = match &config.initrd {
                Some(path) => Some(boot::load_initrd(&mem, path, boot::kernel_end(&kernel))?),
                None => None,
            };
            if !config.cmdline.trim().is_empty() {
                cmdline
                    .insert_str(config.cmdline.trim())
                    .map_err(|e| boot::BootError::Cmdline(e.to_string()))?;
            }
            // No keyboard or mouse behind our i8042: the guest's driver must not wait for
            // them.
            cmdline
                .insert_str(crate::devices::legacy::i8042::I8042_CMDLINE)
                .map_err(|e| boot::BootError::Cmdline(e.to_string()))?;
            Origin::Boot {
                kernel,
                initrd,
                cpuid: cpuid::supported_cpuid(&kvm)?,
            }
        }
    };

    let mut event_manager = EventLoop::new().map_err(BuildError::EventLoop)?;
    let latch = Arc::new(ExitLatch::default());
    let vcpu_exit = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
    let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;

    // Legacy devices on the port-I/O bus.
    let mut pio = Bus::new();
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
    vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
        .map_err(kvm_err("register serial irqfd"))?;
    let serial_out = serial_output(&config.serial)?;
    let serial = match &origin {
        Origin::Restore(s) => {
            SerialDevice::from_state(&s.serial, EventFdTrigger(serial_irq), serial_out)?
        }
        Origin::Boot { .. } => SerialDevice::new(EventFdTrigger(serial_irq), serial_out),
    };
    let serial = Arc::new(Mutex::new(serial));
    pio.insert(serial.clone(), u64::from(layout::SERIAL_PORT), 8)
        .map_err(DeviceError::Bus)?;
    let i8042 = I8042::new(EventFdTrigger(
        reset_evt.try_clone().map_err(io_err("eventfd"))?,
    ));
    pio.insert(
        Arc::new(Mutex::new(i8042)),
        u64::from(layout::I8042_PORT),
        5,
    )
    .map_err(DeviceError::Bus)?;

    // Virtio devices on the MMIO bus, in slot order: disks, vsock, NICs, shared
    // directories. Each kind comes after the ones before it so that adding one (a NIC, a
    // shared directory) moves no other device.
    let mut devices = DeviceManager::new();
    let mut disks = Vec::new();
    for disk in &config.disks {
        let block = Block::new(&disk.path, disk.read_only, disk.id.as_deref())
            .map_err(DeviceError::Block)?;
        let block = Arc::new(Mutex::new(block));
        disks.push(block.clone());
        devices.attach_virtio(&vm, &mem, &mut cmdline, &mut event_manager, block)?;
    }
    let mut vsock_dev = None;
    if let Some(vsock_cfg) = &config.vsock {
        let vsock =
            Vsock::new(vsock_cfg.guest_cid, &vsock_cfg.uds_path).map_err(DeviceError::Vsock)?;
        let vsock = Arc::new(Mutex::new(vsock));
        vsock_dev = Some(vsock.clone());
        devices.attach_virtio(&vm, &mem, &mut cmdline, &mut event_manager, vsock)?;
    }
    for nic in &config.net {
        let net = Net::with_tap(&nic.tap, nic.mac_addr()?).map_err(DeviceError::Net)?;
        let net = Arc::new(Mutex::new(net));
        devices.attach_virtio(&vm, &mem, &mut cmdline, &mut event_manager, net)?;
    }
    for fs_cfg in &config.fs {
        let fs = Fs::new(&fs_cfg.socket, &fs_cfg.tag, &mem).map_err(DeviceError::Fs)?;
        let fs = Arc::new(Mutex::new(fs));
        devices.attach_virtio(&vm, &mem, &mut cmdline, &mut event_manager, fs)?;
    }

    if let Origin::Boot { kernel, initrd, .. } = &origin {
        boot::configure_boot(&mem, kernel, &cmdline, *initrd)?;
        mptable::setup_mptable(&mem, config.vcpus)?;
    }

    // vCPUs.
    let supported_msrs: Vec<u32> = kvm
        .get_msr_index_list()
        .map(|l| l.as_slice().to_vec())
        .unwrap_or_default();
    let pio = Arc::new(pio);
    let (mmio, transports) = devices.into_parts();
    let mmio = Arc::new(mmio);
    let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
    if let Origin::Restore(snap) = &origin {
        snap.vm.restore(&vm)?;
    }
    for id in 0..config.vcpus {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("create vCPU"))?;
        match &origin {
            Origin::Restore(snap) => snap.vcpus[usize::from(id)].restore(&fd)?,
            Origin::Boot { kernel, cpuid, .. } => {
                let mut cpuid = cpuid.clone();
                cpuid::filter_cpuid(&mut cpuid, id, config.vcpus)?;
                fd.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
                msr::setup_boot_msrs(&fd, &supported_msrs)?;
                set_lint(&fd)?;
                if id == 0 {
                    regs::setup_regs(&fd, kernel.entry.entry, kernel.entry.protocol)?;
                    regs::setup_sregs(&mem, &fd, kernel.entry.protocol)?;
                    regs::setup_fpu(&fd)?;
                }
            }
        }
        vcpus.push(Vcpu::new(
            fd,
            id,
            pio.clone(),
            mmio.clone(),
            latch.clone(),
            vcpu_exit.try_clone().map_err(io_err("eventfd"))?,
        ));
    }
    if let Origin::Restore(snap) = &origin {
        for (t, saved) in transports.iter().zip(&snap.devices) {
            lock(t).restore_state(saved)?;
        }
    }

    let watcher = Arc::new(Mutex::new(ExitWatcher {
        vcpu_exit,
        reset: reset_evt,
        signals,
        latch: latch.clone(),
        done: false,
    }));
    event_manager.add_subscriber(watcher.clone() as Arc<Mutex<dyn MutEventSubscriber + Send>>);

    let exit_file = match &config.exit_record {
        Some(path) => Some(ExitRecordFile::create(path).map_err(io_err(format!(
            "cannot create exit record {}",
            path.display()
        )))?),
        None => None,
    };
    let api_listener = match &config.api_socket {
        Some(path) => Some(bind_api_socket(path)?),
        None => None,
    };
    // Built before the jail: the pid the filters let signals go to is ours.
    let filters = Arc::new(crate::seccomp::Filters::new(config.seccomp)?);
    let identity = config.jail_identity();
    if crate::jail::wanted(config.jail) {
        // The vsock socket's directory is the root: the host's `_PORT` sockets are there.
        let root = config
            .vsock
            .as_ref()
            .and_then(|v| v.uds_path.parent().map(Path::to_path_buf));
        if let (Some(id), Some(file)) = (identity, &exit_file) {
            // So that the unprivileged VMM may rename it into place, also in a sticky
            // directory.
            file.chown(id.uid, id.gid)
                .map_err(io_err("cannot give the exit record to the jail's uid"))?;
        }
        let limits = crate::jail::Limits::for_vm(
            config.vcpus,
            config.vsock.is_some(),
            // A VM that can be snapshotted writes its memory file too.
            largest_disk(config)?.max(if config.api_socket.is_some() {
                snapshot_size(&mem)
            } else {
                0
            }),
        );
        crate::jail::enter(root.as_deref(), identity, &limits)?;
        if let (Some(root), Some(dev), Some(v)) = (&root, &vsock_dev, &config.vsock)
            && let Some(p) = crate::jail::inside(root, &v.uds_path)
        {
            lock(dev).set_uds_path(p);
        }
    } else if identity.is_some() {
        return Err(BuildError::Config(ConfigError::Invalid(
            "jail_uid and jail_gid need the jail, which runs only as root in mode auto".into(),
        )));
    }
    // Each vCPU thread installs its own filter before it runs the guest; then this thread
    // installs the event loop's, before it serves the first device queue. Without TSYNC:
    // neither filter is laid over the other's threads.
    crate::vcpu::install_kick_handler().map_err(io_err("install the vCPU kick handler"))?;
    let mut handles = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        handles.push(
            vcpu.spawn(filters.clone())
                .map_err(io_err("spawn vCPU thread"))?,
        );
    }
    if let (Some(listener), Some(cpu)) = (api_listener, cpu) {
        let controller = crate::api::Controller {
            vm: vm.clone(),
            mem: mem.clone(),
            vcpus: handles,
            msr_index: Arc::new(supported_msrs),
            serial: serial.clone(),
            transports,
            shape: shape_of(config),
            cpu,
            refusal: (!config.fs.is_empty()).then(|| {
                "a VM with shared directories (fs) cannot be snapshotted: their state lives in \
                 the vhost-user backend"
                    .to_string()
            }),
            paused: false,
        };
        event_manager.add_subscriber(Arc::new(Mutex::new(crate::api::ApiServer::new(
            listener, controller,
        ))) as Arc<Mutex<dyn MutEventSubscriber + Send>>);
    }
    filters.apply(crate::seccomp::ThreadKind::Vmm)?;

    while !lock(&watcher).done {
        if let Err(e) = event_manager.run() {
            latch.set(ExitReason::VcpuError(format!("event loop failed: {e:?}")));
            break;
        }
    }

    let flush = Flushables { serial, disks };
    lock(&flush.serial).flush();
    for d in &flush.disks {
        lock(d).flush();
    }
    let reason = latch
        .get()
        .unwrap_or_else(|| ExitReason::VcpuError("VM stopped without a reason".into()));
    let record = ExitRecord::now(reason);
    if let Some(file) = exit_file {
        file.write(&record)
            .map_err(io_err("cannot write the exit record".to_string()))?;
    }
    // The vCPU threads are not joined: the caller exits the process, which stops them.
    Ok(record)
}

/// How a VM starts.
#[allow(
    clippy::large_enum_variant,
    reason = "one value per VMM, held while the VM is built"
)]
enum Origin {
    /// Its kernel (and initrd) loaded, its vCPUs set up from KVM's CPUID.
    Boot {
        kernel: boot::LoadedKernel,
        initrd: Option<(vm_memory::GuestAddress, u64)>,
        cpuid: kvm_bindings::CpuId,
    },
    /// A snapshot's state set on every vCPU, the interrupt controllers and the devices.
    Restore(VmSnapshot),
}

/// The shape of the VM `config` describes, as a snapshot records it.
pub fn shape_of(config: &VmConfig) -> Shape {
    let mut devices = Vec::new();
    devices.extend(config.disks.iter().map(|_| DeviceKind::Block));
    devices.extend(config.vsock.iter().map(|_| DeviceKind::Vsock));
    devices.extend(config.net.iter().map(|_| DeviceKind::Net));
    devices.extend(config.fs.iter().map(|_| DeviceKind::Fs));
    Shape {
        vcpus: config.vcpus,
        mem_mib: config.mem_mib,
        devices,
        guest_cid: config.vsock.as_ref().map(|v| v.guest_cid),
    }
}

/// Reads, checks and pairs a snapshot's state and memory for the VM `config` describes.
fn read_snapshot(
    config: &VmConfig,
    from: &RestoreSource,
    cpu: &CpuIdentity,
) -> Result<(VmSnapshot, std::fs::File), BuildError> {
    let (header, snap) = crate::snapshot::read_state(&from.state, cpu)?;
    snap.check(&shape_of(config))?;
    // The memory file must cover the RAM this VM maps from it, page for page: a mapping past
    // the file's end would fault (SIGBUS) when the guest or a device touched it.
    let ram: u64 = crate::arch::x86_64::layout::ram_ranges(config.mem_mib << 20)
        .iter()
        .map(|(_, len)| len)
        .sum();
    if header.memory_bytes != ram {
        return Err(SnapshotError::Invalid(format!(
            "the snapshot's memory is {} bytes, this VM's RAM {ram}",
            header.memory_bytes
        ))
        .into());
    }
    let memory = crate::snapshot::file::open_memory(&from.memory, &header)?;
    Ok((snap, memory))
}

/// The jail's file-size limit must let a snapshot's memory file be written.
fn snapshot_size(mem: &vm_memory::GuestMemoryMmap) -> u64 {
    crate::snapshot::file::memory_bytes(mem) + crate::snapshot::file::TRAILER_BYTES
}

/// Binds the control socket (a stale socket file is replaced), non-blocking.
fn bind_api_socket(path: &Path) -> Result<UnixListener, BuildError> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
    {
        let _ = std::fs::remove_file(path);
    }
    let listener =
        UnixListener::bind(path).map_err(io_err(format!("cannot listen on {}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("API socket"))?;
    Ok(listener)
}

/// The size of the largest disk (the jail's file-size limit must not cut it short).
fn largest_disk(config: &VmConfig) -> Result<u64, BuildError> {
    let mut largest = 0;
    for disk in &config.disks {
        let meta = std::fs::metadata(&disk.path)
            .map_err(io_err(format!("disk {}", disk.path.display())))?;
        largest = largest.max(meta.len());
    }
    Ok(largest)
}

/// KVM with the capabilities the monitor needs (for `--check`).
pub fn check_kvm() -> Result<Kvm, BuildError> {
    Ok(vm::open_kvm()?)
}
