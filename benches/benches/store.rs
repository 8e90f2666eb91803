//! The embedded store's group commit: how long a batch of concurrent event
//! appends takes to become durable (one transaction and one sync for the
//! batch), by batch size.

use chatgate_domain::*;
use chatgate_store::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::mpsc;

fn append(org: &OrgId, n: u64) -> Op {
    Op::AppendEvent(EventRecord {
        org: org.clone(),
        chat_id: format!("C{}", n % 64),
        seq: 0,
        thread_id: "T".into(),
        id: format!("T_{n}"),
        author_id: Some("a@b".into()),
        custom_id: None,
        kind: "message".into(),
        created_at_us: 0,
        body: r#"{"type":"message","text":"hello there, this is a typical short chat message"}"#
            .into(),
    })
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), StoreConfig::default()).unwrap());
    let org = OrgId("bench".into());
    let mut setup = vec![Op::UpsertOrganization(Organization {
        id: org.clone(),
        name: "bench".into(),
        license_id: 1,
        created_at: 0,
        allowed_origins: Vec::new(),
    })];
    for w in 0..64 {
        setup.push(Op::CreateChat {
            org: org.clone(),
            chat_id: format!("C{w}"),
            customer_id: None,
            created_at_us: 0,
        });
    }
    let (tx, rx) = mpsc::channel();
    store
        .submit(setup, Box::new(move |r| tx.send(r).unwrap()))
        .unwrap();
    rx.recv().unwrap().unwrap();

    let mut g = c.benchmark_group("store group commit");
    g.sample_size(20);
    let mut n = 0u64;
    for batch in [1u64, 16, 64] {
        g.throughput(Throughput::Elements(batch));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                // `batch` appends submitted at once (as concurrent requests
                // do), then wait until every one is durable.
                let (tx, rx) = mpsc::channel();
                for _ in 0..batch {
                    n += 1;
                    let tx = tx.clone();
                    store
                        .submit(
                            vec![append(&org, n)],
                            Box::new(move |r| tx.send(r).unwrap()),
                        )
                        .unwrap();
                }
                for _ in 0..batch {
                    rx.recv().unwrap().unwrap();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
