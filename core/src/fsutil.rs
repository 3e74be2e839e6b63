//! File helpers shared by everything that saves state.

use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes a file so that a crash leaves either the old or the new content, never a mix:
/// write a temporary sibling, fsync it, rename it over the target, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let written = file
        .write_all(bytes)
        .and_then(|_| file.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // A full disk must not keep the half-written copy (it holds the space it lacked).
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
