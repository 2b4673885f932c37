//! `mvm-vmm`'s flags: a JSON config file and/or flags for each device, merged into one
//! validated [`VmConfig`].

use std::path::PathBuf;

use clap::Parser;
use mvm_vmm::config::{DiskConfig, FsConfig, NetConfig, SerialOutput, VmConfig, VsockConfig};

/// The command line.
#[derive(Parser, Debug)]
#[command(name = "mvm-vmm", version, about = "Run one KVM microVM")]
pub struct Args {
    /// JSON config file (fields: kernel, initrd, cmdline, vcpus, mem_mib, disks, net, fs,
    /// vsock, serial, exit_record, seccomp, jail, jail_uid, jail_gid); flags given too
    /// override its values (--disk, --net and --fs add to its lists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Guest kernel (ELF vmlinux or bzImage).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long)]
    pub vcpus: Option<u8>,
    /// Guest memory in MiB.
    #[arg(long = "mem-mib")]
    pub mem_mib: Option<u64>,
    /// A disk: PATH[,ro][,id=SERIAL]; repeat for more (vda, vdb, ...).
    #[arg(long = "disk")]
    pub disks: Vec<String>,
    /// A network interface over an existing TAP: tap=NAME[,mac=XX:XX:XX:XX:XX:XX]; repeat
    /// for more (eth0, eth1, ...).
    #[arg(long = "net")]
    pub nets: Vec<String>,
    /// A shared directory served by a running vhost-user-fs backend (virtiofsd):
    /// socket=PATH,tag=TAG; repeat for more.
    #[arg(long = "fs")]
    pub fs: Vec<String>,
    /// The vsock device: CID,UDS_PATH.
    #[arg(long)]
    pub vsock: Option<String>,
    /// Serial console: stdout, none, or a file path.
    #[arg(long)]
    pub serial: Option<String>,
    /// Where to write the exit record (JSON).
    #[arg(long = "exit-record")]
    pub exit_record: Option<PathBuf>,
    /// The seccomp filters once the VM runs: kill (default), log (violations allowed and
    /// logged to the kernel's audit log, to diagnose) or off.
    #[arg(long)]
    pub seccomp: Option<mvm_vmm::seccomp::SeccompMode>,
    /// The jail once the VM is built: auto (when root; default), on or off.
    #[arg(long)]
    pub jail: Option<mvm_vmm::jail::JailMode>,
    /// The uid the jailed VMM runs as once everything is open (with --gid).
    #[arg(long)]
    pub uid: Option<u32>,
    /// The gid the jailed VMM runs as once everything is open (with --uid).
    #[arg(long)]
    pub gid: Option<u32>,
    /// The control socket: pause, resume and snapshot requests (JSON lines).
    #[arg(long = "api-sock")]
    pub api_socket: Option<PathBuf>,
    /// Restore this snapshot state file instead of booting a kernel (with
    /// --restore-memory; the devices given must have the snapshot's shape).
    #[arg(long, requires = "restore_memory")]
    pub restore: Option<PathBuf>,
    /// The snapshot's memory file.
    #[arg(long = "restore-memory", requires = "restore")]
    pub restore_memory: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long = "log-level", default_value = "warn")]
    pub log_level: String,
}

fn parse_disk(spec: &str) -> Result<DiskConfig, String> {
    let mut parts = spec.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or("empty --disk")?;
    let mut disk = DiskConfig {
        path: path.into(),
        read_only: false,
        id: None,
    };
    for opt in parts {
        match opt.split_once('=') {
            None if opt == "ro" => disk.read_only = true,
            None if opt == "rw" => disk.read_only = false,
            Some(("id", id)) => disk.id = Some(id.to_string()),
            _ => {
                return Err(format!(
                    "unknown --disk option {opt:?} (expected ro, rw or id=SERIAL)"
                ));
            }
        }
    }
    Ok(disk)
}

fn parse_net(spec: &str) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = None;
    for opt in spec.split(',') {
        match opt.split_once('=') {
            Some(("tap", name)) => tap = Some(name.to_string()),
            Some(("mac", m)) => mac = Some(m.to_string()),
            _ => {
                return Err(format!(
                    "unknown --net option {opt:?} (expected tap=NAME or mac=MAC)"
                ));
            }
        }
    }
    let tap = tap.ok_or_else(|| format!("--net {spec:?}: tap=NAME is required"))?;
    Ok(NetConfig { tap, mac })
}

fn parse_fs(spec: &str) -> Result<FsConfig, String> {
    let mut socket = None;
    let mut tag = None;
    for opt in spec.split(',') {
        match opt.split_once('=') {
            Some(("socket", path)) if !path.is_empty() => socket = Some(path.into()),
            Some(("tag", t)) => tag = Some(t.to_string()),
            _ => {
                return Err(format!(
                    "unknown --fs option {opt:?} (expected socket=PATH or tag=TAG)"
                ));
            }
        }
    }
    let socket = socket.ok_or_else(|| format!("--fs {spec:?}: socket=PATH is required"))?;
    let tag = tag.ok_or_else(|| format!("--fs {spec:?}: tag=TAG is required"))?;
    Ok(FsConfig { socket, tag })
}

fn parse_vsock(spec: &str) -> Result<VsockConfig, String> {
    let (cid, path) = spec
        .split_once(',')
        .ok_or_else(|| format!("--vsock {spec:?}: expected CID,UDS_PATH"))?;
    let guest_cid = cid
        .parse()
        .map_err(|_| format!("--vsock: {cid:?} is not a CID"))?;
    Ok(VsockConfig {
        guest_cid,
        uds_path: path.into(),
    })
}

/// The VM these flags (and the config file they name) describe, validated.
pub fn build_config(args: &Args) -> Result<VmConfig, String> {
    let mut cfg = match &args.config {
        Some(path) => VmConfig::from_file(path).map_err(|e| e.to_string())?,
        None => {
            let kernel = match (&args.kernel, &args.restore) {
                (Some(k), _) => k.clone(),
                (None, Some(_)) => PathBuf::new(),
                (None, None) => {
                    return Err("no kernel: give --kernel, --config or --restore".into());
                }
            };
            serde_json::from_value(serde_json::json!({ "kernel": kernel }))
                .map_err(|e| e.to_string())?
        }
    };
    if let Some(k) = &args.kernel {
        cfg.kernel = k.clone();
    }
    if let Some(i) = &args.initrd {
        cfg.initrd = Some(i.clone());
    }
    if let Some(c) = &args.cmdline {
        cfg.cmdline = c.clone();
    }
    if let Some(v) = args.vcpus {
        cfg.vcpus = v;
    }
    if let Some(m) = args.mem_mib {
        cfg.mem_mib = m;
    }
    for d in &args.disks {
        cfg.disks.push(parse_disk(d)?);
    }
    for n in &args.nets {
        cfg.net.push(parse_net(n)?);
    }
    for f in &args.fs {
        cfg.fs.push(parse_fs(f)?);
    }
    if let Some(v) = &args.vsock {
        cfg.vsock = Some(parse_vsock(v)?);
    }
    if let Some(s) = &args.serial {
        cfg.serial = match s.as_str() {
            "stdout" => SerialOutput::Stdout,
            "none" => SerialOutput::None,
            path => SerialOutput::File(path.into()),
        };
    }
    if let Some(e) = &args.exit_record {
        cfg.exit_record = Some(e.clone());
    }
    if let Some(m) = args.seccomp {
        cfg.seccomp = m;
    }
    if let Some(m) = args.jail {
        cfg.jail = m;
    }
    if let Some(uid) = args.uid {
        cfg.jail_uid = Some(uid);
    }
    if let Some(gid) = args.gid {
        cfg.jail_gid = Some(gid);
    }
    if let Some(p) = &args.api_socket {
        cfg.api_socket = Some(p.clone());
    }
    if let (Some(state), Some(memory)) = (&args.restore, &args.restore_memory) {
        cfg.restore = Some(mvm_vmm::config::RestoreSource {
            state: state.clone(),
            memory: memory.clone(),
        });
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs() {
        let d = parse_disk("/a,ro,id=root").unwrap();
        assert!(d.read_only);
        assert_eq!(d.id.as_deref(), Some("root"));
        assert!(parse_disk("/a,bogus").is_err());
        assert!(parse_disk("").is_err());
    }

    #[test]
    fn net_specs() {
        let n = parse_net("tap=tap0,mac=02:00:00:00:00:01").unwrap();
        assert_eq!(n.tap, "tap0");
        assert_eq!(n.mac.as_deref(), Some("02:00:00:00:00:01"));
        let n = parse_net("tap=tap1").unwrap();
        assert_eq!(n.mac, None);
        assert!(parse_net("mac=02:00:00:00:00:01").is_err());
        assert!(parse_net("tap0").is_err());
        assert!(parse_net("tap=t,bogus=1").is_err());
    }

    #[test]
    fn bad_net_flags_are_config_errors() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let cfg = |net: &str| {
            let args = Args::try_parse_from(["mvm-vmm", "--kernel", exe, "--net", net]).unwrap();
            build_config(&args)
        };
        let e = cfg("tap=a-very-long-tapname").unwrap_err();
        assert_eq!(
            e,
            "net tap name \"a-very-long-tapname\" is longer than 15 bytes"
        );
        let e = cfg("tap=lo,mac=ff:ff:ff:ff:ff:ff").unwrap_err();
        assert!(e.contains("multicast"), "{e}");
        let e = cfg("tap=lo,mac=zz").unwrap_err();
        assert!(e.contains("six hex bytes"), "{e}");
        let ok = cfg("tap=lo,mac=02:00:00:00:00:07").unwrap();
        assert_eq!(ok.net.len(), 1);
    }

    #[test]
    fn fs_specs() {
        let f = parse_fs("socket=/run/v.sock,tag=vol0").unwrap();
        assert_eq!(f.socket, PathBuf::from("/run/v.sock"));
        assert_eq!(f.tag, "vol0");
        let f = parse_fs("tag=t,socket=/s").unwrap();
        assert_eq!(f.tag, "t");
        assert!(parse_fs("socket=/s").unwrap_err().contains("tag=TAG"));
        assert!(parse_fs("tag=t").unwrap_err().contains("socket=PATH"));
        assert!(parse_fs("socket=,tag=t").is_err());
        assert!(parse_fs("/s,tag=t").is_err());
        assert!(parse_fs("socket=/s,tag=t,cache=always").is_err());
    }

    #[test]
    fn bad_fs_flags_are_config_errors() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let cfg = |fs: &[&str]| {
            let mut argv = vec!["mvm-vmm", "--kernel", exe];
            for f in fs {
                argv.extend(["--fs", f]);
            }
            build_config(&Args::try_parse_from(argv).unwrap())
        };
        let e = cfg(&["socket=/nonexistent/v.sock,tag=vol0"]).unwrap_err();
        assert!(e.starts_with("fs socket /nonexistent/v.sock: "), "{e}");
        let long = format!("socket=/s,tag={}", "x".repeat(37));
        let e = cfg(&[&long]).unwrap_err();
        assert!(e.contains("longer than 36 bytes"), "{e}");
        let e = cfg(&["socket=/s"]).unwrap_err();
        assert!(e.contains("tag=TAG is required"), "{e}");
    }

    #[test]
    fn vsock_specs() {
        let v = parse_vsock("3,/tmp/v.sock").unwrap();
        assert_eq!(v.guest_cid, 3);
        assert!(parse_vsock("x,/p").is_err());
        assert!(parse_vsock("3").is_err());
    }
}
