//! Property tests of the pure codec pipeline: Reed-Solomon erasure coding,
//! convergent AES-256-GCM partition encryption, SHA-1 shard checks and the
//! size arithmetic that ties them together.

use proptest::prelude::*;
use proptest::sample::subsequence;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::BTreeSet;

use bytes::Bytes;
use tfsfs::codec::crypt::{AccountKey, CryptError, FileKey, PartitionCipher, TAG_LEN};
use tfsfs::codec::erasure::{ErasureError, Scheme};
use tfsfs::codec::{
    object_stored_size, partition_count, sha1_hex, shard_id, shard_matches, stored_len,
};

const MAX_DATA: usize = 200_000;

/// Deterministic pseudo-random bytes: proptest only has to generate (and
/// shrink) a length and a seed, which is far cheaper than a `Vec<u8>`.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Data lengths biased towards the small edge cases (shorter than k, empty).
fn data_len() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..64, 0usize..MAX_DATA]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    (data_len(), any::<u64>()).prop_map(|(len, seed)| bytes(len, seed))
}

/// Random (k, m) with k in 1..=12 and m in 0..=6.
fn k_m() -> impl Strategy<Value = (usize, usize)> {
    (1usize..=12, 0usize..=6)
}

fn file_key(acct: &AccountKey, plain: &[u8]) -> FileKey {
    let mut h = acct.file_key_hasher(1 << 22);
    h.update(plain);
    h.finish()
}

fn as_options(shards: &[Bytes]) -> Vec<Option<Vec<u8>>> {
    shards.iter().map(|s| Some(s.to_vec())).collect()
}

/// A random set of at most `max` distinct shard indices out of `n`.
fn random_losses(rng: &mut StdRng, n: usize, max: usize) -> BTreeSet<usize> {
    let count = rng.gen_range(0..=max.min(n));
    rand::seq::index::sample(rng, n, count)
        .into_iter()
        .collect()
}

/// Encrypts `plain` the way the client does: one file key over the whole
/// plaintext, then one AES-GCM message per partition, nonce = its index.
fn encrypt_file(acct: &AccountKey, plain: &[u8], partition_size: usize) -> Vec<Vec<u8>> {
    let cipher = PartitionCipher::new(&file_key(acct, plain));
    let n = partition_count(plain.len() as u64, partition_size as u64) as usize;
    (0..n)
        .map(|i| {
            let start = (i * partition_size).min(plain.len());
            let end = ((i + 1) * partition_size).min(plain.len());
            let mut buf = plain[start..end].to_vec();
            cipher.encrypt_in_place(i as u64, &mut buf);
            buf
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any ≤ m lost shards decode to exactly the partition; m+1 (or more)
    /// lost shards give TooFewShards, never wrong bytes.
    #[test]
    fn erasure_round_trip_and_too_few(
        (k, m, lost, too_many, data) in k_m().prop_flat_map(|(k, m)| {
            let all: Vec<usize> = (0..k + m).collect();
            (
                Just(k),
                Just(m),
                subsequence(all.clone(), 0..=m),
                subsequence(all, m + 1..=k + m),
                data(),
            )
        })
    ) {
        let scheme = Scheme::new(k, m).unwrap();
        let shards = scheme.encode(Bytes::from(data.clone()));
        let shard_len = scheme.shard_len(data.len());
        prop_assert_eq!(shards.len(), k + m);
        prop_assert!(shards.iter().all(|s| s.len() == shard_len));
        prop_assert!(shard_len * k >= data.len());

        // Nothing lost.
        prop_assert_eq!(&scheme.decode(as_options(&shards), data.len()).unwrap(), &data);

        // Up to m lost.
        let mut opt = as_options(&shards);
        for &i in &lost {
            opt[i] = None;
        }
        prop_assert_eq!(&scheme.decode(opt, data.len()).unwrap(), &data);

        // m+1 or more lost.
        let mut opt = as_options(&shards);
        for &i in &too_many {
            opt[i] = None;
        }
        let have = k + m - too_many.len();
        prop_assert_eq!(
            scheme.decode(opt, data.len()).unwrap_err(),
            ErasureError::TooFewShards { have, need: k }
        );
    }

    /// The whole write path and read path: partition, convergent encryption,
    /// RS-encode every stored partition, lose ≤ m shards of each, decode,
    /// decrypt; the plaintext comes back and the sizes add up.
    #[test]
    fn full_pipeline_round_trip(
        data in data(),
        partition_size in prop_oneof![1usize..=64, 1usize..=70_000],
        (k, m) in k_m(),
        master in any::<[u8; 32]>(),
        appid in any::<u64>(),
        uid in any::<u64>(),
        loss_seed in any::<u64>(),
    ) {
        // Keep the partition count bounded: 200 kB in 1-byte partitions would
        // be 200 000 RS encodes for a single case.
        let data = &data[..data.len().min(partition_size * 256)];
        let acct = AccountKey::derive(&master, appid, uid);
        let scheme = Scheme::new(k, m).unwrap();
        let mut rng = StdRng::seed_from_u64(loss_seed);

        let stored = encrypt_file(&acct, data, partition_size);
        prop_assert_eq!(
            stored.len() as u64,
            partition_count(data.len() as u64, partition_size as u64)
        );
        let total: u64 = stored.iter().map(|p| p.len() as u64).sum();
        prop_assert_eq!(total, object_stored_size(data.len() as u64, partition_size as u64, true));

        // Write: each stored partition becomes k+m shards.
        let encoded: Vec<(usize, Vec<Bytes>)> = stored
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let plain_len = (data.len() - (i * partition_size).min(data.len())).min(partition_size);
                assert_eq!(p.len() as u64, stored_len(plain_len as u64, true));
                (p.len(), scheme.encode(Bytes::from(p.clone())))
            })
            .collect();

        // Read: the key is unwrapped from metadata, not recomputed.
        let wrapped = acct.wrap(&file_key(&acct, data));
        let cipher = PartitionCipher::new(&acct.unwrap(&wrapped).unwrap());
        let mut out = Vec::with_capacity(data.len());
        for (i, (len, shards)) in encoded.into_iter().enumerate() {
            let mut opt = as_options(&shards);
            for j in random_losses(&mut rng, k + m, m) {
                opt[j] = None;
            }
            let mut part = scheme.decode(opt, len).unwrap();
            prop_assert_eq!(&part, &stored[i]);
            cipher.decrypt_in_place(i as u64, &mut part).unwrap();
            out.extend_from_slice(&part);
        }
        prop_assert_eq!(&out[..], data);
    }

    /// Any single flipped bit in a ciphertext partition (body or tag) makes
    /// decryption fail, and the buffer is left untouched: no unauthenticated
    /// plaintext is released (aes-gcm < 0.10.3, RUSTSEC-2023-0096, did).
    #[test]
    fn flipped_ciphertext_bit_fails_authentication(
        plain in (0usize..5_000, any::<u64>()).prop_map(|(l, s)| bytes(l, s)),
        index in any::<u64>(),
        bit in any::<prop::sample::Index>(),
        master in any::<[u8; 32]>(),
    ) {
        let acct = AccountKey::derive(&master, 1, 1);
        let cipher = PartitionCipher::new(&file_key(&acct, &plain));
        let mut ct = plain.clone();
        cipher.encrypt_in_place(index, &mut ct);
        prop_assert_eq!(ct.len(), plain.len() + TAG_LEN);

        let bit = bit.index(ct.len() * 8);
        let mut bad = ct.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(cipher.decrypt_in_place(index, &mut bad), Err(CryptError::Authentication));
        // Nothing unauthenticated is left behind: no byte of the plaintext
        // survives where the caller could read it (ring zeroes the buffer).
        let leaked = !plain.is_empty() && bad.windows(plain.len()).any(|w| w == &plain[..]);
        prop_assert!(!leaked || plain.iter().all(|&b| b == 0), "plaintext left in a failed buffer");

        // The wrong partition index fails as well.
        let mut wrong = ct.clone();
        prop_assert!(cipher.decrypt_in_place(index.wrapping_add(1), &mut wrong).is_err());

        // The untouched ciphertext still decrypts.
        cipher.decrypt_in_place(index, &mut ct).unwrap();
        prop_assert_eq!(ct, plain);
    }

    /// A flipped bit in a shard changes its SHA-1; the client treats such a
    /// shard as missing, which still decodes while ≤ m shards are bad (lost
    /// or corrupted), and gives TooFewShards beyond that.
    #[test]
    fn corrupted_shards_detected_by_sha1(
        (k, m, bad, data, seed) in k_m().prop_flat_map(|(k, m)| {
            (
                Just(k),
                Just(m),
                subsequence((0..k + m).collect::<Vec<usize>>(), 0..=k + m),
                data(),
                any::<u64>(),
            )
        })
    ) {
        let scheme = Scheme::new(k, m).unwrap();
        let shards = scheme.encode(Bytes::from(data.clone()));
        let hashes: Vec<String> = shards.iter().map(|s| shard_id(s)).collect();
        let mut rng = StdRng::seed_from_u64(seed);

        // Some bad shards are corrupted by one bit, the others are lost.
        let mut received: Vec<Option<Vec<u8>>> = as_options(&shards);
        for &i in &bad {
            if rng.gen_bool(0.7) {
                let s = received[i].as_mut().unwrap();
                let bit = rng.gen_range(0..s.len() * 8);
                s[bit / 8] ^= 1 << (bit % 8);
            } else {
                received[i] = None;
            }
        }

        // The client's check: a shard that is not its id's counts as missing.
        let checked: Vec<Option<Vec<u8>>> = received
            .into_iter()
            .zip(&hashes)
            .map(|(s, h)| s.filter(|s| shard_matches(h, s)))
            .collect();
        let missing: Vec<usize> = (0..k + m).filter(|&i| checked[i].is_none()).collect();
        prop_assert_eq!(&missing, &bad);

        let result = scheme.decode(checked, data.len());
        if bad.len() <= m {
            prop_assert_eq!(&result.unwrap(), &data);
        } else {
            prop_assert_eq!(
                result.unwrap_err(),
                ErasureError::TooFewShards { have: k + m - bad.len(), need: k }
            );
        }
    }

    /// Convergence: one account encrypts one plaintext identically every
    /// time; another account (appid or uid differs) never shares ciphertext.
    /// The file key round-trips through wrap/unwrap, and only for its owner.
    #[test]
    fn convergent_per_account(
        data in data(),
        partition_size in 1_000usize..=70_000,
        master in any::<[u8; 32]>(),
        (appid, uid) in (any::<u64>(), any::<u64>()),
        (appid2, uid2) in (any::<u64>(), any::<u64>()),
        other_master in any::<[u8; 32]>(),
    ) {
        prop_assume!((appid, uid) != (appid2, uid2));
        let a = AccountKey::derive(&master, appid, uid);
        let a_again = AccountKey::derive(&master, appid, uid);
        let ct1 = encrypt_file(&a, &data, partition_size);
        let ct2 = encrypt_file(&a_again, &data, partition_size);
        prop_assert_eq!(&ct1, &ct2);
        let ids1: Vec<String> = ct1.iter().map(|p| sha1_hex(p)).collect();
        let ids2: Vec<String> = ct2.iter().map(|p| sha1_hex(p)).collect();
        prop_assert_eq!(&ids1, &ids2);

        // Different account: same appid and other uid, other appid and same
        // uid, both different, and a different master secret.
        let mut others = vec![
            AccountKey::derive(&master, appid, uid2.wrapping_add((uid2 == uid) as u64)),
            AccountKey::derive(&master, appid2.wrapping_add((appid2 == appid) as u64), uid),
            AccountKey::derive(&master, appid2, uid2),
        ];
        if other_master != master {
            others.push(AccountKey::derive(&other_master, appid, uid));
        }
        for other in others {
            let ct_other = encrypt_file(&other, &data, partition_size);
            prop_assert_eq!(ct_other.len(), ct1.len());
            for (x, y) in ct1.iter().zip(&ct_other) {
                prop_assert_eq!(x.len(), y.len());
                prop_assert_ne!(x, y);
            }
            prop_assert_ne!(file_key(&a, &data), file_key(&other, &data));
            // A foreign account cannot unwrap the key.
            prop_assert_eq!(
                other.unwrap(&a.wrap(&file_key(&a, &data))).unwrap_err(),
                CryptError::Authentication
            );
        }

        // A different plaintext (one bit) under the same account gives a
        // different key.
        if !data.is_empty() {
            let mut changed = data.clone();
            changed[data.len() / 2] ^= 0x10;
            prop_assert_ne!(file_key(&a, &data), file_key(&a, &changed));
        }

        // Streaming the file key in arbitrary pieces gives the same key.
        let mut h = a.file_key_hasher(1 << 22);
        for piece in data.chunks(partition_size / 3 + 1) {
            h.update(piece);
        }
        let key = h.finish();
        prop_assert_eq!(&key, &file_key(&a, &data));

        // Wrap/unwrap round trip; wrapping is randomized yet both unwrap.
        let w1 = a.wrap(&key);
        let w2 = a.wrap(&key);
        prop_assert_ne!(&w1, &w2);
        prop_assert_eq!(a_again.unwrap(&w1).unwrap(), key.clone());
        prop_assert_eq!(a.unwrap(&w2).unwrap(), key.clone());

        // A tampered or truncated wrapped key is rejected.
        let mut raw = hex::decode(&w1).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        prop_assert_eq!(a.unwrap(&hex::encode(&raw)).unwrap_err(), CryptError::Authentication);
        prop_assert_eq!(a.unwrap(&w1[..w1.len() - 2]).unwrap_err(), CryptError::BadWrappedKey);
    }
}
