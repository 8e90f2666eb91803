//! Frame decode and encode, and push encoding: the work done per request
//! and per push on the RTM hot path.

use chatgate_protocol::chats::{IncomingEvent, SendEventRequest};
use chatgate_protocol::envelope::{FrameHead, FrameType};
use chatgate_protocol::{PushFrame, RequestFrame, Version};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const SEND_EVENT: &str = r#"{"action":"send_event","request_id":"42","version":"3.5","payload":{"chat_id":"PJ0MRSHTDG","event":{"type":"message","text":"Hello, how can I help you today?","visibility":"all"}}}"#;

fn incoming_event() -> serde_json::Value {
    serde_json::json!({
        "chat_id": "PJ0MRSHTDG",
        "thread_id": "K600PKZON8",
        "event": {
            "id": "K600PKZON8_3",
            "type": "message",
            "text": "Hello, how can I help you today?",
            "author_id": "alice@acme.test",
            "created_at": "2026-11-22T19:22:06.884449Z",
            "visibility": "all"
        }
    })
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Elements(1));
    // What the RTM session does with every text frame.
    g.bench_function("decode request frame", |b| {
        b.iter(|| serde_json::from_str::<RequestFrame>(black_box(SEND_EVENT)).unwrap())
    });
    // The engine then decodes the method's payload.
    let frame: RequestFrame = serde_json::from_str(SEND_EVENT).unwrap();
    let payload = frame.payload.clone().unwrap();
    g.bench_function("decode send_event payload", |b| {
        b.iter(|| serde_json::from_value::<SendEventRequest>(black_box(payload.clone())).unwrap())
    });
    // Frames over the size limit are only peeked at.
    g.bench_function("peek frame head", |b| {
        b.iter(|| serde_json::from_str::<FrameHead>(black_box(SEND_EVENT)).unwrap())
    });
    // A push is encoded once per version and shared by every recipient.
    let value = incoming_event();
    g.bench_function("encode push (incoming_event)", |b| {
        b.iter(|| {
            serde_json::to_vec(&PushFrame {
                version: Version::V3_5,
                request_id: None,
                action: "incoming_event".to_owned(),
                frame_type: FrameType::Push,
                payload: black_box(&value),
            })
            .unwrap()
        })
    });
    // The payload is built from typed data first.
    let typed: IncomingEvent = serde_json::from_value(value.clone()).unwrap();
    g.bench_function("push payload to value (incoming_event)", |b| {
        b.iter(|| serde_json::to_value(black_box(&typed)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
