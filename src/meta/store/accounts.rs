//! Config, apps, accounts, e-mail registrations, packages and orders. An account is an app of its own (appkey,
//! appid) with its namespace uid 1; orders belong to a namespace (appid,
//! uid), so apps made with `tfsfs admin app create` can buy too.

use sha2::Digest;

use super::sql::{params, Conn, Row};
use super::{sql_id, unix_now, Db, DbError, DbResult, Ns};

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts(
  email TEXT PRIMARY KEY, appid INTEGER NOT NULL, uid INTEGER NOT NULL,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registrations(
  email TEXT PRIMARY KEY, code_hash TEXT NOT NULL, expires INTEGER NOT NULL,
  attempts INTEGER NOT NULL, sent INTEGER NOT NULL, sends INTEGER NOT NULL,
  first_sent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS packages(
  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
  capacity INTEGER NOT NULL, duration_days INTEGER NOT NULL,
  price_cents INTEGER NOT NULL, active INTEGER NOT NULL DEFAULT 1,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders(
  id TEXT PRIMARY KEY, appid INTEGER NOT NULL, uid INTEGER NOT NULL,
  package INTEGER NOT NULL, name TEXT NOT NULL, quantity INTEGER NOT NULL,
  capacity INTEGER NOT NULL, price_cents INTEGER NOT NULL,
  created INTEGER NOT NULL, expires INTEGER NOT NULL, status TEXT NOT NULL,
  canceled INTEGER);
CREATE INDEX IF NOT EXISTS orders_ns ON orders(appid, uid, package);
"#;

/// A pending registration: the keyed hash (HMAC, hex) of the code last
/// mailed, and counters.
#[derive(Debug, Clone)]
pub struct Registration {
    pub email: String,
    pub code_hash: String,
    /// When the code stops being accepted (unix seconds).
    pub expires: i64,
    /// Wrong codes entered since the code was sent.
    pub attempts: u32,
    /// When the last code was sent.
    pub sent: i64,
    /// Codes sent since `first_sent`.
    pub sends: u32,
    pub first_sent: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRow {
    pub id: i64,
    pub name: String,
    /// Bytes added to the account's capacity per unit bought.
    pub capacity: u64,
    pub duration_days: u64,
    pub price_cents: u64,
    /// Retired packages cannot be bought; their orders stay valid.
    pub active: bool,
}

/// A package to create, or the fields of one to change.
#[derive(Debug, Clone, Default)]
pub struct PackageFields {
    pub name: Option<String>,
    pub capacity: Option<u64>,
    pub duration_days: Option<u64>,
    pub price_cents: Option<u64>,
    pub active: Option<bool>,
}

pub const ORDER_PAID: &str = "paid";
pub const ORDER_CANCELED: &str = "canceled";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: String,
    pub ns: Ns,
    pub package: i64,
    /// The package's name when it was bought.
    pub name: String,
    pub quantity: u64,
    /// Total bytes this order adds while active.
    pub capacity: u64,
    pub price_cents: u64,
    pub created: i64,
    pub expires: i64,
    /// `paid` or `canceled` (an order is created paid: no payment step).
    pub status: String,
    pub canceled: Option<i64>,
}

impl OrderRow {
    pub fn active_at(&self, now: i64) -> bool {
        self.status == ORDER_PAID && self.expires > now
    }
}

const PACKAGE_COLS: &str = "id, name, capacity, duration_days, price_cents, active";

fn package_of(r: &Row) -> DbResult<PackageRow> {
    Ok(PackageRow {
        id: r.get(0)?,
        name: r.get(1)?,
        capacity: r.get::<_, i64>(2)? as u64,
        duration_days: r.get::<_, i64>(3)? as u64,
        price_cents: r.get::<_, i64>(4)? as u64,
        active: r.get::<_, i64>(5)? != 0,
    })
}

const ORDER_COLS: &str =
    "id, appid, uid, package, name, quantity, capacity, price_cents, created, expires, status, canceled";

fn order_of(r: &Row) -> DbResult<OrderRow> {
    Ok(OrderRow {
        id: r.get(0)?,
        ns: Ns {
            appid: r.get::<_, i64>(1)? as u64,
            uid: r.get::<_, i64>(2)? as u64,
        },
        package: r.get(3)?,
        name: r.get(4)?,
        quantity: r.get::<_, i64>(5)? as u64,
        capacity: r.get::<_, i64>(6)? as u64,
        price_cents: r.get::<_, i64>(7)? as u64,
        created: r.get(8)?,
        expires: r.get(9)?,
        status: r.get(10)?,
        canceled: r.get(11)?,
    })
}

const REGISTRATION_COLS: &str = "email, code_hash, expires, attempts, sent, sends, first_sent";

fn registration_of(r: &Row) -> DbResult<Registration> {
    Ok(Registration {
        email: r.get(0)?,
        code_hash: r.get(1)?,
        expires: r.get(2)?,
        attempts: r.get::<_, i64>(3)? as u32,
        sent: r.get(4)?,
        sends: r.get::<_, i64>(5)? as u32,
        first_sent: r.get(6)?,
    })
}

fn count(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl Db {
    // ---- accounts and registrations ----

    /// The namespace of the account registered with `email`.
    pub fn account_by_email(&self, email: &str) -> DbResult<Option<Ns>> {
        self.read(|c| {
            c.query_opt(
                "SELECT appid, uid FROM accounts WHERE email=?1",
                params![email],
                |r| {
                    Ok(Ns {
                        appid: r.get::<_, i64>(0)? as u64,
                        uid: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
        })
    }

    /// The e-mail a namespace was registered with (none for admin-made apps).
    pub fn email_of(&self, ns: Ns) -> DbResult<Option<String>> {
        self.read(|c| {
            c.query_opt(
                "SELECT email FROM accounts WHERE appid=?1 AND uid=?2",
                params![sql_id(ns.appid), sql_id(ns.uid)],
                |r| r.get(0),
            )
        })
    }

    pub fn registration(&self, email: &str) -> DbResult<Option<Registration>> {
        self.read(|c| {
            c.query_opt(
                &format!("SELECT {REGISTRATION_COLS} FROM registrations WHERE email=?1"),
                params![email],
                registration_of,
            )
        })
    }

    pub fn put_registration(&self, r: &Registration) -> DbResult<()> {
        self.tx(|c| c.execute(
            &format!(
                "INSERT INTO registrations({REGISTRATION_COLS}) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(email) DO UPDATE SET code_hash=excluded.code_hash, expires=excluded.expires,
                   attempts=excluded.attempts, sent=excluded.sent, sends=excluded.sends,
                   first_sent=excluded.first_sent"
            ),
            params![
                r.email,
                r.code_hash,
                r.expires,
                i64::from(r.attempts),
                r.sent,
                i64::from(r.sends),
                r.first_sent
            ],
        ))?;
        Ok(())
    }

    /// Counts one wrong code; returns the wrong codes entered so far.
    pub fn registration_failed(&self, email: &str) -> DbResult<u32> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE registrations SET attempts=attempts+1 WHERE email=?1",
                params![email],
            )?;
            let n: i64 = tx.query_row(
                "SELECT attempts FROM registrations WHERE email=?1",
                params![email],
                |r| r.get(0),
            )?;
            Ok(n as u32)
        })
    }

    /// Turns a verified registration into an account: a new app with
    /// `appkey`, namespace uid 1. Returns the account's namespace.
    pub fn activate_account(&self, email: &str, appkey: &str) -> DbResult<Ns> {
        self.tx(|tx| {
            let taken: Option<i64> = tx.query_opt(
                "SELECT appid FROM accounts WHERE email=?1",
                params![email],
                |r| r.get(0),
            )?;
            if taken.is_some() {
                return Err(DbError::Exists);
            }
            let appid = insert_app(tx, appkey)?;
            tx.execute(
                "INSERT INTO accounts(email, appid, uid, created) VALUES(?1, ?2, 1, ?3)",
                params![email, sql_id(appid), unix_now()],
            )?;
            tx.execute("DELETE FROM registrations WHERE email=?1", params![email])?;
            Ok(Ns { appid, uid: 1 })
        })
    }

    // ---- packages ----

    /// Packages by id; retired ones only when `all`.
    pub fn packages(&self, all: bool) -> DbResult<Vec<PackageRow>> {
        self.read(|c| {
            c.query_map(
                &format!("SELECT {PACKAGE_COLS} FROM packages WHERE active=1 OR ?1=1 ORDER BY id"),
                params![all],
                package_of,
            )
        })
    }

    pub fn package(&self, id: i64) -> DbResult<Option<PackageRow>> {
        self.read(|c| {
            c.query_opt(
                &format!("SELECT {PACKAGE_COLS} FROM packages WHERE id=?1"),
                params![id],
                package_of,
            )
        })
    }

    /// Adds a package; name, capacity, duration and price are all needed.
    pub fn add_package(&self, p: &PackageFields) -> DbResult<PackageRow> {
        let (Some(name), Some(capacity), Some(days), Some(price)) =
            (&p.name, p.capacity, p.duration_days, p.price_cents)
        else {
            return Err(DbError::Invalid(
                "a package needs a name, a capacity, a duration and a price".into(),
            ));
        };
        check_package(name, capacity, days)?;
        let id = self.tx(|tx| {
            tx.query_row(
                "INSERT INTO packages(name, capacity, duration_days, price_cents, active, created)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![
                    name,
                    count(capacity),
                    count(days),
                    count(price),
                    p.active.unwrap_or(true),
                    unix_now()
                ],
                |r| r.get(0),
            )
        })?;
        self.package(id)?.ok_or(DbError::NotFound)
    }

    /// Changes the given fields of a package. Orders already made keep
    /// what they bought.
    pub fn update_package(&self, id: i64, p: &PackageFields) -> DbResult<PackageRow> {
        let old = self.package(id)?.ok_or(DbError::NotFound)?;
        let name = p.name.clone().unwrap_or(old.name);
        let capacity = p.capacity.unwrap_or(old.capacity);
        let days = p.duration_days.unwrap_or(old.duration_days);
        check_package(&name, capacity, days)?;
        self.tx(|c| {
            c.execute(
            "UPDATE packages SET name=?1, capacity=?2, duration_days=?3, price_cents=?4, active=?5
             WHERE id=?6",
            params![
                name,
                count(capacity),
                count(days),
                count(p.price_cents.unwrap_or(old.price_cents)),
                p.active.unwrap_or(old.active),
                id
            ],
        )
        })?;
        self.package(id)?.ok_or(DbError::NotFound)
    }

    /// Creates `defaults` on the store's first start (only once: packages
    /// an administrator removed stay removed).
    pub fn seed_packages(&self, defaults: &[PackageFields]) -> DbResult<()> {
        if self.config_get("packages_seeded")?.is_some() {
            return Ok(());
        }
        if self.packages(true)?.is_empty() {
            for p in defaults {
                self.add_package(p)?;
            }
        }
        self.config_set("packages_seeded", b"1")
    }

    // ---- orders ----

    pub fn insert_order(&self, o: &OrderRow) -> DbResult<()> {
        self.tx(|c| c.execute(
            &format!(
                "INSERT INTO orders({ORDER_COLS}) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                o.id,
                sql_id(o.ns.appid),
                sql_id(o.ns.uid),
                o.package,
                o.name,
                count(o.quantity),
                count(o.capacity),
                count(o.price_cents),
                o.created,
                o.expires,
                o.status,
                o.canceled
            ],
        ))?;
        Ok(())
    }

    /// Cancels the namespace's active orders of `package`; returns them.
    pub fn cancel_orders(&self, ns: Ns, package: i64, now: i64) -> DbResult<Vec<OrderRow>> {
        self.tx(|tx| {
            let ids: Vec<String> = tx.query_map(
                "SELECT id FROM orders WHERE appid=?1 AND uid=?2 AND package=?3
                   AND status=?4 AND expires>?5 ORDER BY created, rowid",
                params![sql_id(ns.appid), sql_id(ns.uid), package, ORDER_PAID, now],
                |r| r.get(0),
            )?;
            let mut out = Vec::new();
            for id in ids {
                tx.execute(
                    "UPDATE orders SET status=?1, canceled=?2 WHERE id=?3",
                    params![ORDER_CANCELED, now, id],
                )?;
                out.push(tx.query_row(
                    &format!("SELECT {ORDER_COLS} FROM orders WHERE id=?1"),
                    params![&id],
                    order_of,
                )?);
            }
            Ok(out)
        })
    }

    /// All of a namespace's orders, oldest first.
    pub fn orders(&self, ns: Ns) -> DbResult<Vec<OrderRow>> {
        self.read(|c| {
            c.query_map(
                &format!(
                    "SELECT {ORDER_COLS} FROM orders WHERE appid=?1 AND uid=?2 ORDER BY created, rowid"
                ),
                params![sql_id(ns.appid), sql_id(ns.uid)],
                order_of,
            )
        })
    }

    /// One order, if it exists and belongs to `ns`.
    pub fn order(&self, ns: Ns, id: &str) -> DbResult<Option<OrderRow>> {
        self.read(|c| {
            c.query_opt(
                &format!("SELECT {ORDER_COLS} FROM orders WHERE id=?1 AND appid=?2 AND uid=?3"),
                params![id, sql_id(ns.appid), sql_id(ns.uid)],
                order_of,
            )
        })
    }

    /// Bytes the namespace's active orders add, and how many there are.
    pub fn ordered_capacity(&self, ns: Ns, now: i64) -> DbResult<(u64, u64)> {
        let (bytes, n): (i64, i64) = self.read(|c| {
            c.query_row(
                "SELECT CAST(COALESCE(SUM(capacity), 0) AS BIGINT), COUNT(*) FROM orders
             WHERE appid=?1 AND uid=?2 AND status=?3 AND expires>?4",
                params![sql_id(ns.appid), sql_id(ns.uid), ORDER_PAID, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        Ok((bytes as u64, n as u64))
    }

    /// Regular files (and symlinks) in a namespace, directories not counted.
    pub fn file_count(&self, ns: Ns) -> DbResult<u64> {
        let n: i64 = self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM nodes WHERE appid=?1 AND uid=?2 AND kind<>0",
                params![sql_id(ns.appid), sql_id(ns.uid)],
                |r| r.get(0),
            )
        })?;
        Ok(n as u64)
    }
}

fn check_package(name: &str, capacity: u64, days: u64) -> DbResult<()> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(DbError::Invalid("a package name is 1-100 bytes".into()));
    }
    if capacity == 0 || days == 0 || days > 36_500 {
        return Err(DbError::Invalid(
            "a package has a capacity above 0 and lasts 1 to 36500 days".into(),
        ));
    }
    Ok(())
}

impl Db {
    // ---- config and apps ----

    pub fn config_get(&self, key: &str) -> DbResult<Option<Vec<u8>>> {
        self.read(|c| {
            c.query_opt("SELECT value FROM config WHERE key=?1", params![key], |r| {
                r.get(0)
            })
        })
    }

    pub fn config_set(&self, key: &str, value: &[u8]) -> DbResult<()> {
        self.tx(|c| c.execute(
            "INSERT INTO config(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            params![key, value],
        ))?;
        Ok(())
    }

    /// The value of `key`, set to `make()` first if it has none: servers
    /// starting together on one store all get the first one's value.
    pub fn config_get_or_init(&self, key: &str, make: impl Fn() -> Vec<u8>) -> DbResult<Vec<u8>> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO config(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO NOTHING",
                params![key, make()],
            )?;
            c.query_row("SELECT value FROM config WHERE key=?1", params![key], |r| {
                r.get(0)
            })
        })
    }

    /// Records a new app; `Exists` if the appkey is taken.
    pub fn create_app(&self, appkey: &str) -> DbResult<u64> {
        self.tx(|tx| insert_app(tx, appkey))
    }

    pub fn appid_of(&self, appkey: &str) -> DbResult<Option<u64>> {
        Ok(self
            .read(|c| {
                c.query_opt(
                    "SELECT appid FROM apps WHERE key_hash=?1",
                    params![appkey_hash(appkey)],
                    |r| r.get::<_, i64>(0),
                )
            })?
            .map(|id| id as u64))
    }
}

/// What `apps` keeps of an appkey: its SHA-256 (hex), so a copy of the
/// store holds no credential. Appkeys are random (24 bytes from
/// `create_app` or a registration), so a fast unsalted hash cannot be
/// reversed; lookups compare hashes, so their timing tells nothing of a key.
pub(crate) fn appkey_hash(appkey: &str) -> String {
    hex::encode(sha2::Sha256::digest(appkey.as_bytes()))
}

/// Adds an app with `appkey` in `tx`; returns its appid.
fn insert_app(tx: &Conn, appkey: &str) -> DbResult<u64> {
    tx.query_opt(
        "INSERT INTO apps(key_hash, created) VALUES(?1, ?2) ON CONFLICT DO NOTHING RETURNING appid",
        params![appkey_hash(appkey), unix_now()],
        |r| r.get::<_, i64>(0),
    )?
    .map(|id| id as u64)
    .ok_or(DbError::Exists)
}
