//! The drive's view of the namespace: operations by node id with POSIX
//! meaning (modes, owners, nanosecond times, symlinks, rename over an
//! existing entry, exchange). A submodule of `db`, sharing its connection.
//! TFS's path rules (256-byte paths, 8 levels) bind the REST API, not the
//! drive; names still follow the 246-byte rule.

use super::sql::{params, Conn};
use super::{
    node_of, now_ns, object_at, sql_id, unix_now, xattrs, Db, DbError, DbResult, FragmentRow, Kind,
    Limits, NewObject, Node, Ns, ENTRY_COLS, NODE_COLS, OBJECT_COLS,
};
use crate::meta::path::{TfsPath, MAX_DEPTH, MAX_NAME};
use crate::proto::{CommitFragment, DirChange, FileAttrs, NewFile, SetAttrs};

/// A name as the drive may use it.
fn check_name(name: &str) -> DbResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(DbError::Invalid(format!("{name:?} is not a valid name")));
    }
    if name.len() > MAX_NAME {
        return Err(DbError::NameTooLong);
    }
    Ok(())
}

/// The object a commit makes a file's content.
#[derive(Clone, Copy)]
pub enum CommitObject<'a> {
    Known(i64),
    /// Recorded in the commit's transaction (kept, unreferenced, when the
    /// commit finds the file moved on, as a known one is).
    New(&'a NewObject<'a>),
}

pub(super) fn node_in(conn: &Conn, ns: Ns, id: i64) -> DbResult<Node> {
    conn.query_opt(
        &format!("SELECT {NODE_COLS} FROM nodes WHERE id=?1 AND appid=?2 AND uid=?3"),
        params![id, sql_id(ns.appid), sql_id(ns.uid)],
        node_of,
    )?
    .ok_or(DbError::NotFound)
}

fn dir_in(conn: &Conn, ns: Ns, id: i64) -> DbResult<Node> {
    let n = node_in(conn, ns, id)?;
    if n.kind != Kind::Dir {
        return Err(DbError::NotDir);
    }
    Ok(n)
}

fn delete_node(conn: &Conn, id: i64) -> DbResult<()> {
    drop_fragments(conn, id)?;
    conn.execute("DELETE FROM xattrs WHERE node=?1", params![id])?;
    conn.execute("DELETE FROM nodes WHERE id=?1", params![id])?;
    Ok(())
}

fn is_empty_dir(conn: &Conn, id: i64) -> DbResult<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM entries WHERE parent=?1",
        params![id],
        |r| r.get(0),
    )?;
    Ok(n == 0)
}

/// Gives the name (parent, name) another place, whichever table keeps it.
fn move_name(
    conn: &Conn,
    (parent, name): (i64, &str),
    (new_parent, new_name): (i64, &str),
) -> DbResult<()> {
    let moved = |table: &str| {
        conn.execute(
            &format!("UPDATE {table} SET parent=?3, name=?4 WHERE parent=?1 AND name=?2"),
            params![parent, name, new_parent, new_name],
        )
    };
    if moved("links")? == 0 {
        moved("nodes")?;
    }
    Ok(())
}

/// Removes the name by which `node` was found (its `parent` and `name`).
/// The node goes with its last name (its data to the garbage collector);
/// while it has another, the row takes that one over. Returns the
/// parent's new mtime.
fn drop_name(conn: &Conn, node: &Node) -> DbResult<i64> {
    let extra = conn.execute(
        "DELETE FROM links WHERE parent=?1 AND name=?2",
        params![node.parent, &node.name],
    )?;
    if extra == 0 {
        let other: Option<(i64, String)> = conn.query_opt(
            "SELECT parent, name FROM links WHERE node=?1 ORDER BY parent, name LIMIT 1",
            params![node.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        match other {
            Some((parent, name)) => {
                conn.execute(
                    "DELETE FROM links WHERE parent=?1 AND name=?2",
                    params![parent, &name],
                )?;
                conn.execute(
                    "UPDATE nodes SET parent=?1, name=?2 WHERE id=?3",
                    params![parent, &name, node.id],
                )?;
            }
            None => {
                delete_node(conn, node.id)?;
                return touch(conn, node.parent);
            }
        }
    }
    set_ctime(conn, node.id)?;
    touch(conn, node.parent)
}

/// Is `node` equal to `ancestor` or below it?
fn is_within(conn: &Conn, mut node: i64, ancestor: i64) -> DbResult<bool> {
    while node != 0 {
        if node == ancestor {
            return Ok(true);
        }
        node = conn.query_row("SELECT parent FROM nodes WHERE id=?1", params![node], |r| {
            r.get(0)
        })?;
    }
    Ok(false)
}

fn used_bytes(conn: &Conn, ns: Ns) -> DbResult<u64> {
    let bytes: Option<i64> = conn.query_opt(
        "SELECT bytes FROM usage WHERE appid=?1 AND uid=?2",
        params![sql_id(ns.appid), sql_id(ns.uid)],
        |r| r.get(0),
    )?;
    Ok(bytes.unwrap_or(0) as u64)
}

pub(super) fn set_ctime(conn: &Conn, id: i64) -> DbResult<()> {
    conn.execute(
        "UPDATE nodes SET ctime_ns=?1 WHERE id=?2",
        params![now_ns(), id],
    )?;
    Ok(())
}

/// What `make` creates.
pub struct NewNode<'a> {
    /// An id `reserve_ids` gave this namespace; None: the next one.
    pub id: Option<i64>,
    pub kind: Kind,
    pub mode: u32,
    /// Taken from `mode` unless the directory has a default ACL.
    pub umask: u32,
    pub owner: u32,
    pub group: u32,
    pub target: Option<&'a str>,
    /// A device node's device number.
    pub rdev: u32,
}

impl Db {
    pub fn root_node(&self, ns: Ns) -> DbResult<Node> {
        self.read(|conn| root(conn, ns))
    }

    pub fn node(&self, ns: Ns, id: i64) -> DbResult<Node> {
        self.read(|conn| node_in(conn, ns, id))
    }

    pub fn lookup(&self, ns: Ns, parent: i64, name: &str) -> DbResult<Node> {
        if name.len() > MAX_NAME {
            return Err(DbError::NameTooLong);
        }
        self.read(|conn| {
            dir_in(conn, ns, parent)?;
            child(conn, parent, name)?.ok_or(DbError::NotFound)
        })
    }

    pub fn children(&self, ns: Ns, id: i64) -> DbResult<Vec<Node>> {
        self.read(|conn| {
            dir_in(conn, ns, id)?;
            conn.query_map(
                &format!(
                    "SELECT {ENTRY_COLS} FROM entries e JOIN nodes ON nodes.id = e.node
                     WHERE e.parent=?1 ORDER BY e.name"
                ),
                params![id],
                node_of,
            )
        })
    }

    /// A new node, and the change to its directory.
    pub fn make(
        &self,
        ns: Ns,
        parent: i64,
        name: &str,
        new: &NewNode,
    ) -> DbResult<(Node, DirChange)> {
        check_name(name)?;
        self.tx(|tx| make_in(tx, ns, parent, name, new, self.limits))
    }

    /// Reserves `count` node ids for `ns`, which a mount gives files it
    /// creates on its own (`NewNode::id`); returns the first and last.
    pub fn reserve_ids(&self, ns: Ns, count: u32) -> DbResult<(i64, i64)> {
        self.tx(|tx| {
            let high = tx.reserve_node_ids(i64::from(count))?;
            let low = high - i64::from(count) + 1;
            tx.execute(
                "INSERT INTO id_ranges(appid, uid, low, high) VALUES(?1, ?2, ?3, ?4)",
                params![sql_id(ns.appid), sql_id(ns.uid), low, high],
            )?;
            Ok((low, high))
        })
    }

    /// unlink (`dir` false) or rmdir (`dir` true); returns the change to
    /// the directory.
    pub fn unlink(&self, ns: Ns, parent: i64, name: &str, dir: bool) -> DbResult<DirChange> {
        self.tx(|tx| {
            let before = dir_in(tx, ns, parent)?.mtime_ns();
            let node = child(tx, parent, name)?.ok_or(DbError::NotFound)?;
            match (dir, node.kind == Kind::Dir) {
                (true, false) => return Err(DbError::NotDir),
                (false, true) => return Err(DbError::IsDir),
                (true, true) if !is_empty_dir(tx, node.id)? => return Err(DbError::NotEmpty),
                _ => {}
            }
            let after = drop_name(tx, &node)?;
            Ok(DirChange {
                dir: parent,
                before,
                after,
            })
        })
    }

    /// link(2): `id` gets the name `new_name` in `new_parent` too.
    pub fn link(&self, ns: Ns, id: i64, new_parent: i64, new_name: &str) -> DbResult<Node> {
        check_name(new_name)?;
        self.tx(|tx| {
            let node = node_in(tx, ns, id)?;
            if node.kind == Kind::Dir {
                return Err(DbError::NotPermitted(
                    "a directory cannot have another name".into(),
                ));
            }
            dir_in(tx, ns, new_parent)?;
            if child(tx, new_parent, new_name)?.is_some() {
                return Err(DbError::Exists);
            }
            check_limits(tx, new_parent, node.kind, self.limits)?;
            tx.execute(
                "INSERT INTO links(parent, name, node) VALUES(?1, ?2, ?3)",
                params![new_parent, new_name, id],
            )?;
            set_ctime(tx, id)?;
            touch(tx, new_parent)?;
            Ok(child(tx, new_parent, new_name)?.expect("just inserted"))
        })
    }

    /// rename(2), with RENAME_NOREPLACE and RENAME_EXCHANGE.
    #[allow(clippy::too_many_arguments)]
    pub fn rename_at(
        &self,
        ns: Ns,
        parent: i64,
        name: &str,
        new_parent: i64,
        new_name: &str,
        noreplace: bool,
        exchange: bool,
    ) -> DbResult<()> {
        check_name(new_name)?;
        self.tx(|tx| {
            dir_in(tx, ns, parent)?;
            dir_in(tx, ns, new_parent)?;
            let src = child(tx, parent, name)?.ok_or(DbError::NotFound)?;
            let dst = child(tx, new_parent, new_name)?;
            if src.kind == Kind::Dir && is_within(tx, new_parent, src.id)? {
                return Err(DbError::Invalid(
                    "cannot move a directory into itself".into(),
                ));
            }
            if exchange {
                let dst = dst.ok_or(DbError::NotFound)?;
                if dst.kind == Kind::Dir && is_within(tx, parent, dst.id)? {
                    return Err(DbError::Invalid(
                        "cannot move a directory into itself".into(),
                    ));
                }
                // Park one entry under a name no file can have, then swap.
                let parked = (parent, "/exchange");
                move_name(tx, (parent, name), parked)?;
                move_name(tx, (new_parent, new_name), (parent, name))?;
                move_name(tx, parked, (new_parent, new_name))?;
                for id in [src.id, dst.id] {
                    set_ctime(tx, id)?;
                }
            } else {
                if let Some(dst) = dst {
                    if dst.id == src.id {
                        return Ok(());
                    }
                    if noreplace {
                        return Err(DbError::Exists);
                    }
                    match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
                        (true, false) => return Err(DbError::NotDir),
                        (false, true) => return Err(DbError::IsDir),
                        (true, true) if !is_empty_dir(tx, dst.id)? => {
                            return Err(DbError::NotEmpty)
                        }
                        _ => {}
                    }
                    drop_name(tx, &dst)?;
                } else if parent != new_parent {
                    check_limits(tx, new_parent, src.kind, self.limits)?;
                }
                move_name(tx, (parent, name), (new_parent, new_name))?;
                set_ctime(tx, src.id)?;
            }
            touch(tx, parent)?;
            if new_parent != parent {
                touch(tx, new_parent)?;
            }
            Ok(())
        })
    }

    pub fn set_attrs(&self, ns: Ns, id: i64, a: &SetAttrs) -> DbResult<Node> {
        self.tx(|tx| {
            node_in(tx, ns, id)?;
            if let Some(mode) = a.mode {
                tx.execute(
                    "UPDATE nodes SET mode=?1 WHERE id=?2",
                    params![i64::from(mode & 0o7777), id],
                )?;
                xattrs::chmod_acl(tx, id, mode)?;
            }
            if let Some(owner) = a.uid {
                tx.execute(
                    "UPDATE nodes SET owner=?1 WHERE id=?2",
                    params![i64::from(owner), id],
                )?;
            }
            if let Some(group) = a.gid {
                tx.execute(
                    "UPDATE nodes SET grp=?1 WHERE id=?2",
                    params![i64::from(group), id],
                )?;
            }
            if let Some(at) = a.atime_ns {
                tx.execute("UPDATE nodes SET atime_ns=?1 WHERE id=?2", params![at, id])?;
            }
            if let Some(mt) = a.mtime_ns {
                tx.execute(
                    "UPDATE nodes SET mtime_ns=?1, modify_time=?2 WHERE id=?3",
                    params![mt, mt.div_euclid(1_000_000_000), id],
                )?;
            }
            set_ctime(tx, id)?;
            node_in(tx, ns, id)
        })
    }

    /// Makes an uploaded object the whole content of the file `target`
    /// names, as one new version, if the file is still at `base_ver` (when
    /// given). Returns the new VER_NO (and the change to the directory of
    /// a file it made), or None (and changes nothing but recording a new
    /// object) when the version moved on.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_object(
        &self,
        ns: Ns,
        target: &CommitTarget,
        object: CommitObject,
        size: u64,
        key: Option<&str>,
        attrs: &FileAttrs,
        base_ver: Option<u64>,
    ) -> DbResult<Option<(u64, Option<DirChange>)>> {
        let limits = self.limits;
        self.tx(|tx| {
            let object = match object {
                CommitObject::Known(id) => id,
                CommitObject::New(o) => super::objects::insert_object_in(tx, ns, o)?,
            };
            let Some((node, bump, change)) = commit_target(tx, ns, target, base_ver, limits)?
            else {
                return Ok(None);
            };
            let ver = replace_content(tx, &node, object, size, key, attrs, bump)?;
            Ok(Some((ver, change)))
        })
    }

    /// Makes `fragments` (objects of the namespace named by SHA-1) the
    /// content of the file `target` names, `size` bytes long, as one new
    /// version, if the file is still at `base_ver` (when given). Returns
    /// the new VER_NO (as `commit_object` does), or None (and changes
    /// nothing) when the version moved on. Objects
    /// collected meanwhile fail it with `Missing` (all of them named); one
    /// shorter than its fragment, with `Invalid`. `content_sha1` is the
    /// SHA-1 of the stored bytes, when the writer knows it.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_fragments(
        &self,
        ns: Ns,
        target: &CommitTarget,
        size: u64,
        fragments: &[CommitFragment],
        content_sha1: Option<&str>,
        attrs: &FileAttrs,
        base_ver: Option<u64>,
    ) -> DbResult<Option<(u64, Option<DirChange>)>> {
        let limits = self.limits;
        self.tx(|tx| {
            let Some((node, bump, change)) = commit_target(tx, ns, target, base_ver, limits)?
            else {
                return Ok(None);
            };
            let mut rows = Vec::with_capacity(fragments.len());
            let mut missing = Vec::new();
            for f in fragments {
                let found: Option<(i64, i64)> = tx.query_opt(
                    "SELECT id, plain_size FROM objects WHERE appid=?1 AND uid=?2 AND sha1=?3",
                    params![sql_id(ns.appid), sql_id(ns.uid), f.object],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let Some((object, plain)) = found else {
                    missing.push(f.object.clone());
                    continue;
                };
                if f.length > plain as u64 {
                    return Err(DbError::Invalid(format!(
                        "object {} holds fewer than {} bytes",
                        f.object, f.length
                    )));
                }
                rows.push((f.offset, f.length, object, f.key.as_deref()));
            }
            if !missing.is_empty() {
                missing.sort_unstable();
                missing.dedup();
                return Err(DbError::Missing(missing));
            }
            let ver = replace_fragments(tx, &node, &rows, size, content_sha1, attrs, bump)?;
            Ok(Some((ver, change)))
        })
    }

    /// Stored bytes of the objects named (by SHA-1) that no file uses yet:
    /// what committing them adds to the namespace's usage.
    pub fn unused_bytes(&self, ns: Ns, sha1s: &[&str]) -> DbResult<u64> {
        self.read(|conn| {
            let mut total = 0u64;
            let mut seen = std::collections::HashSet::new();
            for sha1 in sha1s.iter().filter(|s| seen.insert(**s)) {
                let size: Option<i64> = conn.query_opt(
                    "SELECT stored_size FROM objects WHERE appid=?1 AND uid=?2 AND sha1=?3 AND refs=0",
                    params![sql_id(ns.appid), sql_id(ns.uid), sha1],
                    |r| r.get(0),
                )?;
                total += size.unwrap_or(0) as u64;
            }
            Ok(total)
        })
    }

    /// Stored bytes of a namespace, each object counted once.
    pub fn used_bytes(&self, ns: Ns) -> DbResult<u64> {
        self.read(|conn| used_bytes(conn, ns))
    }

    /// Stored bytes and node count of a namespace.
    pub fn usage(&self, ns: Ns) -> DbResult<(u64, u64)> {
        self.read(|conn| {
            let files: i64 = conn.query_row(
                "SELECT COUNT(*) FROM nodes WHERE appid=?1 AND uid=?2",
                params![sql_id(ns.appid), sql_id(ns.uid)],
                |r| r.get(0),
            )?;
            Ok((used_bytes(conn, ns)?, files as u64))
        })
    }
}

/// The namespace by path, as the REST API sees it.
impl Db {
    pub fn stat(&self, ns: Ns, path: &TfsPath) -> DbResult<Node> {
        self.read(|conn| resolve(conn, ns, path)?.ok_or(DbError::NotFound))
    }

    /// A directory's entries: directories first, then files, each by name.
    pub fn list(&self, ns: Ns, path: &TfsPath) -> DbResult<(Node, Vec<Node>)> {
        self.read(|conn| {
            let dir = resolve(conn, ns, path)?.ok_or(DbError::NotFound)?;
            if dir.kind != Kind::Dir {
                return Err(DbError::NotFound);
            }
            let rows = conn.query_map(
                &format!(
                    "SELECT {ENTRY_COLS} FROM entries e JOIN nodes ON nodes.id = e.node
                     WHERE e.parent=?1 ORDER BY kind, e.name"
                ),
                params![dir.id],
                node_of,
            )?;
            Ok((dir, rows))
        })
    }

    pub fn create(&self, ns: Ns, path: &TfsPath, kind: Kind, recursive: bool) -> DbResult<Node> {
        self.tx(|tx| create_in(tx, ns, path, kind, recursive, self.limits))
    }

    pub fn remove(&self, ns: Ns, path: &TfsPath, kind: Kind) -> DbResult<()> {
        if path.is_root() {
            return Err(DbError::Invalid("the root cannot be removed".into()));
        }
        self.tx(|tx| {
            let node = resolve(tx, ns, path)?
                .filter(|n| n.kind == kind)
                .ok_or(DbError::NotFound)?;
            if kind == Kind::Dir && !is_empty_dir(tx, node.id)? {
                return Err(DbError::NotEmpty);
            }
            drop_name(tx, &node).map(drop)
        })
    }

    /// Moves a dir or file. `overwrite` (an extension) replaces an existing
    /// file at the destination, as POSIX rename does.
    pub fn rename(
        &self,
        ns: Ns,
        src: &TfsPath,
        dst: &TfsPath,
        kind: Kind,
        recursive: bool,
        overwrite: bool,
    ) -> DbResult<()> {
        let limits = self.limits;
        if src.is_root() || dst.is_root() {
            return Err(DbError::Invalid("the root cannot be moved".into()));
        }
        if src == dst {
            return Err(DbError::Invalid(
                "source and destination are the same".into(),
            ));
        }
        if kind == Kind::Dir && dst.starts_with(src) {
            return Err(DbError::Forbidden(
                "cannot move a directory into itself".into(),
            ));
        }
        if dst.depth() > MAX_DEPTH {
            return Err(DbError::Forbidden(format!(
                "more than {MAX_DEPTH} levels deep"
            )));
        }
        self.tx(|tx| {
            let node = resolve(tx, ns, src)?
                .filter(|n| n.kind == kind)
                .ok_or(DbError::NotFound)?;
            if kind == Kind::Dir && dst.depth() + subtree_height(tx, node.id)? > MAX_DEPTH {
                return Err(DbError::Forbidden(format!(
                    "the moved tree would be more than {MAX_DEPTH} levels deep"
                )));
            }
            let parent = match resolve(tx, ns, &dst.parent())? {
                Some(p) if p.kind == Kind::Dir => p,
                Some(_) => return Err(DbError::NotFound),
                None if recursive => create_in(tx, ns, &dst.parent(), Kind::Dir, true, limits)?,
                None => return Err(DbError::NotFound),
            };
            let name = dst.name().expect("not root");
            if let Some(existing) = child(tx, parent.id, name)? {
                if !(overwrite && existing.kind == Kind::File && kind == Kind::File) {
                    // The TFS document answers 404 when the destination exists.
                    return Err(DbError::NotFound);
                }
                drop_name(tx, &existing)?;
            } else if parent.id != node.parent {
                check_limits(tx, parent.id, kind, limits)?;
            }
            move_name(tx, (node.parent, &node.name), (parent.id, name))?;
            touch(tx, node.parent)?;
            touch(tx, parent.id)?;
            Ok(())
        })
    }

    /// Records a pwrite: a fragment at `offset` that must not overlap any
    /// existing one. Bumps the version.
    pub fn add_fragment(
        &self,
        ns: Ns,
        path: &TfsPath,
        offset: Option<u64>,
        length: u64,
        object: i64,
    ) -> DbResult<u64> {
        self.tx(|tx| {
            let node = resolve(tx, ns, path)?.filter(|n| n.kind == Kind::File).ok_or(DbError::NotFound)?;
            let offset = offset.unwrap_or(node.size);
            // Offsets are signed 64-bit, in TFS as in SQLite.
            let end = offset
                .checked_add(length)
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| DbError::Invalid("a file must end before byte 2^63".into()))?;
            let overlaps: i64 = tx.query_row(
                "SELECT COUNT(*) FROM fragments WHERE node=?1 AND \"offset\" < ?2 AND \"offset\" + length > ?3",
                params![node.id, end as i64, offset as i64],
                |r| r.get(0),
            )?;
            if overlaps > 0 {
                return Err(DbError::Overlap);
            }
            tx.execute(
                "INSERT INTO fragments(node, \"offset\", length, object, key) VALUES(?1, ?2, ?3, ?4, NULL)",
                params![node.id, offset as i64, length as i64, object],
            )?;
            reference(tx, object)?;
            let size = node.size.max(end);
            tx.execute(
                "UPDATE nodes SET size=?1, ver_no=ver_no+1, modify_time=?2, mtime_ns=NULL, content_sha1=NULL
                 WHERE id=?3",
                params![size as i64, unix_now(), node.id],
            )?;
            Ok(node.ver_no + 1)
        })
    }

    /// The SHA-1 of file `node`'s stored bytes, when its writer gave it.
    pub fn content_sha1(&self, node: i64) -> DbResult<Option<String>> {
        self.read(|conn| {
            Ok(conn
                .query_opt(
                    "SELECT content_sha1 FROM nodes WHERE id=?1",
                    params![node],
                    |r| r.get::<_, Option<String>>(0),
                )?
                .flatten())
        })
    }

    pub fn fragments(&self, node: i64) -> DbResult<Vec<FragmentRow>> {
        let sql = format!(
            "SELECT f.\"offset\", f.length, f.key, {} FROM fragments f JOIN objects o ON o.id = f.object
             WHERE f.node=?1 ORDER BY f.\"offset\"",
            OBJECT_COLS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ")
        );
        self.read(|conn| {
            conn.query_map(&sql, params![node], |r| {
                Ok(FragmentRow {
                    offset: r.get::<_, i64>(0)? as u64,
                    length: r.get::<_, i64>(1)? as u64,
                    key: r.get(2)?,
                    object: object_at(r, 3)?,
                })
            })
        })
    }
}

fn root(conn: &Conn, ns: Ns) -> DbResult<Node> {
    let q =
        format!("SELECT {NODE_COLS} FROM nodes WHERE appid=?1 AND uid=?2 AND parent=0 AND name=''");
    if let Some(n) = conn.query_opt(&q, params![sql_id(ns.appid), sql_id(ns.uid)], node_of)? {
        return Ok(n);
    }
    let now = unix_now();
    // Another server or reader may make it at the same moment.
    conn.execute(
        "INSERT INTO nodes(appid, uid, parent, name, kind, create_time, modify_time) VALUES(?1, ?2, 0, '', 0, ?3, ?3)
         ON CONFLICT DO NOTHING",
        params![sql_id(ns.appid), sql_id(ns.uid), now],
    )?;
    conn.query_row(&q, params![sql_id(ns.appid), sql_id(ns.uid)], node_of)
}

/// Makes the node `new` named `name` in `parent`.
fn make_in(
    tx: &Conn,
    ns: Ns,
    parent: i64,
    name: &str,
    new: &NewNode,
    limits: Limits,
) -> DbResult<(Node, DirChange)> {
    let before = dir_in(tx, ns, parent)?.mtime_ns();
    if child(tx, parent, name)?.is_some() {
        return Err(DbError::Exists);
    }
    if let Some(id) = new.id {
        let reserved: Option<i64> = tx.query_opt(
            "SELECT low FROM id_ranges WHERE appid=?1 AND uid=?2 AND high>=?3 AND low<=?3",
            params![sql_id(ns.appid), sql_id(ns.uid), id],
            |r| r.get(0),
        )?;
        let taken = tx
            .query_opt("SELECT id FROM nodes WHERE id=?1", params![id], |r| {
                r.get::<_, i64>(0)
            })?
            .is_some();
        if reserved.is_none() || taken {
            return Err(DbError::Invalid(format!(
                "node id {id} is not one reserved for this namespace, or is taken"
            )));
        }
    }
    check_limits(tx, parent, new.kind, limits)?;
    let now = now_ns();
    let ver_no = i64::from(new.kind == Kind::File);
    let size = new.target.map_or(0, |t| t.len() as i64);
    // An id given explicitly, or the engine's next one (SQLite's
    // AUTOINCREMENT, PostgreSQL's identity), never NULL for either.
    let (id_col, id_val, given) = match new.id {
        Some(_) => ("id, ", "?15, ", 15),
        None => ("", "", 14),
    };
    let values = params![
        sql_id(ns.appid),
        sql_id(ns.uid),
        parent,
        name,
        new.kind as i64,
        size,
        ver_no,
        now.div_euclid(1_000_000_000),
        i64::from(new.mode & !new.umask & 0o7777),
        now,
        i64::from(new.owner),
        i64::from(new.group),
        new.target,
        i64::from(new.rdev),
        new.id
    ];
    tx.execute(
        &format!(
            "INSERT INTO nodes({id_col}appid, uid, parent, name, kind, size, ver_no, create_time, modify_time,
               mode, mtime_ns, owner, grp, atime_ns, ctime_ns, target, rdev)
             VALUES({id_val}?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?10, ?10, ?13, ?14)"
        ),
        &values[..given],
    )?;
    let after = touch(tx, parent)?;
    let made = child(tx, parent, name)?.expect("just inserted");
    // From the mode as asked: a default ACL takes the umask's place.
    xattrs::inherit_acl(tx, parent, made.id, new.kind, new.mode)?;
    let change = DirChange {
        dir: parent,
        before,
        after,
    };
    Ok((child(tx, parent, name)?.expect("just inserted"), change))
}

/// The file a commit makes a new version of.
#[derive(Debug, Clone)]
pub enum CommitTarget {
    /// An existing file, by id.
    Node(i64),
    /// The file at a path, made (with its parents) if missing.
    Path(TfsPath),
    /// A file the commit makes, under an id the writer reserved; the
    /// node as it is when that id is in use already (the writer's retry of
    /// a commit whose answer it lost). A file at the name is replaced when
    /// `replace` says (as by a rename over it); a name in use otherwise is
    /// `Exists`.
    Create(NewFile),
}

/// What a commit makes a new version of: the file `target` names, how far
/// the commit moves its version, and the change to its directory when the
/// commit made it; None when it is no longer at `base_ver` (when given; a
/// missing file is at none).
type Target = Option<(Node, i64, Option<DirChange>)>;

fn commit_target(
    tx: &Conn,
    ns: Ns,
    target: &CommitTarget,
    base_ver: Option<u64>,
    limits: Limits,
) -> DbResult<Target> {
    let path = match target {
        CommitTarget::Node(id) => return Ok(file_at(tx, ns, *id, base_ver)?.map(|n| (n, 1, None))),
        CommitTarget::Create(f) => {
            // Any error but NotFound ends the transaction: on PostgreSQL a
            // failed statement (a serialization conflict, to be retried)
            // aborts it, and what follows would fail for that.
            match node_in(tx, ns, f.id) {
                Ok(n) => return Ok(file_at(tx, ns, n.id, None)?.map(|n| (n, 1, None))),
                Err(DbError::NotFound) => {}
                Err(e) => return Err(e),
            }
            check_name(&f.name)?;
            dir_in(tx, ns, f.parent)?;
            match child(tx, f.parent, &f.name)? {
                Some(old) if f.replace && old.kind == Kind::File => {
                    drop_name(tx, &old)?;
                }
                Some(_) => return Err(DbError::Exists),
                None => {}
            }
            let new = NewNode {
                id: Some(f.id),
                kind: Kind::File,
                mode: f.mode,
                umask: f.umask,
                owner: f.uid,
                group: f.gid,
                target: None,
                rdev: 0,
            };
            let (node, change) = make_in(tx, ns, f.parent, &f.name, &new, limits)?;
            return Ok(Some((node, 0, Some(change))));
        }
        CommitTarget::Path(path) => path,
    };
    let found = resolve(tx, ns, path)?;
    if base_ver.is_some() && base_ver != found.as_ref().map(|n| n.ver_no) {
        return Ok(None);
    }
    // A file made by this commit starts at version 1; an existing one gets
    // the next version.
    Ok(Some(match found {
        Some(n) if n.kind == Kind::File => (n, 1, None),
        Some(_) => return Err(DbError::Exists),
        None => (create_in(tx, ns, path, Kind::File, true, limits)?, 0, None),
    }))
}

fn file_at(conn: &Conn, ns: Ns, id: i64, base_ver: Option<u64>) -> DbResult<Option<Node>> {
    let node = node_in(conn, ns, id)?;
    if node.kind != Kind::File {
        return Err(DbError::IsDir);
    }
    Ok(base_ver.is_none_or(|v| v == node.ver_no).then_some(node))
}

fn child(conn: &Conn, parent: i64, name: &str) -> DbResult<Option<Node>> {
    conn.query_opt(
        &format!(
            "SELECT {ENTRY_COLS} FROM entries e JOIN nodes ON nodes.id = e.node
             WHERE e.parent=?1 AND e.name=?2"
        ),
        params![parent, name],
        node_of,
    )
}

pub(super) fn resolve(conn: &Conn, ns: Ns, path: &TfsPath) -> DbResult<Option<Node>> {
    let mut node = root(conn, ns)?;
    for seg in path.segments() {
        if node.kind != Kind::Dir {
            return Ok(None);
        }
        match child(conn, node.id, seg)? {
            Some(n) => node = n,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

/// How many levels lie below a directory (0 when it is empty), counted no
/// further than MAX_DEPTH.
fn subtree_height(conn: &Conn, dir: i64) -> DbResult<usize> {
    let h: i64 = conn.query_row(
        "WITH RECURSIVE sub(id, kind, depth) AS (
           SELECT CAST(?1 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT)
           UNION ALL
           SELECT n.id, n.kind, sub.depth + 1 FROM nodes n JOIN sub ON n.parent = sub.id
           WHERE sub.kind = 0 AND sub.depth < ?2)
         SELECT MAX(depth) FROM sub",
        params![dir, MAX_DEPTH as i64],
        |r| r.get(0),
    )?;
    Ok(h as usize)
}

/// A fragment now uses `object`: an object's first user makes its bytes
/// count in its account's usage (each object once, however many files use it).
pub(super) fn reference(tx: &Conn, object: i64) -> DbResult<()> {
    // The object may have been collected since it was found: then the
    // caller's upload fails rather than point at nothing.
    if tx.execute(
        "UPDATE objects SET refs = refs + 1 WHERE id=?1",
        params![object],
    )? == 0
    {
        return Err(DbError::NotFound);
    }
    tx.execute(
        "INSERT INTO usage(appid, uid, bytes) SELECT appid, uid, stored_size FROM objects WHERE id=?1 AND refs=1
         ON CONFLICT(appid, uid) DO UPDATE SET bytes = usage.bytes + excluded.bytes",
        params![object],
    )?;
    Ok(())
}

/// Deletes a node's fragments; an object no fragment uses stops counting.
pub(super) fn drop_fragments(tx: &Conn, node: i64) -> DbResult<()> {
    let objects: Vec<i64> = tx.query_map(
        "SELECT object FROM fragments WHERE node=?1",
        params![node],
        |r| r.get(0),
    )?;
    tx.execute("DELETE FROM fragments WHERE node=?1", params![node])?;
    for object in objects {
        release(tx, object)?;
    }
    Ok(())
}

/// One user of `object` is gone; the last one takes its bytes out of the
/// account's usage and leaves it to the garbage collector.
pub(super) fn release(tx: &Conn, object: i64) -> DbResult<()> {
    tx.execute(
        "UPDATE objects SET refs = refs - 1, released = CASE WHEN refs = 1 THEN ?2 ELSE released END WHERE id=?1",
        params![object, unix_now()],
    )?;
    tx.execute(
        "UPDATE usage SET bytes = bytes - (SELECT stored_size FROM objects WHERE id=?1)
         WHERE (appid, uid) = (SELECT appid, uid FROM objects WHERE id=?1 AND refs=0)",
        params![object],
    )?;
    Ok(())
}

/// Makes `object` the whole content of a file: one fragment, version
/// bumped by `bump`, times and mode from the upload.
fn replace_content(
    tx: &Conn,
    node: &Node,
    object: i64,
    size: u64,
    key: Option<&str>,
    attrs: &FileAttrs,
    bump: i64,
) -> DbResult<u64> {
    let whole = [(0, size, object, key)];
    let fragments = if size > 0 { &whole[..] } else { &[] };
    // One object: its own SHA-1 is the file's.
    replace_fragments(tx, node, fragments, size, None, attrs, bump)
}

/// Makes `fragments` (offset, length, object, wrapped key) the content of
/// file `node`, `size` bytes long, whose stored bytes hash to
/// `content_sha1` (when known), as its version + `bump`.
fn replace_fragments(
    tx: &Conn,
    node: &Node,
    fragments: &[(u64, u64, i64, Option<&str>)],
    size: u64,
    content_sha1: Option<&str>,
    attrs: &FileAttrs,
    bump: i64,
) -> DbResult<u64> {
    drop_fragments(tx, node.id)?;
    for &(offset, length, object, key) in fragments {
        tx.execute(
            "INSERT INTO fragments(node, \"offset\", length, object, key) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![node.id, offset as i64, length as i64, object, key],
        )?;
        reference(tx, object)?;
    }
    let now = now_ns();
    let mtime = attrs.mtime_ns.unwrap_or(now);
    tx.execute(
        "UPDATE nodes SET size=?1, ver_no=ver_no+?2, modify_time=?3, mode=COALESCE(?4, mode), mtime_ns=?5,
           ctime_ns=?6, content_sha1=?7 WHERE id=?8",
        params![size as i64, bump, mtime.div_euclid(1_000_000_000), attrs.mode.map(i64::from), mtime, now,
            content_sha1, node.id],
    )?;
    Ok(node.ver_no + bump as u64)
}

/// A directory's entries changed: its modification and change times move.
/// A directory's entries changed: its mtime moves to now, always forward,
/// so that a client that listed it sees any change (`DirChange`). Returns
/// the new mtime.
pub(super) fn touch(conn: &Conn, id: i64) -> DbResult<i64> {
    let old: Option<i64> = conn.query_opt(
        "SELECT COALESCE(mtime_ns, modify_time * 1000000000) FROM nodes WHERE id=?1",
        params![id],
        |r| r.get(0),
    )?;
    let now = now_ns().max(old.map_or(0, |t| t.saturating_add(1)));
    conn.execute(
        "UPDATE nodes SET modify_time=?1, mtime_ns=?2, ctime_ns=?2 WHERE id=?3",
        params![now.div_euclid(1_000_000_000), now, id],
    )?;
    Ok(now)
}

fn check_limits(conn: &Conn, parent: i64, kind: Kind, limits: Limits) -> DbResult<()> {
    let mut count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM nodes WHERE parent=?1 AND kind=?2",
        params![parent, kind as i64],
        |r| r.get(0),
    )?;
    if kind != Kind::Dir {
        // Hard links are files' names too.
        count += conn.query_row::<i64>(
            "SELECT COUNT(*) FROM links l JOIN nodes n ON n.id = l.node WHERE l.parent=?1 AND n.kind=?2",
            params![parent, kind as i64],
            |r| r.get(0),
        )?;
    }
    let (max, what) = match kind {
        Kind::Dir => (limits.max_subdirs, "subdirectories"),
        _ => (limits.max_files, "files"),
    };
    if count as u64 >= max {
        return Err(DbError::Forbidden(format!(
            "a directory holds at most {max} {what}"
        )));
    }
    Ok(())
}

fn create_in(
    tx: &Conn,
    ns: Ns,
    path: &TfsPath,
    kind: Kind,
    recursive: bool,
    limits: Limits,
) -> DbResult<Node> {
    if path.is_root() {
        return Err(DbError::Exists);
    }
    if path.depth() > MAX_DEPTH {
        return Err(DbError::Forbidden(format!(
            "more than {MAX_DEPTH} levels deep"
        )));
    }
    let mut node = root(tx, ns)?;
    let segs = path.segments();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        if let Some(existing) = child(tx, node.id, seg)? {
            if last {
                return Err(DbError::Exists);
            }
            if existing.kind != Kind::Dir {
                return Err(DbError::NotFound);
            }
            node = existing;
            continue;
        }
        if !last && !recursive {
            return Err(DbError::NotFound);
        }
        let this_kind = if last { kind } else { Kind::Dir };
        check_limits(tx, node.id, this_kind, limits)?;
        let now = unix_now();
        // A new file starts at version 1 (directories stay 0), as TFS does.
        let ver_no = if this_kind == Kind::File { 1 } else { 0 };
        tx.execute(
            "INSERT INTO nodes(appid, uid, parent, name, kind, ver_no, create_time, modify_time)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                sql_id(ns.appid),
                sql_id(ns.uid),
                node.id,
                seg,
                this_kind as i64,
                ver_no,
                now
            ],
        )?;
        touch(tx, node.id)?;
        node = child(tx, node.id, seg)?.expect("just inserted");
    }
    Ok(node)
}
