//! What the sidecar's `/store/*` routes need beyond the v2 API: a sorted,
//! paged listing of a directory, and removing a whole tree in one
//! transaction.

use super::fs::{resolve, touch};
use super::sql::params;
use super::{node_of, Db, DbError, DbResult, Kind, Node, Ns, ENTRY_COLS};
use crate::meta::path::TfsPath;

/// The order of a paged listing (folders always come first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Size,
    Modtime,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<SortKey> {
        match s {
            "name" => Some(SortKey::Name),
            "size" => Some(SortKey::Size),
            "modtime" => Some(SortKey::Modtime),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            SortKey::Name => "e.name",
            SortKey::Size => "size",
            SortKey::Modtime => "COALESCE(mtime_ns, modify_time * 1000000000)",
        }
    }
}

impl Db {
    /// One page of a directory's entries: folders first, then by `key`
    /// (ties by name). Returns the number of entries in the directory too.
    pub fn list_page(
        &self,
        ns: Ns,
        path: &TfsPath,
        key: SortKey,
        ascending: bool,
        limit: u64,
        offset: u64,
    ) -> DbResult<(u64, Vec<Node>)> {
        self.read(|conn| {
            let dir = resolve(conn, ns, path)?.ok_or(DbError::NotFound)?;
            if dir.kind != Kind::Dir {
                return Err(DbError::NotDir);
            }
            let total: i64 = conn.query_row(
                "SELECT COUNT(*) FROM entries WHERE parent=?1",
                params![dir.id],
                |r| r.get(0),
            )?;
            let order = if ascending { "ASC" } else { "DESC" };
            let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
            let rows = conn.query_map(
                &format!(
                    "SELECT {ENTRY_COLS} FROM entries e JOIN nodes ON nodes.id = e.node WHERE e.parent=?1
                 ORDER BY (kind = 0) DESC, {} {order}, e.name {order} LIMIT ?2 OFFSET ?3",
                    key.column()
                ),
                params![dir.id, clamp(limit), clamp(offset)],
                node_of,
            )?;
            Ok((total as u64, rows))
        })
    }

    /// The node at `path`.
    pub fn node_at(&self, ns: Ns, path: &TfsPath) -> DbResult<Node> {
        self.read(|conn| resolve(conn, ns, path)?.ok_or(DbError::NotFound))
    }

    /// Removes a directory and everything below it; returns how many
    /// nodes went. The root cannot go.
    pub fn remove_tree(&self, ns: Ns, path: &TfsPath) -> DbResult<u64> {
        if path.is_root() {
            return Err(DbError::Invalid("the root cannot be removed".into()));
        }
        self.tx(|tx| {
            let node = resolve(tx, ns, path)?.ok_or(DbError::NotFound)?;
            if node.kind != Kind::Dir {
                return Err(DbError::NotDir);
            }
            let tree = "WITH RECURSIVE sub(id) AS (
                   SELECT CAST(?1 AS BIGINT)
                   UNION ALL
                   SELECT n.id FROM nodes n JOIN sub ON n.parent = sub.id)
                 SELECT id FROM sub";
            // Hard links: names inside the tree go; a node inside it with
            // a name outside stays, under that name.
            tx.execute(
                &format!("DELETE FROM links WHERE parent IN ({tree})"),
                params![node.id],
            )?;
            let named_outside: Vec<(i64, i64, String)> = tx.query_map(
                &format!(
                    "SELECT l.node, l.parent, l.name FROM links l WHERE l.node IN ({tree})
                     AND NOT EXISTS (SELECT 1 FROM links o WHERE o.node = l.node
                       AND (o.parent, o.name) < (l.parent, l.name))"
                ),
                params![node.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            for (id, parent, name) in named_outside {
                tx.execute(
                    "DELETE FROM links WHERE parent=?1 AND name=?2",
                    params![parent, &name],
                )?;
                tx.execute(
                    "UPDATE nodes SET parent=?1, name=?2 WHERE id=?3",
                    params![parent, &name, id],
                )?;
            }
            tx.execute(
                &format!("DELETE FROM fragments WHERE node IN ({tree})"),
                params![node.id],
            )?;
            tx.execute(
                &format!("DELETE FROM xattrs WHERE node IN ({tree})"),
                params![node.id],
            )?;
            let n = tx.execute(
                &format!("DELETE FROM nodes WHERE id IN ({tree})"),
                params![node.id],
            )?;
            touch(tx, node.parent)?;
            Ok(n as u64)
        })
    }
}
