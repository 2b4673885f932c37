//! Archives a command writes to a file (`save -o`, `export -o`) or to stdout: written beside
//! the target and renamed over it once complete and synced, so a failure leaves no partial
//! file; never to a terminal.

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::error::CliError;

/// Docker's refusal to write an archive to a terminal (exit 1).
pub fn refuse_terminal_stdout() -> Result<(), CliError> {
    if std::io::stdout().is_terminal() {
        return Err(CliError::with_code(
            1,
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
        ));
    }
    Ok(())
}

/// Writes `path` through `write`; `failed_to` words a file that cannot be made ("failed to
/// save image").
pub fn write_replacing(
    path: &Path,
    failed_to: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let tmp = mvm_rootfs::fsutil::temp_sibling(path);
    let result = (|| {
        let file = std::fs::File::create(&tmp)
            .map_err(|e| CliError::runtime(format!("{failed_to}: {}: {e}", path.display())))?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| CliError::runtime(format!("write {}: {e}", path.display())))?;
        file.sync_all()
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| CliError::runtime(format!("write {}: {e}", path.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
