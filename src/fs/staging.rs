//! Staged writes on local disk: one sparse file per inode being written,
//! under `CACHE_DIR/staging`, with an empty marker file whose name says
//! the version the writer started from and whether the writer finished:
//! `{node}.{base}.open` while it writes, `{node}.{base}.done` once it
//! closed or fsynced (and until the upload lands). After a crash, finished
//! files are uploaded by the next mount, to `base` only, and unfinished
//! ones are kept aside, never shown torn. Markers are empty (but a new
//! file's, which says where its first commit makes it) and change state
//! by rename to a fresh name, so no state change makes the disk flush
//! data.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::proto::{CommitFragment, NewFile};

/// Which partitions of a staged file its data file holds, and the stored
/// objects holding the others (`{node}.parts`, written before an upload
/// begins). A partition in neither is a hole. No such file: the data file
/// holds every partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Parts {
    pub present: BTreeSet<u64>,
    pub pieces: BTreeMap<u64, CommitFragment>,
}

pub struct StagingArea {
    /// Shared with the metrics collector, which stops when this goes.
    dir: Arc<Path>,
    recovered: PathBuf,
}

/// A staged file left by an earlier mount.
pub struct Leftover {
    pub node: i64,
    /// The version its writer started from; None from a mount older than
    /// versioned markers, whose bytes cannot be committed safely.
    pub base: Option<u64>,
    pub complete: bool,
    /// A file its first commit was to make, and where (its marker says).
    pub new: Option<NewFile>,
}

/// What a name in the staging directory is.
enum Entry {
    Data(i64),
    Marker {
        node: i64,
        base: Option<u64>,
        complete: bool,
    },
}

fn parse(name: &str) -> Option<Entry> {
    let parts: Vec<&str> = name.split('.').collect();
    let node = parts.first()?.parse().ok()?;
    let state = |s: &str| match s {
        "open" => Some(false),
        "done" => Some(true),
        _ => None,
    };
    match parts[1..] {
        ["data"] => Some(Entry::Data(node)),
        [s] => Some(Entry::Marker {
            node,
            base: None,
            complete: state(s)?,
        }),
        [base, s] => Some(Entry::Marker {
            node,
            base: Some(base.parse().ok()?),
            complete: state(s)?,
        }),
        _ => None,
    }
}

impl StagingArea {
    pub fn open(cache_dir: &Path) -> std::io::Result<Self> {
        let dir = cache_dir.join("staging");
        let recovered = cache_dir.join("recovered");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&recovered)?;
        let dir: Arc<Path> = dir.into();
        crate::metrics::on_scrape(&dir, record_staged_bytes);
        Ok(StagingArea { dir, recovered })
    }

    pub fn data_path(&self, node: i64) -> PathBuf {
        self.dir.join(format!("{node}.data"))
    }

    fn parts_path(&self, node: i64) -> PathBuf {
        self.dir.join(format!("{node}.parts"))
    }

    /// Records which partitions the data file of `node` holds, whole or
    /// not at all (written aside, then renamed).
    pub fn save_parts(&self, node: i64, parts: &Parts) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{node}.parts.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(parts)?)?;
        std::fs::rename(tmp, self.parts_path(node))
    }

    /// The data file of `node` holds every partition.
    pub fn clear_parts(&self, node: i64) {
        let _ = std::fs::remove_file(self.parts_path(node));
    }

    /// What `save_parts` recorded for `node`; None when nothing was (the
    /// data file holds every partition).
    pub fn load_parts(&self, node: i64) -> std::io::Result<Option<Parts>> {
        match std::fs::read(self.parts_path(node)) {
            Ok(raw) => Ok(Some(serde_json::from_slice(&raw)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn marker(&self, node: i64, base: u64, complete: bool) -> PathBuf {
        let state = if complete { "done" } else { "open" };
        self.dir.join(format!("{node}.{base}.{state}"))
    }

    /// A new, empty staging file for `node`. Made afresh rather than
    /// truncated: ext4 flushes a file truncated to zero when it is closed.
    /// A stale one is removed first (with what it held), only when there.
    pub fn create(&self, node: i64) -> std::io::Result<std::fs::File> {
        let path = self.data_path(node);
        let new = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
        };
        match new() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for stale in [&path, &self.parts_path(node)] {
                    match std::fs::remove_file(stale) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                new()
            }
            r => r,
        }
    }

    /// The staging file an earlier mount left for `node`.
    pub fn reopen(&self, node: i64) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.data_path(node))
    }

    /// `mark(node, base, false)` for a file its first commit makes: the
    /// marker holds where (renames keep it), for the commit after a crash.
    pub fn mark_new(&self, node: i64, base: u64, new: &NewFile) -> std::io::Result<()> {
        std::fs::write(self.marker(node, base, false), serde_json::to_vec(new)?)
    }

    /// Records that `node` has staged data based on version `base`, and
    /// whether it is whole.
    pub fn mark(&self, node: i64, base: u64, complete: bool) -> std::io::Result<()> {
        let (from, to) = (
            self.marker(node, base, !complete),
            self.marker(node, base, complete),
        );
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::File::create(&to).map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// The staged data of `node` is safe elsewhere (uploaded): forget it.
    pub fn unmark(&self, node: i64, base: u64) {
        for complete in [false, true] {
            self.drop_marker(node, base, complete);
        }
    }

    /// `unmark` when the caller knows which marker `node` has.
    pub fn drop_marker(&self, node: i64, base: u64, complete: bool) {
        let _ = std::fs::remove_file(self.marker(node, base, complete));
    }

    pub fn remove(&self, node: i64, base: u64) {
        self.unmark(node, base);
        self.forget(node);
    }

    /// Removes the data file of `node` and what it held (its marker gone).
    pub fn forget(&self, node: i64) {
        let _ = std::fs::remove_file(self.data_path(node));
        self.clear_parts(node);
    }

    /// Hands the staged data of `from` to `to` (a conflict copy made at
    /// version `to_base`), whole. A crash half-way leaves it with `from`,
    /// or with `to`, never with neither.
    pub fn adopt(&self, from: i64, from_base: u64, to: i64, to_base: u64) -> std::io::Result<()> {
        std::fs::File::create(self.marker(to, to_base, true))?;
        // A copy first: the data file never goes anywhere without it.
        if let Some(parts) = self.load_parts(from)? {
            self.save_parts(to, &parts)?;
        }
        std::fs::rename(self.data_path(from), self.data_path(to))?;
        self.clear_parts(from);
        self.unmark(from, from_base);
        Ok(())
    }

    /// Moves staged data out of the way, to `CACHE_DIR/recovered`, and
    /// returns where it went. A marker left behind by a crash is removed
    /// by the next `leftovers`.
    pub fn set_aside(&self, node: i64, base: Option<u64>) -> std::io::Result<PathBuf> {
        let dest = self.recovered.join(format!(
            "{node}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.f")
        ));
        std::fs::rename(self.data_path(node), &dest)?;
        self.clear_parts(node);
        if let Some(base) = base {
            self.unmark(node, base);
        }
        Ok(dest)
    }

    /// Staged files an earlier mount left behind; data files without a
    /// marker were never changed, and markers without data are stale: both
    /// are removed.
    pub fn leftovers(&self) -> std::io::Result<Vec<Leftover>> {
        let mut data = Vec::new();
        let mut markers: HashMap<i64, (Option<u64>, bool, Option<NewFile>)> = HashMap::new();
        let mut marker_paths = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            match parse(name) {
                Some(Entry::Data(node)) => data.push(node),
                Some(Entry::Marker {
                    node,
                    base,
                    complete,
                }) => {
                    // A "done" marker wins: the writer finished.
                    let new = std::fs::read(&path)
                        .ok()
                        .and_then(|raw| serde_json::from_slice(&raw).ok());
                    let m = markers.entry(node).or_insert((base, complete, None));
                    if complete {
                        *m = (base, true, None);
                    }
                    m.2 = m.2.take().or(new);
                    marker_paths.push((node, path));
                }
                None => {}
            }
        }
        for (node, path) in marker_paths {
            if !data.contains(&node) {
                let _ = std::fs::remove_file(path);
            }
        }
        let mut out = Vec::new();
        for node in data {
            match markers.get(&node) {
                Some((base, complete, new)) => out.push(Leftover {
                    node,
                    base: *base,
                    complete: *complete,
                    new: new.clone(),
                }),
                None => self.forget(node),
            }
        }
        Ok(out)
    }
}

/// Disk space the staged files take (sparse files count what they hold),
/// summed at each scrape: writes to staged files go around this module.
fn record_staged_bytes(dir: &Path) {
    let bytes: u64 = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            matches!(
                parse(&e.file_name().to_string_lossy()),
                Some(Entry::Data(_))
            )
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum();
    metrics::gauge!(crate::metrics::STAGING_BYTES).set(bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_say_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path()).unwrap();
        for node in [1, 2, 3, 4] {
            std::fs::write(area.data_path(node), b"x").unwrap();
        }
        area.mark(1, 7, false).unwrap();
        area.mark(2, 9, false).unwrap();
        area.mark(2, 9, true).unwrap();
        // A marker of an older mount: no base.
        std::fs::write(dir.path().join("staging/4.done"), b"").unwrap();
        area.mark(5, 1, true).unwrap();
        let mut left: Vec<(i64, Option<u64>, bool)> = area
            .leftovers()
            .unwrap()
            .iter()
            .map(|l| (l.node, l.base, l.complete))
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![(1, Some(7), false), (2, Some(9), true), (4, None, true)]
        );
        assert!(!area.data_path(3).exists(), "unmarked data was never dirty");
        assert!(!area.marker(5, 1, true).exists(), "a marker without data");
        let kept = area.set_aside(1, Some(7)).unwrap();
        assert_eq!(std::fs::read(kept).unwrap(), b"x");
        area.adopt(2, 9, 6, 1).unwrap();
        let left: Vec<(i64, Option<u64>, bool)> = area
            .leftovers()
            .unwrap()
            .iter()
            .filter(|l| l.node != 4)
            .map(|l| (l.node, l.base, l.complete))
            .collect();
        assert_eq!(left, vec![(6, Some(1), true)]);
        area.remove(6, 1);
        area.set_aside(4, None).unwrap();
        assert!(area.leftovers().unwrap().is_empty());
    }

    #[test]
    fn a_new_staging_file_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path()).unwrap();
        std::fs::write(area.data_path(1), b"stale").unwrap();
        area.save_parts(1, &Parts::default()).unwrap();
        let file = area.create(1).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 0);
        assert_eq!(area.load_parts(1).unwrap(), None, "the stale parts went");
        // Made afresh, not reopened: a second create finds it there.
        assert_eq!(area.create(1).unwrap().metadata().unwrap().len(), 0);
    }
}
