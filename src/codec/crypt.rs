//! Client-side encryption: AES-256-GCM (ring: its GHASH is several times
//! faster than the aes-gcm crate's, which dominated profiles) per partition, convergent inside one
//! account. The file key is keyed BLAKE3 (under a key derived from the
//! account key) of the partition size and plaintext, so one account's
//! identical files encrypt identically (dedup works) while two accounts,
//! having different account keys, never share ciphertext. The file key
//! travels to the server only wrapped under the account's wrap key.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const TAG_LEN: usize = 16;
const WRAP_NONCE_LEN: usize = 12;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptError {
    #[error("authentication failed: ciphertext or key is wrong")]
    Authentication,
    #[error("wrapped key is malformed")]
    BadWrappedKey,
}

/// The secret of one account (appid, uid), derived from the client's master
/// secret, and the BLAKE3 key of its file keys, derived from that. Never
/// leaves the client.
#[derive(Clone)]
pub struct AccountKey {
    secret: [u8; 32],
    file_keys: [u8; 32],
}

/// How a file key is derived from the account key and the plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derivation {
    /// Keyed BLAKE3: what this client stores.
    Blake3,
    /// HMAC-SHA256, as stored before (several times slower): those objects
    /// keep their wrapped keys and read as ever; only recognising such a
    /// file as unchanged (`content_matches`) derives it again.
    HmacSha256,
}

impl AccountKey {
    pub fn derive(master: &[u8; 32], appid: u64, uid: u64) -> Self {
        let secret = hmac(master, &[format!("tfsfs account {appid} {uid}").as_bytes()]);
        AccountKey {
            secret,
            file_keys: blake3::derive_key("tfsfs 2026 file key", &secret),
        }
    }

    /// Starts a streaming derivation of the file key of some plaintext cut
    /// into partitions of `partition_size` bytes. The partition size is part
    /// of the key: the nonce is the partition index, so the same plaintext cut
    /// differently must never encrypt under the same key.
    pub fn file_key_hasher(&self, partition_size: u64) -> FileKeyHasher {
        self.key_hasher(partition_size, Derivation::Blake3)
    }

    /// `file_key_hasher` by the derivation `d`.
    pub fn key_hasher(&self, partition_size: u64, d: Derivation) -> FileKeyHasher {
        match d {
            Derivation::Blake3 => {
                let mut h = blake3::Hasher::new_keyed(&self.file_keys);
                h.update(&partition_size.to_be_bytes());
                FileKeyHasher::Blake3(Box::new(h))
            }
            Derivation::HmacSha256 => {
                let mut mac =
                    <HmacSha256 as Mac>::new_from_slice(&self.secret).expect("any key length");
                mac.update(b"tfsfs file key\0");
                mac.update(&partition_size.to_be_bytes());
                FileKeyHasher::Hmac(Box::new(mac))
            }
        }
    }

    fn wrap_cipher(&self) -> LessSafeKey {
        gcm_key(&hmac(&self.secret, &[b"tfsfs wrap key"]))
    }

    /// Encrypts a file key for storage in the file's metadata (hex).
    pub fn wrap(&self, key: &FileKey) -> String {
        let mut nonce = [0u8; WRAP_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut ct = key.0.to_vec();
        seal(&self.wrap_cipher(), nonce, &mut ct);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        hex::encode(out)
    }

    pub fn unwrap(&self, wrapped: &str) -> Result<FileKey, CryptError> {
        let raw = hex::decode(wrapped).map_err(|_| CryptError::BadWrappedKey)?;
        if raw.len() != WRAP_NONCE_LEN + 32 + TAG_LEN {
            return Err(CryptError::BadWrappedKey);
        }
        let (nonce, ct) = raw.split_at(WRAP_NONCE_LEN);
        let mut pt = ct.to_vec();
        let len = open(
            &self.wrap_cipher(),
            nonce.try_into().expect("split at the nonce length"),
            &mut pt,
        )?;
        pt.truncate(len);
        Ok(FileKey(
            pt.try_into().map_err(|_| CryptError::BadWrappedKey)?,
        ))
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A file key being derived from a file's plaintext as it comes.
pub enum FileKeyHasher {
    Blake3(Box<blake3::Hasher>),
    Hmac(Box<HmacSha256>),
}

impl FileKeyHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            FileKeyHasher::Blake3(h) => {
                h.update(data);
            }
            FileKeyHasher::Hmac(h) => h.update(data),
        }
    }
    pub fn finish(self) -> FileKey {
        FileKey(match self {
            FileKeyHasher::Blake3(h) => h.finalize().into(),
            FileKeyHasher::Hmac(h) => h.finalize().into_bytes().into(),
        })
    }
}

/// The AES-256 key of one file's content.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey([u8; 32]);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

/// Encrypts and decrypts the partitions of one file.
#[derive(Clone)]
pub struct PartitionCipher(Arc<LessSafeKey>);

fn gcm_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

/// Encrypts `buf` in place and appends the tag.
fn seal(key: &LessSafeKey, nonce: [u8; 12], buf: &mut Vec<u8>) {
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
        .expect("AES-GCM sealing into a Vec cannot fail");
}

/// Checks and decrypts `buf` (ciphertext + tag) in place, leaving the
/// plaintext. On failure the buffer holds no plaintext.
/// Opens `buf` (ciphertext + tag) in place: the plaintext is its first
/// bytes, this many.
fn open(key: &LessSafeKey, nonce: [u8; 12], buf: &mut [u8]) -> Result<usize, CryptError> {
    Ok(key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
        .map_err(|_| CryptError::Authentication)?
        .len())
}

impl PartitionCipher {
    pub fn new(key: &FileKey) -> Self {
        PartitionCipher(Arc::new(gcm_key(&key.0)))
    }

    /// The nonce is the partition index: each (key, index) pair encrypts one
    /// plaintext only, because the key is derived from that very plaintext.
    fn nonce(index: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(b"tfsP");
        n[4..].copy_from_slice(&index.to_be_bytes());
        n
    }

    /// Encrypts `buf` in place, appending the 16-byte tag.
    pub fn encrypt_in_place(&self, index: u64, buf: &mut Vec<u8>) {
        seal(&self.0, Self::nonce(index), buf);
    }

    /// Decrypts `buf` (ciphertext + tag) in place.
    pub fn decrypt_in_place(&self, index: u64, buf: &mut Vec<u8>) -> Result<(), CryptError> {
        let len = self.decrypt(index, buf)?;
        buf.truncate(len);
        Ok(())
    }

    /// Decrypts `buf` (ciphertext + tag) in place, whatever holds it; the
    /// plaintext is its first bytes, this many.
    pub fn decrypt(&self, index: u64, buf: &mut [u8]) -> Result<usize, CryptError> {
        open(&self.0, Self::nonce(index), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_key(acct: &AccountKey, data: &[u8]) -> FileKey {
        let mut h = acct.file_key_hasher(4096);
        h.update(data);
        h.finish()
    }

    const BOTH: [Derivation; 2] = [Derivation::Blake3, Derivation::HmacSha256];

    fn key_by(acct: &AccountKey, ps: u64, d: Derivation, data: &[u8]) -> FileKey {
        let mut h = acct.key_hasher(ps, d);
        h.update(data);
        h.finish()
    }

    #[test]
    fn convergent_within_account_distinct_across() {
        let master = [7u8; 32];
        let a = AccountKey::derive(&master, 1, 1);
        let b = AccountKey::derive(&master, 1, 2);
        for d in BOTH {
            let key = |acct, data| key_by(acct, 4096, d, data);
            assert_eq!(key(&a, b"hello"), key(&a, b"hello"));
            assert_ne!(key(&a, b"hello"), key(&b, b"hello"), "{d:?}");
            assert_ne!(key(&a, b"hello"), key(&a, b"hellp"), "{d:?}");
        }
        assert_eq!(
            file_key(&a, b"hello"),
            key_by(&a, 4096, Derivation::Blake3, b"hello")
        );
        assert_ne!(
            file_key(&a, b"hello"),
            key_by(&a, 4096, Derivation::HmacSha256, b"hello"),
            "the two derivations give different keys"
        );
    }

    #[test]
    fn partition_size_is_part_of_the_key() {
        let a = AccountKey::derive(&[3u8; 32], 1, 1);
        for d in BOTH {
            assert_ne!(
                key_by(&a, 1 << 20, d, b"same plaintext"),
                key_by(&a, 4 << 20, d, b"same plaintext"),
                "a nonce is a partition index: cut differently, the key must differ ({d:?})"
            );
        }
    }

    /// The legacy derivation is the one objects were stored with: HMAC-SHA256
    /// under the account secret (itself an HMAC of the master secret) of a
    /// label, the partition size and the plaintext, computed here from
    /// first principles.
    #[test]
    fn legacy_derivation_is_the_stored_one() {
        let master = [5u8; 32];
        let secret = hmac(&master, &[b"tfsfs account 3 4"]);
        let want = hmac(
            &secret,
            &[b"tfsfs file key\0", &(4u64 << 20).to_be_bytes(), b"plain"],
        );
        let a = AccountKey::derive(&master, 3, 4);
        assert_eq!(
            key_by(&a, 4 << 20, Derivation::HmacSha256, b"plain"),
            FileKey(want)
        );
    }

    #[test]
    fn wrap_round_trip_and_foreign_account_fails() {
        let master = [9u8; 32];
        let a = AccountKey::derive(&master, 1, 1);
        let b = AccountKey::derive(&master, 2, 1);
        let k = file_key(&a, b"data");
        let w = a.wrap(&k);
        assert_eq!(a.unwrap(&w).unwrap(), k);
        assert_eq!(b.unwrap(&w).unwrap_err(), CryptError::Authentication);
        assert_eq!(a.unwrap("zz").unwrap_err(), CryptError::BadWrappedKey);
    }

    #[test]
    fn partition_round_trip_and_tamper() {
        let k = file_key(&AccountKey::derive(&[1; 32], 1, 1), b"x");
        let c = PartitionCipher::new(&k);
        let mut buf = b"some plaintext".to_vec();
        c.encrypt_in_place(3, &mut buf);
        assert_eq!(buf.len(), 14 + TAG_LEN);
        let mut wrong_index = buf.clone();
        assert!(c.decrypt_in_place(4, &mut wrong_index).is_err());
        buf[0] ^= 1;
        assert!(c.decrypt_in_place(3, &mut buf.clone()).is_err());
        buf[0] ^= 1;
        c.decrypt_in_place(3, &mut buf).unwrap();
        assert_eq!(buf, b"some plaintext");
    }
}
