//! The drive's view of the namespace: operations by node id with POSIX
//! meaning (modes, owners, nanosecond times, symlinks, rename over an
//! existing entry, exchange). A submodule of `db`, sharing its connection.
//! TFS's path rules (256-byte paths, 8 levels) bind the REST API, not the
//! drive; names still follow the 246-byte rule.

use rusqlite::{params, Connection, OptionalExtension};

use super::{child, now_ns, root, sql_id, touch, Db, DbError, DbResult, Kind, Node, Ns, NODE_COLS};
use crate::meta::path::MAX_NAME;
use crate::proto::{CommitFragment, FileAttrs, SetAttrs};

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

fn node_in(conn: &Connection, ns: Ns, id: i64) -> DbResult<Node> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM nodes WHERE id=?1 AND appid=?2 AND uid=?3"
    ))?;
    stmt.query_row(
        params![id, sql_id(ns.appid), sql_id(ns.uid)],
        super::node_of,
    )
    .optional()?
    .ok_or(DbError::NotFound)
}

fn dir_in(conn: &Connection, ns: Ns, id: i64) -> DbResult<Node> {
    let n = node_in(conn, ns, id)?;
    if n.kind != Kind::Dir {
        return Err(DbError::NotDir);
    }
    Ok(n)
}

fn delete_node(conn: &Connection, id: i64) -> DbResult<()> {
    super::drop_fragments(conn, id)?;
    conn.execute("DELETE FROM nodes WHERE id=?1", [id])?;
    Ok(())
}

fn is_empty_dir(conn: &Connection, id: i64) -> DbResult<bool> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM nodes WHERE parent=?1", [id], |r| {
        r.get(0)
    })?;
    Ok(n == 0)
}

/// Is `node` equal to `ancestor` or below it?
fn is_within(conn: &Connection, mut node: i64, ancestor: i64) -> DbResult<bool> {
    while node != 0 {
        if node == ancestor {
            return Ok(true);
        }
        node = conn.query_row("SELECT parent FROM nodes WHERE id=?1", [node], |r| r.get(0))?;
    }
    Ok(false)
}

fn set_ctime(conn: &Connection, id: i64) -> DbResult<()> {
    conn.execute(
        "UPDATE nodes SET ctime_ns=?1 WHERE id=?2",
        params![now_ns(), id],
    )?;
    Ok(())
}

/// What `make` creates.
pub struct NewNode<'a> {
    pub kind: Kind,
    pub mode: u32,
    pub owner: u32,
    pub group: u32,
    pub target: Option<&'a str>,
    /// A device node's device number.
    pub rdev: u32,
}

impl Db {
    pub fn root_node(&self, ns: Ns) -> DbResult<Node> {
        root(&self.lock(), ns)
    }

    pub fn node(&self, ns: Ns, id: i64) -> DbResult<Node> {
        node_in(&self.lock(), ns, id)
    }

    pub fn lookup(&self, ns: Ns, parent: i64, name: &str) -> DbResult<Node> {
        if name.len() > MAX_NAME {
            return Err(DbError::NameTooLong);
        }
        let conn = self.lock();
        dir_in(&conn, ns, parent)?;
        child(&conn, parent, name)?.ok_or(DbError::NotFound)
    }

    pub fn children(&self, ns: Ns, id: i64) -> DbResult<Vec<Node>> {
        let conn = self.lock();
        dir_in(&conn, ns, id)?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE parent=?1 ORDER BY name"
        ))?;
        let rows = stmt
            .query_map([id], super::node_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn make(&self, ns: Ns, parent: i64, name: &str, new: &NewNode) -> DbResult<Node> {
        check_name(name)?;
        self.tx(|tx| {
            dir_in(tx, ns, parent)?;
            if child(tx, parent, name)?.is_some() {
                return Err(DbError::Exists);
            }
            super::check_limits(tx, parent, new.kind, self.limits)?;
            let now = now_ns();
            let ver_no = i64::from(new.kind == Kind::File);
            let size = new.target.map_or(0, |t| t.len() as i64);
            tx.execute(
                "INSERT INTO nodes(appid, uid, parent, name, kind, size, ver_no, create_time, modify_time,
                   mode, mtime_ns, owner, grp, atime_ns, ctime_ns, target, rdev)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?10, ?10, ?13, ?14)",
                params![
                    sql_id(ns.appid),
                    sql_id(ns.uid),
                    parent,
                    name,
                    new.kind as i64,
                    size,
                    ver_no,
                    now.div_euclid(1_000_000_000),
                    i64::from(new.mode & 0o7777),
                    now,
                    i64::from(new.owner),
                    i64::from(new.group),
                    new.target,
                    i64::from(new.rdev)
                ],
            )?;
            touch(tx, parent)?;
            Ok(child(tx, parent, name)?.expect("just inserted"))
        })
    }

    /// unlink (`dir` false) or rmdir (`dir` true).
    pub fn unlink(&self, ns: Ns, parent: i64, name: &str, dir: bool) -> DbResult<()> {
        self.tx(|tx| {
            dir_in(tx, ns, parent)?;
            let node = child(tx, parent, name)?.ok_or(DbError::NotFound)?;
            match (dir, node.kind == Kind::Dir) {
                (true, false) => return Err(DbError::NotDir),
                (false, true) => return Err(DbError::IsDir),
                (true, true) if !is_empty_dir(tx, node.id)? => return Err(DbError::NotEmpty),
                _ => {}
            }
            delete_node(tx, node.id)?;
            touch(tx, parent)
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
                tx.execute(
                    "UPDATE nodes SET name=?1 WHERE id=?2",
                    params!["\0exchange", src.id],
                )?;
                tx.execute(
                    "UPDATE nodes SET parent=?1, name=?2 WHERE id=?3",
                    params![parent, name, dst.id],
                )?;
                tx.execute(
                    "UPDATE nodes SET parent=?1, name=?2 WHERE id=?3",
                    params![new_parent, new_name, src.id],
                )?;
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
                    delete_node(tx, dst.id)?;
                } else if parent != new_parent {
                    super::check_limits(tx, new_parent, src.kind, self.limits)?;
                }
                tx.execute(
                    "UPDATE nodes SET parent=?1, name=?2 WHERE id=?3",
                    params![new_parent, new_name, src.id],
                )?;
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

    /// Makes an uploaded object the whole content of file `id`, as one new
    /// version, if the file is still at `base_ver` (when given). Returns the
    /// new VER_NO, or None (and changes nothing) when the version moved on.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_node(
        &self,
        ns: Ns,
        id: i64,
        object: i64,
        size: u64,
        key: Option<&str>,
        attrs: &FileAttrs,
        base_ver: Option<u64>,
    ) -> DbResult<Option<u64>> {
        self.tx(|tx| {
            let node = node_in(tx, ns, id)?;
            if node.kind != Kind::File {
                return Err(DbError::IsDir);
            }
            if base_ver.is_some_and(|v| v != node.ver_no) {
                return Ok(None);
            }
            super::replace_content(tx, &node, object, size, key, attrs, 1).map(Some)
        })
    }

    /// Makes `fragments` (objects of the namespace named by SHA-1) the
    /// content of file `id`, `size` bytes long, as one new version, if the
    /// file is still at `base_ver` (when given). Returns the new VER_NO, or
    /// None (and changes nothing) when the version moved on. An object
    /// collected meanwhile, or shorter than its fragment, fails the commit.
    pub fn commit_fragments(
        &self,
        ns: Ns,
        id: i64,
        size: u64,
        fragments: &[CommitFragment],
        attrs: &FileAttrs,
        base_ver: Option<u64>,
    ) -> DbResult<Option<u64>> {
        self.tx(|tx| {
            let node = node_in(tx, ns, id)?;
            if node.kind != Kind::File {
                return Err(DbError::IsDir);
            }
            if base_ver.is_some_and(|v| v != node.ver_no) {
                return Ok(None);
            }
            let mut stmt = tx.prepare_cached(
                "SELECT id, plain_size FROM objects WHERE appid=?1 AND uid=?2 AND sha1=?3",
            )?;
            let mut rows = Vec::with_capacity(fragments.len());
            for f in fragments {
                let (object, plain): (i64, i64) = stmt
                    .query_row(params![sql_id(ns.appid), sql_id(ns.uid), f.object], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?
                    .ok_or(DbError::NotFound)?;
                if f.length > plain as u64 {
                    return Err(DbError::Invalid(format!(
                        "object {} holds fewer than {} bytes",
                        f.object, f.length
                    )));
                }
                rows.push((f.offset, f.length, object, f.key.as_deref()));
            }
            super::replace_fragments(tx, &node, &rows, size, attrs, 1).map(Some)
        })
    }

    /// Stored bytes of the objects named (by SHA-1) that no file uses yet:
    /// what committing them adds to the namespace's usage.
    pub fn unused_bytes(&self, ns: Ns, sha1s: &[&str]) -> DbResult<u64> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT stored_size FROM objects WHERE appid=?1 AND uid=?2 AND sha1=?3 AND refs=0",
        )?;
        let mut total = 0u64;
        let mut seen = std::collections::HashSet::new();
        for sha1 in sha1s.iter().filter(|s| seen.insert(**s)) {
            let size: Option<i64> = stmt
                .query_row(params![sql_id(ns.appid), sql_id(ns.uid), sha1], |r| {
                    r.get(0)
                })
                .optional()?;
            total += size.unwrap_or(0) as u64;
        }
        Ok(total)
    }

    /// Stored bytes of a namespace, each object counted once.
    pub fn used_bytes(&self, ns: Ns) -> DbResult<u64> {
        let bytes: Option<i64> = self
            .lock()
            .query_row(
                "SELECT bytes FROM usage WHERE appid=?1 AND uid=?2",
                params![sql_id(ns.appid), sql_id(ns.uid)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(bytes.unwrap_or(0) as u64)
    }

    /// Stored bytes and node count of a namespace.
    pub fn usage(&self, ns: Ns) -> DbResult<(u64, u64)> {
        let files: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM nodes WHERE appid=?1 AND uid=?2",
            params![sql_id(ns.appid), sql_id(ns.uid)],
            |r| r.get(0),
        )?;
        Ok((self.used_bytes(ns)?, files as u64))
    }
}
