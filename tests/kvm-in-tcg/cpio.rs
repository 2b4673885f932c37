//! A minimal writer for the "newc" cpio format the Linux kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Uncompressed, no hard links;
//! every entry is owned by root and has mtime 0, so no privileges are needed to build it.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Streams a newc archive to a file. Parent directories must be added before their entries
/// ([`Writer::dir`] is idempotent, and [`Writer::file`] adds missing parents itself).
pub struct Writer {
    out: BufWriter<File>,
    written: u64,
    ino: u32,
    dirs: std::collections::HashSet<String>,
}

impl Writer {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
            written: 0,
            ino: 1,
            dirs: Default::default(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u64) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{name}: too large for cpio newc (4 GiB)")))?;
        let name = name.trim_start_matches('/');
        let ino = self.ino;
        self.ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            name.len() as u32 + 1,
            0, // check
        ];
        let mut h = String::with_capacity(110);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()
    }

    /// Adds a directory and any missing parents (mode 0755).
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.header(path, S_IFDIR | 0o755, 2, 0)?;
        self.dirs.insert(path.to_string());
        Ok(())
    }

    fn parent(&mut self, path: &str) -> io::Result<()> {
        match path.trim_matches('/').rsplit_once('/') {
            Some((parent, _)) => self.dir(parent),
            None => Ok(()),
        }
    }

    /// Adds a regular file with the given contents.
    pub fn bytes(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.parent(path)?;
        self.header(path, S_IFREG | (mode & 0o7777), 1, data.len() as u64)?;
        self.put(data)?;
        self.pad4()
    }

    /// Adds a regular file copied from `src` (following symlinks), keeping its permission bits
    /// unless `mode` is given.
    pub fn file(&mut self, path: &str, src: &Path, mode: Option<u32>) -> io::Result<()> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", src.display()));
        let mut f = File::open(src).map_err(with_path)?;
        let meta = f.metadata().map_err(with_path)?;
        let mode = mode.unwrap_or_else(|| {
            use std::os::unix::fs::PermissionsExt;
            meta.permissions().mode()
        });
        self.parent(path)?;
        self.header(path, S_IFREG | (mode & 0o7777), 1, meta.len())?;
        let mut left = meta.len();
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = f.read(&mut buf).map_err(with_path)?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "{}: shrank while copying",
                    src.display()
                )));
            }
            let n = n.min(left as usize);
            self.put(&buf[..n])?;
            left -= n as u64;
        }
        self.pad4()
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.parent(path)?;
        self.header(path, S_IFLNK | 0o777, 1, target.len() as u64)?;
        self.put(target.as_bytes())?;
        self.pad4()
    }

    /// Writes the trailer and flushes; returns the archive's size.
    pub fn finish(mut self) -> io::Result<u64> {
        self.header("TRAILER!!!", 0, 1, 0)?;
        self.out.flush()?;
        self.out.get_ref().sync_all().ok();
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let dir = std::env::temp_dir().join(format!("mvm-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.cpio");
        let mut w = Writer::create(&path).unwrap();
        w.bytes("/a/b", 0o644, b"hello").unwrap();
        w.symlink("/a/c", "b").unwrap();
        let size = w.finish().unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, size);
        // directory "a", then "a/b" whose data is 4-byte aligned
        assert!(data.starts_with(b"070701"));
        let s = String::from_utf8_lossy(&data);
        let b = s.find("a/b\0").unwrap();
        let data_at = (b + 4).div_ceil(4) * 4;
        assert_eq!(&data[data_at..data_at + 5], b"hello");
        assert!(s.contains("TRAILER!!!"));
        assert_eq!(data.len() % 4, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
