//! The schema and its versioned migrations, run by the server at start.
//! The schema text is SQLite's; the PostgreSQL engine adapts its types.

use super::accounts::{self, appkey_hash};
use super::sql::{params, Conn};
use super::{repair, trust, v1, Db, DbError, DbResult};

/// A step from one schema version to the next, run in one transaction.
type Migration = fn(&Conn) -> DbResult<()>;

/// `MIGRATIONS[i]` takes a store from version `i + 1` to `i + 2`. A new
/// store is made at version 1 (`SCHEMA` and the submodules' `SCHEMA`, never
/// changed) and migrated like an old one, so every step is run by every
/// test. Append only.
const MIGRATIONS: &[Migration] = &[
    hide_secrets,
    trust_model,
    durability,
    links_and_xattrs,
    file_hashes,
    reserved_ids,
];

const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Version 1's shape.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS config(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS apps(
  appid INTEGER PRIMARY KEY AUTOINCREMENT,
  appkey TEXT NOT NULL UNIQUE,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  appid INTEGER NOT NULL, uid INTEGER NOT NULL,
  parent INTEGER NOT NULL, name TEXT NOT NULL,
  kind INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0,
  ver_no INTEGER NOT NULL DEFAULT 0,
  create_time INTEGER NOT NULL, modify_time INTEGER NOT NULL,
  mode INTEGER, mtime_ns INTEGER,
  owner INTEGER NOT NULL DEFAULT 0, grp INTEGER NOT NULL DEFAULT 0,
  atime_ns INTEGER, ctime_ns INTEGER, target TEXT, rdev INTEGER NOT NULL DEFAULT 0,
  UNIQUE(appid, uid, parent, name));
CREATE INDEX IF NOT EXISTS nodes_parent ON nodes(parent, name);
-- Counts of a directory's subdirectories and files (nlink, limits) read
-- this index alone.
CREATE INDEX IF NOT EXISTS nodes_parent_kind ON nodes(parent, kind);
CREATE TABLE IF NOT EXISTS objects(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  appid INTEGER NOT NULL, uid INTEGER NOT NULL, sha1 TEXT NOT NULL,
  scheme INTEGER NOT NULL, plain_size INTEGER NOT NULL, stored_size INTEGER NOT NULL,
  partition_size INTEGER NOT NULL, k INTEGER NOT NULL, m INTEGER NOT NULL,
  data BLOB, created INTEGER NOT NULL,
  refs INTEGER NOT NULL DEFAULT 0, released INTEGER NOT NULL DEFAULT 0,
  UNIQUE(appid, uid, sha1));
CREATE INDEX IF NOT EXISTS objects_unused ON objects(released) WHERE refs = 0;
CREATE TABLE IF NOT EXISTS usage(
  appid INTEGER NOT NULL, uid INTEGER NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(appid, uid));
CREATE TABLE IF NOT EXISTS partitions(
  object INTEGER NOT NULL, idx INTEGER NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY(object, idx));
CREATE TABLE IF NOT EXISTS shards(
  object INTEGER NOT NULL, partition INTEGER NOT NULL, idx INTEGER NOT NULL,
  sha1 TEXT NOT NULL, size INTEGER NOT NULL, provider TEXT NOT NULL,
  PRIMARY KEY(object, partition, idx, provider));
CREATE TABLE IF NOT EXISTS fragments(
  node INTEGER NOT NULL, "offset" INTEGER NOT NULL, length INTEGER NOT NULL,
  object INTEGER NOT NULL, key TEXT,
  PRIMARY KEY(node, "offset"));
CREATE INDEX IF NOT EXISTS fragments_object ON fragments(object);
CREATE TABLE IF NOT EXISTS providers(
  id TEXT PRIMARY KEY, url TEXT NOT NULL, capacity INTEGER NOT NULL,
  used INTEGER NOT NULL, last_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
  id TEXT PRIMARY KEY, appid INTEGER NOT NULL, uid INTEGER NOT NULL,
  expires INTEGER NOT NULL, state TEXT NOT NULL);
"#;

/// Makes an empty database a store of schema version 1.
fn create_version_1(conn: &Conn) -> DbResult<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(v1::SCHEMA)?;
    conn.execute_batch(accounts::SCHEMA)?;
    conn.set_schema_version(1)
}

/// Brings the store to `SCHEMA_VERSION`: an empty database gets version 1,
/// then each missing migration runs in its own transaction (servers
/// starting together take turns). True when anything was migrated.
pub(super) fn migrate(db: &Db, what: &str) -> DbResult<bool> {
    let mut migrated = false;
    loop {
        let next = db.schema_tx(|conn| {
            conn.lock_schema()?;
            let version = match conn.schema_version()? {
                None => {
                    create_version_1(conn)?;
                    1
                }
                Some(v) if (1..=SCHEMA_VERSION).contains(&v) => v,
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(DbError::Invalid(format!(
                    "{what} holds a store of schema version {v}, made by a newer tfsfs; this one \
                         reads versions up to {SCHEMA_VERSION}"
                )))
                }
                Some(v) => {
                    return Err(DbError::Invalid(format!(
                        "{what} holds a database of schema version {v}, not a tfsfs store"
                    )))
                }
            };
            if version == SCHEMA_VERSION {
                return Ok(None);
            }
            MIGRATIONS[(version - 1) as usize](conn)?;
            conn.set_schema_version(version + 1)?;
            Ok(Some(version + 1))
        })?;
        match next {
            Some(version) => {
                tracing::info!(store = what, version, "store migrated");
                migrated = true;
            }
            None => return Ok(migrated),
        }
    }
}

/// 4 → 5: a node has more names than its row's (hard links, in `links`);
/// `entries` is every name; nodes keep extended attributes (`xattrs`,
/// POSIX ACLs included).
/// 5 → 6: a file of several partition objects keeps the SHA-1 of its
/// stored bytes, when its writer saw them all (NULL: not known).
/// 6 → 7: node ids a mount reserved for files it creates on its own and
/// names at their first commit (one request for a new small file).
fn reserved_ids(tx: &Conn) -> DbResult<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS id_ranges(
           appid INTEGER NOT NULL, uid INTEGER NOT NULL,
           low INTEGER NOT NULL, high INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS id_ranges_ns ON id_ranges(appid, uid, high);",
    )?;
    Ok(())
}

fn file_hashes(tx: &Conn) -> DbResult<()> {
    tx.execute_batch("ALTER TABLE nodes ADD COLUMN content_sha1 TEXT;")?;
    Ok(())
}

fn links_and_xattrs(tx: &Conn) -> DbResult<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS links(
           parent INTEGER NOT NULL, name TEXT NOT NULL, node INTEGER NOT NULL,
           PRIMARY KEY(parent, name));
         CREATE INDEX IF NOT EXISTS links_node ON links(node);
         CREATE VIEW entries AS
           SELECT id AS node, parent, name FROM nodes
           UNION ALL SELECT node, parent, name FROM links;
         CREATE TABLE IF NOT EXISTS xattrs(
           node INTEGER NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
           PRIMARY KEY(node, name));",
    )?;
    Ok(())
}

/// 3 → 4: providers have a state (active, draining, retired); bad shard
/// copies, repair backoff and scrub reports are kept.
fn durability(tx: &Conn) -> DbResult<()> {
    tx.execute_batch(repair::SCHEMA)?;
    Ok(())
}

/// 2 → 3: partitions keep their own erasure scheme (NULL: the object's),
/// providers enroll with keys, sessions promise their shard copies, and
/// unreferenced copies wait in `doomed_shards` for deletion.
fn trust_model(tx: &Conn) -> DbResult<()> {
    tx.execute_batch(
        "ALTER TABLE partitions ADD COLUMN k INTEGER; ALTER TABLE partitions ADD COLUMN m INTEGER;",
    )?;
    tx.execute_batch(trust::SCHEMA)?;
    Ok(())
}

/// 1 → 2: `apps` keeps each appkey's hash, not the key; pending codes
/// hashed without a key (reversible) are dropped: those accounts ask again.
fn hide_secrets(tx: &Conn) -> DbResult<()> {
    tx.execute("DELETE FROM registrations", params![])?;
    tx.execute_batch("ALTER TABLE apps RENAME COLUMN appkey TO key_hash")?;
    let keys: Vec<(i64, String)> =
        tx.query_map("SELECT appid, key_hash FROM apps", params![], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    for (appid, key) in keys {
        tx.execute(
            "UPDATE apps SET key_hash=?1 WHERE appid=?2",
            params![appkey_hash(&key), appid],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use std::path::Path;

    #[test]
    fn a_store_of_a_newer_or_unknown_schema_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        Db::open(dir.path()).unwrap();
        Db::open(dir.path()).expect("the same version opens again");
        let set_version = |v: i64| {
            let conn = Connection::open(dir.path().join("meta.sqlite")).unwrap();
            conn.pragma_update(None, "user_version", v).unwrap();
        };
        set_version(SCHEMA_VERSION + 1);
        let err = Db::open(dir.path())
            .err()
            .expect("a newer store is refused");
        assert!(err.to_string().contains("made by a newer tfsfs"), "{err}");
        set_version(0);
        let err = Db::open(dir.path())
            .err()
            .expect("a foreign database is refused");
        assert!(err.to_string().contains("not a tfsfs store"), "{err}");
    }

    /// Every byte of every file in `dir`.
    fn raw_files(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            all.extend(std::fs::read(e.unwrap().path()).unwrap());
        }
        all
    }

    #[test]
    fn a_version_1_store_is_migrated_and_its_clear_appkeys_still_work() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let appkey = "5f0c3b4e9a7d21c8e6f1a0b2c4d6e8f0a1b3c5d7e9f1";
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            create_version_1(&Conn::Sqlite(&conn)).unwrap();
            // Enough apps to fill pages, so replaced keys are not merely
            // compacted away.
            for i in 0..200 {
                conn.execute(
                    "INSERT INTO apps(appkey, created) VALUES(?1, 0)",
                    [format!("{appkey}{i:03}")],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO registrations VALUES('a@example.com', 'unkeyed', 0, 0, 0, 1, 0)",
                [],
            )
            .unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

        let db = Db::open(dir.path()).unwrap();
        for i in [0, 99, 199] {
            let key = format!("{appkey}{i:03}");
            assert_eq!(
                db.appid_of(&key).unwrap(),
                Some(i + 1),
                "old appkey {i} still works"
            );
        }
        assert_eq!(db.appid_of("another").unwrap(), None);
        assert!(matches!(
            db.create_app(&format!("{appkey}007")),
            Err(DbError::Exists)
        ));
        assert_eq!(db.create_app("another").unwrap(), 201);
        assert!(db.registration("a@example.com").unwrap().is_none());
        let version = db.read(|conn| conn.schema_version()).unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION));
        let raw = raw_files(dir.path());
        assert!(
            !raw.windows(appkey.len()).any(|w| w == appkey.as_bytes()),
            "the clear appkey is still in the store's files"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("meta.sqlite-wal")), 0o600);
    }
}
