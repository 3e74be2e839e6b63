//! A small file system of the test's own, to fill up for real (ENOSPC from the kernel, not a
//! simulated error). Tests only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a test's directory, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `1m`) on `dir`. Needs root or CAP_SYS_ADMIN, as CI and
    /// `scripts/test.sh` (run as root) have: without it this fails and says so, rather than let
    /// the test pass without having run.
    pub fn mount(dir: &Path, size: &str) -> Self {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("running mount(8): {e}"));
        assert!(
            output.status.success(),
            "this test fills a small file system of its own and could not mount one on {} \
             (mount -t tmpfs: {}): run the tests as root (CI does), or in a container with \
             CAP_SYS_ADMIN",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
