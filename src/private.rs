//! Owner-only files and directories, for secrets at rest: directories 0700,
//! files 0600. Existing ones are tightened too, so a store made by an older
//! tfsfs (or under a loose umask) is private after its next start.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use rand::RngCore;

/// Creates `dir` (and missing parents) mode 0700, or makes an existing one 0700.
pub fn dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// Makes `path` 0600 if it exists.
pub fn restrict(path: &Path) -> std::io::Result<()> {
    match std::fs::set_permissions(path, Permissions::from_mode(0o600)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Creates `path` empty with mode 0600 unless it exists, then makes it 0600.
pub fn touch(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    restrict(path)
}

/// Writes `data` to `path` (mode 0600) through a temporary file renamed
/// into place, so a reader sees the old content or the new, whole.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // A temporary file left by a crash under a looser mode keeps it.
    f.set_permissions(Permissions::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The 32-byte secret in `path` (hex), made at random (mode 0600) when the
/// file does not exist. Its directory must exist.
pub fn secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            restrict(path)?;
            let raw = hex::decode(s.trim())
                .map_err(|_| anyhow::anyhow!("{} is not hex", path.display()))?;
            raw.try_into()
                .map_err(|_| anyhow::anyhow!("{} must hold 32 bytes", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("create {}", path.display()))?;
            f.write_all(hex::encode(secret).as_bytes())?;
            f.sync_all()?;
            Ok(secret)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("read {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn loose_dirs_and_files_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, Permissions::from_mode(0o755)).unwrap();
        dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        touch(&f).unwrap();
        assert_eq!(
            (mode(&f), std::fs::read(&f).unwrap()),
            (0o600, b"x".to_vec())
        );
        write_atomic(&d.join("g"), b"y").unwrap();
        assert_eq!(mode(&d.join("g")), 0o600);
        let s = secret(&d.join("s")).unwrap();
        assert_eq!(mode(&d.join("s")), 0o600);
        assert_eq!(secret(&d.join("s")).unwrap(), s, "made once, then read");
    }
}
