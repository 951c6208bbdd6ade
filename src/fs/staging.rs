//! Staged writes on local disk: one sparse file per inode being written,
//! under `CACHE_DIR/staging`, with an empty marker file whose name says
//! whether the writer finished: `{node}.open` while it writes, `{node}.done`
//! once it closed or fsynced. After a crash, finished files are uploaded by
//! the next mount and unfinished ones are kept aside, never shown torn.
//! Markers are empty and change state by rename to a fresh name, so no
//! state change makes the disk flush data.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct StagingArea {
    dir: PathBuf,
    recovered: PathBuf,
}

/// A staged file left by an earlier mount.
pub struct Leftover {
    pub node: i64,
    pub complete: bool,
    pub data: PathBuf,
}

impl StagingArea {
    pub fn open(cache_dir: &Path) -> std::io::Result<Self> {
        let dir = cache_dir.join("staging");
        let recovered = cache_dir.join("recovered");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&recovered)?;
        Ok(StagingArea { dir, recovered })
    }

    pub fn data_path(&self, node: i64) -> PathBuf {
        self.dir.join(format!("{node}.data"))
    }

    fn marker(&self, node: i64, complete: bool) -> PathBuf {
        self.dir
            .join(format!("{node}.{}", if complete { "done" } else { "open" }))
    }

    /// A new, empty staging file for `node`. Made afresh rather than
    /// truncated: ext4 flushes a file truncated to zero when it is closed.
    pub fn create(&self, node: i64) -> std::io::Result<std::fs::File> {
        let path = self.data_path(node);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    }

    /// Records that `node` has staged data, and whether it is whole.
    pub fn mark(&self, node: i64, complete: bool) -> std::io::Result<()> {
        let (from, to) = (self.marker(node, !complete), self.marker(node, complete));
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::File::create(&to).map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// The staged data of `node` is safe elsewhere (uploaded): forget it.
    pub fn unmark(&self, node: i64) {
        for complete in [false, true] {
            let _ = std::fs::remove_file(self.marker(node, complete));
        }
    }

    pub fn remove(&self, node: i64) {
        self.unmark(node);
        let _ = std::fs::remove_file(self.data_path(node));
    }

    /// Moves staged data out of the way, to `CACHE_DIR/recovered`, and
    /// returns where it went.
    pub fn set_aside(&self, node: i64) -> std::io::Result<PathBuf> {
        let dest = self.recovered.join(format!(
            "{node}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.f")
        ));
        std::fs::rename(self.data_path(node), &dest)?;
        self.unmark(node);
        Ok(dest)
    }

    /// Staged files an earlier mount left behind; data files without a
    /// marker were never changed and are removed.
    pub fn leftovers(&self) -> std::io::Result<Vec<Leftover>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let Some((node, ext)) = name
                .split_once('.')
                .and_then(|(n, e)| Some((n.parse::<i64>().ok()?, e)))
            else {
                continue;
            };
            let complete = match ext {
                "done" => true,
                "open" if !self.marker(node, true).exists() => false,
                "open" => continue,
                _ => {
                    if ext == "data"
                        && !self.marker(node, false).exists()
                        && !self.marker(node, true).exists()
                    {
                        let _ = std::fs::remove_file(&path);
                    }
                    continue;
                }
            };
            let data = self.data_path(node);
            if data.exists() {
                out.push(Leftover {
                    node,
                    complete,
                    data,
                });
            } else {
                self.unmark(node);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_say_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path()).unwrap();
        for node in [1, 2, 3] {
            std::fs::write(area.data_path(node), b"x").unwrap();
        }
        area.mark(1, false).unwrap();
        area.mark(2, false).unwrap();
        area.mark(2, true).unwrap();
        let mut left: Vec<(i64, bool)> = area
            .leftovers()
            .unwrap()
            .iter()
            .map(|l| (l.node, l.complete))
            .collect();
        left.sort();
        assert_eq!(left, vec![(1, false), (2, true)]);
        assert!(!area.data_path(3).exists(), "unmarked data was never dirty");
        let kept = area.set_aside(1).unwrap();
        assert_eq!(std::fs::read(kept).unwrap(), b"x");
        area.remove(2);
        assert!(area.leftovers().unwrap().is_empty());
    }
}
