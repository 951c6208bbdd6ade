//! Signed tokens between the metadata server and providers, all Ed25519 in
//! one form (base64url(json) "." base64url(signature)):
//! - grants, signed by the metadata server: a short-lived permission for
//!   one provider to store, serve or delete named shards;
//! - receipts, signed by a provider: proof that it stored a shard for an
//!   upload session, which is what the metadata server records as placement;
//! - heartbeats, signed by a provider: its URL and space, replay-proof.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// HTTP header that carries a grant to a provider.
pub const GRANT_HEADER: &str = "x-tfs-grant";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put,
    Get,
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub op: Op,
    /// The provider the grant is for; every other provider refuses it.
    pub provider: String,
    pub shards: Vec<String>,
    /// Unix seconds after which the grant is void.
    pub exp: u64,
    /// The upload session a PUT belongs to; echoed in the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// A DELETE removes a shard only if it was last stored before this
    /// (Unix milliseconds): a copy stored again after the metadata server
    /// decided to delete it belongs to a newer upload and stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_before_ms: Option<u64>,
}

/// A provider's signed statement that it stored a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub shard: String,
    pub size: u64,
    pub provider: String,
    pub session: String,
}

/// A provider's signed heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    pub id: String,
    pub url: String,
    pub capacity: u64,
    pub used: u64,
    /// Unix milliseconds; the server accepts each provider's beats only in
    /// increasing order, so a recorded beat cannot be replayed.
    pub ts_ms: u64,
}

/// A token a provider signs: it names the provider whose key checks it.
pub trait ProviderSigned: DeserializeOwned {
    fn provider(&self) -> &str;
}

impl ProviderSigned for Receipt {
    fn provider(&self) -> &str {
        &self.provider
    }
}

impl ProviderSigned for Beat {
    fn provider(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("no grant")]
    Missing,
    #[error("grant is malformed")]
    Malformed,
    #[error("grant signature is invalid")]
    Forged,
    #[error("grant has expired")]
    Expired,
    #[error("grant does not cover this operation or shard")]
    Mismatch,
    #[error("grant is for another provider")]
    OtherProvider,
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Signs `value` into the token form.
pub fn sign<T: Serialize>(value: &T, key: &SigningKey) -> String {
    let body = serde_json::to_vec(value).expect("token body serializes");
    let sig = key.sign(&body);
    format!("{}.{}", B64.encode(&body), B64.encode(sig.to_bytes()))
}

/// The value of a token signed by `key`.
pub fn open<T: DeserializeOwned>(token: &str, key: &VerifyingKey) -> Result<T, GrantError> {
    let (body, sig) = token.split_once('.').ok_or(GrantError::Malformed)?;
    let body = B64.decode(body).map_err(|_| GrantError::Malformed)?;
    let sig: [u8; 64] = B64
        .decode(sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(GrantError::Malformed)?;
    key.verify(&body, &Signature::from_bytes(&sig))
        .map_err(|_| GrantError::Forged)?;
    serde_json::from_slice(&body).map_err(|_| GrantError::Malformed)
}

/// The unverified value of a token: only to learn which key to check it with.
pub fn peek<T: DeserializeOwned>(token: &str) -> Result<T, GrantError> {
    let (body, _) = token.split_once('.').ok_or(GrantError::Malformed)?;
    let body = B64.decode(body).map_err(|_| GrantError::Malformed)?;
    serde_json::from_slice(&body).map_err(|_| GrantError::Malformed)
}

impl Grant {
    pub fn sign(&self, key: &SigningKey) -> String {
        sign(self, key)
    }

    /// Checks the token's signature and expiry, and that it allows `op` on
    /// `shard` at the provider `me`.
    pub fn verify(
        token: Option<&str>,
        key: &VerifyingKey,
        me: &str,
        op: Op,
        shard: &str,
    ) -> Result<Grant, GrantError> {
        let grant: Grant = open(token.ok_or(GrantError::Missing)?, key)?;
        if grant.exp < now_secs() {
            return Err(GrantError::Expired);
        }
        if grant.provider != me {
            return Err(GrantError::OtherProvider);
        }
        if grant.op != op || !grant.shards.iter().any(|s| s == shard) {
            return Err(GrantError::Mismatch);
        }
        Ok(grant)
    }
}

/// Public key in the hex form the servers publish.
pub fn verifying_key_from_hex(s: &str) -> Option<VerifyingKey> {
    let raw: [u8; 32] = hex::decode(s.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_every_refusal() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let other = SigningKey::generate(&mut rand::rngs::OsRng);
        let pk = key.verifying_key();
        let g = Grant {
            op: Op::Put,
            provider: "p1".into(),
            shards: vec!["a".into()],
            exp: now_secs() + 60,
            session: None,
            stored_before_ms: None,
        };
        let t = g.sign(&key);
        assert!(Grant::verify(Some(&t), &pk, "p1", Op::Put, "a").is_ok());
        assert_eq!(
            Grant::verify(None, &pk, "p1", Op::Put, "a").unwrap_err(),
            GrantError::Missing
        );
        assert_eq!(
            Grant::verify(Some(&t), &pk, "p2", Op::Put, "a").unwrap_err(),
            GrantError::OtherProvider
        );
        assert_eq!(
            Grant::verify(Some(&t), &pk, "p1", Op::Get, "a").unwrap_err(),
            GrantError::Mismatch
        );
        assert_eq!(
            Grant::verify(Some(&t), &pk, "p1", Op::Put, "b").unwrap_err(),
            GrantError::Mismatch
        );
        assert_eq!(
            Grant::verify(Some(&g.sign(&other)), &pk, "p1", Op::Put, "a").unwrap_err(),
            GrantError::Forged
        );
        assert_eq!(
            Grant::verify(Some("x.y"), &pk, "p1", Op::Put, "a").unwrap_err(),
            GrantError::Malformed
        );
        let old = Grant {
            exp: now_secs() - 1,
            ..g
        };
        assert_eq!(
            Grant::verify(Some(&old.sign(&key)), &pk, "p1", Op::Put, "a").unwrap_err(),
            GrantError::Expired
        );
    }

    #[test]
    fn receipts_open_only_with_their_signer() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let other = SigningKey::generate(&mut rand::rngs::OsRng);
        let r = Receipt {
            shard: "ab".into(),
            size: 3,
            provider: "p1".into(),
            session: "s".into(),
        };
        let t = sign(&r, &key);
        assert_eq!(open::<Receipt>(&t, &key.verifying_key()).unwrap(), r);
        assert_eq!(peek::<Receipt>(&t).unwrap(), r);
        assert_eq!(
            open::<Receipt>(&t, &other.verifying_key()).unwrap_err(),
            GrantError::Forged
        );
    }
}
