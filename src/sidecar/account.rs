//! `/store/register`, `/store/verifyemail`, `/store/resendemail`, `/order/*`
//! and `/usage/amount`: passed to the metadata server, the order and usage
//! routes with the mount's credentials. A verified account is saved to the
//! config dir (`account.json`), which the mount and the CLI use next time.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use serde::Deserialize;

use super::{done, fail, parse, parse_query, Answer, Shared};
use crate::config::{save_account, SavedAccount};
use crate::proto::BuyRequest;

#[derive(Deserialize)]
pub struct RegisterBody {
    email: String,
    #[serde(default)]
    resend: bool,
}

pub async fn register(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: RegisterBody = parse(&body)?;
    let sent = s.meta.register(&r.email, r.resend).await?;
    *s.pending() = Some(sent.email.clone());
    done(sent)
}

#[derive(Deserialize)]
pub struct ResendBody {
    #[serde(default)]
    email: Option<String>,
}

/// The e-mail of a request, else that of the registration this sidecar
/// started.
fn email_of(s: &Shared, given: Option<String>) -> Result<String, super::Fail> {
    given
        .filter(|e| !e.trim().is_empty())
        .or_else(|| s.pending().clone())
        .ok_or_else(|| {
            fail("no registration is pending here: call /store/register first, or give \"email\"")
        })
}

pub async fn resend(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: ResendBody = parse(&body)?;
    let email = email_of(&s, r.email)?;
    let sent = s.meta.register(&email, true).await?;
    *s.pending() = Some(sent.email.clone());
    done(sent)
}

#[derive(Deserialize)]
pub struct VerifyBody {
    code: String,
    #[serde(default)]
    email: Option<String>,
}

pub async fn verify(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: VerifyBody = parse(&body)?;
    let email = email_of(&s, r.email)?;
    let creds = s.meta.verify(&email, &r.code).await?;
    let saved = SavedAccount {
        meta_url: s.saved_meta_url.clone(),
        email: creds.email.clone(),
        appkey: creds.appkey.clone(),
        appid: creds.appid,
        uid: creds.uid,
    };
    let path = save_account(&saved)
        .map_err(|e| fail(format!("the account exists but could not be saved: {e:#}")))?;
    *s.pending() = None;
    tracing::info!(email = %creds.email, path = %path.display(), "account verified and saved");
    done(serde_json::json!({
        "email": creds.email,
        "appkey": creds.appkey,
        "appid": creds.appid,
        "uid": creds.uid,
        "saved": path,
    }))
}

pub async fn packages(State(s): State<Shared>) -> Answer {
    done(s.meta.packages().await?)
}

#[derive(Deserialize)]
pub struct PackageQuery {
    id: i64,
}

pub async fn package(State(s): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let q: PackageQuery = parse_query(q.as_deref())?;
    done(s.meta.package(q.id).await?)
}

pub async fn buy(State(s): State<Shared>, body: Bytes) -> Answer {
    let r: BuyRequest = parse(&body)?;
    done(s.meta.buy(&r).await?)
}

pub async fn orders(State(s): State<Shared>) -> Answer {
    done(s.meta.orders().await?)
}

#[derive(Deserialize)]
pub struct OrderQuery {
    orderid: String,
}

pub async fn order(State(s): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let q: OrderQuery = parse_query(q.as_deref())?;
    if q.orderid.is_empty() {
        return Err(fail("orderid is empty"));
    }
    done(s.meta.order(&q.orderid).await?)
}

pub async fn usage(State(s): State<Shared>) -> Answer {
    done(s.meta.usage().await?)
}
