//! Progress bars on a terminal (indicatif); nothing at all otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A set of per-blob bars, or nothing.
pub(crate) struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars on stderr when `enabled`.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// A bar for one blob of `total` bytes, labelled with its short digest.
    pub(crate) fn bar(&self, label: &str, total: u64) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let bar = multi.add(ProgressBar::new(total));
        let style =
            ProgressStyle::with_template("{prefix}: {msg:<12} [{bar:40}] {bytes}/{total_bytes}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar.set_message("Downloading");
        Some(bar)
    }

    /// A line for a blob that needs no transfer.
    pub(crate) fn note(&self, label: &str, msg: &str) {
        if let Some(multi) = &self.multi {
            let _ = multi.println(format!("{label}: {msg}"));
        }
    }
}
