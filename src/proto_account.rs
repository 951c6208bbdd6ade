//! Wire types of accounts, packages, orders and usage, and of the
//! namespace listing the sidecar's `/store/*` routes use. JSON under
//! `/api/account/`, `/api/packages` and `/api/ns/{appid}/{uid}/`.

use serde::{Deserialize, Serialize};

/// `POST /api/account/register`: mail a 6-digit code to `email`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub email: String,
    /// Ask for a new code for a pending registration.
    #[serde(default)]
    pub resend: bool,
}

/// A code was mailed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub email: String,
    /// Seconds the code is accepted.
    pub code_ttl_secs: u64,
    /// Seconds before another code may be asked for.
    pub resend_after_secs: u64,
}

/// `POST /api/account/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub email: String,
    pub code: String,
}

/// A verified account's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCredentials {
    pub email: String,
    pub appkey: String,
    pub appid: u64,
    pub uid: u64,
}

/// A package on sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub id: i64,
    pub name: String,
    /// Bytes per unit bought.
    pub capacity: u64,
    pub duration_days: u64,
    /// Price per unit, in cents.
    pub price_cents: u64,
    /// False once retired: it cannot be bought any more.
    pub active: bool,
}

fn one() -> u64 {
    1
}

/// `POST /api/ns/{appid}/{uid}/orders`: buy `quantity` units of package
/// `id`, or with `canceled` cancel the active orders of that package.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuyRequest {
    pub id: i64,
    /// Units bought: the capacity and the price are multiplied by it.
    #[serde(default = "one", alias = "quanlity")]
    pub quantity: u64,
    #[serde(default)]
    pub canceled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub orderid: String,
    /// The package's id and its name when bought.
    pub package: i64,
    pub name: String,
    pub quantity: u64,
    /// Bytes this order adds while active.
    pub capacity: u64,
    pub price_cents: u64,
    /// `paid`, `canceled` or `expired`.
    pub status: String,
    /// Counts toward the capacity now.
    pub active: bool,
    /// Unix seconds.
    pub created: i64,
    pub expires: i64,
    #[serde(default)]
    pub canceled: Option<i64>,
}

/// What buying answers: the new order, or the orders a cancel ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BuyResult {
    Bought(Order),
    Canceled(Vec<Order>),
}

/// `GET /api/ns/{appid}/{uid}/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Stored bytes, each object counted once however many files share it.
    pub used: u64,
    /// Files (directories not counted).
    pub files: u64,
    /// `free_capacity` + `ordered_capacity`.
    pub capacity: u64,
    pub free_capacity: u64,
    pub ordered_capacity: u64,
    pub active_orders: u64,
    /// `capacity - used`, or 0.
    pub available: u64,
}

/// An entry of the store listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreEntry {
    /// Node id, stable across renames.
    pub id: i64,
    /// Full path in the namespace.
    pub path: String,
    pub folder: bool,
    pub size: u64,
    /// Modification time, unix seconds.
    pub modtime: i64,
    /// Content hash: the SHA-1 of the stored object (see README); empty
    /// for folders.
    pub hash: String,
    /// Stored encrypted (only its owner's client can read it).
    pub encrypted: bool,
}

/// `GET /api/ns/{appid}/{uid}/store/list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorePage {
    /// Entries in the directory, all pages together.
    pub total: u64,
    pub entries: Vec<StoreEntry>,
}

/// `POST /api/ns/{appid}/{uid}/store/remove_tree`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeRequest {
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeRemoved {
    /// Nodes removed, the directory itself included.
    pub removed: u64,
}
