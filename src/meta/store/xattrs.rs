//! Extended attributes: a node's, so all its names share them. POSIX ACLs
//! are kept as theirs, and the mode follows them (`meta::acl`).

use super::sql::{params, Conn};
use super::{fs::node_in, Db, DbError, DbResult, Kind, Ns};
use crate::meta::acl::{self, Acl};
use crate::proto::XattrHow;

fn get(conn: &Conn, id: i64, name: &str) -> DbResult<Option<Vec<u8>>> {
    conn.query_opt(
        "SELECT value FROM xattrs WHERE node=?1 AND name=?2",
        params![id, name],
        |r| r.get(0),
    )
}

fn put(conn: &Conn, id: i64, name: &str, value: Option<&[u8]>) -> DbResult<()> {
    conn.execute(
        "DELETE FROM xattrs WHERE node=?1 AND name=?2",
        params![id, name],
    )?;
    if let Some(value) = value {
        conn.execute(
            "INSERT INTO xattrs(node, name, value) VALUES(?1, ?2, ?3)",
            params![id, name, value],
        )?;
    }
    Ok(())
}

fn set_mode(conn: &Conn, id: i64, mode: u32) -> DbResult<()> {
    conn.execute(
        "UPDATE nodes SET mode=?1 WHERE id=?2",
        params![i64::from(mode & 0o7777), id],
    )?;
    Ok(())
}

fn parse_acl(value: &[u8]) -> DbResult<Acl> {
    Acl::parse(value).ok_or_else(|| DbError::Invalid("not a POSIX ACL".into()))
}

/// A chmod of node `id` to `mode`: its access ACL, if any, follows.
pub(super) fn chmod_acl(conn: &Conn, id: i64, mode: u32) -> DbResult<()> {
    if let Some(old) = get(conn, id, acl::ACCESS)? {
        let new = acl::chmod(&parse_acl(&old)?, mode);
        put(conn, id, acl::ACCESS, Some(&new.to_bytes()))?;
    }
    Ok(())
}

/// Node `id` (of `kind` and `mode`) was just made in `parent`: it takes the
/// directory's default ACL (a directory as its own default too).
pub(super) fn inherit_acl(
    conn: &Conn,
    parent: i64,
    id: i64,
    kind: Kind,
    mode: u32,
) -> DbResult<()> {
    if kind == Kind::Symlink {
        return Ok(());
    }
    let Some(default) = get(conn, parent, acl::DEFAULT)? else {
        return Ok(());
    };
    let (mode, access) = acl::inherit(&parse_acl(&default)?, mode);
    set_mode(conn, id, mode)?;
    put(
        conn,
        id,
        acl::ACCESS,
        access.map(|a| a.to_bytes()).as_deref(),
    )?;
    if kind == Kind::Dir {
        put(conn, id, acl::DEFAULT, Some(&default))?;
    }
    Ok(())
}

impl Db {
    pub fn xattr(&self, ns: Ns, id: i64, name: &str) -> DbResult<Vec<u8>> {
        self.read(|conn| {
            node_in(conn, ns, id)?;
            get(conn, id, name)?.ok_or(DbError::NoAttr)
        })
    }

    pub fn xattr_names(&self, ns: Ns, id: i64) -> DbResult<Vec<String>> {
        self.read(|conn| {
            node_in(conn, ns, id)?;
            conn.query_map(
                "SELECT name FROM xattrs WHERE node=?1 ORDER BY name",
                params![id],
                |r| r.get(0),
            )
        })
    }

    /// Sets an attribute; an access ACL sets the mode too (and is not kept
    /// when the mode says it all).
    pub fn set_xattr(
        &self,
        ns: Ns,
        id: i64,
        name: &str,
        value: &[u8],
        how: XattrHow,
    ) -> DbResult<()> {
        self.tx(|tx| {
            let node = node_in(tx, ns, id)?;
            let exists = get(tx, id, name)?.is_some();
            match how {
                XattrHow::Create if exists => return Err(DbError::Exists),
                XattrHow::Replace if !exists => return Err(DbError::NoAttr),
                _ => {}
            }
            match name {
                acl::ACCESS => {
                    let mode = node.attrs.mode.unwrap_or(0);
                    let (mode, kept) = acl::set_access(&parse_acl(value)?, mode);
                    set_mode(tx, id, mode)?;
                    put(tx, id, name, kept.map(|a| a.to_bytes()).as_deref())?;
                }
                acl::DEFAULT => {
                    parse_acl(value)?;
                    put(tx, id, name, Some(value))?;
                }
                _ => put(tx, id, name, Some(value))?,
            }
            super::fs::set_ctime(tx, id)
        })
    }

    pub fn remove_xattr(&self, ns: Ns, id: i64, name: &str) -> DbResult<()> {
        self.tx(|tx| {
            node_in(tx, ns, id)?;
            if tx.execute(
                "DELETE FROM xattrs WHERE node=?1 AND name=?2",
                params![id, name],
            )? == 0
            {
                return Err(DbError::NoAttr);
            }
            super::fs::set_ctime(tx, id)
        })
    }
}
