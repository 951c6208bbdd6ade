//! Staged writes on local disk: one sparse file per inode being written,
//! under `CACHE_DIR/staging`, with a marker that says whether the writer
//! finished (closed or fsynced). After a crash, finished files are uploaded
//! by the next mount and unfinished ones are kept aside, never shown torn.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Marker {
    node: i64,
    /// The writer closed or fsynced: the content is whole.
    complete: bool,
}

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

    fn marker_path(&self, node: i64) -> PathBuf {
        self.dir.join(format!("{node}.json"))
    }

    /// A new, empty staging file for `node`.
    pub fn create(&self, node: i64) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.data_path(node))
    }

    /// Records that `node` has staged data, and whether it is whole.
    pub fn mark(&self, node: i64, complete: bool) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{node}.json.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec(&Marker { node, complete }).expect("marker serializes"),
        )?;
        std::fs::rename(tmp, self.marker_path(node))
    }

    /// The staged data of `node` is safe elsewhere (uploaded): forget it.
    pub fn unmark(&self, node: i64) {
        let _ = std::fs::remove_file(self.marker_path(node));
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
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        std::fs::rename(self.data_path(node), &dest)?;
        self.unmark(node);
        Ok(dest)
    }

    /// Staged files an earlier mount left behind.
    pub fn leftovers(&self) -> std::io::Result<Vec<Leftover>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(m) = std::fs::read(&path)
                .map_err(drop)
                .and_then(|raw| serde_json::from_slice::<Marker>(&raw).map_err(drop))
            else {
                continue;
            };
            let data = self.data_path(m.node);
            if data.exists() {
                out.push(Leftover {
                    node: m.node,
                    complete: m.complete,
                    data,
                });
            } else {
                self.unmark(m.node);
            }
        }
        // Data files without a marker were never dirty: nothing to keep.
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<i64>().ok());
            if let Some(node) = stem {
                if path.extension().and_then(|e| e.to_str()) == Some("data")
                    && !self.marker_path(node).exists()
                {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(out)
    }
}
