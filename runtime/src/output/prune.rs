//! What the prune commands print, as Docker's: a section per kind of object removed, then the
//! space reclaimed.

use mvm_rootfs::prune::PruneReport;

/// `TITLE:`, one line each, and a blank line; nothing when nothing was removed.
pub fn section(title: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("{title}:\n{}\n\n", lines.join("\n"))
    }
}

/// The lines of `Deleted Images:`: names untagged, then image IDs deleted.
pub fn image_lines(report: &PruneReport) -> Vec<String> {
    report
        .untagged
        .iter()
        .map(|u| format!("untagged: {u}"))
        .chain(report.deleted.iter().map(|d| format!("deleted: {d}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_as_docker_prints_them() {
        assert_eq!(section("Deleted Volumes", &[]), "");
        assert_eq!(
            section("Deleted Volumes", &["a".into(), "b".into()]),
            "Deleted Volumes:\na\nb\n\n"
        );
    }
}
