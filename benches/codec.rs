//! Throughput of the codec on one default-sized (4 MiB) partition:
//! AES-256-GCM, SHA-1 (object ids), BLAKE3 (shard ids), Reed-Solomon 4+2,
//! and the whole write and read paths.
//!
//! Run with `cargo bench --bench codec`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use bytes::Bytes;
use tfsfs::codec::crypt::{AccountKey, PartitionCipher, TAG_LEN};
use tfsfs::codec::erasure::Scheme;
use tfsfs::codec::{sha1_hex, shard_id, DEFAULT_PARTITION_SIZE};

const PARTITION: usize = DEFAULT_PARTITION_SIZE as usize;
const INDEX: u64 = 7;

fn plaintext() -> Vec<u8> {
    let mut v = vec![0u8; PARTITION];
    StdRng::seed_from_u64(0x7f5f5).fill_bytes(&mut v);
    v
}

fn cipher_for(plain: &[u8]) -> PartitionCipher {
    let acct = AccountKey::derive(&[42u8; 32], 1, 1);
    let mut h = acct.file_key_hasher(PARTITION as u64);
    h.update(plain);
    PartitionCipher::new(&h.finish())
}

/// A copy of `plain` with room for the tag, so that encryption does not
/// reallocate (the client reads partitions into such buffers too).
fn with_tag_room(plain: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(plain.len() + TAG_LEN);
    v.extend_from_slice(plain);
    v
}

/// The shards as they come back from the providers, with data shards 0 and 1
/// missing, so that both must be rebuilt from parity.
fn two_data_missing(shards: &[Bytes]) -> Vec<Option<Vec<u8>>> {
    shards
        .iter()
        .enumerate()
        .map(|(i, s)| (i >= 2).then(|| s.to_vec()))
        .collect()
}

fn codec(c: &mut Criterion) {
    let plain = plaintext();
    let cipher = cipher_for(&plain);
    let scheme = Scheme::new(4, 2).unwrap();

    let mut stored = with_tag_room(&plain);
    cipher.encrypt_in_place(INDEX, &mut stored);
    let stored_len = stored.len();
    let stored_shards = scheme.encode(Bytes::from(stored.clone()));
    let plain_shards = scheme.encode(Bytes::from(plain.clone()));

    // Sanity check of what the read benchmarks measure.
    let mut back = scheme
        .decode(two_data_missing(&stored_shards), stored_len)
        .unwrap();
    cipher.decrypt_in_place(INDEX, &mut back).unwrap();
    assert_eq!(back, plain);
    assert_eq!(
        scheme
            .decode(two_data_missing(&plain_shards), PARTITION)
            .unwrap(),
        plain
    );

    let mut g = c.benchmark_group("codec_4MiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(PARTITION as u64));

    g.bench_function("aes256gcm_encrypt", |b| {
        b.iter_batched(
            || with_tag_room(&plain),
            |mut buf| {
                cipher.encrypt_in_place(INDEX, &mut buf);
                buf
            },
            BatchSize::LargeInput,
        )
    });

    g.bench_function("sha1", |b| b.iter(|| sha1_hex(black_box(&plain))));
    g.bench_function("blake3", |b| b.iter(|| shard_id(black_box(&plain))));

    let plain_bytes = Bytes::from(plain.clone());
    g.bench_function("rs_4_2_encode", |b| {
        b.iter(|| scheme.encode(black_box(plain_bytes.clone())))
    });

    g.bench_function("rs_4_2_decode_2_data_missing", |b| {
        b.iter_batched(
            || two_data_missing(&plain_shards),
            |shards| scheme.decode(shards, PARTITION).unwrap(),
            BatchSize::LargeInput,
        )
    });

    // Write path of one partition: encrypt, hash the stored partition (the
    // object id), RS-encode it, hash every shard (the shard ids).
    g.bench_function("write_pipeline", |b| {
        b.iter_batched(
            || with_tag_room(&plain),
            |mut buf| {
                cipher.encrypt_in_place(INDEX, &mut buf);
                let object_id = sha1_hex(&buf);
                let shards = scheme.encode(Bytes::from(buf));
                let shard_ids: Vec<String> = shards.iter().map(|s| shard_id(s)).collect();
                (object_id, shards, shard_ids)
            },
            BatchSize::LargeInput,
        )
    });

    // Read path of one partition: rebuild from 4 of 6 shards (two data
    // shards missing), then authenticate and decrypt.
    g.bench_function("read_pipeline_2_data_missing", |b| {
        b.iter_batched(
            || two_data_missing(&stored_shards),
            |shards| {
                let mut buf = scheme.decode(shards, stored_len).unwrap();
                cipher.decrypt_in_place(INDEX, &mut buf).unwrap();
                buf
            },
            BatchSize::LargeInput,
        )
    });

    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
