//! Files the gateway writes for itself (keys, secrets, a seeded users
//! file): private to its user, and whole or not at all, so that a reader
//! (a watching gateway, a replica starting) never sees half of one.

use std::io::Write;
use std::path::Path;

/// Whether [`write_private`] may replace a file already at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (a key being rotated).
    Replace,
    /// Keep it: the first writer wins (two processes making one secret).
    Keep,
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file in the
/// same folder, synced and renamed into place. With [`Existing::Keep`] a
/// file already there stays and the answer is `false`.
pub fn write_private(path: &Path, bytes: &[u8], existing: Existing) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".authgate-")
        .tempfile_in(dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        temp.write_all(bytes)?;
        temp.as_file().sync_all()?;
    }
    match existing {
        Existing::Replace => temp.persist(path).map(|_| true).map_err(|e| e.error),
        Existing::Keep => match temp.persist_noclobber(path) {
            Ok(_) => Ok(true),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e.error),
        },
    }
}
