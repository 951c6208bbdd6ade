//! A `Backend` held in memory: a namespace with the metadata server's
//! rules (names, kinds, rename and remove errors, versions an upload must
//! start from, hard links, extended attributes) and file contents as
//! fragments of stored objects, as the server commits them, every object
//! kept (as the server keeps a replaced version's for its readers). It lets the fs
//! core be driven directly, with no server, providers, FUSE or root (see
//! tests/fs_core.rs). Clones share one namespace, so a test can act as
//! another client beside the core.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::backend::{BResult, Backend};
use super::FsError;
use crate::meta::store::now_ns;
use crate::proto::*;
use crate::transfer::{Committed, OnSealed, PartitionSpan};

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
    /// A file's contents at its version: stored objects, by name.
    fragments: Vec<CommitFragment>,
    /// The entries naming the node (a file's count is its nlink).
    names: BTreeSet<(i64, String)>,
    xattrs: BTreeMap<String, Vec<u8>>,
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
                default_acl: false,
                dir_change: None,
                layout: None,
            },
            children: BTreeMap::new(),
            fragments: Vec::new(),
            names: BTreeSet::new(),
            xattrs: BTreeMap::new(),
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
    fn layout(&self, id: i64) -> BResult<FileLayout> {
        let n = self.node(id)?;
        if n.attr.kind != NodeKind::File {
            return Err(FsError::Invalid("not a file".into()));
        }
        let size = n.attr.size;
        let fragments = n
            .fragments
            .iter()
            .map(|f| {
                let plain = self.objects.get(&f.object).map_or(0, |d| d.len() as u64);
                FragmentLayout {
                    offset: f.offset,
                    length: f.length,
                    key: None,
                    object: ObjectLayout {
                        sha1: f.object.clone(),
                        scheme: StoreScheme::Inline,
                        plain_size: plain,
                        stored_size: plain,
                        partition_size: PARTITION,
                        k: 1,
                        m: 0,
                        data: None,
                        partitions: (0..plain.div_ceil(PARTITION))
                            .map(|index| PartitionLayout {
                                index,
                                size: (plain - index * PARTITION).min(PARTITION),
                                k: 1,
                                m: 0,
                                shards: Vec::new(),
                            })
                            .collect(),
                        grants: Default::default(),
                    },
                }
            })
            .collect();
        Ok(FileLayout {
            size,
            ver_no: n.attr.ver_no,
            fragments,
        })
    }

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

    /// A directory's entries changed: its mtime moves forward, as the
    /// server's does.
    fn touch(&mut self, dir: i64) -> BResult<DirChange> {
        let d = &mut self.node_mut(dir)?.attr;
        let before = d.mtime_ns;
        d.mtime_ns = now_ns().max(before + 1);
        d.ctime_ns = d.mtime_ns;
        Ok(DirChange {
            dir,
            before,
            after: d.mtime_ns,
        })
    }

    /// Sets the entry `(parent, name)` to `id`, and `id`'s name to it.
    fn link(&mut self, parent: i64, name: &str, id: i64) -> BResult<()> {
        self.touch(parent)?;
        self.node_mut(parent)?.children.insert(name.to_string(), id);
        let n = self.node_mut(id)?;
        n.names.insert((parent, name.to_string()));
        n.attr.parent = parent;
        n.attr.name = name.to_string();
        n.attr.ctime_ns = now_ns();
        n.count_links();
        Ok(())
    }

    /// The entry `(parent, name)` goes from node `id`'s names (the entry
    /// itself is replaced or removed by the caller).
    fn forget_name(&mut self, parent: i64, name: &str, id: i64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.names.remove(&(parent, name.to_string()));
            if let Some((p, nm)) = n.names.first().cloned() {
                n.attr.parent = p;
                n.attr.name = nm;
            }
            n.count_links();
        }
    }

    /// Removes the entry `(parent, name)` of node `id`; the node goes with
    /// its last name.
    fn unlink(&mut self, parent: i64, name: &str, id: i64) -> BResult<()> {
        self.touch(parent)?;
        self.node_mut(parent)?.children.remove(name);
        self.forget_name(parent, name, id);
        if self.node(id)?.names.is_empty() {
            self.drop_node(id);
        } else {
            self.node_mut(id)?.attr.ctime_ns = now_ns();
        }
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
            self.forget_name(r.parent, &r.name, from);
            self.forget_name(r.new_parent, &r.new_name, to);
            self.link(r.parent, &r.name, to)?;
            return self.link(r.new_parent, &r.new_name, from);
        }
        if to == Some(from) {
            // Two names of one file: rename does nothing.
            return Ok(());
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
            self.unlink(r.new_parent, &r.new_name, to)?;
        }
        self.node_mut(r.parent)?.children.remove(&r.name);
        self.forget_name(r.parent, &r.name, from);
        self.link(r.new_parent, &r.new_name, from)
    }

    fn remove(&mut self, r: &RemoveRequest) -> BResult<DirChange> {
        let before = self.node(r.parent)?.attr.mtime_ns;
        let id = self.child(r.parent, &r.name)?;
        let n = self.node(id)?;
        match (r.dir, n.attr.kind == NodeKind::Dir) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) if !n.children.is_empty() => return Err(FsError::NotEmpty),
            _ => {}
        }
        self.unlink(r.parent, &r.name, id)?;
        Ok(DirChange {
            dir: r.parent,
            before,
            after: self.node(r.parent)?.attr.mtime_ns,
        })
    }

    /// Stores `data` as a new object; returns its name.
    fn store(&mut self, data: Vec<u8>) -> String {
        let object = format!("object-{}", self.next_object);
        self.next_object += 1;
        self.objects.insert(object.clone(), Arc::new(data));
        object
    }

    /// What the server's commit does: `fragments` (stored objects, each
    /// at least as long as its fragment) the file's content at a new
    /// version, if it is still at `base`.
    fn commit(
        &mut self,
        id: i64,
        size: u64,
        fragments: Vec<CommitFragment>,
        attrs: &FileAttrs,
        base: Option<u64>,
    ) -> BResult<u64> {
        if self.node(id)?.attr.kind != NodeKind::File {
            return Err(FsError::IsDir);
        }
        for f in &fragments {
            let data = self.objects.get(&f.object).ok_or(FsError::NotFound)?;
            if f.length > data.len() as u64 {
                return Err(FsError::Invalid(format!(
                    "object {} holds fewer than {} bytes",
                    f.object, f.length
                )));
            }
        }
        let n = self.node_mut(id)?;
        if base.is_some_and(|b| b != n.attr.ver_no) {
            return Err(FsError::Conflict);
        }
        n.attr.ver_no += 1;
        n.attr.size = size;
        n.attr.mode = attrs.mode.map_or(n.attr.mode, |m| m & 0o7777);
        n.attr.mtime_ns = attrs.mtime_ns.unwrap_or_else(now_ns);
        n.attr.ctime_ns = now_ns();
        n.fragments = fragments;
        Ok(n.attr.ver_no)
    }
}

impl Node {
    /// After a change of its xattrs: a new ctime, and whether it has a
    /// default ACL.
    fn xattrs_changed(&mut self) {
        self.attr.default_acl = self.xattrs.contains_key(crate::meta::acl::DEFAULT);
        self.attr.ctime_ns = now_ns();
    }

    /// A file's nlink is its count of names (a directory's is computed).
    fn count_links(&mut self) {
        if self.attr.kind != NodeKind::Dir {
            self.attr.nlink = self.names.len() as u32;
        }
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
        self.with(|t| {
            let n = t.node(t.child(parent, name)?)?;
            // As the server does: a small file's layout comes along.
            let small = n.attr.kind == NodeKind::File && n.attr.size <= crate::codec::INLINE_MAX;
            Ok(NodeAttr {
                layout: small
                    .then(|| t.layout(n.attr.id))
                    .transpose()?
                    .map(Box::new),
                ..n.attr.clone()
            })
        })
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
            let id = match req.id {
                // Reserved: below next_id, and not in use.
                Some(id) if id < t.next_id && !t.nodes.contains_key(&id) => id,
                Some(id) => return Err(FsError::Invalid(format!("node id {id} is not free"))),
                None => {
                    t.next_id += 1;
                    t.next_id - 1
                }
            };
            let now = now_ns();
            let attr = NodeAttr {
                id,
                parent: req.parent,
                name: req.name.clone(),
                kind: req.kind,
                size: req.target.as_ref().map_or(0, |s| s.len() as u64),
                // As a server that predates `umask` (and ACL inheritance):
                // the mode as asked, which the core has masked.
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
                default_acl: false,
                dir_change: None,
                layout: None,
            };
            let node = Node {
                attr: attr.clone(),
                children: BTreeMap::new(),
                fragments: Vec::new(),
                names: BTreeSet::new(),
                xattrs: BTreeMap::new(),
            };
            t.nodes.insert(id, node);
            let before = t.node(req.parent)?.attr.mtime_ns;
            t.link(req.parent, &req.name, id)?;
            let change = DirChange {
                dir: req.parent,
                before,
                after: t.node(req.parent)?.attr.mtime_ns,
            };
            Ok(NodeAttr {
                dir_change: Some(change),
                ..t.node(id)?.attr.clone()
            })
        })
    }

    async fn reserve_ids(&self, count: u32) -> BResult<IdRange> {
        self.with(|t| {
            let low = t.next_id;
            t.next_id += i64::from(count);
            Ok(IdRange {
                low,
                high: t.next_id - 1,
            })
        })
    }

    async fn remove(&self, req: RemoveRequest) -> BResult<DirChange> {
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

    async fn link(&self, req: LinkRequest) -> BResult<NodeAttr> {
        self.with(|t| {
            if req.new_name.len() > crate::meta::path::MAX_NAME {
                return Err(FsError::NameTooLong);
            }
            if t.node(req.id)?.attr.kind == NodeKind::Dir {
                return Err(FsError::NotPermitted);
            }
            if t.dir(req.new_parent)?.children.contains_key(&req.new_name) {
                return Err(FsError::Exists);
            }
            t.link(req.new_parent, &req.new_name, req.id)?;
            Ok(t.node(req.id)?.attr.clone())
        })
    }

    async fn xattr(&self, id: i64, name: &str) -> BResult<Vec<u8>> {
        self.with(|t| t.node(id)?.xattrs.get(name).cloned().ok_or(FsError::NoData))
    }

    async fn xattr_names(&self, id: i64) -> BResult<Vec<String>> {
        self.with(|t| Ok(t.node(id)?.xattrs.keys().cloned().collect()))
    }

    async fn set_xattr(&self, id: i64, name: &str, value: &[u8], how: XattrHow) -> BResult<()> {
        self.with(|t| {
            let n = t.node_mut(id)?;
            let exists = n.xattrs.contains_key(name);
            match how {
                XattrHow::Create if exists => return Err(FsError::Exists),
                XattrHow::Replace if !exists => return Err(FsError::NoData),
                _ => {}
            }
            n.xattrs.insert(name.to_string(), value.to_vec());
            n.xattrs_changed();
            Ok(())
        })
    }

    async fn remove_xattr(&self, id: i64, name: &str) -> BResult<()> {
        self.with(|t| {
            let n = t.node_mut(id)?;
            n.xattrs.remove(name).ok_or(FsError::NoData)?;
            n.xattrs_changed();
            Ok(())
        })
    }

    async fn partition_size(&self) -> BResult<u64> {
        Ok(PARTITION)
    }

    /// Each span becomes an object of its own, as the real upload stores
    /// a partition.
    async fn upload_partitions(
        &self,
        _name: &str,
        staged: Arc<std::fs::File>,
        spans: &[PartitionSpan],
        on_sealed: OnSealed<'_>,
    ) -> BResult<Vec<CommitFragment>> {
        let mut out = Vec::with_capacity(spans.len());
        for span in spans {
            let mut data = vec![0u8; span.len as usize];
            staged.read_exact_at(&mut data, span.offset)?;
            on_sealed(span.offset, &Bytes::copy_from_slice(&data));
            let object = self.with(|t| Ok(t.store(data)))?;
            out.push(CommitFragment {
                offset: span.offset,
                length: span.len,
                object,
                key: None,
            });
        }
        Ok(out)
    }

    async fn commit(&self, _name: &str, req: CommitRequest) -> BResult<u64> {
        let id = req.node.ok_or(FsError::NotFound)?;
        self.with(|t| t.commit(id, req.size, req.fragments, &req.attrs, req.base_ver))
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
        self.with(|t| t.layout(id))
    }

    async fn read_partition(&self, frag: &FragmentLayout, index: u64) -> BResult<Bytes> {
        self.with(|t| {
            let data = t
                .objects
                .get(&frag.object.sha1)
                .ok_or_else(|| FsError::Io(format!("no object {}", frag.object.sha1)))?;
            let lo = (index * PARTITION).min(data.len() as u64) as usize;
            let hi = ((index + 1) * PARTITION).min(data.len() as u64) as usize;
            Ok(Bytes::copy_from_slice(&data[lo..hi]))
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
            let size = data.len() as u64;
            let fragments = match size {
                0 => Vec::new(),
                _ => vec![CommitFragment {
                    offset: 0,
                    length: size,
                    object: t.store(data),
                    key: None,
                }],
            };
            t.commit(id, size, fragments, &attrs, Some(base))
        })
    }

    async fn upload_new(
        &self,
        new: &NewFile,
        name: &str,
        staged: &Path,
        attrs: FileAttrs,
    ) -> BResult<Committed> {
        if new.replace {
            let old = self.lookup(new.parent, &new.name).await;
            if old.is_ok_and(|n| n.kind == NodeKind::File) {
                let req = RemoveRequest {
                    parent: new.parent,
                    name: new.name.clone(),
                    dir: false,
                };
                self.remove(req).await?;
            }
        }
        let made = self
            .make(MakeRequest {
                id: Some(new.id),
                parent: new.parent,
                name: new.name.clone(),
                kind: NodeKind::File,
                mode: new.mode,
                uid: new.uid,
                gid: new.gid,
                umask: new.umask,
                target: None,
                rdev: 0,
            })
            .await?;
        let ver_no = self
            .upload(made.id, name, staged, attrs, made.ver_no)
            .await?;
        Ok(Committed {
            ver_no,
            dir_change: made.dir_change,
        })
    }
}
