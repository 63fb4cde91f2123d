//! What committing a message to the encrypted store costs: sealing alone, and sealed commits to
//! SQLite one at a time and with concurrent committers (group commit), at both durabilities.
//!
//! A "message" is what the SDK writes when a message arrives: the message row (300 bytes into
//! its conversation's partition) and the conversation's index row (100 bytes), in one
//! transaction.
// A bench aborts on any failure; there is nothing to recover.
#![allow(clippy::panic)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_store::memory::MemoryBackend;
use sotto_store::sqlite::{Durability, SqliteBackend, SqliteOptions};
use sotto_store::{EncryptedStore, StoreCipher, StoreKey, Transaction};
use zeroize::Zeroizing;

const MESSAGE: [u8; 300] = [0x5a; 300];
const INDEX: [u8; 100] = [0x3c; 100];

fn message_tx(store: &EncryptedStore, conversation: u64, seq: u64) -> Transaction {
    let mut tx = store.transaction();
    let conv = conversation.to_be_bytes();
    tx.put("messages", &conv, seq, &MESSAGE)
        .put("conversations", &conv, 0, &INDEX);
    tx
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
}

async fn open(backend: Arc<dyn sotto_store::Backend>) -> EncryptedStore {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    match EncryptedStore::open(backend, StoreKey::Raw(Zeroizing::new([1; 32])), &mut rng).await {
        Ok(s) => s,
        Err(e) => panic!("open: {e}"),
    }
}

fn cipher(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let cipher = StoreCipher::generate(&mut rng);
    let hash = cipher.hash_key("messages", b"conversation");
    let sealed = cipher.seal("messages", &hash, &MESSAGE, &mut rng);
    let mut g = c.benchmark_group("cipher");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hash_key", |b| {
        b.iter(|| cipher.hash_key("messages", b"conversation"))
    });
    g.bench_function("seal_300B", |b| {
        b.iter(|| cipher.seal("messages", &hash, &MESSAGE, &mut rng))
    });
    g.bench_function("open_300B", |b| {
        b.iter(|| cipher.open("messages", &hash, &sealed))
    });
    g.finish();
}

fn commit(c: &mut Criterion) {
    let rt = runtime();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut g = c.benchmark_group("commit_message");
    g.sample_size(20);

    let memory = rt.block_on(open(Arc::new(MemoryBackend::new())));
    g.throughput(Throughput::Elements(1));
    let mut seq = 0u64;
    g.bench_function("memory/sequential", |b| {
        b.iter(|| {
            seq += 1;
            let tx = message_tx(&memory, seq % 16, seq);
            let store = memory.clone();
            rt.block_on(store.commit(tx))
        })
    });

    for (name, durability) in [("full", Durability::Full), ("normal", Durability::Normal)] {
        let path = dir.path().join(format!("{name}.db"));
        let store = rt.block_on(async {
            let backend = match SqliteBackend::open_with(
                &path,
                SqliteOptions {
                    durability,
                    ..SqliteOptions::default()
                },
            )
            .await
            {
                Ok(b) => b,
                Err(e) => panic!("open sqlite: {e}"),
            };
            open(Arc::new(backend)).await
        });

        g.throughput(Throughput::Elements(1));
        let mut seq = 0u64;
        g.bench_function(
            BenchmarkId::new(format!("sqlite_{name}"), "sequential"),
            |b| {
                b.iter(|| {
                    seq += 1;
                    let tx = message_tx(&store, seq % 16, seq);
                    let store = store.clone();
                    rt.block_on(store.commit(tx))
                })
            },
        );

        // 64 committers at once (a burst of arriving messages decrypted in parallel): the
        // writer groups them into few commits.
        const CONCURRENT: u64 = 64;
        g.throughput(Throughput::Elements(CONCURRENT));
        let mut round = 0u64;
        g.bench_function(
            BenchmarkId::new(format!("sqlite_{name}"), "64_concurrent"),
            |b| {
                b.iter(|| {
                    round += 1;
                    let base = round * CONCURRENT;
                    let store = store.clone();
                    rt.block_on(async move {
                        let mut set = tokio::task::JoinSet::new();
                        for i in 0..CONCURRENT {
                            let tx = message_tx(&store, i % 16, base + i);
                            let store = store.clone();
                            set.spawn(async move { store.commit(tx).await });
                        }
                        while let Some(r) = set.join_next().await {
                            if !matches!(r, Ok(Ok(()))) {
                                panic!("commit failed");
                            }
                        }
                    })
                })
            },
        );

        // 64 messages in one transaction (a drained mailbox page committed at once).
        g.throughput(Throughput::Elements(CONCURRENT));
        let mut round = 0u64;
        g.bench_function(
            BenchmarkId::new(format!("sqlite_{name}"), "64_per_tx"),
            |b| {
                b.iter(|| {
                    round += 1;
                    let base = round * CONCURRENT;
                    let mut tx = store.transaction();
                    for i in 0..CONCURRENT {
                        let conv = (i % 16).to_be_bytes();
                        tx.put("messages", &conv, base + i, &MESSAGE).put(
                            "conversations",
                            &conv,
                            0,
                            &INDEX,
                        );
                    }
                    let store = store.clone();
                    rt.block_on(store.commit(tx))
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, cipher, commit);
criterion_main!(benches);
