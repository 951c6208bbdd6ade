//! A `Backend` held in memory: a namespace with the metadata server's
//! rules (names, kinds, rename and remove errors, versions an upload must
//! start from) and file contents as whole byte strings, every version's
//! kept (as the server keeps a replaced one for its readers). It lets the fs
//! core be driven directly, with no server, providers, FUSE or root (see
//! tests/fs_core.rs). Clones share one namespace, so a test can act as
//! another client beside the core.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::backend::{BResult, Backend};
use super::FsError;
use crate::meta::store::now_ns;
use crate::proto::*;

/// Bytes per partition of a file's layout: small, so that reads span
/// several partitions.
const PARTITION: u64 = 64 << 10;
const ROOT: i64 = 1;

#[derive(Clone)]
pub struct MemoryBackend {
    tree: Arc<Mutex<Tree>>,
}

struct Node {
    attr: NodeAttr,
    /// A directory's entries.
    children: BTreeMap<String, i64>,
    /// A file's contents at its version, by object name.
    object: Option<String>,
}

struct Tree {
    nodes: HashMap<i64, Node>,
    objects: HashMap<String, Arc<Vec<u8>>>,
    next_id: i64,
    next_object: u64,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        let root = Node {
            attr: NodeAttr {
                id: ROOT,
                parent: 0,
                name: String::new(),
                kind: NodeKind::Dir,
                size: 0,
                mode: 0o755,
                uid: 0,
                gid: 0,
                atime_ns: 0,
                mtime_ns: 0,
                ctime_ns: 0,
                ver_no: 0,
                target: None,
                nlink: 0,
                rdev: 0,
            },
            children: BTreeMap::new(),
            object: None,
        };
        MemoryBackend {
            tree: Arc::new(Mutex::new(Tree {
                nodes: HashMap::from([(ROOT, root)]),
                objects: HashMap::new(),
                next_id: ROOT + 1,
                next_object: 0,
            })),
        }
    }
}

impl Tree {
    fn node(&self, id: i64) -> BResult<&Node> {
        self.nodes.get(&id).ok_or(FsError::NotFound)
    }

    fn node_mut(&mut self, id: i64) -> BResult<&mut Node> {
        self.nodes.get_mut(&id).ok_or(FsError::NotFound)
    }

    fn dir(&self, id: i64) -> BResult<&Node> {
        let n = self.node(id)?;
        if n.attr.kind != NodeKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(n)
    }

    fn child(&self, parent: i64, name: &str) -> BResult<i64> {
        self.dir(parent)?
            .children
            .get(name)
            .copied()
            .ok_or(FsError::NotFound)
    }

    /// Whether `id` is `ancestor` or below it.
    fn is_within(&self, mut id: i64, ancestor: i64) -> bool {
        while id != 0 {
            if id == ancestor {
                return true;
            }
            id = self.nodes.get(&id).map_or(0, |n| n.attr.parent);
        }
        false
    }

    /// Takes node `id` and everything below it out of the namespace.
    fn drop_node(&mut self, id: i64) {
        if let Some(n) = self.nodes.remove(&id) {
            for child in n.children.into_values() {
                self.drop_node(child);
            }
        }
    }

    /// Sets the entry `(parent, name)` to `id`, and `id`'s name to it.
    fn link(&mut self, parent: i64, name: &str, id: i64) -> BResult<()> {
        self.node_mut(parent)?.children.insert(name.to_string(), id);
        let n = self.node_mut(id)?;
        n.attr.parent = parent;
        n.attr.name = name.to_string();
        n.attr.ctime_ns = now_ns();
        Ok(())
    }

    fn rename(&mut self, r: &RenameRequest) -> BResult<()> {
        let from = self.child(r.parent, &r.name)?;
        self.dir(r.new_parent)?;
        if r.parent == r.new_parent && r.name == r.new_name {
            return Ok(());
        }
        if self.is_within(r.new_parent, from) {
            return Err(FsError::Invalid(
                "a directory cannot move into itself".into(),
            ));
        }
        let to = self.child(r.new_parent, &r.new_name).ok();
        if r.exchange {
            let to = to.ok_or(FsError::NotFound)?;
            if self.is_within(r.parent, to) {
                return Err(FsError::Invalid(
                    "a directory cannot move into itself".into(),
                ));
            }
            self.link(r.parent, &r.name, to)?;
            return self.link(r.new_parent, &r.new_name, from);
        }
        if let Some(to) = to {
            if r.noreplace {
                return Err(FsError::Exists);
            }
            let (src, dst) = (self.node(from)?, self.node(to)?);
            match (
                src.attr.kind == NodeKind::Dir,
                dst.attr.kind == NodeKind::Dir,
            ) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !dst.children.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            self.drop_node(to);
        }
        self.node_mut(r.parent)?.children.remove(&r.name);
        self.link(r.new_parent, &r.new_name, from)
    }

    fn remove(&mut self, r: &RemoveRequest) -> BResult<()> {
        let id = self.child(r.parent, &r.name)?;
        let n = self.node(id)?;
        match (r.dir, n.attr.kind == NodeKind::Dir) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) if !n.children.is_empty() => return Err(FsError::NotEmpty),
            _ => {}
        }
        self.node_mut(r.parent)?.children.remove(&r.name);
        self.drop_node(id);
        Ok(())
    }
}

impl MemoryBackend {
    fn with<T>(&self, f: impl FnOnce(&mut Tree) -> BResult<T>) -> BResult<T> {
        f(&mut self.tree.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Backend for MemoryBackend {
    async fn root(&self) -> BResult<NodeAttr> {
        self.getattr(ROOT).await
    }

    async fn getattr(&self, id: i64) -> BResult<NodeAttr> {
        self.with(|t| Ok(t.node(id)?.attr.clone()))
    }

    async fn lookup(&self, parent: i64, name: &str) -> BResult<NodeAttr> {
        self.with(|t| Ok(t.node(t.child(parent, name)?)?.attr.clone()))
    }

    async fn children(&self, id: i64) -> BResult<Vec<NodeAttr>> {
        self.with(|t| {
            t.dir(id)?
                .children
                .values()
                .map(|&c| Ok(t.node(c)?.attr.clone()))
                .collect()
        })
    }

    async fn make(&self, req: MakeRequest) -> BResult<NodeAttr> {
        self.with(|t| {
            if req.name.len() > crate::meta::path::MAX_NAME {
                return Err(FsError::NameTooLong);
            }
            if t.dir(req.parent)?.children.contains_key(&req.name) {
                return Err(FsError::Exists);
            }
            let id = t.next_id;
            t.next_id += 1;
            let now = now_ns();
            let attr = NodeAttr {
                id,
                parent: req.parent,
                name: req.name.clone(),
                kind: req.kind,
                size: req.target.as_ref().map_or(0, |s| s.len() as u64),
                mode: req.mode & 0o7777,
                uid: req.uid,
                gid: req.gid,
                atime_ns: now,
                mtime_ns: now,
                ctime_ns: now,
                ver_no: 1,
                target: req.target,
                nlink: 0,
                rdev: req.rdev,
            };
            let node = Node {
                attr: attr.clone(),
                children: BTreeMap::new(),
                object: None,
            };
            t.nodes.insert(id, node);
            t.link(req.parent, &req.name, id)?;
            Ok(attr)
        })
    }

    async fn remove(&self, req: RemoveRequest) -> BResult<()> {
        self.with(|t| t.remove(&req))
    }

    async fn rename(&self, req: RenameRequest) -> BResult<()> {
        self.with(|t| t.rename(&req))
    }

    async fn setattr(&self, req: SetAttrRequest) -> BResult<NodeAttr> {
        self.with(|t| {
            let a = &mut t.node_mut(req.id)?.attr;
            let s = req.attrs;
            a.mode = s.mode.map_or(a.mode, |m| m & 0o7777);
            a.uid = s.uid.unwrap_or(a.uid);
            a.gid = s.gid.unwrap_or(a.gid);
            a.atime_ns = s.atime_ns.unwrap_or(a.atime_ns);
            a.mtime_ns = s.mtime_ns.unwrap_or(a.mtime_ns);
            a.ctime_ns = now_ns();
            Ok(a.clone())
        })
    }

    async fn statfs(&self) -> BResult<FsStats> {
        self.with(|t| {
            Ok(FsStats {
                capacity: 1 << 40,
                used: t.nodes.values().map(|n| n.attr.size).sum(),
                files: t.nodes.len() as u64,
            })
        })
    }

    async fn layout(&self, id: i64) -> BResult<FileLayout> {
        self.with(|t| {
            let n = t.node(id)?;
            if n.attr.kind != NodeKind::File {
                return Err(FsError::Invalid("not a file".into()));
            }
            let size = n.attr.size;
            let fragments = match &n.object {
                Some(sha1) if size > 0 => vec![FragmentLayout {
                    offset: 0,
                    length: size,
                    key: None,
                    object: ObjectLayout {
                        sha1: sha1.clone(),
                        scheme: StoreScheme::Inline,
                        plain_size: size,
                        stored_size: size,
                        partition_size: PARTITION,
                        k: 1,
                        m: 0,
                        data: None,
                        partitions: (0..size.div_ceil(PARTITION))
                            .map(|index| PartitionLayout {
                                index,
                                size: (size - index * PARTITION).min(PARTITION),
                                k: 1,
                                m: 0,
                                shards: Vec::new(),
                            })
                            .collect(),
                        grants: Default::default(),
                    },
                }],
                _ => Vec::new(),
            };
            Ok(FileLayout {
                size,
                ver_no: n.attr.ver_no,
                fragments,
            })
        })
    }

    async fn read_partition(&self, frag: &FragmentLayout, index: u64) -> BResult<Vec<u8>> {
        self.with(|t| {
            let data = t
                .objects
                .get(&frag.object.sha1)
                .ok_or_else(|| FsError::Io(format!("no object {}", frag.object.sha1)))?;
            let lo = (index * PARTITION).min(data.len() as u64) as usize;
            let hi = ((index + 1) * PARTITION).min(data.len() as u64) as usize;
            Ok(data[lo..hi].to_vec())
        })
    }

    async fn upload(
        &self,
        id: i64,
        _name: &str,
        staged: &Path,
        attrs: FileAttrs,
        base: u64,
    ) -> BResult<u64> {
        let data = std::fs::read(staged)?;
        self.with(|t| {
            let object = format!("object-{}", t.next_object);
            let n = t.node_mut(id)?;
            if n.attr.ver_no != base {
                return Err(FsError::Conflict);
            }
            n.attr.ver_no += 1;
            n.attr.size = data.len() as u64;
            n.attr.mtime_ns = attrs.mtime_ns.unwrap_or_else(now_ns);
            n.attr.ctime_ns = now_ns();
            n.object = Some(object.clone());
            let ver = n.attr.ver_no;
            t.next_object += 1;
            t.objects.insert(object, Arc::new(data));
            Ok(ver)
        })
    }
}
