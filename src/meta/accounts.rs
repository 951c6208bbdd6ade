//! Accounts by e-mail, packages, orders and usage.
//!
//! - `POST /api/account/register {email, resend}` mails a 6-digit code;
//!   `POST /api/account/resend {email}` mails a new one;
//!   `POST /api/account/verify {email, code}` makes the account (an app of
//!   its own, namespace uid 1) and answers its appkey, appid and uid.
//!   Mails are limited per address and per client address (429).
//! - `GET /api/packages`, `GET /api/packages/{id}`: public.
//! - Under `/api/ns/{appid}/{uid}/` with header `x-tfs-appkey` (the app's
//!   own namespaces only): `POST orders` buys or cancels, `GET orders`,
//!   `GET orders/{orderid}`, `GET usage`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use sha2::Sha256;

use super::api::ns;
use super::store::{
    unix_now, DbError, OrderRow, PackageFields, PackageRow, Registration, ORDER_PAID,
};
use super::{Meta, MetaError, MetaResult, Ns};
use crate::proto::*;

pub fn routes(meta: Arc<Meta>) -> Router {
    Router::new()
        .route("/api/account/register", post(register))
        .route("/api/account/resend", post(resend))
        .route("/api/account/verify", post(verify))
        .route("/api/packages", get(packages))
        .route("/api/packages/{id}", get(package))
        .route("/api/ns/{appid}/{uid}/orders", get(orders).post(buy))
        .route("/api/ns/{appid}/{uid}/orders/{orderid}", get(order))
        .route("/api/ns/{appid}/{uid}/usage", get(usage))
        .with_state(meta)
}

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// The packages a new store starts with.
pub fn default_packages() -> Vec<PackageFields> {
    let p = |name: &str, capacity: u64, days: u64, price: u64| PackageFields {
        name: Some(name.into()),
        capacity: Some(capacity),
        duration_days: Some(days),
        price_cents: Some(price),
        active: Some(true),
    };
    vec![
        p("basic 200 GiB / 30 days", 200 * GIB, 30, 299),
        p("standard 1 TiB / 30 days", TIB, 30, 999),
        p("pro 5 TiB / 30 days", 5 * TIB, 30, 3999),
        p("annual 1 TiB / 365 days", TIB, 365, 9999),
    ]
}

/// Most units one order may buy.
const MAX_QUANTITY: u64 = 1000;
const DAY: i64 = 86_400;

type Body<T> = Result<Json<T>, JsonRejection>;

fn body<T>(b: Body<T>) -> MetaResult<T> {
    b.map(|Json(v)| v)
        .map_err(|e| MetaError::BadRequest(e.body_text()))
}

/// An e-mail address, trimmed and lower-cased, if it is one.
pub fn normalize_email(raw: &str) -> MetaResult<String> {
    let email = raw.trim().to_lowercase();
    let bad = || MetaError::BadRequest(format!("{raw:?} is not an e-mail address"));
    if email.is_empty() || email.len() > 254 {
        return Err(bad());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.is_empty() || email.chars().any(|c| c.is_whitespace()) {
        return Err(bad());
    }
    email.parse::<lettre::Address>().map_err(|_| bad())?;
    Ok(email)
}

/// The HMAC of a mailed code under the server's secret (`DATA/secret.key`,
/// outside the database): a code is one of a million, so an unkeyed hash
/// in a copy of the database would be reversed in seconds.
fn code_mac(secret: &[u8; 32], email: &str, code: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(email.as_bytes());
    mac.update(b"\n");
    mac.update(code.as_bytes());
    mac
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill(&mut raw[..]);
    hex::encode(raw)
}

/// A random order id in the UUID v4 form.
fn new_order_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub fn package_json(p: &PackageRow) -> Package {
    Package {
        id: p.id,
        name: p.name.clone(),
        capacity: p.capacity,
        duration_days: p.duration_days,
        price_cents: p.price_cents,
        active: p.active,
    }
}

fn order_json(o: &OrderRow, now: i64) -> Order {
    let status = if o.status == ORDER_PAID && o.expires <= now {
        "expired".to_string()
    } else {
        o.status.clone()
    };
    Order {
        orderid: o.id.clone(),
        package: o.package,
        name: o.name.clone(),
        quantity: o.quantity,
        capacity: o.capacity,
        price_cents: o.price_cents,
        status,
        active: o.active_at(now),
        created: o.created,
        expires: o.expires,
        canceled: o.canceled,
    }
}

impl Meta {
    /// Mails a new code to `email` (a first registration or a resend) for
    /// a client at `peer`.
    pub async fn register(
        &self,
        raw: &str,
        resend: bool,
        peer: IpAddr,
    ) -> MetaResult<RegisterResponse> {
        let email = normalize_email(raw)?;
        if self.store(|db| db.account_by_email(&email))?.is_some() {
            return Err(MetaError::Conflict(format!(
                "{email} is already registered"
            )));
        }
        let now = unix_now();
        let prev = self.store(|db| db.registration(&email))?;
        if resend && prev.is_none() {
            return Err(MetaError::NotFound(format!(
                "no registration is pending for {email}: register first"
            )));
        }
        let interval = self.cfg.resend_interval.as_secs() as i64;
        let (sends, first_sent) = match &prev {
            Some(r) if now - r.first_sent < DAY => (r.sends, r.first_sent),
            _ => (0, now),
        };
        if let Some(r) = &prev {
            let wait = r.sent + interval - now;
            if wait > 0 {
                return Err(MetaError::Forbidden(format!(
                    "a code was sent to {email} {} s ago: ask for another in {wait} s",
                    now - r.sent
                )));
            }
        }
        if sends >= self.cfg.codes_per_day {
            return Err(MetaError::Forbidden(format!(
                "{sends} codes were sent to {email} within a day: try again tomorrow"
            )));
        }
        self.registration_allowed(peer)?;
        let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
        let ttl = self.cfg.code_ttl.as_secs();
        let body = format!(
            "Your tfsfs verification code is {code}.\r\n\r\n\
             Enter it to activate the account of {email}.\r\n\
             It is valid for {} minutes.\r\n\
             If you did not ask for it, ignore this mail.\r\n",
            ttl.div_ceil(60)
        );
        self.mailer
            .send(&email, &format!("tfsfs verification code {code}"), &body)
            .await
            .map_err(|e| MetaError::Unavailable(format!("cannot mail {email}: {e:#}")))?;
        self.store(|db| {
            db.put_registration(&Registration {
                email: email.clone(),
                code_hash: hex::encode(
                    code_mac(&self.secret, &email, &code)
                        .finalize()
                        .into_bytes(),
                ),
                expires: now + ttl as i64,
                attempts: 0,
                sent: now,
                sends: sends + 1,
                first_sent,
            })
        })?;
        Ok(RegisterResponse {
            email,
            code_ttl_secs: ttl,
            resend_after_secs: interval as u64,
        })
    }

    /// Counts a mail for `peer`, refusing it past the hourly limit. An IPv6
    /// client counts by its /64, the least a host is usually given.
    fn registration_allowed(&self, peer: IpAddr) -> MetaResult<()> {
        let key = match peer.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u64::MAX as u128)).into()),
            v4 => v4,
        };
        let allowed = self.registrations.check_key(&key).is_ok();
        self.registrations.retain_recent();
        if !allowed {
            return Err(MetaError::TooMany(format!(
                "more than {} registration mails an hour from {peer}: try again later",
                self.cfg.registrations_per_ip
            )));
        }
        Ok(())
    }

    /// Checks a mailed code; on success the account exists.
    pub fn verify(&self, raw: &str, code: &str) -> MetaResult<AccountCredentials> {
        let email = normalize_email(raw)?;
        if self.store(|db| db.account_by_email(&email))?.is_some() {
            return Err(MetaError::Conflict(format!(
                "{email} is already registered and verified"
            )));
        }
        let r = self.store(|db| db.registration(&email))?.ok_or_else(|| {
            MetaError::NotFound(format!("no registration is pending for {email}"))
        })?;
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MetaError::BadRequest("a code is 6 digits".into()));
        }
        let max = self.cfg.code_attempts;
        if r.attempts >= max {
            return Err(MetaError::Forbidden(format!(
                "{max} wrong codes were entered for {email}: ask for a new code"
            )));
        }
        if unix_now() >= r.expires {
            return Err(MetaError::Forbidden(format!(
                "the code sent to {email} has expired: ask for a new code"
            )));
        }
        let stored = hex::decode(&r.code_hash).unwrap_or_default();
        if code_mac(&self.secret, &email, code)
            .verify_slice(&stored)
            .is_err()
        {
            let n = self.store(|db| db.registration_failed(&email))?;
            let left = max.saturating_sub(n);
            return Err(MetaError::Forbidden(if left == 0 {
                format!("wrong code, and no attempts left: ask for a new code for {email}")
            } else {
                format!("wrong code: {left} attempts left")
            }));
        }
        let appkey = random_hex(24);
        let ns = self
            .store(|db| db.activate_account(&email, &appkey))
            .map_err(|e| match e {
                DbError::Exists => MetaError::Conflict(format!("{email} is already registered")),
                e => e.into(),
            })?;
        tracing::info!(%email, appid = ns.appid, "account registered");
        Ok(AccountCredentials {
            email,
            appkey,
            appid: ns.appid,
            uid: ns.uid,
        })
    }

    /// Buys `quantity` units of a package, or cancels the caller's active
    /// orders of it.
    pub fn buy(&self, ns: Ns, req: &BuyRequest) -> MetaResult<BuyResult> {
        let pkg = self
            .store(|db| db.package(req.id))?
            .ok_or_else(|| MetaError::NotFound(format!("no package {}", req.id)))?;
        let now = unix_now();
        if req.canceled {
            let ended = self.store(|db| db.cancel_orders(ns, pkg.id, now))?;
            if ended.is_empty() {
                return Err(MetaError::NotFound(format!(
                    "you have no active order of package {}",
                    pkg.id
                )));
            }
            return Ok(BuyResult::Canceled(
                ended.iter().map(|o| order_json(o, now)).collect(),
            ));
        }
        if !pkg.active {
            return Err(MetaError::Forbidden(format!(
                "package {} is no longer sold",
                pkg.id
            )));
        }
        if req.quantity == 0 || req.quantity > MAX_QUANTITY {
            return Err(MetaError::BadRequest(format!(
                "quantity must be 1 to {MAX_QUANTITY}"
            )));
        }
        let too_big = || MetaError::BadRequest("that order is too large".into());
        let order = OrderRow {
            id: new_order_id(),
            ns,
            package: pkg.id,
            name: pkg.name.clone(),
            quantity: req.quantity,
            capacity: pkg.capacity.checked_mul(req.quantity).ok_or_else(too_big)?,
            price_cents: pkg
                .price_cents
                .checked_mul(req.quantity)
                .ok_or_else(too_big)?,
            created: now,
            expires: now + pkg.duration_days as i64 * DAY,
            // Payment would hook in here: create the order `pending`, send
            // the buyer to the payment provider, and mark it `paid` on the
            // provider's confirmation. Only paid orders count as capacity.
            status: ORDER_PAID.into(),
            canceled: None,
        };
        self.store(|db| db.insert_order(&order))?;
        tracing::info!(appid = ns.appid, uid = ns.uid, order = %order.id, package = pkg.id, "order paid");
        Ok(BuyResult::Bought(order_json(&order, now)))
    }

    pub fn usage_of(&self, ns: Ns) -> MetaResult<Usage> {
        let (used, _) = self.store(|db| db.usage(ns))?;
        let files = self.store(|db| db.file_count(ns))?;
        let (ordered, active) = self.store(|db| db.ordered_capacity(ns, unix_now()))?;
        let capacity = self.cfg.free_capacity.saturating_add(ordered);
        Ok(Usage {
            used,
            files,
            capacity,
            free_capacity: self.cfg.free_capacity,
            ordered_capacity: ordered,
            active_orders: active,
            available: capacity.saturating_sub(used),
        })
    }
}

async fn register(
    State(m): State<Arc<Meta>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    b: Body<RegisterRequest>,
) -> MetaResult<Json<RegisterResponse>> {
    let r = body(b)?;
    Ok(Json(m.register(&r.email, r.resend, peer.ip()).await?))
}

#[derive(Deserialize)]
struct ResendRequest {
    email: String,
}

async fn resend(
    State(m): State<Arc<Meta>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    b: Body<ResendRequest>,
) -> MetaResult<Json<RegisterResponse>> {
    let r = body(b)?;
    Ok(Json(m.register(&r.email, true, peer.ip()).await?))
}

async fn verify(
    State(m): State<Arc<Meta>>,
    b: Body<VerifyRequest>,
) -> MetaResult<Json<AccountCredentials>> {
    let r = body(b)?;
    Ok(Json(m.verify(&r.email, &r.code)?))
}

async fn packages(State(m): State<Arc<Meta>>) -> MetaResult<Json<Vec<Package>>> {
    Ok(Json(
        m.store(|db| db.packages(false))?
            .iter()
            .map(package_json)
            .collect(),
    ))
}

async fn package(State(m): State<Arc<Meta>>, Path(id): Path<String>) -> MetaResult<Json<Package>> {
    let id: i64 = id
        .parse()
        .map_err(|_| MetaError::BadRequest(format!("package id {id:?} is not a number")))?;
    let p = m
        .store(|db| db.package(id))?
        .ok_or_else(|| MetaError::NotFound(format!("no package {id}")))?;
    Ok(Json(package_json(&p)))
}

async fn buy(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
    b: Body<BuyRequest>,
) -> MetaResult<Json<BuyResult>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let req = body(b)?;
    Ok(Json(m.buy(ns, &req)?))
}

async fn orders(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
) -> MetaResult<Json<Vec<Order>>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let now = unix_now();
    Ok(Json(
        m.store(|db| db.orders(ns))?
            .iter()
            .map(|o| order_json(o, now))
            .collect(),
    ))
}

async fn order(
    State(m): State<Arc<Meta>>,
    Path((appid, uid, orderid)): Path<(u64, u64, String)>,
    headers: HeaderMap,
) -> MetaResult<Json<Order>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    let o = m
        .store(|db| db.order(ns, &orderid))?
        .ok_or_else(|| MetaError::NotFound(format!("you have no order {orderid:?}")))?;
    Ok(Json(order_json(&o, unix_now())))
}

async fn usage(
    State(m): State<Arc<Meta>>,
    Path((appid, uid)): Path<(u64, u64)>,
    headers: HeaderMap,
) -> MetaResult<Json<Usage>> {
    let ns = ns(&m, &headers, appid, uid, true)?;
    Ok(Json(m.usage_of(ns)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a b@example.com",
            "a@b@",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn order_ids_look_like_uuids() {
        let id = new_order_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_order_id());
    }
}
