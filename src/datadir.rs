//! The data directory of the embedded stores and spools: private to the
//! user that runs distcron (0700, its files 0600), because it holds every
//! job's definition and output and the first admin token.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Create `dir` (and its parents) if needed and make it 0700.
pub fn prepare(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Make every regular file directly in `dir` 0600.
pub fn tighten_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Write `contents` to a new file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_and_files_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir).unwrap();
        fs::write(dir.join("store"), "x").unwrap();
        fs::set_permissions(dir.join("store"), fs::Permissions::from_mode(0o644)).unwrap();
        tighten_files(&dir).unwrap();
        write_private(&dir.join("admin.token"), "secret\n").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("store")), 0o600);
        assert_eq!(mode(&dir.join("admin.token")), 0o600);
    }
}
