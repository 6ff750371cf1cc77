//! Progress bars on stderr. indicatif draws nothing when stderr is not a
//! terminal, so logs and CI output stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Makes the progress bars of one release, or hidden ones.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    pub fn new(visible: bool) -> Self {
        Self { visible }
    }

    fn make(&self, length: Option<u64>) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        match length {
            Some(length) => ProgressBar::new(length),
            None => ProgressBar::new_spinner(),
        }
    }

    /// Makes a spinner for a step of unknown length, such as a colcon build.
    pub fn spinner(&self, prefix: &'static str) -> ProgressBar {
        let bar = self.make(None).with_prefix(prefix);
        bar.set_style(ProgressStyle::with_template("{spinner} {prefix:>10} {elapsed:>4} {wide_msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// Makes a bar that counts items; the caller sets the length when it is known.
    pub fn items(&self, prefix: &'static str) -> ProgressBar {
        let bar = self.make(Some(0)).with_prefix(prefix);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    }

    /// Makes a bar that counts bytes.
    pub fn bytes(&self, prefix: &'static str, length: u64) -> ProgressBar {
        let bar = self.make(Some(length)).with_prefix(prefix);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    }
}
