//! Measures the embedded store's durable write throughput with group commit:
//! W writers each append events in a closed loop (submit, wait for the
//! durable commit, repeat), for a fixed number of events in total.
//!
//! cargo run --release -p chatgate-store --example group_commit -- <writers> <events>

use chatgate_domain::*;
use chatgate_store::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), StoreConfig::default()).unwrap());
    let org = OrgId("bench".into());
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ops = vec![Op::UpsertOrganization(Organization {
        id: org.clone(),
        name: "bench".into(),
        license_id: 1,
        created_at: 0,
        allowed_origins: Vec::new(),
    })];
    for w in 0..writers {
        ops.push(Op::CreateChat {
            org: org.clone(),
            chat_id: format!("C{w}"),
            customer_id: None,
            created_at_us: 0,
        });
    }
    store
        .submit(ops, Box::new(move |r| tx.send(r).unwrap()))
        .unwrap();
    rx.recv().unwrap().unwrap();

    let before = store.stats();
    let remaining = Arc::new(AtomicU64::new(events));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let org = org.clone();
            let remaining = remaining.clone();
            std::thread::spawn(move || {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let mut n = 0u64;
                while remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1)).is_ok() {
                    let tx = tx.clone();
                    let op = Op::AppendEvent(EventRecord {
                        org: org.clone(),
                        chat_id: format!("C{w}"),
                        seq: 0,
                        thread_id: "T".into(),
                        id: format!("T_{w}_{n}"),
                        author_id: Some("a@b".into()),
                        custom_id: None,
                        kind: "message".into(),
                        created_at_us: 0,
                        body: r#"{"type":"message","text":"hello there, this is a typical short chat message"}"#.into(),
                    });
                    loop {
                        let tx = tx.clone();
                        match store.submit(vec![op.clone()], Box::new(move |r| tx.send(r).unwrap())) {
                            Ok(()) => break,
                            Err(StoreError::Busy) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    drop(tx);
                    rx.recv().unwrap().unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = started.elapsed();
    let after = store.stats();
    let txns = after.transactions - before.transactions;
    println!(
        "writers={writers} events={total} seconds={:.3} events_per_sec={:.0} transactions={txns} events_per_transaction={:.1}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        total as f64 / txns.max(1) as f64
    );
}
