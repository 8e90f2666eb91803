//! The embedded store: durability across reopen, group commit, per-chat
//! sequence numbers, per-submission atomicity, the advisory lock.

use chatgate_domain::*;
use chatgate_store::*;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

fn org(id: &str) -> Organization {
    Organization {
        id: OrgId(id.into()),
        name: format!("Org {id}"),
        license_id: 1000 + id.len() as u64,
        created_at: 1_700_000_000,
        allowed_origins: Vec::new(),
    }
}

fn agent(id: &str) -> Agent {
    Agent {
        id: AgentId(id.into()),
        kind: AgentKind::Agent,
        name: id.into(),
        role: Role::Normal,
        max_chats: 6,
        login_status: RoutingStatus::AcceptingChats,
        groups: vec![(0, GroupPriority::Normal), (7, GroupPriority::Last)],
        suspended: false,
        profile: Default::default(),
    }
}

/// Submits and waits for the commit.
fn write(store: &dyn Store, ops: Vec<Op>) -> Result<Committed, StoreError> {
    let (tx, rx) = std_mpsc::channel();
    store.submit(ops, Box::new(move |r| tx.send(r).unwrap()))?;
    rx.recv().unwrap()
}

fn base_ops() -> Vec<Op> {
    let o = OrgId("acme".into());
    vec![
        Op::UpsertOrganization(org("acme")),
        Op::UpsertGroup {
            org: o.clone(),
            group: Group {
                id: 0,
                name: "General".into(),
            },
        },
        Op::UpsertGroup {
            org: o.clone(),
            group: Group {
                id: 7,
                name: "Sales".into(),
            },
        },
        Op::UpsertAgent {
            org: o.clone(),
            agent: agent("alice@acme.test"),
        },
        Op::PutToken {
            hash: [1; 32],
            org: o.clone(),
            agent: "alice@acme.test".into(),
            kind: TokenKind::Pat,
            created_at: 1,
            expires_at: None,
        },
    ]
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
        write(&store, base_ops()).unwrap();
        write(
            &store,
            vec![Op::SetLastRoutingStatus {
                org: OrgId("acme".into()),
                agent: "alice@acme.test".into(),
                status: RoutingStatus::NotAcceptingChats,
            }],
        )
        .unwrap();
        store.close();
    }
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.orgs.len(), 1);
    let rec = &snap.orgs[0];
    assert_eq!(rec.org, org("acme"));
    assert_eq!(rec.groups.len(), 2);
    assert_eq!(rec.agents.len(), 1);
    assert_eq!(rec.agents[0].agent, agent("alice@acme.test"));
    assert_eq!(
        rec.agents[0].last_routing_status,
        Some(RoutingStatus::NotAcceptingChats)
    );
    assert_eq!(snap.tokens.len(), 1);
    assert_eq!(snap.tokens[0].hash, [1; 32]);
    assert_eq!(snap.tokens[0].agent, "alice@acme.test");
}

#[test]
fn upserts_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    write(&store, base_ops()).unwrap();
    write(&store, base_ops()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.orgs.len(), 1);
    assert_eq!(snap.orgs[0].agents.len(), 1);
    assert_eq!(snap.tokens.len(), 1);
}

#[test]
fn second_process_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    match SqliteStore::open(dir.path(), StoreConfig::default()) {
        Err(StoreError::Locked(_)) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn close_frees_the_directory_while_handles_remain() {
    let dir = tempfile::tempdir().unwrap();
    let first = Arc::new(SqliteStore::open(dir.path(), StoreConfig::default()).unwrap());
    write(&*first, base_ops()).unwrap();
    // A straggling task still holds a handle after shutdown closed it.
    let straggler = first.clone();
    first.close();
    let second = SqliteStore::open(dir.path(), StoreConfig::default())
        .expect("a closed store releases its lock");
    assert_eq!(second.load().unwrap().orgs.len(), 1);
    // The closed handle cannot write behind the new owner's back.
    assert!(write(&*straggler, base_ops()).is_err());
}

fn event(chat: &str, id: &str, custom: Option<&str>) -> Op {
    Op::AppendEvent(EventRecord {
        org: OrgId("acme".into()),
        chat_id: chat.into(),
        seq: 0,
        thread_id: "T1".into(),
        id: id.into(),
        author_id: Some("alice@acme.test".into()),
        custom_id: custom.map(Into::into),
        kind: "message".into(),
        created_at_us: 1,
        body: format!("{{\"text\":\"{id}\"}}"),
    })
}

fn chat(id: &str) -> Op {
    Op::CreateChat {
        org: OrgId("acme".into()),
        chat_id: id.into(),
        customer_id: None,
        created_at_us: 1,
    }
}

#[test]
fn sequence_numbers_are_per_chat_and_assigned_in_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    write(&store, base_ops()).unwrap();
    write(&store, vec![chat("A"), chat("B")]).unwrap();
    let c = write(
        &store,
        vec![
            event("A", "a1", None),
            event("A", "a2", None),
            event("B", "b1", None),
        ],
    )
    .unwrap();
    assert_eq!(c.seqs, vec![1, 2, 1]);
    let c = write(&store, vec![event("A", "a3", None)]).unwrap();
    assert_eq!(c.seqs, vec![3]);
    let events = store.chat_events("acme", "A").unwrap();
    let got: Vec<_> = events.iter().map(|e| (e.seq, e.id.as_str())).collect();
    assert_eq!(got, vec![(1, "a1"), (2, "a2"), (3, "a3")]);
}

/// A store with chat `A` whose first event `a1` has custom id `c1`.
fn chat_a_with_custom_id_c1(dir: &std::path::Path) -> Arc<SqliteStore> {
    let store = Arc::new(SqliteStore::open(dir, StoreConfig::default()).unwrap());
    write(&*store, base_ops()).unwrap();
    write(&*store, vec![chat("A")]).unwrap();
    write(&*store, vec![event("A", "a1", Some("c1"))]).unwrap();
    store
}

/// The ids of a chat's stored events, in order.
fn event_ids(store: &SqliteStore, chat: &str) -> Vec<String> {
    store
        .chat_events("acme", chat)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[test]
fn a_failing_submission_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = chat_a_with_custom_id_c1(dir.path());
    // Same author + custom_id in the same chat violates the unique index: the
    // whole submission (both events) must roll back, and nothing else.
    let err = write(
        &*store,
        vec![event("A", "a2", None), event("A", "a3", Some("c1"))],
    );
    assert!(err.is_err());
    let ok = write(&*store, vec![event("A", "a4", None)]).unwrap();
    assert_eq!(
        ok.seqs,
        vec![2],
        "the failed submission must not consume sequence numbers"
    );
    let ids = event_ids(&store, "A");
    assert_eq!(ids, vec!["a1", "a4"]);
    // The custom id is found with the chat's committed sequence.
    assert_eq!(
        store
            .custom_event("acme", "A", "alice@acme.test", "c1")
            .unwrap(),
        (Some("a1".to_owned()), 2)
    );
    assert_eq!(
        store
            .custom_event("acme", "A", "bob@acme.test", "c1")
            .unwrap(),
        (None, 2),
        "another author's custom id is another one"
    );
    // Appending to a chat that does not exist fails without side effects.
    assert!(matches!(
        write(&*store, vec![event("nope", "x", None)]),
        Err(StoreError::Conflict(_))
    ));
}

/// Submits `first`; from its completion (which runs on the writer) submits
/// each of `jobs`, so they all wait in the queue and are committed as one
/// group. Returns the jobs' results in submission order.
fn submit_group(
    store: &Arc<SqliteStore>,
    first: Vec<Op>,
    jobs: Vec<Vec<Op>>,
) -> Vec<Result<Committed, StoreError>> {
    let n = jobs.len();
    let (tx, rx) = std_mpsc::channel();
    let inner = store.clone();
    store
        .submit(
            first,
            Box::new(move |r| {
                r.unwrap();
                for (i, ops) in jobs.into_iter().enumerate() {
                    let tx = tx.clone();
                    inner
                        .submit(ops, Box::new(move |r| tx.send((i, r)).unwrap()))
                        .unwrap();
                }
            }),
        )
        .unwrap();
    let got: Vec<_> = rx.iter().take(n).collect();
    let order: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        order,
        (0..n).collect::<Vec<_>>(),
        "completions run in commit order"
    );
    got.into_iter().map(|(_, r)| r).collect()
}

/// Submits `n` events to chat A one at a time, `gap` apart, without waiting
/// for their commits; returns their sequence numbers in submission order
/// and the store's counters over the run.
fn spaced_writes(config: StoreConfig, n: usize, gap: Duration) -> (Vec<u64>, StoreStats) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), config).unwrap());
    write(&*store, base_ops()).unwrap();
    write(&*store, vec![chat("A")]).unwrap();
    // A pause after the set-up writes, which came back to back: the
    // pacer's average starts from a slow rate, not from theirs.
    std::thread::sleep(Duration::from_millis(100));
    let before = store.stats();
    let (tx, rx) = std_mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        store
            .submit(
                vec![event("A", &format!("e{i}"), None)],
                Box::new(move |r| tx.send((i, r)).unwrap()),
            )
            .unwrap();
        std::thread::sleep(gap);
    }
    let mut seqs = vec![0; n];
    for (i, r) in rx.iter().take(n) {
        seqs[i] = r.unwrap().seqs[0];
    }
    let after = store.stats();
    let delta = StoreStats {
        transactions: after.transactions - before.transactions,
        submissions: after.submissions - before.submissions,
        commit_delays: after.commit_delays - before.commit_delays,
    };
    (seqs, delta)
}

#[test]
fn a_commit_delay_gathers_writes_that_arrive_one_by_one_into_fewer_transactions() {
    const N: usize = 60;
    let (seqs, stats) = spaced_writes(
        StoreConfig {
            commit_delay: Duration::from_millis(50),
            ..StoreConfig::default()
        },
        N,
        Duration::from_millis(1),
    );
    assert_eq!(
        seqs,
        (1..=N as u64).collect::<Vec<_>>(),
        "every write committed, in order"
    );
    assert_eq!(stats.submissions, N as u64);
    assert!(stats.commit_delays > 0, "{stats:?}");
    // A write at least every few milliseconds against a 50 ms hold: each
    // held group gathers several.
    assert!(
        stats.transactions * 2 < N as u64,
        "writes were not gathered: {stats:?}"
    );
}

#[test]
fn no_commit_delay_below_the_rate_or_when_turned_off() {
    // A write every 5 ms against a 1 ms delay: slower than one per two
    // delays, so each is committed at once.
    let (seqs, stats) = spaced_writes(
        StoreConfig {
            commit_delay: Duration::from_millis(1),
            ..StoreConfig::default()
        },
        20,
        Duration::from_millis(5),
    );
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(stats.commit_delays, 0, "{stats:?}");
    let (seqs, stats) = spaced_writes(
        StoreConfig {
            commit_delay: Duration::ZERO,
            ..StoreConfig::default()
        },
        40,
        Duration::from_micros(100),
    );
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    assert_eq!(stats.commit_delays, 0, "{stats:?}");
}

#[test]
fn waiting_submissions_share_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), StoreConfig::default()).unwrap());
    write(&*store, base_ops()).unwrap();
    write(&*store, vec![chat("A")]).unwrap();
    let before = store.stats();
    const N: usize = 50;
    let jobs = (0..N)
        .map(|i| vec![event("A", &format!("e{i}"), None)])
        .collect();
    let seqs: Vec<u64> = submit_group(&store, vec![event("A", "first", None)], jobs)
        .into_iter()
        .map(|r| r.unwrap().seqs[0])
        .collect();
    assert_eq!(seqs, (2..=(N as u64 + 1)).collect::<Vec<_>>());
    let after = store.stats();
    assert_eq!(after.submissions - before.submissions, N as u64 + 1);
    assert_eq!(
        after.transactions - before.transactions,
        2,
        "one for the first, one for the group"
    );
}

#[test]
fn a_failing_submission_in_a_group_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = chat_a_with_custom_id_c1(dir.path());
    // The middle submission of the group repeats a custom id and must fail
    // alone.
    let got = submit_group(
        &store,
        vec![event("A", "a2", None)],
        vec![
            vec![event("A", "g1", None)],
            vec![event("A", "g2", None), event("A", "g3", Some("c1"))],
            vec![event("A", "g4", None)],
        ],
    );
    assert_eq!(got[0].as_ref().unwrap().seqs, vec![3]);
    assert!(got[1].is_err(), "the repeated custom id fails");
    assert_eq!(
        got[2].as_ref().unwrap().seqs,
        vec![4],
        "no sequence number lost"
    );
    let ids = event_ids(&store, "A");
    assert_eq!(ids, vec!["a1", "a2", "g1", "g4"]);
    // The group's words are searchable, the failed job's are not.
    for (word, n) in [("g1", 1), ("g2", 0), ("g3", 0), ("g4", 1)] {
        let hits = store.search_text("acme", &query(word)).unwrap();
        assert_eq!(hits.len(), n, "{word}");
    }
}

#[test]
fn barrier_waits_for_earlier_writes_and_closed_store_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    let (tx, rx) = std_mpsc::channel();
    let t1 = tx.clone();
    store
        .submit(
            base_ops(),
            Box::new(move |r| t1.send(("write", r.is_ok())).unwrap()),
        )
        .unwrap();
    store
        .submit(
            Vec::new(),
            Box::new(move |r| tx.send(("barrier", r.is_ok())).unwrap()),
        )
        .unwrap();
    assert_eq!(rx.recv().unwrap(), ("write", true));
    assert_eq!(rx.recv().unwrap(), ("barrier", true));
    store.close();
    assert!(matches!(
        store.submit(Vec::new(), Box::new(|_| {})),
        Err(StoreError::Closed)
    ));
}

#[test]
fn full_queue_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(
            dir.path(),
            StoreConfig {
                queue_capacity: 2,
                max_batch: 1,
                ..StoreConfig::default()
            },
        )
        .unwrap(),
    );
    let (tx, rx) = std_mpsc::channel::<()>();
    let inner = store.clone();
    // Inside a completion the writer is busy, so the queue cannot drain.
    // (Writes, not barriers: a barrier with nothing outstanding completes
    // without the writer.)
    store
        .submit(
            base_ops(),
            Box::new(move |_| {
                let results: Vec<_> = (0..3)
                    .map(|_| inner.submit(base_ops(), Box::new(|_| {})))
                    .collect();
                assert!(results[0].is_ok() && results[1].is_ok());
                assert!(matches!(results[2], Err(StoreError::Busy)));
                tx.send(()).unwrap();
            }),
        )
        .unwrap();
    rx.recv().unwrap();
}

#[test]
fn chats_threads_users_and_customers_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = OrgId("acme".into());
    {
        let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
        write(&store, base_ops()).unwrap();
        let thread = |id: &str, active: bool, at: i64| ThreadRecord {
            id: id.into(),
            active,
            created_at_us: at,
            closed_at_us: None,
            queued_at_us: None,
            properties: "{}".into(),
            tags: "[]".into(),
            customer_visit: None,
        };
        write(
            &store,
            vec![
                Op::UpsertCustomer(CustomerRecord {
                    org: o.clone(),
                    id: "cust-1".into(),
                    name: Some("Jo".into()),
                    email: None,
                    avatar: None,
                    session_fields: "[]".into(),
                    created_at_us: 5,
                    banned_until_us: None,
                }),
                Op::PutToken {
                    hash: [9; 32],
                    org: o.clone(),
                    agent: "cust-1".into(),
                    kind: TokenKind::Customer,
                    created_at: 1,
                    expires_at: Some(99),
                },
                chat("A"),
                Op::CreateThread {
                    org: o.clone(),
                    chat_id: "A".into(),
                    thread: thread("T1", false, 10),
                },
                Op::CreateThread {
                    org: o.clone(),
                    chat_id: "A".into(),
                    thread: thread("T2", true, 20),
                },
                Op::SetChatUser {
                    org: o.clone(),
                    chat_id: "A".into(),
                    user: ChatUserRecord {
                        user_id: "alice@acme.test".into(),
                        user_type: "agent".into(),
                        present: true,
                        visibility: "all".into(),
                        seen_up_to_us: Some(7),
                    },
                },
                Op::UpdateChat {
                    org: o.clone(),
                    chat_id: "A".into(),
                    access: "[0,1]".into(),
                    properties: "{}".into(),
                },
            ],
        )
        .unwrap();
        write(&store, vec![event("A", "T1_1", None)]).unwrap();
        let mut e = event("A", "T2_1", None);
        if let Op::AppendEvent(r) = &mut e {
            r.thread_id = "T2".into();
        }
        write(&store, vec![e]).unwrap();
        write(
            &store,
            vec![Op::UpdateThread {
                org: o.clone(),
                thread_id: "T2".into(),
                active: false,
                closed_at_us: Some(30),
                queued_at_us: None,
            }],
        )
        .unwrap();
        write(
            &store,
            vec![Op::SetThreadTags {
                org: o.clone(),
                thread_id: "T1".into(),
                tags: r#"["bug","vip"]"#.into(),
            }],
        )
        .unwrap();
        assert!(matches!(
            write(
                &store,
                vec![Op::SetThreadTags {
                    org: o.clone(),
                    thread_id: "nope".into(),
                    tags: "[]".into(),
                }]
            ),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            write(
                &store,
                vec![Op::UpdateThread {
                    org: o.clone(),
                    thread_id: "nope".into(),
                    active: false,
                    closed_at_us: None,
                    queued_at_us: None
                }]
            ),
            Err(StoreError::Conflict(_))
        ));
    }
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.customers.len(), 1);
    assert_eq!(snap.customers[0].name.as_deref(), Some("Jo"));
    let t = snap
        .tokens
        .iter()
        .find(|t| t.kind == TokenKind::Customer)
        .unwrap();
    assert_eq!((t.agent.as_str(), t.expires_at), ("cust-1", Some(99)));
    assert_eq!(snap.chats.len(), 1);
    let c = &snap.chats[0];
    assert_eq!(
        (c.id.as_str(), c.last_seq, c.access.as_str()),
        ("A", 2, "[0,1]")
    );
    let threads: Vec<_> = c
        .threads
        .iter()
        .map(|t| (t.id.as_str(), t.active, t.closed_at_us))
        .collect();
    assert_eq!(
        threads,
        vec![("T2", false, Some(30))],
        "only the last thread is loaded hot"
    );
    assert_eq!(
        (c.older_threads, c.older_last_thread_id.as_deref()),
        (1, Some("T1")),
        "the older ones are counted and the one before is named"
    );
    // The older threads are read on demand, in order, with their changes.
    let all: Vec<_> = store
        .chat_threads("acme", "A")
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.tags, t.closed_at_us))
        .collect();
    assert_eq!(
        all,
        vec![
            ("T1".to_owned(), r#"["bug","vip"]"#.to_owned(), None),
            ("T2".to_owned(), "[]".to_owned(), Some(30)),
        ]
    );
    let by_org: Vec<_> = store
        .org_threads("acme")
        .unwrap()
        .into_iter()
        .map(|(chat, t)| (chat, t.id))
        .collect();
    assert_eq!(
        by_org,
        vec![
            ("A".to_owned(), "T1".to_owned()),
            ("A".to_owned(), "T2".to_owned())
        ]
    );
    assert!(store.org_threads("other").unwrap().is_empty());
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.users[0].seen_up_to_us, Some(7));
    let last: Vec<_> = c.last_thread_events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        last,
        vec!["T2_1"],
        "only the last thread's events are loaded hot"
    );
    let t1: Vec<_> = store
        .thread_events("acme", "T1")
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(t1, vec!["T1_1"]);
}

fn text_event(chat: &str, thread: &str, id: &str, body: &str) -> Op {
    Op::AppendEvent(EventRecord {
        org: OrgId("acme".into()),
        chat_id: chat.into(),
        seq: 0,
        thread_id: thread.into(),
        id: id.into(),
        author_id: Some("alice@acme.test".into()),
        custom_id: None,
        kind: "message".into(),
        created_at_us: 5,
        body: body.into(),
    })
}

fn query(text: &str) -> TextQuery {
    TextQuery {
        text: text.into(),
        pre_tag: "[".into(),
        post_tag: "]".into(),
        max_hits: 100,
        thread_ids: None,
    }
}

#[test]
fn full_text_search_finds_every_word_in_its_organization_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    let mut ops = base_ops();
    ops.push(Op::UpsertOrganization(org("globex")));
    write(&store, ops).unwrap();
    write(
        &store,
        vec![
            chat("A"),
            chat("B"),
            Op::CreateChat {
                org: OrgId("globex".into()),
                chat_id: "G".into(),
                customer_id: None,
                created_at_us: 1,
            },
        ],
    )
    .unwrap();
    write(
        &store,
        vec![
            text_event("A", "TA", "a1", r#"{"text":"My parcel never arrived"}"#),
            text_event(
                "A",
                "TA",
                "a2",
                r#"{"text":"Sorry about the Parcel délai"}"#,
            ),
            text_event("B", "TB", "b1", r#"{"name":"parcel-photo.png","url":"x"}"#),
            text_event("B", "TB", "b2", r#"{"elements":[]}"#),
            Op::AppendEvent(EventRecord {
                org: OrgId("globex".into()),
                chat_id: "G".into(),
                seq: 0,
                thread_id: "TG".into(),
                id: "g1".into(),
                author_id: None,
                custom_id: None,
                kind: "message".into(),
                created_at_us: 5,
                body: r#"{"text":"parcel"}"#.into(),
            }),
        ],
    )
    .unwrap();
    let mut hits = store.search_text("acme", &query("PARCEL")).unwrap();
    hits.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let got: Vec<_> = hits
        .iter()
        .map(|h| {
            (
                h.thread_id.as_str(),
                h.event_id.as_str(),
                h.highlighted.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("TA", "a1", "My [parcel] never arrived"),
            ("TA", "a2", "Sorry about the [Parcel] délai"),
            ("TB", "b1", "[parcel]-photo.png"),
        ]
    );
    // Every word must occur; diacritics fold; FTS syntax is never obeyed.
    let hits = store.search_text("acme", &query("parcel arrived")).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(store.search_text("acme", &query("delai")).unwrap().len(), 1);
    assert!(
        store
            .search_text("acme", &query("parcel NOT arrived"))
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .search_text("acme", &query("\"*) OR ("))
            .unwrap()
            .is_empty()
    );
    // The index survives a reopen, and new events are indexed as they land.
    drop(store);
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    write(
        &store,
        vec![text_event("B", "TB", "b3", r#"{"text":"parcel found"}"#)],
    )
    .unwrap();
    assert_eq!(
        store.search_text("acme", &query("parcel")).unwrap().len(),
        4
    );
    let facts = store
        .thread_facts("acme", &["TB".to_string(), "nope".to_string()])
        .unwrap();
    assert_eq!(facts.len(), 2);
    let mut threads = store.search_threads("acme", "parcel", 100).unwrap();
    threads.sort();
    assert_eq!(threads, vec!["TA".to_string(), "TB".to_string()]);
    let only_b = TextQuery {
        thread_ids: Some(vec!["TB".into()]),
        ..query("parcel")
    };
    let hits = store.search_text("acme", &only_b).unwrap();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.thread_id == "TB"));
    assert_eq!(facts[0].len(), 3);
    assert!(facts[1].is_empty());
}

#[test]
fn barriers_complete_at_once_when_nothing_is_outstanding_and_wait_otherwise() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    // Nothing outstanding: the barrier completes before `submit` returns.
    let (tx, rx) = std_mpsc::channel();
    store
        .submit(Vec::new(), Box::new(move |r| tx.send(r.is_ok()).unwrap()))
        .unwrap();
    assert_eq!(rx.try_recv(), Ok(true));
    // Behind a write that is not durable yet, a barrier waits for it: its
    // completion runs after the write's.
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let (tx, rx) = std_mpsc::channel();
    let reservation = store.reserve().unwrap();
    store
        .submit(
            base_ops(),
            Box::new(move |r| {
                assert!(r.is_ok());
                o1.lock().unwrap().push("write");
            }),
        )
        .unwrap();
    reservation.submit(
        Vec::new(),
        Box::new(move |_| {
            o2.lock().unwrap().push("barrier");
            tx.send(()).unwrap();
        }),
    );
    rx.recv().unwrap();
    assert_eq!(*order.lock().unwrap(), ["write", "barrier"]);
    // The write is durable when the barrier completes.
    assert_eq!(store.load().unwrap().orgs.len(), 1);
}

/// The store's own bookkeeping of the text index, read beside it.
fn fts_watermark(dir: &std::path::Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(dir.join("chatgate.db")).unwrap();
    c.query_row(
        "SELECT (SELECT indexed_up_to FROM fts_state), (SELECT max(rowid) FROM events)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// A store in `dir` with the base organization and chat `A`.
fn open_with_chat_a(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir, StoreConfig::default()).unwrap();
    write(&store, base_ops()).unwrap();
    write(&store, vec![chat("A")]).unwrap();
    store
}

#[test]
fn text_is_indexed_behind_the_commit_yet_a_search_finds_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_chat_a(dir.path());
    write(
        &store,
        vec![text_event(
            "A",
            "TA",
            "a1",
            r#"{"text":"where is my refund"}"#,
        )],
    )
    .unwrap();
    // Committed and acknowledged, its text not yet in the index...
    let (indexed, last) = fts_watermark(dir.path());
    assert!(indexed < last, "indexed up to {indexed} of {last}");
    // ...and found all the same: the search has the writer index it first.
    let hits = store.search_text("acme", &query("refund")).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(fts_watermark(dir.path()), (last, last));
    assert_eq!(
        store.search_threads("acme", "refund", 10).unwrap(),
        vec!["TA".to_string()]
    );
    // Many events at once: indexed without a search once enough wait.
    let ops = (0..600)
        .map(|i| text_event("A", "TA", &format!("m{i}"), r#"{"text":"bulk words"}"#))
        .collect();
    write(&store, ops).unwrap();
    write(
        &store,
        vec![text_event("A", "TA", "z", r#"{"text":"last"}"#)],
    )
    .unwrap();
    let (indexed, last) = fts_watermark(dir.path());
    assert!(indexed >= last - 1, "indexed up to {indexed} of {last}");
    assert_eq!(
        store
            .search_text(
                "acme",
                &TextQuery {
                    max_hits: 1000,
                    ..query("bulk")
                }
            )
            .unwrap()
            .len(),
        600
    );
}

#[test]
fn text_a_crash_left_unindexed_is_indexed_on_open_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_with_chat_a(dir.path());
        for (id, text) in [
            ("a1", "parcel lost"),
            ("a2", "parcel found"),
            ("a3", "thanks"),
        ] {
            let body = format!(r#"{{"text":"{text}"}}"#);
            write(&store, vec![text_event("A", "TA", id, &body)]).unwrap();
        }
        store.close();
    }
    // What a crash before the index's unsynced transaction reached the
    // disk leaves: the events, without their text in the index, and the
    // watermark before them.
    {
        let c = rusqlite::Connection::open(dir.path().join("chatgate.db")).unwrap();
        c.execute_batch(
            "DELETE FROM events_fts WHERE event_id IN ('a2', 'a3');
             UPDATE fts_state SET indexed_up_to = (SELECT rowid FROM events WHERE id = 'a1');",
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    let (indexed, last) = fts_watermark(dir.path());
    assert_eq!(indexed, last, "the open indexed what was missing");
    let mut hits: Vec<_> = store
        .search_text("acme", &query("parcel"))
        .unwrap()
        .into_iter()
        .map(|h| h.event_id)
        .collect();
    hits.sort();
    assert_eq!(hits, vec!["a1", "a2"], "each event once");
    assert_eq!(
        store.search_text("acme", &query("thanks")).unwrap().len(),
        1
    );
    // Opening again adds nothing twice.
    drop(store);
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(
        store.search_text("acme", &query("parcel")).unwrap().len(),
        2
    );
}
