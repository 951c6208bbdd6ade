//! Grants: short-lived permissions, signed by the metadata server with
//! Ed25519, that let a provider store, serve or delete named shards.
//! Providers hold only the server's public key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
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
    pub shards: Vec<String>,
    /// Unix seconds after which the grant is void.
    pub exp: u64,
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
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Grant {
    /// Token form: base64url(json) "." base64url(signature).
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = serde_json::to_vec(self).expect("grant serializes");
        let sig = key.sign(&body);
        format!("{}.{}", B64.encode(&body), B64.encode(sig.to_bytes()))
    }

    /// Checks the token's signature and expiry, and that it allows `op` on `shard`.
    pub fn verify(
        token: Option<&str>,
        key: &VerifyingKey,
        op: Op,
        shard: &str,
    ) -> Result<Grant, GrantError> {
        let token = token.ok_or(GrantError::Missing)?;
        let (body, sig) = token.split_once('.').ok_or(GrantError::Malformed)?;
        let body = B64.decode(body).map_err(|_| GrantError::Malformed)?;
        let sig: [u8; 64] = B64
            .decode(sig)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or(GrantError::Malformed)?;
        key.verify(&body, &Signature::from_bytes(&sig))
            .map_err(|_| GrantError::Forged)?;
        let grant: Grant = serde_json::from_slice(&body).map_err(|_| GrantError::Malformed)?;
        if grant.exp < now_secs() {
            return Err(GrantError::Expired);
        }
        if grant.op != op || !grant.shards.iter().any(|s| s == shard) {
            return Err(GrantError::Mismatch);
        }
        Ok(grant)
    }
}

/// Public key in the hex form the server publishes.
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
            shards: vec!["a".into()],
            exp: now_secs() + 60,
        };
        let t = g.sign(&key);
        assert!(Grant::verify(Some(&t), &pk, Op::Put, "a").is_ok());
        assert_eq!(
            Grant::verify(None, &pk, Op::Put, "a").unwrap_err(),
            GrantError::Missing
        );
        assert_eq!(
            Grant::verify(Some(&t), &pk, Op::Get, "a").unwrap_err(),
            GrantError::Mismatch
        );
        assert_eq!(
            Grant::verify(Some(&t), &pk, Op::Put, "b").unwrap_err(),
            GrantError::Mismatch
        );
        assert_eq!(
            Grant::verify(Some(&g.sign(&other)), &pk, Op::Put, "a").unwrap_err(),
            GrantError::Forged
        );
        assert_eq!(
            Grant::verify(Some("x.y"), &pk, Op::Put, "a").unwrap_err(),
            GrantError::Malformed
        );
        let old = Grant {
            exp: now_secs() - 1,
            ..g
        };
        assert_eq!(
            Grant::verify(Some(&old.sign(&key)), &pk, Op::Put, "a").unwrap_err(),
            GrantError::Expired
        );
    }
}
